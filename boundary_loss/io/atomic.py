"""Atomic writes: a product, file or folder, is either complete or absent, never half-written.

Make takes a file that exists as finished, so every output of the pipeline is written to a
temporary file in the same folder and renamed into place (an atomic rename on POSIX) once
complete; every output folder is built aside and put in place whole (`staged_folder`), and only
ever in place of the same tool's earlier output.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# The errors of a write that failed for want of room -> what to tell the user. Every tool of the
# pipeline says so in one message naming the file.
DISK_FULL = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is too large for its file system",
}


def atomic_write(dest: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through a temporary file in the same folder, renamed into place when complete.

    The temporary file (`.<name>.<random>.tmp`) is removed on any error, so an interrupted or
    failed write leaves neither a partial `dest` nor a stray file. The parent folder is created
    when missing.

    Args:
        dest: the file to write.
        write: called with the open binary temporary file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.filename is None and error.errno is not None:  # name the product
            raise OSError(error.errno, error.strerror, str(dest)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(dest, lambda handle: handle.write(text.encode("utf-8")))


def disk_full_message(error: OSError, folder: str | Path) -> str:
    """One line for a write that failed on a full disk: which file, and what to do."""
    where = error.filename2 or error.filename or f"a file in {folder}"  # copies: the target
    why = DISK_FULL.get(error.errno, "no space left")
    return (
        f"no space left on device while writing {where} ({why}: {error.strerror}); free some "
        "space and run again: nothing unfinished was put in place"
    )


def remove_path(path: Path, ignore_errors: bool = False) -> None:
    """Remove a file, a link (not what it points to) or a folder tree, if present: how the
    tools clear their own `<product>_tmp`."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=ignore_errors)


# ---------------------------------------------------------------------------------------------
# Folders: built aside, put in place whole, and only ever in place of the tool's own output
# ---------------------------------------------------------------------------------------------
#
# Every tool that writes a folder (the slicers, unpack.py, boundary_loss_predict, report.pictures,
# the stand-in generator) goes through `staged_folder`:
#
# - `DEST` is replaced only when it is missing, an empty folder, or an earlier output of the same
#   tool: a folder holding the marker file `.written_by.json` that names the tool (or, for
#   outputs made before the marker existed, the tool's own record file, such as a slicer's
#   `split.json`). Anything else there (a dataset, a run folder, a user's notes) is refused
#   before any work, and again just before the swap.
# - The new folder is built in `DEST_tmp/DEST`, and the earlier one is moved aside into
#   `DEST_tmp` too: nothing else beside `DEST` is created, read or removed. `DEST_tmp` is the
#   tool's own only when it carries `.staging.json` naming the tool and `DEST` (left by an
#   interrupted run); any other folder of that name, even empty, is refused.
# - `DEST_tmp` is locked (flock) while the tool works: a second process writing the same `DEST`
#   stops at once with a message instead of deleting the first one's work.

MARKER = ".written_by.json"
# The file that marks a work folder `DEST_tmp`: the tool and the DEST it builds. Distinct from
# MARKER, so that a finished output that happens to be named `X_tmp` is never taken for one.
STAGING = ".staging.json"


class FolderError(Exception):
    """A folder cannot be written or replaced safely; the message names it and says why."""


def mark_folder(folder: Path, tool: str) -> None:
    """Mark `folder` as written by `tool`: `staged_folder` may replace it later."""
    (folder / MARKER).write_text(json.dumps({"tool": tool}) + "\n")


def written_by(folder: Path) -> str | None:
    """The tool named by `folder`'s marker, or None (no marker, or not a readable one)."""
    try:
        tool = json.loads((folder / MARKER).read_text()).get("tool")
    except (OSError, ValueError, AttributeError):
        return None
    return tool if isinstance(tool, str) else None


def is_own_output(folder: Path, tool: str, legacy: Sequence[str] = ()) -> bool:
    """Whether `folder` is an earlier output of `tool`: its marker names the tool, or it has no
    marker and holds one of `legacy`, the record files of outputs made before the marker."""
    if (folder / MARKER).exists():
        return written_by(folder) == tool
    return any((folder / name).is_file() for name in legacy)


def check_replaceable(dest: Path, tool: str, flag: str, legacy: Sequence[str] = ()) -> None:
    """Refuse a `dest` that `tool` may not replace: see the rules above.

    Raises:
        FolderError: `dest` is a file or a link, or a non-empty folder that is not an earlier
            output of `tool`.
    """
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise FolderError(
            f"{flag} {dest}: exists and is not a folder; expected a new name or an earlier "
            f"output of {tool}, which is replaced"
        )
    if dest.is_dir() and not is_own_output(dest, tool, legacy) and any(dest.iterdir()):
        records = "".join(f", nor {name}" for name in legacy)
        raise FolderError(
            f"{flag} {dest}: a non-empty folder that {tool} did not write (no {MARKER} naming "
            f"it{records}); it is not replaced: move it away or choose another {flag}"
        )


