"""Running the project's scripts as a user would, and checking how they fail.

`run_script` runs a script in a subprocess, `run_module` a module of the package;
`assert_clean_error` checks that a failure is one clear `error: ...` line on stderr, naming what
it must name, with no Python traceback;
`on_small_disk` runs a command with one folder on a tiny file system, so that writing there
fails with "No space left on device" as on a full disk.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "@@ left on the small disk:"


def run_script(
    script: str | Path,
    *args: object,
    cwd: str | Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python script args...` (script relative to the repository), capturing text output."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=env,
    )


def run_module(
    module: str, *args: object, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the repository root, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=env,
    )


def error_lines(stderr: str) -> list[str]:
    """The `error: ...` lines of stderr (progress bars, redrawn with carriage returns, aside)."""
    lines = [part.split("\r")[-1] for part in stderr.splitlines()]
    return [line for line in lines if line.startswith("error:")]


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert a failed run printed one `error:` line holding every needle and no traceback.

    Returns:
        The error line.
    """
    output = proc.stdout + proc.stderr
    assert proc.returncode not in (0, None), f"expected a failure, got:\n{output}"
    assert "Traceback" not in output, f"traceback instead of a message:\n{output}"
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, f"expected one 'error:' line on stderr, got:\n{proc.stderr}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in the message: {errors[0]}"
    return errors[0]


def small_disk_available() -> bool:
    """Whether `on_small_disk` can mount a tmpfs (root, or unprivileged user namespaces)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 1"],
        capture_output=True,
    )
    return probe.returncode == 0


def on_small_disk(
    command: Sequence[object],
    folder: Path,
    size_kb: int,
    cwd: str | Path | None = None,
    timeout: float = 300,
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `command` with `folder` (created if needed) on a fresh `size_kb` tmpfs.

    The mount lives in a private mount namespace (`unshare -rm`): nothing outside the command
    sees it, and it disappears with the command, taking what was written there along; so what
    the command left in `folder` is listed from inside, once it has ended.

    Returns:
        The finished process (its stdout without the listing) and the paths left in `folder`,
        relative to it, sorted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    where = shlex.quote(str(folder))
    script = (
        f"mount -t tmpfs -o size={int(size_kb)}k tmpfs {where} || exit 99; "
        f"{shlex.join(map(str, command))}; rc=$?; echo {MARK}; "
        f"find {where} -mindepth 1 -printf '%P\\n' | sort; exit $rc"
    )
    proc = subprocess.run(
        ["unshare", "-rm", "bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )
    assert proc.returncode != 99, f"cannot mount a tmpfs on {folder}: {proc.stderr}"
    stdout, _, listing = proc.stdout.partition(MARK + "\n")
    proc.stdout = stdout
    return proc, listing.split()
