"""Slice 3D NIfTI volumes into the 2D png/npy folders the training reads (SPEC section 5).

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
   with that spacing (`utils.one_hot2dist`), and sliced like the images;
5. each slice is written as `<volume id>_<aug:02d>_<slice:04d>`: one png per modality (uint8,
   round(255 x in_npy)), `gt/` (png of class indices), `in_npy/` (C x H x W float32),
   `gt_npy/` (H x W uint8), `3d_distmap/` (K x H x W float32), and its [dx, dy, dz] spacing in
   `spacing.json` (`spacing_3d.json` holds each volume's). With `n_augment` N, training slices
   get N more copies (aug 1..N), each a random flip / 90-degree rotation seeded from (seed, stem),
   never the identity, applied to every output alike (the 3D distance map stays exact); quarter
   turns, which swap dx and dy, only for square slices with isotropic in-plane spacing.

Patients are split into train/val by a seeded shuffle (`split.json`) and sliced in parallel.
Everything is written into `DEST_tmp` and moved to `DEST` only when complete; on any error both
are removed, so a failed or interrupted run never leaves a folder Make would take as finished.
Bad input raises `SliceError` with the file named; the command line prints `error: <message>`
and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from skimage.transform import resize
from tqdm import tqdm

from utils import class2one_hot, one_hot2dist

Spacing3D = tuple[float, float, float]


class SliceError(Exception):
    """The source data cannot be sliced; the message names the file and what was expected."""


@dataclass(frozen=True)
class Volume:
    """One 3D volume to slice.

    Attributes:
        vid: volume id, the prefix of its slice stems (`case_4`, `100`, `patient001_01`).
        images: one NIfTI file per modality, in the dataset's modality order.
        label: the NIfTI file of the label volume.
    """

    vid: str
    images: tuple[Path, ...]
    label: Path


# Patient id -> its volumes (one for ISLES and WMH, one per frame for ACDC).
Patients = dict[str, list[Volume]]


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
    """

    name: str
    modalities: tuple[str, ...]
    classes: tuple[int, ...]
    n_classes: int
    find_patients: Callable[[Path], Patients]
    label_map: tuple[tuple[int, int], ...] = ()
    default_retain: int = 10
    retain_aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Settings:
    """What a worker needs to slice a patient (picklable, no callables)."""

    modalities: tuple[str, ...]
    classes: tuple[int, ...]
    n_classes: int
    label_map: tuple[tuple[int, int], ...]
    shape: tuple[int, int]
    seed: int


@dataclass(frozen=True)
class _Job:
    patient: str
    volumes: tuple[Volume, ...]
    split: str  # "train" or "val"
    split_dir: Path
    n_augment: int


@dataclass
class _Result:
    split: str
    spacing: dict[str, list[float]] = field(default_factory=dict)  # slice stem -> [dx, dy, dz]
    spacing_3d: dict[str, list[float]] = field(default_factory=dict)  # volume id -> [dx, dy, dz]


OUTPUT_FOLDERS = ("gt", "in_npy", "gt_npy", "3d_distmap")
SPLITS = ("train", "val")


# ---------------------------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------------------------