def _staging_of(stage: Path) -> tuple[str, str] | None:
    """(tool, destination name) of a work folder's `STAGING` file, or None."""
    try:
        record = json.loads((stage / STAGING).read_text())
        found = (record["tool"], record["dest"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return found if all(isinstance(v, str) for v in found) else None


def _lock(folder: Path, flag: str, dest: Path) -> int | None:
    """An open descriptor of `folder`, locked; None when `folder` is no longer at that path.

    Raises:
        FolderError: another process holds the lock.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderError(
            f"{flag} {dest}: another process is writing it right now (in {folder}); wait for "
            "it to finish, then run again if needed"
        ) from None
    try:
        same = os.stat(folder).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # removed or replaced by the process that held it
        os.close(fd)
        return None
    return fd


def _claim_stage(stage: Path, tool: str, flag: str, dest: Path) -> int:
    """Create `stage`, or take over one left by an interrupted run of `tool` for `dest`, locked;
    returns the open, locked folder descriptor.

    A new work folder is made under a hidden temporary name, given its `STAGING` file and its
    lock, and only then renamed to `stage`, so that no other process ever sees it unmarked.
    """
    for _ in range(10):
        if stage.is_symlink() or stage.exists():
            if stage.is_symlink() or not stage.is_dir():
                raise FolderError(
                    f"{flag} {dest}: {stage} exists and is not a folder of {tool}; it is where "
                    f"{tool} builds {dest.name}: move it away, then run again"
                )
            fd = _lock(stage, flag, dest)
            if fd is None:
                continue
            if _staging_of(stage) == (tool, dest.name):  # left by an interrupted run: cleared
                for entry in stage.iterdir():
                    if entry.name != STAGING:
                        remove_path(entry)
                return fd
            os.close(fd)
            raise FolderError(
                f"{flag} {dest}: {stage} is a folder without {STAGING} naming {tool}, so not its "
                "work folder; it is not removed: move it away, then run again"
            )
        fresh = stage.with_name(f".{stage.name}.{secrets.token_hex(4)}")
        fresh.mkdir(parents=True)
        try:
            (fresh / STAGING).write_text(json.dumps({"tool": tool, "dest": dest.name}) + "\n")
            fd = _lock(fresh, flag, dest)
        except BaseException:
            remove_path(fresh, ignore_errors=True)
            raise
        try:
            if stage.is_symlink() or stage.exists():  # another process was quicker
                raise FileExistsError
            fresh.rename(stage)
        except OSError:  # FileExistsError, or ENOTEMPTY when renaming onto its folder
            remove_path(fresh, ignore_errors=True)
            os.close(fd)
            continue
        return fd
    raise FolderError(f"{flag} {dest}: {stage} keeps being replaced by other processes")


@contextmanager
def staged_folder(
    dest: str | Path, tool: str, flag: str = "--dest", legacy: Sequence[str] = ()
) -> Iterator[Path]:
    """Build a folder aside and put it in place of `dest` when the block completes.

    Yields the empty folder to fill (`DEST_tmp/DEST`, already marked as `tool`'s). When the
    block ends without an exception, `dest` is checked again, the earlier `dest` is moved into
    `DEST_tmp`, the new folder takes its name, and `DEST_tmp` is removed with the earlier one; on
    an exception (Ctrl-C included) `DEST_tmp` is removed and `dest` left as it was.

    Args:
        dest: the folder to write.
        tool: the tool's name, written in the marker and shown in messages.
        flag: how the user named `dest` (the command-line flag), for messages.
        legacy: record files that mark an earlier output made before the marker existed.

    Raises:
        FolderError: `dest` or `DEST_tmp` is not the tool's to replace, or another process is
            writing `dest` (see the rules above).
    """
    dest = Path(dest)
    if dest.name in ("", ".", ".."):
        dest = dest.resolve()
    check_replaceable(dest, tool, flag, legacy)
    stage = dest.with_name(dest.name + "_tmp")
    try:
        fd = _claim_stage(stage, tool, flag, dest)
    except OSError as error:
        raise FolderError(_folder_error(error, flag, dest, stage)) from None
    try:
        build = stage / dest.name
        try:
            build.mkdir()
            mark_folder(build, tool)
        except OSError as error:
            raise FolderError(_folder_error(error, flag, dest, stage)) from None
        yield build
        check_replaceable(dest, tool, flag, legacy)  # again: something may have come meanwhile
        try:
            _swap(build, dest, stage / (dest.name + ".replaced"))
        except OSError as error:
            raise FolderError(_folder_error(error, flag, dest, stage)) from None
    finally:
        remove_path(stage, ignore_errors=True)
        os.close(fd)  # the lock goes with the descriptor


def _swap(build: Path, dest: Path, old: Path) -> None:
    """Put `build` in place of `dest`, the earlier `dest` moved to `old` first (and put back if
    the second rename fails)."""
    if dest.exists():
        dest.rename(old)
    try:
        build.rename(dest)
    except BaseException:
        if old.exists() and not dest.exists():
            old.rename(dest)
        raise


def _folder_error(error: OSError, flag: str, dest: Path, stage: Path) -> str:
    """One line for a failed step of `staged_folder` itself (a full disk said as such)."""
    if error.errno in DISK_FULL:
        return disk_full_message(error, stage)
    return (
        f"{flag} {dest}: cannot be written through {stage} ({error.strerror or error}); "
        f"{dest} was left as it was"
    )
