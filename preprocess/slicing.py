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
Everything is written into `DEST_tmp` and moved to `DEST` only when complete. `DEST_tmp` is the
slicer's own: it is removed on any error (bad input, a worker killed, a full disk, Ctrl-C), and it
is the only thing removed then, so a failed or interrupted run leaves no folder Make would take as
finished and never deletes anything else. `DEST` itself is only replaced when it is an earlier
output of the slicer (it holds `split.json`) or an empty folder; anything else there is refused
before any work. Bad input raises `SliceError` with the file named; the command line prints
`error: <message>` and exits with status 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import connection
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from skimage.transform import resize
from tqdm import tqdm

from atomic import DISK_FULL
from console import ArgumentParser
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


def load_nifti(path: Path) -> tuple[np.ndarray, Spacing3D, np.ndarray]:
    """Load a 3D NIfTI volume.

    Args:
        path: the `.nii` or `.nii.gz` file.

    Returns:
        The `X Y Z` voxel array (its stored dtype, scaled when the header says so), the voxel
        spacing (dx, dy, dz) in mm, and the 4 x 4 voxel-to-world affine (nibabel's best one:
        sform, else qform, else the spacing alone). Trailing axes of length one (`X Y Z 1`) are
        dropped.

    Raises:
        SliceError: the file is not a readable NIfTI, not 3D, or has a bad spacing.
    """
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
        zooms = tuple(float(z) for z in image.header.get_zooms())
        affine = np.asarray(image.affine, dtype=np.float64)
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
    return data, spacing, affine


# Two files of one volume are on one grid when their voxel sizes agree to these tolerances (mm;
# nibabel stores them as float32) and their affines to AFFINE_ATOL mm in every entry.
SPACING_RTOL, SPACING_ATOL = 1e-4, 1e-5
AFFINE_ATOL = 1e-3


def _affine(affine: np.ndarray) -> str:
    """The three top rows of an affine, `[[0.9, 0, 0, -115], ...]`, for messages."""
    return "[" + ", ".join(_values(row) for row in affine[:3]) + "]"


