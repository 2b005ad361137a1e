"""Signed distance maps, with the boundary-loss conventions.

This module keeps the names, signatures and numerical behaviour of the distance-map functions of
`utils.py` in the original boundary-loss implementation (Kervadec et al., "Boundary loss for
highly unbalanced segmentation", MIDL 2019 / MedIA 2021):

- `one_hot2dist` gives the signed map of the boundary loss: positive outside an object (distance to
  it), zero on its inner border, negative inside; `one_hot2hd_dist` the unsigned map of the
  Hausdorff loss (Karimi and Salcudean, 2019);
- `distance_maps` is the one place that chooses how a batch's maps are computed: on the device
  (`distance_torch`, for tensors on an accelerator: `on_device`) or with `one_hot2dist` /
  `one_hot2hd_dist` per sample (on the CPU, where they are faster).

The label encodings and their validators (`class2one_hot`, `simplex`, ...) are in
`boundary_loss.maps.onehot`. User input is validated with `ValueError` (never `assert`, which
`python -O` removes).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import edt
import numpy as np
import torch
from numpy.typing import DTypeLike
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from boundary_loss.maps.distance_torch import one_hot2dist_torch, one_hot2hd_dist_torch
from boundary_loss.maps.onehot import describe

Spacing = float | Sequence[float] | np.ndarray | None


# ---------------------------------------------------------------------------------------------
# Spacing and geometry
# ---------------------------------------------------------------------------------------------


def normalise_spacing(voxelspacing: Spacing, ndim: int, name: str = "voxelspacing") -> np.ndarray:
    """Return the spacing as a float64 vector of length `ndim` (ones when None).

    Raises:
        ValueError: wrong length, or a value that is not finite and positive.
    """
    if voxelspacing is None:
        return np.ones(ndim, dtype=np.float64)
    if np.ndim(voxelspacing) == 0:
        voxelspacing = [voxelspacing] * ndim
    spacing = np.asarray(voxelspacing, dtype=np.float64).reshape(-1)
    if spacing.size != ndim:
        raise ValueError(
            f"{name} has {spacing.size} values {spacing.tolist()}, expected one per axis ({ndim})"
        )
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise ValueError(f"{name} must be finite and positive, got {spacing.tolist()}")
    return spacing


def diagonal(shape: Sequence[int], spacing: np.ndarray) -> float:
    """Length in mm of the diagonal of a volume of `shape` voxels of size `spacing`."""
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * spacing) ** 2)))


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel, grown by `margin` (clipped)."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)


# ---------------------------------------------------------------------------------------------
# Distance maps
# ---------------------------------------------------------------------------------------------


def _output_dtype(seg: np.ndarray, dtype: DTypeLike | None, caller: str) -> np.dtype:
    """numpy zeros_like semantics, as the original: dtype None keeps seg's dtype."""
    if dtype is not None:
        return np.dtype(dtype)
    if not np.issubdtype(seg.dtype, np.floating):
        warnings.warn(
            f"{caller}: seg has dtype {seg.dtype} and dtype=None, so the distances are truncated "
            f"to {seg.dtype} as in the original implementation; pass dtype=np.float32 for exact "
            "distances",
            UserWarning,
            stacklevel=3,
        )
    return seg.dtype


# The edt probe below is capped at this many voxels; finer spacings use scipy.
_PROBE_MAX_VOXELS = 1_000_000

# edt's thread pool takes one task per image row and pass (its edt.hpp), and edt holds the GIL,
# so classes cannot run on threads of their own. Its threads gave nothing on 256 x 256 slices
# and 1.2-1.3x on the 256 x 256 x 40 and 256 x 256 x 128 benchmark volumes (2 cores): smaller
# transforms run on one thread.
_PARALLEL_MIN_VOXELS = 1 << 20


def _available_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _thread_count(threads: int | None) -> int:
    """`threads` checked: a positive int, or None for every core this process may use."""
    if threads is None:
        return _available_cores()
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _edtsq(outside: np.ndarray, spacing: tuple[float, ...], threads: int = 1) -> np.ndarray:
    """Squared distance (float32, mm^2) from every voxel to the nearest False voxel of `outside`.

    `outside`: a C-contiguous 2D or 3D bool array with at least one False voxel. The `edt`
    package (seung-lab), `black_border=False`: the image border is no boundary, as in scipy.
    In 3D the mask goes in as uint8 (0 the target, 1 elsewhere), which edt transforms with its
    multi-label code: the same distances, and measured faster than its bool code on volumes
    (7 against 40 ms on 4 x 256 x 256; 260 against 330 ms per class on the 256 x 256 x 128
    benchmark volume).
    """
    data = outside.view(np.uint8) if outside.ndim == 3 else outside
    parallel = threads if outside.size >= _PARALLEL_MIN_VOXELS else 1
    return edt.edtsq(data, anisotropy=spacing, black_border=False, parallel=parallel)


