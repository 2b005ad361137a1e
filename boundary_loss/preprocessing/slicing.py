"""Slice 3D NIfTI volumes into the 2D png/npy folders the training reads.

The shared machinery of `slice_isles.py`, `slice_wmh.py` and `slice_acdc.py`: each of those only
says how its dataset is found on disk (a `Dataset`); everything else happens here, once.

For each volume (a patient for ISLES and WMH, a cardiac frame for ACDC):

1. every modality and the label are loaded and checked: readable NIfTI, 3D, one shape, finite
   voxels, a non-constant image, integer label values in the dataset's classes;
2. each modality is normalised to [0, 1] over the whole 3D volume (min-max), never per slice;
3. slices are taken along the last NIfTI axis (`vol[:, :, z]`, an X x Y image) and resized in-plane
   to `shape` where they are not that size already (images linearly, labels by nearest
   neighbour), the in-plane spacing scaled by old size / new size;
4. the signed distance map of the boundary loss is computed on the whole resized 3D label volume
   with that spacing (`maps.distance.one_hot2dist`), and sliced like the images;
5. each slice is written as `<volume id>_<aug:02d>_<slice:04d>`: one png per modality (uint8,
   round(255 x in_npy)), `gt/` (png of class indices), `in_npy/` (C x H x W float32),
   `gt_npy/` (H x W uint8), `3d_distmap/` (K x H x W float32), and its [dx, dy, dz] spacing in
   `spacing.json` (`spacing_3d.json` holds each volume's). With `n_augment` N, training slices
   get N more copies (aug 1..N), each a random flip / 90-degree rotation seeded from (seed, stem),
   never the identity, applied to every output alike (the 3D distance map stays exact); quarter
   turns, which swap dx and dy, only for square slices with isotropic in-plane spacing.

Steps 1-3 are in `volumes.py`, steps 4-5 in `slices.py`, the process pool in `worker_pool.py`;
this module holds the dataset level and the command line.

Patients are split into train/val by a seeded shuffle (`split.json`) and sliced in parallel.
Everything is written into `DEST_tmp/DEST` and moved to `DEST` only when complete
(`io.atomic.staged_folder`). `DEST_tmp` is the slicer's own, locked while it works (a second slicer
writing the same `DEST` stops with a message): it is removed on any error (bad input, a worker
killed, a full disk, Ctrl-C), and it is the only thing removed then, so a failed or interrupted
run leaves no folder Make would take as finished and never deletes anything else. `DEST` itself is
only replaced when it is an earlier output of a slicer (marked by `.written_by.json`, or holding
`split.json`) or an empty folder; anything else there, or a `DEST_tmp` that is not the slicer's,
is refused before any work. Bad input raises `SliceError` with the file named; the command line
prints `error: <message>` and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from boundary_loss.io.atomic import FolderError, check_replaceable, staged_folder
from boundary_loss.io.console import ArgumentParser
from boundary_loss.preprocessing.slices import (
    OUTPUT_FOLDERS,
    PatientJob,
    SliceSettings,
    write_bytes,
    writing,
)
from boundary_loss.preprocessing.volumes import Geometry, Patients, SliceError, Volume, natural_key
from boundary_loss.preprocessing.worker_pool import default_workers, run_jobs

# The name in the marker of a sliced folder (any slicer may replace another's output), and the
# record file of the slicers' outputs made before the marker existed.
TOOL, LEGACY = "slicer", ("split.json",)

# The folds of `seeded_folds` (a dataset without splits_final.json), as nnU-Net's five.
SEEDED_FOLDS = 5

# Re-exported: `slice_dataset` raises SliceError, and a Dataset's `find_patients` returns Volumes.
__all__ = [
    "SEEDED_FOLDS",
    "Dataset",
    "Patients",
    "SliceError",
    "Volume",
    "build_parser",
    "run_cli",
    "seeded_folds",
    "slice_dataset",
    "split_patients",
]


@dataclass(frozen=True)
class Dataset:
    """What differs between datasets: how volumes are found, their classes, and the defaults.

    Attributes:
        name: shown in messages and the progress bar.
        modalities: png folder names, in the channel order of `in_npy`.
        classes: label values allowed in the source files.
        n_classes: K, the classes after `label_map`.
        find_patients: source folder -> patients; raises SliceError on missing files.
        label_map: (source value, class) pairs for values that change (WMH: 2 -> 0).
        default_retain: number of patients kept for validation by default.
        retain_aliases: extra spellings of `--retain` on the command line.
        split: (patients, retain, seed) -> (train ids, val ids, entries for split.json); None:
            the seeded split of `split_patients`.
        plan: (patients, train ids) -> (the slicing geometry, extra JSON files to write as
            {name: content}), for datasets whose slicing depends on the training set (nnU-Net's
            CT normalisation); None: the default geometry and no extra file.
    """

    name: str
    modalities: tuple[str, ...]
    classes: tuple[int, ...]
    n_classes: int
    find_patients: Callable[[Path], Patients]
    label_map: tuple[tuple[int, int], ...] = ()
    default_retain: int = 10
    retain_aliases: tuple[str, ...] = ()
    split: Callable[[Patients, int, int], tuple[list[str], list[str], dict]] | None = None
    plan: Callable[[Patients, list[str]], tuple[Geometry, dict[str, object]]] | None = None


SPLITS = ("train", "val")


# ---------------------------------------------------------------------------------------------
# The whole dataset
# ---------------------------------------------------------------------------------------------


def _shuffled(patients: Iterable[str], retain: int, seed: int) -> list[str]:
    """The ids sorted, then shuffled by `random.Random(seed)`: the order the seeded split and
    the seeded folds cut, the same on any machine.

    Raises:
        SliceError: `retain` not in 1 .. number of patients - 1.
    """
    ids = sorted(patients)
    if not 1 <= retain < len(ids):
        raise SliceError(
            f"--retain {retain}: expected at least 1 and fewer than the {len(ids)} patients "
            "found, so that both splits hold patients"
        )
    random.Random(seed).shuffle(ids)
    return ids


def split_patients(patients: Iterable[str], retain: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded train/val split: `random.Random(seed).shuffle` of the sorted ids, val = the first
    `retain` of them, so the same seed gives the same split on any machine.

    Returns:
        (train ids, val ids), each in natural order.

    Raises:
        SliceError: `retain` not in 1 .. number of patients - 1.
    """
    ids = _shuffled(patients, retain, seed)
    val, train = ids[:retain], ids[retain:]
    return sorted(train, key=natural_key), sorted(val, key=natural_key)