def check_same_grid(
    path: Path,
    spacing: Spacing3D,
    affine: np.ndarray,
    reference: Path,
    reference_spacing: Spacing3D,
    reference_affine: np.ndarray,
) -> None:
    """Check that a modality or label file lies on the grid of the volume's first modality.

    The spacings must agree within a relative tolerance of 1e-4 plus 1e-5 mm (float32 headers
    of one grid agree far better; a real difference, such as 0.9 against 0.94 mm, is refused),
    and every entry of the affines within 1e-3 mm (the same voxels in the same place).

    Args:
        path: the file checked.
        spacing: its voxel spacing (dx, dy, dz) in mm.
        affine: its 4 x 4 voxel-to-world affine.
        reference: the volume's first modality.
        reference_spacing: the spacing of `reference`.
        reference_affine: the affine of `reference`.

    Raises:
        SliceError: the spacings or the affines differ, naming both files and both values.
    """
    if not np.allclose(spacing, reference_spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
        raise SliceError(
            f"{path}: voxel spacing {_values(np.array(spacing))} mm differs from {reference} "
            f"{_values(np.array(reference_spacing))} mm; expected every modality and the label "
            "of a volume on one grid"
        )
    if not np.allclose(affine, reference_affine, rtol=0, atol=AFFINE_ATOL):
        gap = float(np.nanmax(np.abs(affine - reference_affine)))
        raise SliceError(
            f"{path}: affine {_affine(affine)} differs from {reference} "
            f"{_affine(reference_affine)} (by up to {gap:.4g} mm, more than {AFFINE_ATOL:g}); "
            "expected every modality and the label of a volume on one grid"
        )


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
        SliceError: unreadable file, shapes, spacings or affines that disagree between the
            modalities and the label (see `check_same_grid`), NaN / inf, constant image, bad
            labels.
    """
    images: list[np.ndarray] = []
    reference = volume.images[0]
    spacing: Spacing3D = (1.0, 1.0, 1.0)  # the first modality's, set below
    affine = np.eye(4)
    for path in volume.images:
        data, file_spacing, file_affine = load_nifti(path)
        if images:
            if data.shape != images[0].shape:
                raise SliceError(
                    f"{path}: shape {data.shape} differs from {reference} {images[0].shape}; "
                    "expected every modality of a volume on one grid"
                )
            check_same_grid(path, file_spacing, file_affine, reference, spacing, affine)
        else:
            spacing, affine = file_spacing, file_affine
        images.append(normalise(data, path))
    labels, label_spacing, label_affine = load_nifti(volume.label)
    if labels.shape != images[0].shape:
        raise SliceError(
            f"{volume.label}: label shape {labels.shape} differs from {reference} "
            f"{images[0].shape}; expected the label on the image grid"
        )
    check_same_grid(volume.label, label_spacing, label_affine, reference, spacing, affine)
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


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT, EFBIG) while writing `path` into a SliceError.

    Args:
        path: the file or folder being written, named in the message.

    Raises:
        SliceError: the write inside the block failed for want of room; other errors pass.
    """
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        raise SliceError(
            f"{path}: cannot be written, {DISK_FULL[error.errno]} ({os.strerror(error.errno)}); "
            "free some space there or choose another --dest_dir"
        ) from None


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file, a full disk raising SliceError (see `writing`)."""
    with writing(path), open(path, "wb") as handle:
        handle.write(data)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    # Encoded in memory and written by Python: np.save to a file reports a full disk without
    # its errno ("8192 requested and 5088 written"). The bytes are those np.save writes.
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _write_slice(
    split_dir: Path,
    stem: str,
    modalities: Sequence[str],
    image: np.ndarray,
    label: np.ndarray,
    distmap: np.ndarray,
) -> None:
    """Write one slice: image `C H W` float32, label `H W` uint8, distmap `K H W` float32.

    Raises:
        SliceError: the disk is full, naming the file that could not be written.
    """
    pngs = np.rint(image.astype(np.float64) * 255).astype(np.uint8)  # C H W
    for name, png in zip(modalities, pngs, strict=True):
        write_bytes(split_dir / name / f"{stem}.png", _png_bytes(png))
    write_bytes(split_dir / "gt" / f"{stem}.png", _png_bytes(label))
    write_bytes(split_dir / "in_npy" / f"{stem}.npy", _npy_bytes(image))
    write_bytes(split_dir / "gt_npy" / f"{stem}.npy", _npy_bytes(label))
    write_bytes(split_dir / "3d_distmap" / f"{stem}.npy", _npy_bytes(distmap))


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
    """Set up a pool worker: one torch thread, and Ctrl-C left to the parent.

    One thread per worker process: the pool is the parallelism (and forked OpenMP pools hang).
    Ctrl-C reaches every process of the terminal; the parent stops the workers and cleans up,
    so a worker ignores it instead of dying with a traceback of its own.
    """
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    """Refuse to replace a `dest` that is not an earlier output of the slicer.

    A missing `dest`, an empty folder, or a folder holding `split.json` (written last by the
    slicer) may be replaced; anything else might be someone's work and is left alone.

    Raises:
        SliceError: `dest` is a file, a link, or a non-empty folder without `split.json`.
    """
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise SliceError(
            f"--dest_dir {dest}: exists and is not a folder; expected a new name or an earlier "
            "output of this slicer, which is replaced"
        )
    if dest.is_dir() and not (dest / "split.json").is_file() and any(dest.iterdir()):
        raise SliceError(
            f"--dest_dir {dest}: a non-empty folder without split.json, so not an earlier output "
            "of this slicer; it is not replaced: move it away or choose another --dest_dir"
        )


def _remove_tmp(tmp: Path) -> None:
    """Remove the slicer's own `DEST_tmp` (a folder, or a stray file or link of that name)."""
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    elif tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)


def default_workers() -> int:
    """The number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stop_workers(executor: ProcessPoolExecutor, timeout: float = 10.0) -> None:
    """Terminate the pool's worker processes now and wait until they have exited.

    Waiting matters: the caller then removes the temporary folder, which a worker still
    finishing a write would fill again. One that outlives SIGTERM by `timeout` seconds is killed.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    sentinels = {}
    for process in processes:
        if process.is_alive():
            process.terminate()
            sentinels[process.sentinel] = process
    deadline = time.monotonic() + timeout
    while sentinels and time.monotonic() < deadline:
        for sentinel in connection.wait(list(sentinels), deadline - time.monotonic()):
            del sentinels[sentinel]
    for process in sentinels.values():
        process.kill()