# Per process: a forked child (a data-loader worker) holds a copy of its parent's pools without
# their threads, so it builds its own.
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of `threads` threads (started on first use, then kept)."""
    key = (os.getpid(), threads)
    pool = _POOLS.get(key)
    if pool is None:  # a pool starts no thread before its first task, so a lost race costs none
        pool = _POOLS.setdefault(key, ThreadPoolExecutor(threads, "distance_transform"))
    return pool


def _scipy_squared(outside: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Squared distance (mm^2) from every voxel to the nearest False voxel of `outside`.

    scipy's feature transform (`distance_transform_edt` with `return_indices`), then scipy's own
    arithmetic on the offsets to the nearest feature (float64 offsets times the spacing, squared,
    summed in axis order), so that the square root is `distance_transform_edt`'s value bit for
    bit. On a unit grid the squares are integers, summed in int32 and returned as float32, which
    holds them exactly below 2^24; float64 otherwise. The root is left to the caller: a minimum
    of squares is the square of the minimum.
    """
    unit = bool(np.all(spacing == 1))
    features = distance_transform_edt(  # *xyz indices of the nearest False voxel, per axis
        outside, sampling=None if unit else spacing, return_distances=False, return_indices=True
    )
    for axis, n in enumerate(outside.shape):  # offsets to the nearest False voxel, in place
        grid = np.arange(n, dtype=features.dtype).reshape((n,) + (1,) * (outside.ndim - axis - 1))
        np.subtract(features[axis], grid, out=features[axis])
    if unit and sum(n * n for n in outside.shape) < 1 << 24:
        np.multiply(features, features, out=features)
        return features.sum(axis=0, dtype=features.dtype).astype(np.float32)
    squared = np.zeros(outside.shape, dtype=np.float64)
    for axis, offsets in enumerate(features):
        offset = offsets.astype(np.float64)
        offset *= spacing[axis]
        squared += np.multiply(offset, offset, out=offset)
    return squared


def _scipy_transforms(
    crops: Sequence[np.ndarray], spacing: np.ndarray, threads: int
) -> Iterator[np.ndarray]:
    """`_scipy_squared` of each crop, in order; with `threads` > 1 on a thread pool, several
    crops at once (scipy releases the GIL while it computes a feature transform)."""
    if threads == 1 or len(crops) == 1:
        return (_scipy_squared(crop, spacing) for crop in crops)
    pool = _thread_pool(threads)
    futures = [pool.submit(_scipy_squared, crop, spacing) for crop in crops]
    return (future.result() for future in futures)


@functools.lru_cache(maxsize=64)
def _float32_is_enough(spacing: tuple[float, ...], offset: float) -> bool:
    """Whether the float32 distances of `edt` keep `offset - d` within 1e-6 relative of float64.

    Inside an object the signed map is `offset - d`, which cancels when a voxel-to-voxel distance
    d is close to the offset (a spacing of 0.99999 from a NIfTI header, say). Every distance up to
    twice the offset is probed once per spacing, with edt's own arithmetic (one background voxel
    in the middle of a block, through `_edtsq` as the maps are), against scipy's float64 values.
    """
    reach = [int(np.ceil(2 * offset / s)) for s in spacing]
    shape = [2 * r + 1 for r in reach]
    if math.prod(shape) > _PROBE_MAX_VOXELS:
        return False
    probe = np.ones(shape, dtype=bool)
    probe[tuple(reach)] = False
    fast = np.sqrt(_edtsq(probe, spacing), dtype=np.float64)
    exact = distance_transform_edt(probe, sampling=spacing)
    return bool(np.all(np.abs(fast - exact) <= 1e-6 * np.abs(offset - exact)))


def _outside_box(outside: np.ndarray) -> tuple[slice, ...] | None:
    """`bounding_box(outside, margin=1)`, or None when that is the whole image.

    The box is the whole image when every face of the image holds a True voxel: first tried on
    the corners alone (an object away from the border leaves them all outside), then the faces.
    """
    corners = itertools.product(*[(0, n - 1) for n in outside.shape])
    if all(outside[corner] for corner in corners):
        return None
    faces = (
        outside[(slice(None),) * axis + (end,)].any()
        for axis in range(outside.ndim)
        for end in (0, -1)
    )
    if all(faces):
        return None
    return bounding_box(outside, margin=1)


