"""Resampling 3D volumes to a target spacing, as nnU-Net does (Isensee et al., Nature Methods 2021).

Every function maps a grid of voxel centres onto another covering the same physical extent: the
centre of output voxel i along an axis of old length n and new length m lies at input coordinate
(i + 0.5) n / m - 0.5 (scipy's `zoom` with `grid_mode=True`, and skimage's `resize`, which
nnU-Net calls), and values beyond the edge are those of the edge voxel (`mode="nearest"`).

- images (`resample_image`): cubic splines (order 3), clipped to the input's range as skimage's
  `resize` clips by default (in nnU-Net's separate z, the range of each slice);
- probabilities (`resample_probabilities`): linear (order 1) per class;
- labels (`resample_labels`): one-hot, linear per class, argmax, then no class lost;
- nnU-Net's "separate z": when the spacing is very anisotropic (the coarsest spacing more than 3
  times the finest, in the source or else in the target, with one coarsest axis), that axis is
  resampled on its own with order 0 (nearest voxel) after the in-plane axes with the function's
  own order (`separate_z_axis`). It applies only when the spacings are given.

The target grid comes from `target_shape` and `median_spacing`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Shape = Sequence[int]
Spacing = Sequence[float]

# nnU-Net's ANISO_THRESHOLD: a spacing ratio above it resamples the coarsest axis on its own.
ANISOTROPY_THRESHOLD = 3.0

# The rules, as the 3D plan records them (plan.json's "resampling").
RULES = {
    "image": "normalised on the source grid, then cubic spline (order 3), centre-aligned; order 0 "
    "along the coarsest axis when a spacing ratio exceeds 3 (nnU-Net's separate z)",
    "labels": "one-hot, linear per class, argmax; no class lost or invented; order 0 along the "
    "coarsest axis when a spacing ratio exceeds 3",
    "maps": "one_hot2dist of the resampled labels on the whole volume at the target spacing",
}


def target_shape(shape: Shape, spacing: Spacing, target_spacing: Spacing) -> tuple[int, ...]:
    """The shape of a volume resampled to `target_spacing`: round(shape x spacing / target) per
    axis (numpy's rounding, half to even, as nnU-Net's `compute_new_shape`), at least 1.

    Args:
        shape: `X Y Z` voxels.
        spacing: the volume's voxel size (mm), same order.
        target_spacing: the target voxel size (mm).

    Raises:
        ValueError: lengths differ, or a spacing that is not finite and positive.
    """
    old, spacing, target = _vectors(shape, spacing, target_spacing)
    return tuple(max(1, int(n)) for n in np.round(old * spacing / target))


def median_spacing(spacings: Sequence[Spacing]) -> tuple[float, ...]:
    """The per-axis median of the cases' spacings: the target spacing of the 3D chain.

    nnU-Net's 3d_fullres takes this median too, except along a very anisotropic axis (its
    median spacing over 3 times the others' and its median size under a third of the others'),
    where it takes the 10th percentile of that axis' spacings; here the median is taken along
    every axis.

    Args:
        spacings: one (sx, sy, sz) per case, in mm.

    Raises:
        ValueError: no case, or cases of different dimensions.
    """
    if len(spacings) == 0:
        raise ValueError("median_spacing: no spacing given; expected one per case")
    array = np.asarray(spacings, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"median_spacing: expected one spacing per case, got {spacings!r}")
    return tuple(float(s) for s in np.median(array, axis=0))


def separate_z_axis(spacing: Spacing | None, target_spacing: Spacing | None) -> int | None:
    """The axis nnU-Net resamples on its own with order 0, or None.

    nnU-Net's rule (`get_do_separate_z`, `get_lowres_axis`): the source spacing is anisotropic
    when its largest value exceeds 3 times its smallest; then its coarsest axis is the one, else,
    when the target spacing is anisotropic, the target's coarsest axis. When two or three axes
    share the largest spacing, none is.

    Args:
        spacing: the source spacing (mm); None: no separate axis.
        target_spacing: the target spacing (mm); None: no separate axis.
    """
    if spacing is None or target_spacing is None:
        return None
    for candidate in (np.asarray(spacing, float), np.asarray(target_spacing, float)):
        if candidate.max() / candidate.min() > ANISOTROPY_THRESHOLD:
            coarsest = np.flatnonzero(candidate == candidate.max())
            return int(coarsest[0]) if len(coarsest) == 1 else None
    return None


def resample_image(
    volume: np.ndarray,
    new_shape: Shape,
    order: int = 3,
    *,
    spacing: Spacing | None = None,
    target_spacing: Spacing | None = None,
) -> np.ndarray:
    """Resample every channel of an image to `new_shape` (spline of `order`, centre-aligned).

    With the source and target spacings given, nnU-Net's separate-z rule applies: when one
    spacing is very anisotropic (coarsest over finest > 3, `separate_z_axis`), the in-plane axes
    are resampled with `order` (3: cubic) slice by slice and the coarse axis with order 0 (the
    nearest voxel: output i takes input floor((i + 0.5) n / m)), as nnU-Net's
    `resample_data_or_seg` with order_z = 0.

    Args:
        volume: `C X Y Z` image, any real dtype.
        new_shape: the output `X Y Z`.
        order: spline order (nnU-Net: 3 for images, 1 for probabilities).
        spacing: the source voxel size (mm), for the separate-z rule.
        target_spacing: the target voxel size (mm); None with `spacing` given: the spacing of
            `new_shape` over the same extent.

    Returns:
        `C *new_shape` float32 (a copy, also when the shapes are equal), each channel clipped
        to its input range (with separate z: each in-plane slice to its own), as skimage's
        `resize` (nnU-Net's call) clips by default.

    Raises:
        ValueError: `volume` not `C X Y Z`, or `new_shape` not three positive sizes.
    """
    volume = np.asarray(volume)
    if volume.ndim != 4:
        raise ValueError(f"resample_image: expected a C X Y Z volume, got shape {volume.shape}")
    new = _check_shape(new_shape, volume.ndim - 1)
    old = volume.shape[1:]
    if spacing is not None and target_spacing is None:
        target_spacing = np.asarray(spacing, float) * np.asarray(old) / np.asarray(new)
    axis = separate_z_axis(spacing, target_spacing)
    out = np.empty((len(volume), *new), dtype=np.float32)
    for c, channel in enumerate(volume):
        out[c] = _resample_channel(channel.astype(np.float64), new, order, axis)
    return out


def resample_probabilities(
    probs: np.ndarray,
    new_shape: Shape,
    *,
    spacing: Spacing | None = None,
    target_spacing: Spacing | None = None,
) -> np.ndarray:
    """Resample class probabilities (or a one-hot volume) linearly per class, centre-aligned.

    Linear weights are non-negative and sum to one, so a simplex stays a simplex. With the
    spacings given, nnU-Net's separate-z rule applies as in `resample_image` (order 0 along the
    coarse axis, as nnU-Net resamples its probabilities).

    Args:
        probs: `K X Y Z` probabilities.
        new_shape: the output `X Y Z`.
        spacing, target_spacing: as for `resample_image`.

    Returns:
        `K *new_shape` float32.
    """
    return resample_image(probs, new_shape, 1, spacing=spacing, target_spacing=target_spacing)


def resample_labels(
    labels: np.ndarray,
    new_shape: Shape,
    K: int,
    *,
    spacing: Spacing | None = None,
    target_spacing: Spacing | None = None,
) -> np.ndarray:
    """Resample class indices: one-hot, linear per class (`resample_probabilities`), argmax.

    nnU-Net's rule for segmentations (linear interpolation of each class's mask), decided by
    argmax, then two guarantees:

    - no class invented: only the classes present in `labels` compete (one at a time, so that
      a single `*new_shape` volume of weights is held besides the best so far);
    - no class lost: a class present in `labels` but absent after argmax takes the voxel(s)
      where its interpolated value is highest, among the voxels whose class keeps at least one
      other voxel (so that giving one class back takes none away). Only a grid with fewer voxels
      than classes present can still lose one.

    Args:
        labels: `X Y Z` class indices in 0 .. K-1.
        new_shape: the output `X Y Z`.
        K: the number of classes.
        spacing, target_spacing: as for `resample_image` (separate z: order 0 along the coarse
            axis).

    Returns:
        `*new_shape` uint8 class indices.

    Raises:
        ValueError: `labels` not 3D, K not in 1 .. 256, or values outside 0 .. K-1.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"resample_labels: expected X Y Z class indices, got {labels.shape}")
    if not 1 <= K <= 256:
        raise ValueError(f"resample_labels: K must be in 1 .. 256 (uint8 output), got {K}")
    present = np.unique(labels)
    if present.size and (present.min() < 0 or present.max() >= K):
        raise ValueError(f"resample_labels: values {present.tolist()} outside 0 .. {K - 1}")
    new = _check_shape(new_shape, 3)
    if labels.shape == new:
        return labels.astype(np.uint8)

    def weights(k: int) -> np.ndarray:  # *new, the interpolated mask of class k
        mask = (labels == k)[None]
        kwargs = {"spacing": spacing, "target_spacing": target_spacing}
        return resample_probabilities(mask, new, **kwargs)[0]

    # argmax over the present classes, one class at a time (ties: the lowest class, as argmax)
    best = np.full(new, -1.0, dtype=np.float32)
    out = np.zeros(new, dtype=np.uint8)
    for k in present:
        value = weights(k)
        better = value > best
        out[better], best[better] = k, value[better]
    counts = np.bincount(out.ravel(), minlength=K)
    for k in present:
        if counts[k]:
            continue
        value = weights(k).ravel()
        allowed = counts[out].ravel() > 1  # voxels whose class keeps another voxel
        if not allowed.any():
            continue
        for index in np.flatnonzero(allowed & (value == value[allowed].max())):
            previous = out.flat[index]
            if counts[previous] > 1:
                out.flat[index] = k
                counts[previous] -= 1
                counts[k] += 1
    return out