def seeded_folds(
    patients: Iterable[str], retain: int, seed: int, n_folds: int = SEEDED_FOLDS
) -> list[list[str]]:
    """The validation cases of each of `n_folds` seeded folds, cut from `split_patients`' shuffle.

    The ids are sorted and shuffled with `random.Random(seed)` exactly as `split_patients` does;
    fold 0 validates the first `retain` of them (so its split is `split_patients`' split), and
    the other `n_folds - 1` folds validate the rest, cut in the shuffled order into consecutive
    parts whose sizes differ by at most one, the larger parts first (17 ids, retain 3: 3, then
    4, 4, 3, 3). Every id is validated in exactly one fold; a fold trains on all the others.

    Returns:
        one list of validation ids per fold, each in natural order.

    Raises:
        SliceError: `retain` not in 1 .. number of patients - 1; fewer patients than folds, or
            a `retain` leaving fewer than `n_folds - 1` to the other folds (each fold needs a
            validation patient).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds {n_folds}: expected at least 2")
    ids = _shuffled(patients, retain, seed)  # as `split_patients` shuffles and refuses
    rest = len(ids) - retain
    if len(ids) < n_folds:
        raise SliceError(
            f"{len(ids)} patients cannot fill {n_folds} folds, which need one validation "
            f"patient each; expected at least {n_folds} patients"
        )
    if rest < n_folds - 1:
        raise SliceError(
            f"--retain {retain}: leaves {rest} of the {len(ids)} patients to folds 1 .. "
            f"{n_folds - 1}, which need one validation patient each; expected at most "
            f"{len(ids) - n_folds + 1}"
        )
    folds, start = [ids[:retain]], retain
    for k in range(n_folds - 1):
        size = rest // (n_folds - 1) + (k < rest % (n_folds - 1))
        folds.append(ids[start : start + size])
        start += size
    return [sorted(fold, key=natural_key) for fold in folds]


def _check_settings(shape: Sequence[int], n_augment: int, workers: int) -> None:
    """Refuse a slice shape, a number of copies or of workers that cannot be used.

    Raises:
        SliceError: naming the flag and what it expects.
    """
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise SliceError(f"--shape {list(shape)}: expected two positive sizes, e.g. 256 256")
    if n_augment < 0:
        raise SliceError(f"--n_augment {n_augment}: expected 0 or more copies")
    if workers < 1:
        raise SliceError(f"--workers {workers}: expected at least 1")


def _check_paths(source: Path, dest: Path, tmp: Path) -> None:
    """Refuse a destination (or its _tmp) that holds, or lies inside, the source.

    Raises:
        SliceError: `dest` or `tmp` overlaps `source`: replacing `dest`, or removing `tmp` on
            error, would delete source files.
    """
    source = source.resolve()
    for target in (dest.resolve(), tmp.resolve()):
        if target == source or target in source.parents or source in target.parents:
            raise SliceError(
                f"--dest_dir {dest} overlaps --source_dir {source} (through {target}); "
                "expected separate folders, since the destination is replaced"
            )


def _check_dest(dest: Path) -> None:
    """Refuse to replace a `dest` that is not an earlier output of a slicer.

    A missing `dest`, an empty folder, or a folder marked as a slicer's (`io.atomic.MARKER`, or
    `split.json` for outputs made before the marker) may be replaced; anything else might be
    someone's work and is left alone.

    Raises:
        SliceError: `dest` is a file, a link, or a non-empty folder that is not a slicer's.
    """
    try:
        check_replaceable(dest, TOOL, "--dest_dir", LEGACY)
    except FolderError as error:
        raise SliceError(str(error)) from None


def _write_json(data: dict, path: Path) -> None:
    """Write a JSON object with one key per line, in natural order, and compact values.

    Raises:
        SliceError: the disk is full.
    """
    lines = [f" {json.dumps(k)}: {json.dumps(data[k])}" for k in sorted(data, key=natural_key)]
    write_bytes(path, ("{\n" + ",\n".join(lines) + "\n}\n").encode())


def slice_dataset(
    dataset: Dataset,
    source_dir: str | Path,
    dest_dir: str | Path,
    *,
    retain: int | None = None,
    seed: int = 0,
    n_augment: int = 0,
    shape: Sequence[int] = (256, 256),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Slice a dataset's unpacked source folder into `dest_dir` (built in `dest_dir`_tmp).

    Args:
        dataset: how the dataset is found and labelled.
        source_dir: the unpacked dataset, in one of the forms its `find_patients` accepts
            (the unpacked zips, or the folder holding the patient folders directly).
        dest_dir: the output folder: a new name, an empty folder, or an earlier output of a
            slicer, which is replaced once the new one is complete.
        retain: patients kept for validation (None: the dataset's default).
        seed: seed of the split and of the augmentation.
        n_augment: augmented copies of each training slice.
        shape: in-plane size (H, W) of the slices.
        workers: processes slicing patients in parallel (None: the CPU count).
        progress: show a progress bar.

    Returns:
        The destination folder.

    Raises:
        SliceError: bad arguments, bad input, a full disk, or a pool worker that died. Bad
            arguments, a destination that overlaps the source and a destination that is not
            an earlier output are refused before anything is touched. Otherwise, on this or
            any other exception, `dest_dir`_tmp (the slicer's own) is removed and nothing
            else: `dest_dir` is left as it was.
    """
    source, dest = Path(source_dir), Path(dest_dir)
    if dest.name in ("", ".."):  # `.`, `..`: name the folder, for its `_tmp` sibling
        dest = dest.resolve()
    tmp = dest.with_name(dest.name + "_tmp")
    retain = dataset.default_retain if retain is None else retain
    workers = default_workers() if workers is None else workers
    shape = tuple(int(s) for s in shape)
    _check_settings(shape, n_augment, workers)
    _check_paths(source, dest, tmp)
    _check_dest(dest)
    try:
        with staged_folder(dest, TOOL, "--dest_dir", LEGACY) as build:
            _slice_into(
                build, dataset, source, dest, retain, seed, n_augment, shape, workers, progress
            )
    except FolderError as error:
        raise SliceError(str(error)) from None
    return dest