def natural_key(name: str) -> tuple:
    """Sort key that orders `case_2` before `case_10`."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is a folder, else raise SliceError saying what was expected there."""
    if not path.is_dir():
        raise SliceError(f"{path}: folder not found (expected {what})")
    return path


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is a file, else raise SliceError naming it and what it should hold."""
    if not path.is_file():
        raise SliceError(f"{path}: file not found (expected {what})")
    return path


def subfolders(folder: Path, pattern: str) -> list[Path]:
    """Sub-folders of `folder` whose whole name matches `pattern`, in natural order."""
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(pattern, p.name)]
    return sorted(found, key=lambda p: natural_key(p.name))


# ---------------------------------------------------------------------------------------------
# Loading and checking volumes
# ---------------------------------------------------------------------------------------------


def load_nifti(path: Path) -> tuple[np.ndarray, Spacing3D]:
    """Load a 3D NIfTI volume.

    Returns:
        The `X Y Z` voxel array (its stored dtype, scaled when the header says so) and the voxel
        spacing (dx, dy, dz) in mm. Trailing axes of length one (`X Y Z 1`) are dropped.

    Raises:
        SliceError: the file is not a readable NIfTI, not 3D, or has a bad spacing.
    """
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
        zooms = tuple(float(z) for z in image.header.get_zooms())
    except Exception as error:  # nibabel, gzip and numpy raise many kinds on corrupt files
        raise SliceError(
            f"{path}: not a readable NIfTI file ({type(error).__name__}: {error})"
        ) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SliceError(f"{path}: expected a 3D volume, got shape {data.shape}")
    spacing = zooms[:3]
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise SliceError(f"{path}: expected three positive voxel sizes, got {zooms}")
    return data, spacing


def check_finite(data: np.ndarray, path: Path) -> None:
    """Raise SliceError when a volume holds NaN or infinite voxels."""
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(np.isinf(data).sum())
        raise SliceError(
            f"{path}: {n_nan} NaN and {n_inf} infinite voxels; expected finite values only"
        )


def normalise(data: np.ndarray, path: Path) -> np.ndarray:
    """Min-max normalise a whole volume to [0, 1] (float64, same shape).

    Raises:
        SliceError: NaN / infinite voxels, or a constant volume (nothing to normalise).
    """
    check_finite(data, path)
    volume = data.astype(np.float64)
    low, high = volume.min(), volume.max()
    if high == low:
        raise SliceError(
            f"{path}: constant volume (every voxel is {low:g}); expected varying intensities "
            "to normalise to [0, 1]"
        )
    return (volume - low) / (high - low)


def _values(values: np.ndarray) -> str:
    """`[3, 0.5]`: numbers as short as they go, for messages."""
    return "[" + ", ".join(f"{v:g}" for v in values.tolist()) + "]"


def to_classes(
    data: np.ndarray, path: Path, classes: Sequence[int], label_map: Iterable[tuple[int, int]]
) -> np.ndarray:
    """Check a label volume and map it to class indices.

    Args:
        data: `X Y Z` label volume, any numeric dtype.
        classes: the values allowed in the file.
        label_map: (value, class) pairs for values that change; others keep their value.

    Returns:
        `X Y Z` uint8 class indices.

    Raises:
        SliceError: non-finite or non-integer values, or values outside `classes`.
    """
    check_finite(data, path)
    if not np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, np.round(data)):
        odd = np.unique(data[data != np.round(data)])[:5]
        raise SliceError(
            f"{path}: label values must be integers (class indices {sorted(classes)}), "
            f"found {_values(odd)}"
        )
    values = np.unique(data)
    outside = values[~np.isin(values, classes)]
    if outside.size:
        raise SliceError(
            f"{path}: label values {_values(outside[:10])} outside the dataset's classes "
            f"{sorted(classes)}"
        )
    table = np.arange(max(classes) + 1, dtype=np.uint8)
    for value, target in label_map:
        table[value] = target
    return table[data.astype(np.int64)]


def resize_images(volume: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize each slice of an `X Y Z` volume to `H W` by linear interpolation -> `H W Z`."""
    if volume.shape[:2] == tuple(shape):
        return volume
    slices = [
        resize(volume[:, :, z], shape, order=1, preserve_range=True, anti_aliasing=False)
        for z in range(volume.shape[2])
    ]
    return np.clip(np.stack(slices, axis=-1), 0, 1)  # no overshoot outside [0, 1]


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize each slice of an `X Y Z` class volume to `H W` by nearest neighbour -> `H W Z`."""
    if labels.shape[:2] == tuple(shape):
        return labels
    slices = [
        resize(labels[:, :, z], shape, order=0, preserve_range=True, anti_aliasing=False)
        for z in range(labels.shape[2])
    ]
    return np.rint(np.stack(slices, axis=-1)).astype(np.uint8)


def resized_spacing(spacing: Spacing3D, old: tuple[int, ...], new: tuple[int, int]) -> Spacing3D:
    """In-plane voxel size after resizing `old` (X, Y, ...) to `new` (H, W): dx x X / H."""
    dx, dy, dz = spacing
    return (dx * old[0] / new[0], dy * old[1] / new[1], dz)


def load_volume(volume: Volume, settings: _Settings) -> tuple[np.ndarray, np.ndarray, Spacing3D]:
    """Load, check, normalise and resize one volume.

    Returns:
        images `C H W Z` float32 in [0, 1], labels `H W Z` uint8 class indices, and the spacing
        (dx, dy, dz) in mm after the resize.

    Raises:
        SliceError: unreadable file, shapes that disagree, NaN / inf, constant image, bad labels.
    """
    images, spacing = [], None
    reference = volume.images[0]
    for path in volume.images:
        data, file_spacing = load_nifti(path)
        spacing = spacing or file_spacing
        if images and data.shape != images[0].shape:
            raise SliceError(
                f"{path}: shape {data.shape} differs from {reference} {images[0].shape}; "
                "expected every modality of a volume on one grid"
            )
        images.append(normalise(data, path))
    labels, _ = load_nifti(volume.label)
    if labels.shape != images[0].shape:
        raise SliceError(
            f"{volume.label}: label shape {labels.shape} differs from {reference} "
            f"{images[0].shape}; expected the label on the image grid"
        )
    labels = to_classes(labels, volume.label, settings.classes, settings.label_map)

    old_shape = images[0].shape
    stack = np.stack([resize_images(image, settings.shape) for image in images])  # C H W Z
    labels = resize_labels(labels, settings.shape)  # H W Z
    return stack.astype(np.float32), labels, resized_spacing(spacing, old_shape, settings.shape)


# ---------------------------------------------------------------------------------------------
# Augmentation: the eight flips and quarter turns of a square grid
# ---------------------------------------------------------------------------------------------


def draw_transform(seed: int, stem: str, quarter_turns: bool) -> tuple[int, bool]:
    """Pick a random non-identity flip / rotation for the augmented slice `stem`.

    The generator is seeded with the string `"<seed>:<stem>"` (hashed by sha512 inside `random`),
    so the draw is the same on every machine and in every worker.

    Args:
        quarter_turns: whether odd quarter turns are allowed. They swap the two in-plane axes, so
            they are only drawn for square slices with isotropic in-plane spacing; otherwise the
            choice is among the flips of either axis and of both (the half turn).

    Returns:
        (quarter turns 0..3, flip the first axis), never the identity.
    """
    turns = (0, 1, 2, 3) if quarter_turns else (0, 2)
    choices = [(k, flip) for k in turns for flip in (False, True)][1:]  # identity excluded
    return random.Random(f"{seed}:{stem}").choice(choices)


def apply_transform(array: np.ndarray, transform: tuple[int, bool]) -> np.ndarray:
    """Flip (axis -2, when asked) then rotate by quarter turns in the plane of the last two axes."""
    turns, flip = transform
    if flip:
        array = np.flip(array, axis=-2)
    return np.ascontiguousarray(np.rot90(array, turns, axes=(-2, -1)))


# ---------------------------------------------------------------------------------------------
# One patient, in a worker
# ---------------------------------------------------------------------------------------------


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path)


def _write_slice(
    split_dir: Path,
    stem: str,
    modalities: Sequence[str],
    image: np.ndarray,
    label: np.ndarray,
    distmap: np.ndarray,
) -> None:
    """Write one slice: image `C H W` float32, label `H W` uint8, distmap `K H W` float32."""
    pngs = np.rint(image.astype(np.float64) * 255).astype(np.uint8)  # C H W
    for name, png in zip(modalities, pngs, strict=True):
        _save_png(png, split_dir / name / f"{stem}.png")
    _save_png(label, split_dir / "gt" / f"{stem}.png")
    np.save(split_dir / "in_npy" / f"{stem}.npy", image)
    np.save(split_dir / "gt_npy" / f"{stem}.npy", label)
    np.save(split_dir / "3d_distmap" / f"{stem}.npy", distmap)


def slice_volume(
    volume: Volume, split_dir: Path, n_augment: int, settings: _Settings, result: _Result
) -> None:
    """Load one volume and write its slices (and augmented copies) under `split_dir`."""
    images, labels, spacing = load_volume(volume, settings)  # C H W Z, H W Z
    one_hot = class2one_hot(torch.from_numpy(labels[None]), settings.n_classes)[0]  # K H W Z
    distmap = one_hot2dist(one_hot, resolution=spacing, dtype=np.float32)  # K H W Z
    dx, dy, dz = spacing
    square = labels.shape[0] == labels.shape[1]
    quarter_turns = square and bool(np.isclose(dx, dy, rtol=1e-5, atol=0))
    result.spacing_3d[volume.vid] = [dx, dy, dz]

    for z in range(labels.shape[-1]):
        outputs = (images[..., z], labels[..., z], distmap[..., z])  # C H W, H W, K H W
        for aug in range(n_augment + 1):
            stem = f"{volume.vid}_{aug:02d}_{z:04d}"
            slice_spacing = [dx, dy, dz]
            image, label, dist = outputs
            if aug > 0:
                transform = draw_transform(settings.seed, stem, quarter_turns)
                image, label, dist = (apply_transform(a, transform) for a in outputs)
                if transform[0] % 2:
                    slice_spacing = [dy, dx, dz]
            _write_slice(split_dir, stem, settings.modalities, image, label, dist)
            result.spacing[stem] = slice_spacing


def slice_patient(job: _Job, settings: _Settings) -> _Result:
    """Slice every volume of one patient; returns its spacing entries."""
    result = _Result(job.split)
    for volume in job.volumes:
        slice_volume(volume, job.split_dir, job.n_augment, settings, result)
    return result


def _init_worker() -> None:
    # One thread per worker process: the pool is the parallelism (and forked OpenMP pools hang).
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# The whole dataset
# ---------------------------------------------------------------------------------------------


def split_patients(patients: Iterable[str], retain: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded train/val split: `random.Random(seed).shuffle` of the sorted ids, val = the first
    `retain` of them, so the same seed gives the same split on any machine.

    Returns:
        (train ids, val ids), each in natural order.

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
    val, train = ids[:retain], ids[retain:]
    return sorted(train, key=natural_key), sorted(val, key=natural_key)


def _check_settings(shape: Sequence[int], n_augment: int, workers: int) -> None:
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise SliceError(f"--shape {list(shape)}: expected two positive sizes, e.g. 256 256")
    if n_augment < 0:
        raise SliceError(f"--n_augment {n_augment}: expected 0 or more copies")
    if workers < 1:
        raise SliceError(f"--workers {workers}: expected at least 1")


def _check_paths(source: Path, dest: Path, tmp: Path) -> None:
    """Refuse a destination (or its _tmp) that holds, or lies inside, the source: both are
    deleted on error."""
    source = source.resolve()
    for target in (dest.resolve(), tmp.resolve()):
        if target == source or target in source.parents or source in target.parents:
            raise SliceError(
                f"--dest_dir {dest} overlaps --source_dir {source} (through {target}); "
                "expected separate folders, since the destination is replaced"
            )


def default_workers() -> int:
    """The number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_jobs(
    jobs: list[_Job], settings: _Settings, workers: int, desc: str, progress: bool
) -> list[_Result]:
    """Slice patients, in a process pool when `workers` > 1, with a progress bar."""
    work = partial(slice_patient, settings=settings)
    bar = tqdm(total=len(jobs), desc=desc, unit="patient", disable=not progress)
    results = []
    with bar:
        if workers == 1:
            for job in jobs:
                results.append(work(job))
                bar.update()
        else:
            with multiprocessing.Pool(workers, initializer=_init_worker) as pool:
                for result in pool.imap_unordered(work, jobs):
                    results.append(result)
                    bar.update()
    return results