def _vectors(*values: Sequence[float]) -> list[np.ndarray]:
    """The arguments as float64 vectors of one length; spacings (all but the first) finite and
    positive."""
    arrays = [np.asarray(v, dtype=np.float64).reshape(-1) for v in values]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"expected one value per axis in each of {[a.tolist() for a in arrays]}")
    for array in arrays[1:]:
        if not (np.isfinite(array).all() and (array > 0).all()):
            raise ValueError(f"a spacing must be finite and positive, got {array.tolist()}")
    return arrays


def _check_shape(shape: Shape, ndim: int) -> tuple[int, ...]:
    """`shape` as a tuple of `ndim` positive ints."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"expected {ndim} positive sizes as the new shape, got {list(shape)}")
    return shape


def _zoom(array: np.ndarray, new: tuple[int, ...], order: int) -> np.ndarray:
    """`array` resampled to `new` by a spline of `order` on the centre-aligned grid, clipped to
    the range of `array` (the spline's overshoot removed)."""
    if array.shape == new:
        return array
    factors = [m / n for m, n in zip(new, array.shape, strict=True)]
    out = ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != new:  # scipy derives the shape by rounding n x m / n: never off, checked
        raise ValueError(f"resampling gave {out.shape} instead of {new}")
    return np.clip(out, array.min(), array.max(), out=out)  # skimage's resize clips so too


def _resample_channel(
    channel: np.ndarray, new: tuple[int, ...], order: int, axis: int | None
) -> np.ndarray:
    """One `X Y Z` channel to `new`; with `axis`, in-plane with `order` slice by slice, then
    order 0 (the nearest voxel, centre-aligned) along `axis`."""
    if axis is None:
        return _zoom(channel, new, order)
    plane = tuple(n for a, n in enumerate(new) if a != axis)
    slices = [
        _zoom(np.take(channel, i, axis=axis), plane, order) for i in range(channel.shape[axis])
    ]
    stacked = np.stack(slices, axis=axis)
    old, m = channel.shape[axis], new[axis]
    # The nearest input voxel of output i: floor((i + 0.5) old / m), in integers.
    nearest = ((2 * np.arange(m) + 1) * old) // (2 * m)
    return np.take(stacked, nearest, axis=axis)
