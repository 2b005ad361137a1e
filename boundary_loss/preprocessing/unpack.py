"""Unpack dataset zips safely into one folder, dropping what the recipes do not use.

Usage: python preprocess/unpack.py ZIP [ZIP ...] --dest DIR [--drop PATTERN ...]

- Every member of every zip is checked before anything is written: an absolute path, a drive
  letter, a `..` component or a symbolic link (zip-slip) stops the whole unpacking with the zip
  and the member named; so do two members that would land on the same path (the same file twice,
  in one zip or in two, or a file `a` beside a member `a/b` under a folder of the same name),
  with both members named: nothing is ever overwritten silently.
- Members whose path has a component matching a `--drop` pattern (fnmatch, e.g. `__MACOSX`,
  `*CT_4DPWI*`, `orig`, `3DT1.nii.gz`, `*_4d.nii.gz`) are not extracted at all, nor checked for
  clashes.
- A member whose data cannot be decompressed (a zip damaged mid-stream: bad deflate data, a CRC
  mismatch, a cut member) stops with the zip and the member named: the zip is corrupt and must be
  deleted and downloaded (or generated) again. A full disk stops with the file being written
  named and the space the unpacked files need.
- Extraction goes to `DIR_tmp/DIR`, moved to `DIR` only once every zip is complete
  (`io.atomic.staged_folder`); on any error `DIR_tmp` is removed and nothing else is touched, so an
  interrupted run never leaves a `DIR` that Make would take as finished, and an existing `DIR`
  stays as it was. On success an existing `DIR` is replaced (`make -B`): it is first moved into
  `DIR_tmp`, the new tree moved into place, then `DIR_tmp` removed. Only an earlier output of
  this tool is ever replaced (marked by `.written_by.json`; `.unpacked.json` lists its zips); any
  other non-empty `DIR`, or a `DIR_tmp` that is not this tool's, is refused before anything is
  written: a tool removes only what it created.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import lzma
import stat
import sys
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from boundary_loss.io.atomic import DISK_FULL, FolderError, check_replaceable, staged_folder

CHUNK = 1 << 20

# What reading a damaged member may raise: zlib.error (bad deflate data), BadZipFile (CRC
# mismatch, bad local header), EOFError (data cut short), lzma.LZMAError, OSError (bzip2's
# "Invalid data stream", or the zip file itself unreadable).
CORRUPT_ERRORS = (zlib.error, zipfile.BadZipFile, EOFError, lzma.LZMAError, OSError)


# Written last into every unpacked folder: the zips it came from. The folder is marked as this
# tool's output (atomic.staged_folder), which may be replaced; so is one holding only this
# record, from before the marker existed; any other non-empty folder is refused.
MARKER = ".unpacked.json"
TOOL = "unpack.py"


class UnpackError(Exception):
    """A zip cannot be unpacked safely."""


@dataclass(frozen=True)
class Member:
    """One member to extract.

    Attributes:
        zip_path: the zip holding it.
        info: its zip entry.
        parts: its path components inside the target folder.
    """

    zip_path: Path
    info: zipfile.ZipInfo
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.info.filename!r} of {self.zip_path}"


def _member_parts(zip_path: Path, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The member's path components, refusing anything that could land outside the target.

    Raises:
        UnpackError: an absolute path, a drive letter, a `..` component or a symbolic link.
    """
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    bad = (
        name.startswith("/")
        or (len(name) > 1 and name[1] == ":")
        or ".." in path.parts
        or stat.S_ISLNK(info.external_attr >> 16)
    )
    if bad:
        raise UnpackError(
            f"{zip_path}: refusing member {info.filename!r}: absolute paths, '..' and symbolic "
            "links could write outside the target folder (zip-slip). The zip is not the "
            "expected dataset archive."
        )
    return tuple(p for p in path.parts if p not in ("", "."))


def _dropped(parts: Sequence[str], patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in patterns)


def check_clashes(members: Sequence[Member]) -> None:
    """Refuse two members that would be written to the same path.

    Args:
        members: the members to extract, every zip together.

    Raises:
        UnpackError: the same file twice, a file and a folder entry of the same path, or a file
            `a` and a member `a/...` below it; both members are named.
    """
    files: dict[tuple[str, ...], Member] = {}
    folders: dict[tuple[str, ...], Member] = {}
    for member in members:
        if member.info.is_dir():
            folders.setdefault(member.parts, member)
            continue
        if member.parts in files:
            raise UnpackError(
                f"{member.zip_path}: member {member.info.filename!r} has the same path as "
                f"member {files[member.parts]}: one would overwrite the other. The zips are "
                "not the expected dataset archives (or the same zip was given twice)."
            )
        files[member.parts] = member
    for member in members:
        for end in range(1, len(member.parts) + (1 if member.info.is_dir() else 0)):
            clash = files.get(member.parts[:end])
            if clash is not None:
                raise UnpackError(
                    f"{member.zip_path}: member {member.info.filename!r} needs a folder where "
                    f"member {clash} is a file: the two cannot both be unpacked. The zips are "
                    "not the expected dataset archives."
                )


def _read_members(zips: Sequence[Path], drop: Sequence[str]) -> list[Member]:
    """Every member to extract from `zips`, checked (zip-slip, clashes), in order.

    Raises:
        UnpackError: a zip is missing or unreadable, or a member unsafe or clashing.
    """
    members = []
    for zip_path in zips:
        if not zip_path.is_file():
            raise UnpackError(f"{zip_path}: no such zip")
        try:
            with zipfile.ZipFile(zip_path) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise UnpackError(
                f"{zip_path}: not a readable zip ({error}); delete it and download (or "
                "generate) it again"
            ) from None
        for info in infos:
            parts = _member_parts(zip_path, info)
            if parts and not _dropped(parts, drop):
                members.append(Member(zip_path, info, parts))
    check_clashes(members)
    return members


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{n_bytes} bytes"