def _distance_to(
    mask: np.ndarray, spacing: np.ndarray, float64: bool, out: np.ndarray | None = None
) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest True voxel of `mask` (0 on the mask).

    Only voxels outside the mask have non-zero values, and every voxel outside the bounding box of
    `~mask` grown by one is on the mask, so the transform runs on that box alone: the nearest
    mask voxel of a voxel in the box is never beyond the grown box's rim, which is all mask.

    The `edt` package (an exact Felzenszwalb-Huttenlocher transform in C++) computes 2D and 3D
    maps in float32, which is exact for squared distances on a unit grid (so the values equal
    scipy's bit for bit) and within 1e-7 relative otherwise. `float64=True`, and other ranks, use
    scipy's `distance_transform_edt`, the original's arithmetic. The result goes to `out`.
    """
    res = np.zeros(mask.shape, dtype=np.float64) if out is None else out
    outside = ~mask
    if not outside.any():
        res[...] = 0
        return res
    box = bounding_box(outside, margin=1)
    if any(s.stop - s.start < n for s, n in zip(box, mask.shape, strict=True)):
        res[...] = 0
    crop = np.ascontiguousarray(outside[box])
    if float64 or mask.ndim not in (2, 3):
        res[box] = distance_transform_edt(crop, sampling=spacing)
    else:
        np.sqrt(_edtsq(crop, tuple(spacing.tolist())), out=res[box], dtype=np.float64)
    return res


def as_numpy(seg: Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A tensor (detached, on the CPU) or array-like as a numpy array."""
    if torch.is_tensor(seg):
        return seg.detach().cpu().numpy()
    return np.asarray(seg)


def _check_one_hot(seg: np.ndarray, outside: np.ndarray) -> None:
    """Raise ValueError unless seg (`K *xyz`) is one-hot along axis 0; `outside` is `seg == 0`.

    Values 0/1 summing to 1 at every voxel is exactly: a sum of 1 at every voxel (so at least one
    non-zero value each), K - 1 zeros per voxel on average (so exactly one non-zero value each),
    and then that value is the sum (zeros added to it, exact in any dtype): 1.
    """
    K, voxels = len(seg), outside[0].size
    if not (
        np.count_nonzero(outside) == (K - 1) * voxels
        and np.all(seg.sum(axis=0, dtype=seg.dtype) == 1)
    ):
        raise ValueError(
            f"seg must be one-hot along axis 0 (K x spatial, values 0/1 summing to 1), got "
            f"{describe(seg)} with values {sorted(np.unique(seg).tolist())[:10]}"
        )


def _sqrt_into(squared: np.ndarray, out: np.ndarray) -> None:
    """`out[...] = sqrt(squared)`, the root taken in float64 unless both are float32.

    A float32 root of a float32 input equals the float32 rounding of its float64 root (float64
    holds more than twice float32's precision, so rounding twice changes nothing for a square
    root), so float32 maps equal those of scipy's float64 values cast to float32 where the
    squares agree. `squared` may be overwritten.
    """
    if squared.dtype == out.dtype == np.float32:
        np.sqrt(squared, out=out)
    elif squared.dtype == out.dtype == np.float64:
        np.sqrt(squared, out=out)
    elif squared.dtype == np.float64:
        np.copyto(out, np.sqrt(squared, out=squared), casting="unsafe")
    else:
        np.copyto(out, np.sqrt(squared, dtype=np.float64), casting="unsafe")


def one_hot2dist(
    seg: np.ndarray,
    resolution: Sequence[float] | None = None,
    dtype: DTypeLike | None = None,
    *,
    spacing_offset: bool = False,
    threads: int | None = None,
) -> np.ndarray:
    """Signed distance map of each class, the target of the boundary loss.

    For each class k with at least one pixel: outside the object, the Euclidean distance (in mm)
    to the nearest object pixel; inside, minus (the distance to the nearest non-object pixel, minus
    the offset). With the default offset of one pixel the inner border is 0 and values grow
    negative inward. A class with no pixel gives zeros (another class supervises those pixels).

    Args:
        seg: `K *xyz` one-hot array (2D or 3D spatial; a tensor is accepted too).
        resolution: voxel spacing per spatial axis, e.g. (0.9, 0.9, 5.0); None means 1.
        dtype: output dtype. None keeps seg's dtype, as the original does with numpy's
            zeros_like: an integer seg then gives distances truncated to integers (a UserWarning
            says so). Pass np.float32 for exact distances.
        spacing_offset: off by default (the original). The original subtracts one pixel inside
            whatever the spacing, so with spacings other than 1 the inner border is not 0 and can
            even be positive (spacing 0.9 gives +0.1). When True, the offset is the smallest
            spacing, the distance to the nearest neighbour: inside values are then never
            positive, and the inner border is exactly 0 for isotropic spacing.
        threads: how many threads the transforms may use: edt's own (its `parallel`) on
            images of at least 2^20 voxels, and a pool running the classes' scipy transforms at
            once where scipy is used (integer outputs, ranks other than 2D and 3D). None
            (default): every core this process may run on. The values do not depend on it.

    Returns:
        `K *xyz` array of the chosen dtype.

    Raises:
        ValueError: seg not one-hot along axis 0, a resolution of the wrong length, or threads
            not a positive integer.

    A class filling the whole image has no pixel outside it; its inside values are then
    scipy's `1 - distance_transform_edt(mask)`, as in the original (scipy measures from a
    virtual background point before the first row): keep that in mind for empty slices.

    How: the original runs two transforms per class. Here each present class k gets one, `d_k`,
    the distance to class k, on the bounding box of the voxels outside k grown by one (the
    background's box is the objects'). Outside k, `d_k` is the class's map. Inside, the map
    needs the distance to the nearest voxel of any other class, and since the classes partition
    the image that is the smallest `d_j` over the other classes: a running minimum of the
    transforms already made, not a second transform per class.
    """
    seg = as_numpy(seg)
    if seg.ndim < 2:
        raise ValueError(f"seg must be K x spatial, got shape {seg.shape}")
    n_threads = _thread_count(threads)
    outside = np.equal(seg, 0, order="C")  # K *xyz: the voxels outside each class
    _check_one_hot(seg, outside)
    out_dtype = _output_dtype(seg, dtype, "one_hot2dist")
    spacing = normalise_spacing(resolution, seg.ndim - 1, "resolution")
    offset = spacing.min() if spacing_offset else 1.0

    present = [k for k in range(len(seg)) if not outside[k].all()]
    res = np.empty(seg.shape, dtype=out_dtype)
    res[[k for k in range(len(seg)) if k not in present]] = 0
    if len(present) == 1:  # one class fills the image: scipy's convention, as the original
        (k,) = present
        res[k] = offset - distance_transform_edt(~outside[k], sampling=spacing)
        return res

    # Float maps in 2D and 3D: edt, in float32 (exact squares on a unit grid, 1e-7 relative
    # otherwise). Elsewhere scipy's feature transform and the original's float64 values, which
    # integer outputs truncate bit for bit; the probe sends spacings whose offset would cancel
    # in float32 to scipy as well.
    use_edt = (
        seg.ndim in (3, 4)
        and np.issubdtype(out_dtype, np.floating)
        and _float32_is_enough(tuple(spacing.tolist()), float(offset))
    )
    boxes = [_outside_box(outside[k]) for k in present]
    crops = [
        outside[k] if box is None else np.ascontiguousarray(outside[k][box])
        for k, box in zip(present, boxes, strict=True)
    ]
    if use_edt:
        anisotropy = tuple(spacing.tolist())
        transforms = (_edtsq(crop, anisotropy, n_threads) for crop in crops)
    else:
        transforms = _scipy_transforms(crops, spacing, n_threads)

    # *xyz: squared distance to the nearest voxel of another class than the voxel's own (a
    # minimum of squares is the square of the minimum, exactly)
    nearest = np.full(seg.shape[1:], np.inf, dtype=np.float32 if use_edt else np.float64)
    for k, box, crop, squared in zip(present, boxes, crops, transforms, strict=True):
        near = nearest if box is None else nearest[box]
        np.minimum(near, squared, out=near, where=crop)
        # Outside values; the voxels of class k (all those beyond the box) are written below.
        _sqrt_into(squared, res[k] if box is None else res[k][box])
    # float64 arithmetic, as the original's `-(d - 1)`, then one cast to the output dtype
    inner = np.sqrt(nearest, dtype=np.float64, out=None if use_edt else nearest)
    inner = np.subtract(offset, inner, out=inner).astype(out_dtype, copy=False)
    inside = np.logical_not(outside, out=outside)
    for k in present:
        np.copyto(res[k], inner, where=inside[k])
    return res


def one_hot2hd_dist(
    seg: np.ndarray, resolution: Sequence[float] | None = None, dtype: DTypeLike | None = None
) -> np.ndarray:
    """Unsigned distance map of the Hausdorff loss (Karimi and Salcudean, 2019).

    For each class with at least one pixel, each pixel of the class gets its distance (in mm)
    to the nearest pixel not in the class; 0 elsewhere. As in the original, seg need not be
    one-hot (any stack of binary masks, e.g. a subset of the classes).

    Args:
        seg: `K *xyz` binary masks.
        resolution: voxel spacing per spatial axis; None means 1.
        dtype: output dtype; None keeps seg's dtype (integers truncate, with a UserWarning).

    Returns:
        `K *xyz` array of the chosen dtype. A mask filling the whole image gets scipy's
        `distance_transform_edt` of it, as in the original.
    """
    seg = as_numpy(seg)
    if seg.ndim < 2:
        raise ValueError(f"seg must be K x spatial, got shape {seg.shape}")
    out_dtype = _output_dtype(seg, dtype, "one_hot2hd_dist")
    spacing = normalise_spacing(resolution, seg.ndim - 1, "resolution")
    float64 = not np.issubdtype(out_dtype, np.floating) or seg.ndim - 1 not in (2, 3)

    res = np.zeros(seg.shape, dtype=out_dtype)
    for k, mask in enumerate(seg.astype(bool)):
        if mask.all():
            res[k] = distance_transform_edt(mask, sampling=spacing)
        elif mask.any():
            res[k] = _distance_to(~mask, spacing, float64)
    return res


# ---------------------------------------------------------------------------------------------
# The distance maps of a batch, where its tensors are
# ---------------------------------------------------------------------------------------------


def on_device(t: Tensor) -> bool:
    """Whether a batch's distance maps (and 3D surface distances) are computed with the torch
    transform on its device: tensors on an accelerator. On the CPU the numpy/C++ transforms of
    this module are faster (BENCHMARKS.md), and they define the values the torch ones match."""
    return torch.is_tensor(t) and t.device.type != "cpu"


def distance_maps(
    one_hot: Tensor,
    spacing: Tensor | Sequence | None = None,
    *,
    signed: bool = True,
    dtype: DTypeLike = np.float32,
    validate: bool = True,
) -> Tensor:
    """Distance maps of a batch, on the batch's device: the one dispatcher between the torch
    transform (`on_device`) and the per-sample CPU functions.

    Args:
        one_hot: `B K *xyz` masks (one-hot for the signed maps; any binary masks otherwise).
        spacing: `B D` spacing of each sample, one `D` row for all, or None (1).
        signed: the boundary loss's signed map (`one_hot2dist`), else the Hausdorff loss's
            unsigned inside distances (`one_hot2hd_dist`).
        dtype: a float dtype, or an integer dtype for distances truncated to integers (the
            original's HausdorffLoss on its int32 prediction; floored on the device, which equals
            the truncation of these non-negative distances).
        validate: on the device, check the masks (one-hot for the signed maps) and the spacing,
            which reads them back (a synchronisation); a training step passes False after its
            first batch, or for masks one-hot by construction. On the CPU the per-sample
            functions always check them: that is host work on host data, not a wait.

    Returns:
        `B K *xyz` tensor on one_hot's device: float32 there; on the CPU of `dtype` when it is a
        float dtype, else float32.
    """
    B, D = one_hot.shape[0], one_hot.ndim - 2
    if on_device(one_hot):
        maps = (
            one_hot2dist_torch(one_hot, spacing, validate=validate)
            if signed
            else one_hot2hd_dist_torch(one_hot, spacing, validate=validate)
        )
        return maps if np.issubdtype(np.dtype(dtype), np.floating) else maps.floor()
    rows = np.ones((B, D)) if spacing is None else np.asarray(as_numpy(spacing), np.float64)
    rows = np.broadcast_to(rows, (B, D))
    masks = as_numpy(one_hot)
    transform = one_hot2dist if signed else one_hot2hd_dist
    maps = torch.from_numpy(
        np.stack([transform(m, tuple(r), dtype=dtype) for m, r in zip(masks, rows, strict=True)])
    )
    return maps if maps.is_floating_point() else maps.to(torch.float32)
