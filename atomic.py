"""Atomic file writes: a product is either complete or absent, never half-written.

Make takes a file that exists as finished, so every output of the pipeline is written to a
temporary file in the same folder and renamed into place (an atomic rename on POSIX) once
complete.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
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


def replace_folder(tmp: Path, dest: Path) -> None:
    """Put a complete folder `tmp` in place of `dest`: the earlier `dest` is moved aside first
    and removed only once `tmp` has its name, so a failure in between loses neither."""
    old = dest.with_name(dest.name + "_old")
    remove_path(old, ignore_errors=True)
    if dest.exists():
        dest.replace(old)
    tmp.replace(dest)
    remove_path(old, ignore_errors=True)