def _write_error(error: OSError, target: Path, member: Member | str, tmp: Path, needed: int) -> str:
    """The message for a failed write: a full disk said as such, with the space needed."""
    if error.errno in DISK_FULL:
        return (
            f"{target}: cannot be written, {DISK_FULL[error.errno]} (errno "
            f"{errno.errorcode[error.errno]}) while unpacking member {member}; {tmp} was "
            f"removed. Free space on the disk holding {tmp.parent} (the unpacked files need "
            f"{_size(needed)}) and run again."
        )
    return f"{target}: cannot write member {member} ({error}); {tmp} was removed."


def _extract(archive: zipfile.ZipFile, member: Member, target: Path) -> None:
    """Copy one member's data to `target`.

    Raises:
        UnpackError: the member's data are corrupt, or its compression or encryption is not
            supported.
        OSError: writing `target` failed.
    """
    info = member.info
    try:
        source = archive.open(info)
    except (NotImplementedError, RuntimeError) as error:  # unknown method, encrypted
        raise UnpackError(
            f"{member.zip_path}: cannot read member {info.filename!r} ({error}). The zip is not "
            "the expected dataset archive."
        ) from None
    except CORRUPT_ERRORS as error:
        raise UnpackError(_corrupt(member, error)) from None
    with source, target.open("wb") as sink:
        while True:
            try:
                block = source.read(CHUNK)
            except CORRUPT_ERRORS as error:
                raise UnpackError(_corrupt(member, error)) from None
            if not block:
                break
            sink.write(block)


def _corrupt(member: Member, error: BaseException) -> str:
    detail = str(error) or type(error).__name__
    return (
        f"{member.zip_path}: member {member.info.filename!r} is corrupt ({detail}): the zip was "
        f"damaged or cut short. Delete {member.zip_path} and download (or generate) it again; "
        "nothing was unpacked."
    )


def _fill(members: Sequence[Member], new: Path, tmp: Path, needed: int) -> None:
    """Extract every member below `new` (inside the work folder `tmp`).

    Args:
        members: the checked members, zip by zip.
        new: the (empty) folder to fill.
        tmp: the work folder, named in messages.
        needed: the size of the unpacked files, in bytes, for a full disk's message.

    Raises:
        UnpackError: a corrupt member, or a failed write (a full disk said as such).
    """
    by_zip: dict[Path, list[Member]] = {}
    for member in members:
        by_zip.setdefault(member.zip_path, []).append(member)
    for zip_path, chosen in by_zip.items():
        try:
            archive = zipfile.ZipFile(zip_path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise UnpackError(f"{zip_path}: not a readable zip any more ({error})") from None
        with archive:
            for member in chosen:
                target = new.joinpath(*member.parts)
                try:
                    if member.info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _extract(archive, member, target)
                except OSError as error:
                    raise UnpackError(_write_error(error, target, member, tmp, needed)) from None


def unpack(zips: Sequence[str | Path], dest: str | Path, drop: Sequence[str] = ()) -> Path:
    """Extract `zips` into `dest` (via `dest`_tmp), skipping members matching `drop`.

    Args:
        zips: the zips, unpacked in order into the same folder.
        dest: the destination folder; replaced when present, on success only.
        drop: fnmatch patterns of path components whose members are not extracted.

    Returns:
        The destination folder.

    Raises:
        UnpackError: a zip is missing, unreadable or corrupt, holds an unsafe or clashing member,
            `dest` is not a folder, or the disk is full (or another write error).
    """
    dest = Path(dest)
    if dest.name in ("", ".", ".."):
        dest = dest.resolve()
    tmp = dest.with_name(dest.name + "_tmp")
    try:
        check_replaceable(dest, TOOL, "--dest", (MARKER,))
    except FolderError as error:
        raise UnpackError(str(error)) from None
    members = _read_members([Path(z) for z in zips], drop)
    needed = sum(m.info.file_size for m in members if not m.info.is_dir())
    try:
        with staged_folder(dest, TOOL, "--dest", (MARKER,)) as new:
            _fill(members, new, tmp, needed)
            try:  # what was unpacked
                (new / MARKER).write_text(json.dumps([str(z) for z in zips]) + "\n")
            except OSError as error:
                raise UnpackError(
                    _write_error(error, new / MARKER, "(the record)", tmp, 0)
                ) from None
    except FolderError as error:
        raise UnpackError(str(error)) from None
    except OSError as error:
        raise UnpackError(
            f"--dest {dest}: cannot put the unpacked files in place ({error}); {tmp} was removed "
            f"and {dest} left as it was"
        ) from None
    return dest


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments; None: sys.argv.

    Returns:
        The exit status: 0, or 1 with one `error: ...` line on stderr.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zips", nargs="+", help="zip files to unpack, in order")
    parser.add_argument("--dest", required=True, help="destination folder (replaced if present)")
    parser.add_argument(
        "--drop", nargs="*", default=[], help="fnmatch patterns of path components to skip"
    )
    args = parser.parse_args(argv)
    try:
        dest = unpack(args.zips, args.dest, args.drop)
    except UnpackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"unpacked {len(args.zips)} zip(s) into {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
