"""One patient's volumes into 2D slice files: distance maps, augmentation, png/npy writing.

What a slicing worker does for each volume of a patient (`slice_patient`):

1. the volume is loaded, checked, normalised and resized (`volumes.load_volume`);
2. the signed distance map of the boundary loss is computed on the whole resized 3D label volume
   with the resized spacing (`maps.distance.one_hot2dist`), and sliced like the images;
3. slices are taken along the last NIfTI axis (`vol[:, :, z]`, an X x Y image), each written as
   `<volume id>_<aug:02d>_<slice:04d>`: one png per modality (uint8, round(255 x in_npy)), `gt/`
   (png of class indices), `in_npy/` (C x H x W float32), `gt_npy/` (H x W uint8),
   `3d_distmap/` (K x H x W float32); its [dx, dy, dz] spacing is returned for `spacing.json`.
   With `n_augment` N, training slices get N more copies (aug 1..N), each a random flip /
   90-degree rotation seeded from (seed, stem), never the identity, applied to every output alike
   (the 3D distance map stays exact); quarter turns, which swap dx and dy, only for square slices
   with isotropic in-plane spacing.

A full disk raises `SliceError` naming the file that could not be written (`writing`).
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from boundary_loss.io.atomic import DISK_FULL
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.maps.onehot import class2one_hot
from boundary_loss.preprocessing.volumes import Geometry, SliceError, Volume, load_volume

# The folders of a split besides the one png folder per modality.
OUTPUT_FOLDERS = ("gt", "in_npy", "gt_npy", "3d_distmap")


@dataclass(frozen=True)
class SliceSettings:
    """What a worker needs to slice a patient (picklable, no callables).

    Attributes:
        modalities: png folder names, in the channel order of `in_npy`.
        classes: label values allowed in the source files.
        n_classes: K, the classes after `label_map`.
        label_map: (source value, class) pairs for values that change.
        shape: in-plane size (H, W) of the slices.
        seed: seed of the augmentation.
        geometry: the axis sliced along and each modality's normalisation (default: the last
            axis, min-max to [0, 1]).
    """

    modalities: tuple[str, ...]
    classes: tuple[int, ...]
    n_classes: int
    label_map: tuple[tuple[int, int], ...]
    shape: tuple[int, int]
    seed: int
    geometry: Geometry = Geometry()


@dataclass(frozen=True)
class PatientJob:
    """One patient to slice.

    Attributes:
        patient: the patient id, named when its worker dies.
        volumes: its volumes.
        split: "train" or "val".
        split_dir: the split's output folder.
        n_augment: augmented copies of each slice (0 for validation).
    """

    patient: str
    volumes: tuple[Volume, ...]
    split: str
    split_dir: Path
    n_augment: int


@dataclass
class PatientResult:
    """The spacing entries of one sliced patient.

    Attributes:
        split: "train" or "val".
        spacing: slice stem -> [dx, dy, dz].
        spacing_3d: volume id -> [dx, dy, dz].
    """

    split: str
    spacing: dict[str, list[float]] = field(default_factory=dict)
    spacing_3d: dict[str, list[float]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Augmentation: the eight flips and quarter turns of a square grid
# ---------------------------------------------------------------------------------------------


def draw_transform(seed: int, stem: str, quarter_turns: bool) -> tuple[int, bool]:
    """Pick a random non-identity flip / rotation for the augmented slice `stem`.

    The generator is seeded with the string `"<seed>:<stem>"` (hashed by sha512 inside `random`),
    so the draw is the same on every machine and in every worker.

    Args:
        seed: the seed of the augmentation.
        stem: the slice stem `<volume id>_<aug:02d>_<slice:04d>` of the augmented copy.
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
    """Flip (axis -2, when asked) then rotate by quarter turns in the plane of the last two axes.

    Args:
        array: `... H W`, a slice or a stack of them.
        transform: (quarter turns, flip the first axis), as drawn by `draw_transform`.

    Returns:
        The transformed array, contiguous.
    """
    turns, flip = transform
    if flip:
        array = np.flip(array, axis=-2)
    return np.ascontiguousarray(np.rot90(array, turns, axes=(-2, -1)))