def _slice_into(
    build: Path,
    dataset: Dataset,
    source: Path,
    dest: Path,
    retain: int,
    seed: int,
    n_augment: int,
    shape: tuple[int, ...],
    workers: int,
    progress: bool,
) -> None:
    """Slice every patient of `source` into the empty folder `build` (see `slice_dataset`)."""
    patients = dataset.find_patients(source)
    if not patients:
        raise SliceError(f"{source}: no {dataset.name} patient found; the folder is empty")
    split_entries: dict = {}
    if dataset.split is None:
        train, val = split_patients(patients, retain, seed)
    else:
        train, val, split_entries = dataset.split(patients, retain, seed)
    geometry, extra_files = Geometry(), {}
    if dataset.plan is not None:
        geometry, extra_files = dataset.plan(patients, train)

    jobs = []
    for split, ids, copies in (("train", train, n_augment), ("val", val, 0)):
        split_dir = build / split
        for folder in (*dataset.modalities, *OUTPUT_FOLDERS):
            with writing(split_dir / folder):
                (split_dir / folder).mkdir(parents=True)
        jobs += [PatientJob(p, tuple(patients[p]), split, split_dir, copies) for p in ids]

    settings = SliceSettings(
        dataset.modalities,
        dataset.classes,
        dataset.n_classes,
        dataset.label_map,
        shape,
        seed,
        geometry,
    )
    n_workers = min(workers, len(jobs))
    desc = f"slicing {dataset.name}"
    results = run_jobs(jobs, settings, n_workers, desc, progress, dest)

    spacing = {split: {} for split in SPLITS}
    spacing_3d = {}
    for result in results:
        spacing[result.split].update(result.spacing)
        spacing_3d.update(result.spacing_3d)
    for split in SPLITS:
        _write_json(spacing[split], build / split / "spacing.json")
    _write_json(spacing_3d, build / "spacing_3d.json")
    for name, content in extra_files.items():
        write_bytes(build / name, (json.dumps(content, indent=1) + "\n").encode())
    split_info = {
        "dataset": dataset.name,
        "seed": seed,
        "retain": len(val) if dataset.split else retain,
        "n_augment": n_augment,
        "shape": list(shape),
        "train": train,
        "val": val,
        **split_entries,
    }
    _write_json(split_info, build / "split.json")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser(dataset: Dataset, description: str) -> argparse.ArgumentParser:
    """The original's flags (`--source_dir --dest_dir --retain --seed --n_augment --shape`)."""
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--source_dir",
        required=True,
        help="the unpacked dataset, or the folder holding its patient folders",
    )
    parser.add_argument(
        "--dest_dir", required=True, help="output folder (an earlier output is replaced)"
    )
    parser.add_argument(
        "--retain",
        *(f"--{alias}" for alias in dataset.retain_aliases),
        dest="retain",
        type=int,
        default=dataset.default_retain,
        help=f"patients kept for validation (default {dataset.default_retain})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and augmentation")
    parser.add_argument(
        "--n_augment", type=int, default=0, help="augmented copies of each training slice"
    )
    parser.add_argument(
        "--shape", type=int, nargs=2, default=[256, 256], metavar=("H", "W"), help="slice size"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="patients sliced in parallel (default: the CPU count)",
    )
    return parser


def run_cli(
    dataset: Dataset,
    description: str,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    build: Callable[[argparse.Namespace], tuple[Dataset, int]] | None = None,
) -> int:
    """Parse the command line and slice; `error: <message>` and status 1 on bad input.

    Args:
        dataset: the dataset (its defaults shape the command line).
        description: the command line's description.
        argv: the arguments (None: sys.argv).
        add_arguments: adds a slicer's own flags to the parser.
        build: parsed arguments -> (the dataset, patients kept for validation), for a dataset
            known only once its source is read (SliceError on bad input); None: `dataset` and
            `--retain`.
    """
    parser = build_parser(dataset, description)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        retain = args.retain
        if build is not None:
            dataset, retain = build(args)
        dest = slice_dataset(
            dataset,
            args.source_dir,
            args.dest_dir,
            retain=retain,
            seed=args.seed,
            n_augment=args.n_augment,
            shape=args.shape,
            workers=args.workers,
        )
    except SliceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: nothing written at {args.dest_dir}", file=sys.stderr)
        return 130
    print(f"sliced {dataset.name} into {dest}")
    return 0
