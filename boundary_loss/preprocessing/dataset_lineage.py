"""Pin a dataset folder's files in a lineage file on first use; check them on every later use.

Usage: python preprocess/dataset_lineage.py DATASET LINEAGE [--repin] [--stamp FILE] [--status]

For an nnU-Net v2 or Decathlon dataset folder (preprocess/nnunet_format.py), the files the
pipeline reads are dataset.json, splits_final.json when present, and every image and label file
of the training and test cases.

- No LINEAGE yet (or `--repin`): their md5 sums are written to LINEAGE, in the format of the
  project's other lineage files (`md5  path`, paths relative to DATASET, as `md5sum` writes them),
  so that the results built from the data can be traced to these exact bytes.
- LINEAGE exists: every file it lists is checked first (dataset.json before it is even parsed),
  then the files the dataset now has are compared with it. A changed, missing or added file stops
  with its name and what to do: restore the data, or pin it again knowingly (`--repin`, or
  `REPIN=1` with make), which also rebuilds everything made from it.

`--stamp FILE` writes the md5 of the sums LINEAGE pins into FILE when it differs from what FILE
holds, and leaves FILE untouched otherwise: Make rebuilds the slices when the pinned data
changes, and not when the check merely ran again. `--status` prints nothing: the exit status
alone tells.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from boundary_loss.io.atomic import write_text_atomic
from boundary_loss.preprocessing.nnunet_format import read_dataset
from boundary_loss.preprocessing.verify_lineage import LineageError, md5sum, read_lineage
from boundary_loss.preprocessing.volumes import SliceError


def dataset_files(dataset: Path) -> list[str]:
    """The files the pipeline reads in `dataset`, relative to it, sorted."""
    description = read_dataset(dataset)
    return sorted(path.relative_to(dataset).as_posix() for path in description.files())


# Where a dataset's files live: an added file is looked for there, before dataset.json is read.
FOLDERS = ("imagesTr", "labelsTr", "imagesTs")


def present_files(dataset: Path) -> set[str]:
    """The files in the dataset's image and label folders, dataset.json and splits_final.json
    (other files beside them, such as a README or notes, are not read and not checked)."""
    found = {n for n in ("dataset.json", "splits_final.json") if (dataset / n).is_file()}
    for folder in FOLDERS:
        if (dataset / folder).is_dir():
            found |= {
                f"{folder}/{p.name}"
                for p in (dataset / folder).iterdir()
                if p.is_file() and not p.name.startswith(".")
            }
    return found


def pin(dataset: Path, lineage: Path) -> int:
    """Write the md5 of every file read in `dataset` to `lineage`; returns their number."""
    files = dataset_files(dataset)
    lines = [
        f"# {dataset.name}: the files this pipeline reads, pinned on first use.",
        f"# place: {dataset}",
        "# checked with: python preprocess/dataset_lineage.py DATASET LINEAGE (before any rebuild)",
        *(f"{md5sum(dataset / name)}  {name}" for name in files),
    ]
    lineage.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(lineage, "\n".join(lines) + "\n")
    return len(files)


def check(dataset: Path, lineage_path: Path) -> int:
    """Check `dataset` against `lineage_path`; returns the number of files checked.

    Raises:
        LineageError: a pinned file is missing or changed, or a file was added.
    """
    lineage = read_lineage(lineage_path)
    again = "restore the data as it was pinned, or pin it again with --repin (REPIN=1 with make)"
    for name, expected in lineage.sums.items():
        path = dataset / name
        if not path.is_file():
            raise LineageError(f"{path}: missing, but pinned in {lineage_path}; {again}")
        found = md5sum(path)
        if found != expected:
            raise LineageError(
                f"{path}: changed since it was pinned in {lineage_path} (md5 {expected}, now "
                f"{found}); the results built from it would not match it: {again}"
            )
    added = sorted(present_files(dataset) - set(lineage.sums))
    if added:
        raise LineageError(
            f"{dataset / added[0]}: added since the dataset was pinned in {lineage_path} "
            f"({len(added)} new file{'s' if len(added) > 1 else ''}); {again}"
        )
    dataset_files(dataset)  # the pinned files still make a dataset this pipeline reads
    return len(lineage.sums)


def write_stamp(stamp: Path, lineage: Path) -> None:
    """Write the md5 of the sums `lineage` pins into `stamp`, only when `stamp` holds another
    value: its comments (the path the dataset was pinned from) do not count."""
    sums = read_lineage(lineage).sums
    listing = "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    digest = hashlib.md5(listing.encode()).hexdigest() + "\n"
    if not stamp.is_file() or stamp.read_text() != digest:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(stamp, digest)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; 0 when the data matches (or was pinned), 1 with one `error:` line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="the dataset folder (holding dataset.json)")
    parser.add_argument("lineage", type=Path, help="the lineage file (written on first use)")
    parser.add_argument("--repin", action="store_true", help="pin the data again as it is now")
    parser.add_argument("--stamp", type=Path, help="file receiving the lineage's md5 on change")
    parser.add_argument("--status", action="store_true", help="print nothing; the status tells")
    args = parser.parse_args(argv)
    try:
        if args.repin or not args.lineage.exists():
            count = pin(args.dataset, args.lineage)
            message = f"pinned {count} files of {args.dataset} in {args.lineage}"
        else:
            count = check(args.dataset, args.lineage)
            message = f"{args.dataset}: {count} files match {args.lineage}"
        if args.stamp is not None:
            write_stamp(args.stamp, args.lineage)
    except (LineageError, SliceError, OSError) as error:
        if not args.status:
            print(f"error: {error}", file=sys.stderr)
        return 1
    if not args.status:
        print(message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
