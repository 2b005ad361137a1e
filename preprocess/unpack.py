"""Unpack dataset zips safely into one folder, dropping what the recipes do not use.

Usage: python preprocess/unpack.py ZIP [ZIP ...] --dest DIR [--drop PATTERN ...]

- Every member is checked before anything is written: an absolute path, a drive letter, a `..`
  component or a symbolic link (zip-slip) stops the whole unpacking with the zip and the member
  named.
- Members whose path has a component matching a `--drop` pattern (fnmatch, e.g. `__MACOSX`,
  `*CT_4DPWI*`, `orig`, `3DT1.nii.gz`, `*_4d.nii.gz`) are not extracted at all.
- Extraction goes to `DIR_tmp`, which is moved to `DIR` only once every zip is complete; on any
  error `DIR_tmp` is removed, so an interrupted run never leaves a `DIR` that Make would take as
  finished. An existing `DIR` is replaced (`make -B`).
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import stat
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath


class UnpackError(Exception):
    """A zip cannot be unpacked safely."""


def _member_parts(zip_path: Path, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The member's path components, refusing anything that could land outside the target."""
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


def unpack(zips: Sequence[str | Path], dest: str | Path, drop: Sequence[str] = ()) -> Path:
    """Extract `zips` into `dest` (via `dest`_tmp), skipping members matching `drop`.

    Returns:
        The destination folder.

    Raises:
        UnpackError: a zip is missing or unreadable, or holds an unsafe member.
    """
    dest = Path(dest)
    tmp = dest.with_name(dest.name + "_tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for zip_path in map(Path, zips):
            if not zip_path.is_file():
                raise UnpackError(f"{zip_path}: no such zip")
            try:
                archive = zipfile.ZipFile(zip_path)
            except zipfile.BadZipFile as error:
                raise UnpackError(f"{zip_path}: not a readable zip ({error})") from None
            with archive:
                members = [(info, _member_parts(zip_path, info)) for info in archive.infolist()]
                for info, parts in members:
                    if not parts or _dropped(parts, drop):
                        continue
                    target = tmp.joinpath(*parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        with archive.open(info) as source, target.open("wb") as sink:
                            shutil.copyfileobj(source, sink, length=1 << 20)
                    except (zipfile.BadZipFile, OSError, EOFError) as error:
                        raise UnpackError(
                            f"{zip_path}: cannot extract {info.filename!r} ({error})"
                        ) from None
        if dest.exists():
            shutil.rmtree(dest)
        tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def main(argv: list[str] | None = None) -> int:
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
