"""Check dataset zips against a lineage file, in the spirit of `md5sum -c`.

A lineage file (lineage/*.lineage) holds `md5  file name` lines, as md5sum writes them, and
comment lines; `# source:`, `# place:` and `# generate:` comments say where the data comes from,
where it goes and how to make it, and are quoted when a file is missing.

Usage: python preprocess/verify_lineage.py [--status] LINEAGE DATA_DIR

Prints `DATA_DIR/name: OK` per file, as md5sum -c does. On a missing file or a wrong sum, prints
one message naming the file (and the expected and found sums, or where to get it) on stderr and
exits with status 1, so that nothing downstream is unpacked. A wrong sum says what to do: delete
the file and download it again from the lineage's source (real data), or generate it again with
the lineage's `# generate:` command (stand-in data; the dataset makefiles do that themselves for
DATA=synthetic). With `--status` nothing is printed: the exit status alone tells, as with
`md5sum -c --status`.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(r"^(?P<md5>[0-9a-f]{32}) [ *](?P<name>\S.*)$")


# The stand-ins of dataset.make, by lineage name: the make command that generates them.
STAND_INS = {
    "nnunet-synthetic": "dataset.make DATA=synthetic",
    "msd-synthetic": "dataset.make DATA=synthetic-msd",
}


class LineageError(Exception):
    """A dataset file is missing or does not match its lineage."""


@dataclass
class Lineage:
    """The parsed lineage file: expected sums and the provenance comments."""

    path: Path
    sums: dict[str, str] = field(default_factory=dict)  # file name -> md5
    notes: dict[str, str] = field(default_factory=dict)  # source / place / generate -> text


def read_lineage(path: str | Path) -> Lineage:
    """Parse a lineage file.

    Raises:
        LineageError: the file is missing, a line is neither a comment nor `md5  name`, or it
            lists no file.
    """
    path = Path(path)
    if not path.is_file():
        raise LineageError(f"{path}: lineage file not found")
    lineage = Lineage(path)
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, sep, value = line[1:].strip().partition(":")
            if sep and key.strip() in ("source", "place", "generate"):
                lineage.notes[key.strip()] = value.strip()
            continue
        match = LINE.match(line)
        if match is None:
            raise LineageError(f"{path}:{number}: expected 'md5  file name', got {raw!r}")
        lineage.sums[match["name"]] = match["md5"]
    if not lineage.sums:
        raise LineageError(f"{path}: lists no file")
    return lineage


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """md5 hex digest of a file, read in chunks (the real zips are several GB)."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _where_to_get(lineage: Lineage) -> str:
    notes = lineage.notes
    parts = []
    if "source" in notes:
        parts.append(f"Get it from {notes['source']}")
    if "place" in notes:
        parts.append(notes["place"])
    if "generate" in notes:
        parts.append(f"Generate it with: {notes['generate']}")
    dataset = lineage.path.name.split(".")[0]
    if "-synthetic" not in dataset:
        parts.append(
            f"Without the real data, run the same pipeline on generated stand-in data: "
            f"make -f {dataset}.make DATA=synthetic"
        )
    sentences = [p.strip().rstrip(".") for p in parts]
    return ". ".join(s[:1].upper() + s[1:] for s in sentences) + "."


def _how_to_replace(lineage: Lineage, path: Path) -> str:
    """What to do with a file that fails its md5 check, from the lineage's notes."""
    notes = lineage.notes
    if "generate" in notes:
        dataset = lineage.path.name.split(".")[0]
        make = STAND_INS.get(dataset)
        if make is None:
            make = dataset.replace("-synthetic-full", ".make DATA=synthetic-full")
            make = make.replace("-synthetic", ".make DATA=synthetic")
        return (
            f"Delete {path} and generate it again: {notes['generate']} (make -f {make} does it "
            "for you). A freshly generated file that still fails was compressed by another zlib "
            "(zlib-ng): see preprocess/synthetic.py."
        )
    source = notes.get("source", "the dataset's source")
    return f"Delete {path} and download it again, under the same name, from {source.rstrip('.')}."


def verify(lineage_path: str | Path, data_dir: str | Path, quiet: bool = False) -> list[Path]:
    """Check every file listed in the lineage file against its md5 sum.

    Args:
        lineage_path: the lineage file.
        data_dir: the folder holding the files it lists.
        quiet: print nothing (not even the `: OK` lines).

    Returns:
        The checked paths, in the lineage file's order.

    Raises:
        LineageError: a file is missing (the message says where to get it), unreadable, or its
            sum differs (the message names the file, the expected and the found sum, and what to
            do).
    """
    lineage = read_lineage(lineage_path)
    data_dir = Path(data_dir)
    checked = []
    for name, expected in lineage.sums.items():
        path = data_dir / name
        if not path.is_file():
            raise LineageError(f"{path}: missing. {_where_to_get(lineage)}")
        try:
            found = md5sum(path)
        except OSError as error:
            raise LineageError(f"{path}: cannot be read ({error})") from None
        if found != expected:
            raise LineageError(
                f"{path}: FAILED md5 check against {lineage.path}: expected {expected}, found "
                f"{found}. The file is corrupt, truncated or another version; nothing was "
                f"unpacked. {_how_to_replace(lineage, path)}"
            )
        if not quiet:
            print(f"{path}: OK", flush=True)
        checked.append(path)
    return checked


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments; None: sys.argv.

    Returns:
        The exit status: 0 when every file matches, else 1 (with one `error: ...` line on stderr
        unless `--status`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lineage", help="lineage file, e.g. lineage/isles.lineage")
    parser.add_argument("data_dir", help="folder holding the zips, e.g. data")
    parser.add_argument(
        "--status", action="store_true", help="print nothing: the exit status alone tells"
    )
    args = parser.parse_args(argv)
    try:
        verify(args.lineage, args.data_dir, quiet=args.status)
    except LineageError as error:
        if not args.status:
            print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
