"""The source volumes of the slicers: finding their files, loading and checking them.

Each volume to slice (a patient for ISLES and WMH, a cardiac frame for ACDC) is one NIfTI file
per modality and one label file. Here they are found on disk (`require_dir`, `require_file`,
`subfolders`), loaded (`load_nifti`; `read_header` reads the header alone, with the same checks),
checked (readable NIfTI, 3D, finite positive voxel sizes, which come from the sform when the
header leaves them unset, one grid for every file of a volume,
finite voxels, a non-constant image, integer label values in the dataset's classes),
normalised to [0, 1] over the whole 3D volume (min-max, never per slice), and resized in-plane
(images linearly, labels by nearest neighbour, the in-plane spacing scaled by old size / new
size). Bad input raises `SliceError` with the file named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from skimage.transform import resize

Spacing3D = tuple[float, float, float]


class SliceError(Exception):
    """The source data cannot be sliced; the message names the file and what was expected."""


@dataclass(frozen=True)
class Volume:
    """One 3D volume to slice.

    Attributes:
        vid: volume id, the prefix of its slice stems (`case_4`, `100`, `patient001_01`).
        images: one NIfTI file per modality, in the dataset's modality order; or, with
            `four_d`, one file holding every modality along its last axis (the Decathlon's form).
        label: the NIfTI file of the label volume; None for an unlabelled (test) volume.
        four_d: whether `images` is one 4D file.
    """

    vid: str
    images: tuple[Path, ...]
    label: Path | None
    four_d: bool = False


# How a volume's voxels become slices, beyond the defaults (see `load_volume`):
#   axis: the source axis sliced along (None: the last one);
#   norms: per modality, its normalisation (None: min-max to [0, 1], see `normalise_channel`).
@dataclass(frozen=True)
class Geometry:
    """The slicing axis and the per-modality normalisation of a dataset (picklable)."""

    axis: int | None = None
    norms: tuple[tuple, ...] | None = None


# Patient id -> its volumes (one for ISLES and WMH, one per frame for ACDC).
Patients = dict[str, list[Volume]]


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


def patient_folders(source: Path, inner: str, pattern: str, dataset: str, shown: str) -> list[Path]:
    """The patient folders of a source given in either of its two forms: the unpacked zip
    (holding `inner/`, e.g. `TRAINING/`) or, as the original makefiles pass it, `inner/`
    itself (holding the patient folders directly).

    Args:
        source: the folder given as `--source_dir`.
        inner: the zip's top folder of patients (`TRAINING`, `training.engine`).
        pattern: the regex of a patient folder's whole name.
        dataset: the dataset's name, for messages.
        shown: a patient folder's name as messages show it (`case_<N>`).

    Returns:
        The patient folders, in natural order.

    Raises:
        SliceError: neither form, or both at once.
    """
    nested = source / inner
    direct = subfolders(source, pattern)
    if nested.is_dir():
        if direct:
            raise SliceError(
                f"{source}: holds both {inner}/ and patient folders ({direct[0].name}); expected "
                f"one form: the unpacked zip ({inner}/{shown}/) or its {inner}/ folder "
                f"({shown}/ directly)"
            )
        return subfolders(nested, pattern)
    if not direct:
        raise SliceError(
            f"{nested}: folder not found (expected {inner}/{shown}/ folders of {dataset}, or "
            f"{shown}/ folders directly in {source})"
        )
    return direct


# ---------------------------------------------------------------------------------------------
# Loading and checking volumes
# ---------------------------------------------------------------------------------------------


def _open_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    """The nibabel image of `path` (its header read, its voxels not yet)."""
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel, gzip and numpy raise many kinds on corrupt files
        raise SliceError(
            f"{path}: not a readable NIfTI file ({type(error).__name__}: {error})"
        ) from None


def _volume_shape(shape: tuple[int, ...], path: Path, channels: int | None) -> tuple[int, ...]:
    """The shape `load_nifti` returns for a file of `shape`: `X Y Z`, or `C X Y Z` with
    `channels` (see `load_nifti`); raises SliceError when the file has other dimensions."""
    if channels is not None:
        if len(shape) == 3 and channels == 1:
            shape = (*shape, 1)
        if len(shape) != 4 or shape[-1] != channels:
            raise SliceError(
                f"{path}: shape {shape} holds "
                f"{shape[-1] if len(shape) == 4 else 'no'} channels along its fourth axis; "
                f"expected {channels} (the modalities declared in dataset.json)"
            )
        return (shape[-1], *shape[:3])
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise SliceError(f"{path}: expected a 3D volume, got shape {shape}")
    return shape


# The columns of a usable sform are non-degenerate: |det| at least this fraction of the product
# of their norms (1 for orthogonal columns, 0 for collinear ones).
SFORM_MIN_VOLUME = 1e-6


def _usable_sform(header: nib.Nifti1Header) -> np.ndarray | None:
    """The 3 x 3 part of the header's sform when it is set (sform_code > 0), finite and
    non-degenerate (no zero or collinear column); None otherwise."""
    if int(header["sform_code"]) <= 0:
        return None
    linear = np.asarray(header.get_sform(), dtype=np.float64)[:3, :3]
    if not np.isfinite(linear).all():
        return None
    norms = np.linalg.norm(linear, axis=0)
    if not (norms > 0).all() or abs(np.linalg.det(linear)) < SFORM_MIN_VOLUME * norms.prod():
        return None
    return linear


def _stored_pixdim(image: nib.spatialimages.SpatialImage) -> np.ndarray:
    """pixdim[1:4] as the file stores them: nibabel's header has already replaced a 0 by 1 and
    a negative size by its absolute value."""
    holder = image.file_map.get("header") or image.file_map["image"]
    with holder.get_prepare_fileobj("rb") as handle:
        stored = type(image.header).from_fileobj(handle, check=False)
    return np.asarray(stored["pixdim"][1:4], dtype=np.float64)


def _geometry(image: nib.spatialimages.SpatialImage, path: Path) -> tuple[Spacing3D, np.ndarray]:
    """The voxel spacing (dx, dy, dz) in mm and the 4 x 4 affine of a loaded image.

    The spacing is the header's voxel sizes (pixdim[1:4], as nibabel's zooms give them, and as
    the original boundary-loss code reads them), except where they are unset. nibabel reads an
    unset voxel size (pixdim 0, as writers that fill only the sform leave it) as 1 mm with a
    warning only, while the sform, the affine nibabel returns and every grid check uses, still
    says where the voxels are: the distance between neighbouring voxels along an axis is the norm
    of its column in the affine, which is what the zooms are meant to match. So:

    - voxel sizes unset (a 0 among pixdim[1:4]): taken from a usable sform (set, finite,
      non-degenerate); refused without one, since nothing in the file then says the spacing
      (a qform is built from pixdim itself);
    - a NaN, infinite or missing voxel size: refused (a damaged header, never papered over);
    - voxel sizes set: kept as they are, whatever the sform says, so that the spacing of a file
      is the one the original pipeline reads.

    Raises:
        SliceError: a NaN, infinite or missing voxel size; voxel sizes unset without a usable
            sform; an unreadable header.
    """
    try:
        zooms = tuple(float(z) for z in image.header.get_zooms())
        affine = np.asarray(image.affine, dtype=np.float64)
        nifti = isinstance(image.header, nib.Nifti1Header)
        stored = _stored_pixdim(image) if nifti else None
        sform = _usable_sform(image.header) if nifti else None
    except Exception as error:  # nibabel and gzip raise many kinds on corrupt files
        raise SliceError(
            f"{path}: not a readable NIfTI file ({type(error).__name__}: {error})"
        ) from None
    spacing = zooms[:3]
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise SliceError(
            f"{path}: expected three finite positive voxel sizes (pixdim[1:4], mm), got {zooms}"
        )
    if stored is None:
        return spacing, affine
    norms = None if sform is None else np.linalg.norm(sform, axis=0)
    if (stored == 0).any():
        if norms is None:
            raise SliceError(
                f"{path}: voxel sizes unset (pixdim[1:4] {_values(stored)}; nibabel would read "
                f"0 as 1 mm) and no usable sform (sform_code {int(image.header['sform_code'])}) "
                "to take them from; expected positive voxel sizes in pixdim or a finite, "
                "non-degenerate sform"
            )
        return tuple(float(n) for n in norms), affine
    return spacing, affine


def read_header(path: Path, channels: int | None = None) -> tuple[tuple[int, ...], Spacing3D]:
    """The shape and voxel spacing of a NIfTI volume from its header alone, checked as
    `load_nifti` checks them (so both give one answer), without reading its voxels.

    Args:
        path: the `.nii` or `.nii.gz` file.
        channels: as for `load_nifti`.

    Returns:
        The shape `load_nifti` would return (`X Y Z`, or `C X Y Z`) and the spacing (dx, dy, dz)
        in mm.

    Raises:
        SliceError: the file is not a readable NIfTI, has other dimensions, or a bad spacing.
    """
    image = _open_nifti(path)
    shape = _volume_shape(tuple(int(n) for n in image.shape), path, channels)
    return shape, _geometry(image, path)[0]


def load_nifti(path: Path, channels: int | None = None) -> tuple[np.ndarray, Spacing3D, np.ndarray]:
    """Load a 3D NIfTI volume (or, with `channels`, a 4D one holding that many).

    Args:
        path: the `.nii` or `.nii.gz` file.
        channels: None: a 3D volume is expected. A number C: a 4D `X Y Z C` volume (or a 3D one
            when C is 1), returned as `C X Y Z`.

    Returns:
        The `X Y Z` (or `C X Y Z`) voxel array (its stored dtype, scaled when the header says
        so), the voxel spacing (dx, dy, dz) in mm (the header's, or its sform's when the header
        leaves it unset: see `_geometry`), and the 4 x 4
        voxel-to-world affine (nibabel's best one: sform, else qform, else the spacing alone).
        For a 3D volume, trailing axes of length one (`X Y Z 1`) are dropped.

    Raises:
        SliceError: the file is not a readable NIfTI, not 3D, or has a bad spacing.
    """
    image = _open_nifti(path)
    _volume_shape(tuple(int(n) for n in image.shape), path, channels)
    spacing, affine = _geometry(image, path)
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel, gzip and numpy raise many kinds on corrupt files
        raise SliceError(
            f"{path}: not a readable NIfTI file ({type(error).__name__}: {error})"
        ) from None
    if channels is not None:
        if data.ndim == 3:  # one channel (checked above)
            data = data[..., None]
        data = np.moveaxis(data, -1, 0)
    else:
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
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


def normalise_channel(data: np.ndarray, path: Path, norm: tuple | None) -> np.ndarray:
    """Normalise one modality of a volume (float64, same shape).

    Args:
        data: the voxels.
        path: the file, named in messages.
        norm: None or ("minmax",) or ("rescale_to_0_1",): min-max to [0, 1] (`normalise`);
            ("zscore",): (x - mean) / std over the volume; ("ct", low, high, mean, std): clipped
            to [low, high] then (x - mean) / std with the training set's figures; ("nonorm",):
            unchanged; ("rgb_to_0_1",): x / 255. A standard deviation below 1e-8 counts as 1e-8,
            as in nnU-Net.

    Raises:
        SliceError: NaN / infinite voxels, or a constant volume for min-max.
    """
    kind = "minmax" if norm is None else norm[0]
    if kind in ("minmax", "rescale_to_0_1"):
        return normalise(data, path)
    check_finite(data, path)
    volume = data.astype(np.float64)
    if kind == "zscore":
        return (volume - volume.mean()) / max(float(volume.std()), 1e-8)
    if kind == "ct":
        _, low, high, mean, std = norm
        return (np.clip(volume, low, high) - mean) / max(std, 1e-8)
    if kind == "rgb_to_0_1":
        return volume / 255.0
    if kind == "nonorm":
        return volume
    raise ValueError(f"unknown normalisation {norm!r}")


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
    # No rounding overshoot outside the volume's range ([0, 1] when min-max normalised).
    return np.clip(np.stack(slices, axis=-1), volume.min(), volume.max())


def resize_labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize each slice of an `X Y Z` class volume to `H W` by nearest neighbour -> `H W Z`.

    Resizing back to the original size undoes it exactly when `H W` is at least `X Y` on each
    axis (every original voxel has its own nearest resized one); a smaller `H W` loses detail.
    """
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


def slice_order(axis: int | None) -> tuple[int, int, int]:
    """The transposition putting the sliced axis last, the in-plane axes in their order."""
    if axis is None:
        return (0, 1, 2)
    return (*(a for a in range(3) if a != axis), axis)


def load_images(volume: Volume, n_channels: int) -> tuple[list, Spacing3D, np.ndarray, list]:
    """The modalities of a volume (`X Y Z` each), their spacing and affine, and the file of
    each; the first is the one the others were checked against (one grid for a volume)."""
    reference = volume.images[0]
    if volume.four_d:
        data, spacing, affine = load_nifti(reference, channels=n_channels)
        return list(data), spacing, affine, [reference] * n_channels
    images: list[np.ndarray] = []
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
        images.append(data)
    return images, spacing, affine, list(volume.images)


def load_volume(
    volume: Volume,
    classes: Sequence[int],
    label_map: Iterable[tuple[int, int]],
    shape: tuple[int, int],
    geometry: Geometry = Geometry(),
) -> tuple[np.ndarray, np.ndarray | None, Spacing3D]:
    """Load, check, normalise, orient and resize one volume.

    Args:
        volume: the modality files and the label file.
        classes: the label values allowed in the label file.
        label_map: (value, class) pairs for label values that change (see `to_classes`).
        shape: the in-plane size (H, W) of the output.
        geometry: the axis sliced along (moved last; default: the last one) and each modality's
            normalisation (default: min-max to [0, 1]).

    Returns:
        images `C H W Z` float32 (in [0, 1] when min-max normalised), labels `H W Z` uint8 class
        indices (None for a volume without labels), and the spacing (dx, dy, dz) in mm after
        the transposition and the resize.

    Raises:
        SliceError: unreadable file, shapes, spacings or affines that disagree between the
            modalities and the label (see `check_same_grid`), NaN / inf, constant image, bad
            labels, or a 4D file whose channel count is not the modalities'.
    """
    n_channels = len(geometry.norms) if geometry.norms is not None else len(volume.images)
    raw, spacing, affine, paths = load_images(volume, n_channels)
    reference = paths[0]
    norms = geometry.norms or (None,) * len(raw)
    images = [normalise_channel(*item) for item in zip(raw, paths, norms, strict=True)]
    labels = None
    if volume.label is not None:
        labels, label_spacing, label_affine = load_nifti(volume.label)
        if labels.shape != images[0].shape:
            raise SliceError(
                f"{volume.label}: label shape {labels.shape} differs from {reference} "
                f"{images[0].shape}; expected the label on the image grid"
            )
        check_same_grid(volume.label, label_spacing, label_affine, reference, spacing, affine)
        labels = to_classes(labels, volume.label, classes, label_map)

    order = slice_order(geometry.axis)
    images = [image.transpose(order) for image in images]
    spacing = tuple(spacing[a] for a in order)
    old_shape = images[0].shape
    stack = np.stack([resize_images(image, shape) for image in images])  # C H W Z
    if labels is not None:
        labels = resize_labels(labels.transpose(order), shape)  # H W Z
    return stack.astype(np.float32), labels, resized_spacing(spacing, old_shape, shape)