# ---------------------------------------------------------------------------------------------
# Writing files, a full disk named
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
    """Write a file, a full disk raising SliceError (see `writing`).

    Args:
        path: the file.
        data: its content.

    Raises:
        SliceError: the disk is full.
    """
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


def png_windows(images: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The intensity window shown in each modality's png: `C x 2` (low, high).

    Modalities in [0, 1] (min-max, the default, or nnU-Net's `rgb_to_0_1`) show [0, 1]; the
    others (z-scored, CT, not normalised) their volume's range.

    Args:
        images: `C H W Z`, a normalised volume.
        geometry: its normalisations.
    """
    norms = geometry.norms or (None,) * len(images)
    windows = np.zeros((len(images), 2))
    for c, norm in enumerate(norms):
        if norm is None or norm[0] in ("minmax", "rescale_to_0_1", "rgb_to_0_1"):
            windows[c] = 0, 1
        else:
            low, high = float(images[c].min()), float(images[c].max())
            windows[c] = low, max(high, low + 1e-8)
    return windows


def _write_slice(
    split_dir: Path,
    stem: str,
    modalities: Sequence[str],
    windows: np.ndarray,
    image: np.ndarray,
    label: np.ndarray,
    distmap: np.ndarray,
) -> None:
    """Write one slice: image `C H W` float32, label `H W` uint8, distmap `K H W` float32; each
    modality's png shows its `windows` row (low, high) as 0 .. 255.

    Raises:
        SliceError: the disk is full, naming the file that could not be written.
    """
    low, high = windows[:, 0, None, None], windows[:, 1, None, None]
    shown = np.clip((image.astype(np.float64) - low) / (high - low), 0, 1)
    pngs = np.rint(shown * 255).astype(np.uint8)  # C H W
    for name, png in zip(modalities, pngs, strict=True):
        write_bytes(split_dir / name / f"{stem}.png", _png_bytes(png))
    write_bytes(split_dir / "gt" / f"{stem}.png", _png_bytes(label))
    write_bytes(split_dir / "in_npy" / f"{stem}.npy", _npy_bytes(image))
    write_bytes(split_dir / "gt_npy" / f"{stem}.npy", _npy_bytes(label))
    write_bytes(split_dir / "3d_distmap" / f"{stem}.npy", _npy_bytes(distmap))


# ---------------------------------------------------------------------------------------------
# One patient, in a worker
# ---------------------------------------------------------------------------------------------


def slice_volume(
    volume: Volume,
    split_dir: Path,
    n_augment: int,
    settings: SliceSettings,
    result: PatientResult,
) -> None:
    """Load one volume and write its slices (and augmented copies) under `split_dir`.

    Args:
        volume: the volume.
        split_dir: the split's output folder, its sub-folders already made.
        n_augment: augmented copies of each slice.
        settings: the dataset's classes, modalities, slice shape and seed.
        result: receives the spacing of each slice written and of the volume.

    Raises:
        SliceError: bad input, or a full disk.
    """
    images, labels, spacing = load_volume(
        volume, settings.classes, settings.label_map, settings.shape, settings.geometry
    )  # C H W Z, H W Z
    if labels is None:
        raise SliceError(f"{volume.vid}: no label file; expected one for every sliced volume")
    windows = png_windows(images, settings.geometry)
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
            _write_slice(split_dir, stem, settings.modalities, windows, image, label, dist)
            result.spacing[stem] = slice_spacing


def slice_patient(job: PatientJob, settings: SliceSettings) -> PatientResult:
    """Slice every volume of one patient.

    Args:
        job: the patient, its split and output folder.
        settings: the dataset's classes, modalities, slice shape and seed.

    Returns:
        Its spacing entries.

    Raises:
        SliceError: bad input, or a full disk.
    """
    result = PatientResult(job.split)
    for volume in job.volumes:
        slice_volume(volume, job.split_dir, job.n_augment, settings, result)
    return result
