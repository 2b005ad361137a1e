"""The interpreter and its flags in the makefiles' recipes: only command-line values count.

A C toolchain exports CC=gcc and CFLAGS="-O2 -g"; neither may reach the Python steps.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.cli import ROOT


def dry_run(*args: str, env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(env_extra)
    proc = subprocess.run(
        ["make", "-n", "-f", "isles.make", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if "preprocess/verify_lineage.py" in line]


def test_exported_cc_and_cflags_never_reach_the_recipes() -> None:
    lines = dry_run(f"CC={sys.executable}", env_extra={"CFLAGS": "-O2 -g"})
    assert lines and all(line.startswith(f"{sys.executable}  preprocess/") for line in lines)
    lines = dry_run(env_extra={"CC": "gcc", "CFLAGS": "-O2 -g"})
    assert lines and not any("gcc" in line or "-O2" in line for line in lines)


def test_command_line_cflags_reach_every_python_step() -> None:
    lines = dry_run(f"CC={sys.executable}", "CFLAGS=-O", env_extra={})
    assert lines and all(line.startswith(f"{sys.executable} -O preprocess/") for line in lines)