def _write_json(data: dict, path: Path) -> None:
    """A JSON object with one key per line, in natural order, and compact values."""
    lines = [f" {json.dumps(k)}: {json.dumps(data[k])}" for k in sorted(data, key=natural_key)]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


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
        source_dir: the unpacked dataset.
        dest_dir: the output folder, replaced when present.
        retain: patients kept for validation (None: the dataset's default).
        seed: seed of the split and of the augmentation.
        n_augment: augmented copies of each training slice.
        shape: in-plane size (H, W) of the slices.
        workers: processes slicing patients in parallel (None: the CPU count).
        progress: show a progress bar.

    Returns:
        The destination folder.

    Raises:
        SliceError: bad arguments or bad input. Nothing is left at `dest_dir` nor
            `dest_dir`_tmp then (nor on any other exception), except when the destination
            overlaps the source: that is refused before anything is touched.
    """
    source, dest = Path(source_dir), Path(dest_dir)
    tmp = dest.with_name(dest.name + "_tmp")
    retain = dataset.default_retain if retain is None else retain
    workers = default_workers() if workers is None else workers
    shape = tuple(int(s) for s in shape)
    _check_paths(source, dest, tmp)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _check_settings(shape, n_augment, workers)
        patients = dataset.find_patients(source)
        if not patients:
            raise SliceError(f"{source}: no {dataset.name} patient found; the folder is empty")
        train, val = split_patients(patients, retain, seed)

        jobs = []
        for split, ids, copies in (("train", train, n_augment), ("val", val, 0)):
            split_dir = tmp / split
            for folder in (*dataset.modalities, *OUTPUT_FOLDERS):
                (split_dir / folder).mkdir(parents=True)
            jobs += [_Job(p, tuple(patients[p]), split, split_dir, copies) for p in ids]

        settings = _Settings(
            dataset.modalities,
            dataset.classes,
            dataset.n_classes,
            dataset.label_map,
            shape,
            seed,
        )
        n_workers = min(workers, len(jobs))
        results = _run_jobs(jobs, settings, n_workers, f"slicing {dataset.name}", progress)

        spacing = {split: {} for split in SPLITS}
        spacing_3d = {}
        for result in results:
            spacing[result.split].update(result.spacing)
            spacing_3d.update(result.spacing_3d)
        for split in SPLITS:
            _write_json(spacing[split], tmp / split / "spacing.json")
        _write_json(spacing_3d, tmp / "spacing_3d.json")
        split_info = {
            "dataset": dataset.name,
            "seed": seed,
            "retain": retain,
            "n_augment": n_augment,
            "shape": list(shape),
            "train": train,
            "val": val,
        }
        _write_json(split_info, tmp / "split.json")

        if dest.exists():
            shutil.rmtree(dest)
        tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser(dataset: Dataset, description: str) -> argparse.ArgumentParser:
    """The original's flags (`--source_dir --dest_dir --retain --seed --n_augment --shape`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source_dir", required=True, help="the unpacked dataset")
    parser.add_argument("--dest_dir", required=True, help="output folder (replaced if present)")
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


def run_cli(dataset: Dataset, description: str, argv: Sequence[str] | None = None) -> int:
    """Parse the command line and slice; `error: <message>` and status 1 on bad input."""
    args = build_parser(dataset, description).parse_args(argv)
    try:
        dest = slice_dataset(
            dataset,
            args.source_dir,
            args.dest_dir,
            retain=args.retain,
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