def _run_pool(
    jobs: list[_Job], settings: _Settings, workers: int, dest: Path, done: Callable[[], None]
) -> list[_Result]:
    """Slice patients in `workers` processes, one patient in flight per worker.

    Keeping no more patients in flight than workers means a worker's death names the patients
    it may have been slicing; the first error cancels what is not yet started and terminates
    the workers, so nothing keeps writing into the temporary folder.

    Args:
        jobs: the patients to slice.
        settings: what a worker needs to slice them.
        workers: the number of processes.
        dest: the destination, named when a worker dies.
        done: called once per sliced patient (the progress bar).

    Returns:
        The results of the jobs, in the order they finish.

    Raises:
        SliceError: a worker raised it, or a worker died (killed by the out-of-memory killer,
            for instance).
    """
    executor = ProcessPoolExecutor(workers, initializer=_init_worker)
    queue = iter(jobs)
    running: dict[Future, _Job] = {}
    results = []

    def submit_next() -> None:
        job = next(queue, None)
        if job is not None:
            running[executor.submit(slice_patient, job, settings)] = job

    failed = True
    try:
        try:
            for _ in range(workers):
                submit_next()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    results.append(future.result())  # a worker's SliceError is raised here
                    del running[future]
                    done()
                    submit_next()
        except BrokenProcessPool:
            patients = sorted((job.patient for job in running.values()), key=natural_key)
            when = f"while slicing patient {' or '.join(patients)}" if patients else "while idle"
            raise SliceError(
                f"a slicing worker died (killed, e.g. by the out-of-memory killer?) {when}; "
                f"nothing was written at {dest}; try fewer --workers"
            ) from None
        failed = False
    finally:
        if failed:
            _stop_workers(executor)
        # After a failure the workers are gone already; not waiting for the pool's manager
        # thread also covers a Ctrl-C that came while the pool was starting that thread.
        executor.shutdown(wait=not failed, cancel_futures=True)
    return results


def _run_jobs(
    jobs: list[_Job], settings: _Settings, workers: int, desc: str, progress: bool, dest: Path
) -> list[_Result]:
    """Slice patients, in a process pool when `workers` > 1, with a progress bar.

    Raises:
        SliceError: bad input, a full disk, or a pool worker that died.
    """
    bar = tqdm(total=len(jobs), desc=desc, unit="patient", disable=not progress)
    with bar:
        if workers > 1:
            return _run_pool(jobs, settings, workers, dest, bar.update)
        results = []
        for job in jobs:
            results.append(slice_patient(job, settings))
            bar.update()
        return results


def _write_json(data: dict, path: Path) -> None:
    """A JSON object with one key per line, in natural order, and compact values."""
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
        source_dir: the unpacked dataset.
        dest_dir: the output folder: a new name, an empty folder, or an earlier output of the
            slicer (it holds `split.json`), which is replaced once the new one is complete.
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
        _remove_tmp(tmp)  # left by an interrupted run
        patients = dataset.find_patients(source)
        if not patients:
            raise SliceError(f"{source}: no {dataset.name} patient found; the folder is empty")
        train, val = split_patients(patients, retain, seed)

        jobs = []
        for split, ids, copies in (("train", train, n_augment), ("val", val, 0)):
            split_dir = tmp / split
            for folder in (*dataset.modalities, *OUTPUT_FOLDERS):
                with writing(split_dir / folder):
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
        desc = f"slicing {dataset.name}"
        results = _run_jobs(jobs, settings, n_workers, desc, progress, dest)

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

        _check_dest(dest)  # again: something may have been put there meanwhile
        if dest.is_dir():
            shutil.rmtree(dest)
        with writing(dest):
            tmp.replace(dest)
    except BaseException:
        _remove_tmp(tmp)
        raise
    return dest


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser(dataset: Dataset, description: str) -> argparse.ArgumentParser:
    """The original's flags (`--source_dir --dest_dir --retain --seed --n_augment --shape`)."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--source_dir", required=True, help="the unpacked dataset")
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
