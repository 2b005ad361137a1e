"""Surface distance metrics on binary masks: Hausdorff distance (HD) and its 95th percentile (HD95).

The definitions are those of medpy (`medpy.metric.binary.hd` / `hd95`), which the segmentation
literature, the boundary-loss papers (Kervadec et al., MIDL 2019 / MedIA 2021) included, reports:

- the border of a mask is `mask XOR binary_erosion(mask, generate_binary_structure(ndim, c))`,
  with connectivity c = 1 by default and voxels outside the volume counted as background;
- the directed surface distances from A to B are, for each border voxel of A, the Euclidean
  distance (in mm, with the voxel spacing) to the nearest border voxel of B;
- HD is the largest directed distance either way; HD95 is the 95th percentile (numpy's linear
  interpolation) of both directed sets pooled.

Two differences from medpy, both chosen so a validation loop never crashes on an empty mask:
both masks empty gives 0, exactly one empty gives the diagonal of the volume in mm (medpy raises).

Speed: medpy computes a distance transform of the whole volume for each direction, twice (once
for hd, once for hd95). Here the borders are extracted on the bounding box of both masks (grown by
one voxel so the erosion sees the same background), and the nearest-border distances come from
k-d trees over the border voxels (in mm), once for both metrics: the cost follows the size of the
surfaces, not of the volume. The distances are the same Euclidean distances (float64).

Adjacency graphs (the semantic constraint of Ganaye et al., "Semi-supervised learning for
segmentation under semantic constraint", MICCAI 2018): `count_adjacency` counts, for every ordered
pair of classes (i, j), the voxels of class i having a voxel of class j in their neighbourhood;
the classes never adjacent in the training labels are the forbidden pairs (`forbidden_pairs`),
and `forbidden_adjacencies` counts how often a prediction breaks them. `read_graph` / `as_graph`
load the `graph.csv` written by `preprocess/extract_adjacency.py`, which the NonAdjacencyLoss of
`losses.py` reads too.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_dilation, binary_erosion, generate_binary_structure, label
from scipy.spatial import cKDTree
from torch import Tensor

from distance_torch import distance_to

Spacing = float | Sequence[float] | np.ndarray | None


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


def _check_pair(result: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    result = np.atleast_1d(np.asarray(result)).astype(bool)
    reference = np.atleast_1d(np.asarray(reference)).astype(bool)
    if result.shape != reference.shape:
        raise ValueError(
            f"result and reference must have the same shape, got {result.shape} and "
            f"{reference.shape}"
        )
    return result, reference


def surface_distances(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances both ways between two non-empty binary masks.

    Args:
        result, reference: binary arrays of the same shape (any number of dimensions).
        voxelspacing: voxel size per axis in mm (scalar or sequence); None means 1.
        connectivity: neighbourhood defining the border (1 = faces only, as medpy's default).

    Returns:
        (d_result_to_reference, d_reference_to_result): float64 vectors, one value per border voxel.

    Raises:
        ValueError: shapes differ, bad spacing, or either mask is empty.
    """
    result, reference = _check_pair(result, reference)
    spacing = normalise_spacing(voxelspacing, result.ndim)
    if not result.any() or not reference.any():
        raise ValueError("surface_distances needs two non-empty masks (see hd for the convention)")

    box = bounding_box(result | reference, margin=1)
    result, reference = result[box], reference[box]
    footprint = generate_binary_structure(result.ndim, connectivity)
    result_border = result ^ binary_erosion(result, structure=footprint, iterations=1)
    reference_border = reference ^ binary_erosion(reference, structure=footprint, iterations=1)

    result_points = np.argwhere(result_border) * spacing  # N x ndim, in mm
    reference_points = np.argwhere(reference_border) * spacing  # M x ndim
    to_reference, _ = cKDTree(reference_points).query(result_points, k=1)
    to_result, _ = cKDTree(result_points).query(reference_points, k=1)
    return to_reference, to_result


def hd_hd95(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> tuple[float, float]:
    """Hausdorff distance and its 95th percentile from one pair of distance transforms.

    Args:
        result, reference: binary arrays of the same shape (prediction and ground truth).
        voxelspacing: voxel size per axis in mm (scalar or sequence); None means 1.
        connectivity: neighbourhood defining the border (1, medpy's default).

    Returns:
        (hd, hd95) in mm. Both masks empty: (0, 0). Exactly one empty: the volume diagonal twice.

    Raises:
        ValueError: shapes differ, or the spacing has the wrong length or a non-positive value.
    """
    result, reference = _check_pair(result, reference)
    spacing = normalise_spacing(voxelspacing, result.ndim)
    has_result, has_reference = result.any(), reference.any()
    if not has_result and not has_reference:
        return 0.0, 0.0
    if not has_result or not has_reference:
        worst = diagonal(result.shape, spacing)
        return worst, worst

    d_ab, d_ba = surface_distances(result, reference, spacing, connectivity)
    hd = float(max(d_ab.max(), d_ba.max()))
    hd95 = float(np.percentile(np.hstack((d_ab, d_ba)), 95))
    return hd, hd95


def hd(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> float:
    """Symmetric Hausdorff distance in mm, as `medpy.metric.binary.hd` (see `hd_hd95`)."""
    return hd_hd95(result, reference, voxelspacing, connectivity)[0]


def hd95(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> float:
    """95th percentile Hausdorff distance in mm, as `medpy.metric.binary.hd95` (see `hd_hd95`)."""
    return hd_hd95(result, reference, voxelspacing, connectivity)[1]


def _border_torch(mask: Tensor) -> Tensor:
    """`mask XOR erosion(mask)` with face connectivity; `mask` is padded with False already."""
    eroded = mask.clone()
    for axis in range(mask.ndim):
        for shift in (1, -1):
            eroded &= torch.roll(mask, shift, axis)  # the False padding stops the wrap-around
    return mask & ~eroded


def _percentile_linear(values: Tensor, q: float) -> float:
    """numpy.percentile(values, q) with its default linear interpolation, for a 1D tensor."""
    ordered = values.sort().values
    position = q / 100 * (len(ordered) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    a, b = float(ordered[low]), float(ordered[high])
    return b - (b - a) * (1 - fraction) if fraction >= 0.5 else a + (b - a) * fraction


def hd_hd95_torch(
    result: Tensor, reference: Tensor, voxelspacing: Spacing = None
) -> tuple[float, float]:
    """`hd_hd95` on the tensors' device (the GPU during validation): same definitions, same
    conventions for empty masks, face connectivity.

    The borders are taken on the bounding box of both masks padded with one background voxel,
    and each directed distance is read from an exact float64 distance transform of the other
    border (`distance_torch.distance_to`) instead of a k-d tree.

    Args:
        result, reference: binary tensors of the same shape (prediction and ground truth).
        voxelspacing: voxel size per axis in mm (scalar or sequence); None means 1.

    Returns:
        (hd, hd95) in mm, as `hd_hd95` (to float64 rounding).
    """
    if result.shape != reference.shape:
        raise ValueError(
            f"result and reference must have the same shape, got {tuple(result.shape)} and "
            f"{tuple(reference.shape)}"
        )
    result, reference = result.bool(), reference.bool()
    spacing = normalise_spacing(voxelspacing, result.ndim)
    has_result, has_reference = bool(result.any()), bool(reference.any())
    if not has_result and not has_reference:
        return 0.0, 0.0
    if not has_result or not has_reference:
        worst = diagonal(tuple(result.shape), spacing)
        return worst, worst

    hits = (result | reference).nonzero()
    low, high = hits.amin(0).tolist(), (hits.amax(0) + 1).tolist()
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    pad = [1, 1] * result.ndim
    borders = [
        _border_torch(torch.nn.functional.pad(m[box].to(torch.uint8), pad).bool())
        for m in (result, reference)
    ]
    to_border = distance_to(
        torch.stack(borders)[:, None], spacing.tolist(), result.ndim, dtype=torch.float64
    )  # 2 1 *xyz: distance to the result's border, to the reference's border
    d_ab = to_border[1, 0][borders[0]]  # result border -> reference border
    d_ba = to_border[0, 0][borders[1]]
    hd = float(torch.maximum(d_ab.max(), d_ba.max()))
    return hd, _percentile_linear(torch.cat((d_ab, d_ba)), 95)


# ---------------------------------------------------------------------------------------------
# Adjacency graphs (Ganaye et al., MICCAI 2018)
# ---------------------------------------------------------------------------------------------

# Largest joint histogram of `count_adjacency` (bins): small enough to stay in cache.
_MAX_BINS = 2**16


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_labels(labels: np.ndarray, K: int, name: str = "labels") -> np.ndarray:
    """Return `labels` as an integer array after checking its values are classes 0..K-1.

    Args:
        labels: `*xyz` class indices (integer, boolean, or integer-valued floats).
        K: number of classes.
        name: the argument's name in error messages.

    Returns:
        The labels as an integer numpy array (no copy when already integer).

    Raises:
        ValueError: empty or zero-dimensional array, non-integer values, or values outside
            0..K-1 (listed in the message).
    """
    K = _positive_int(K, "K")
    labels = np.asarray(labels)
    if labels.ndim == 0 or labels.size == 0:
        raise ValueError(f"{name} must be a non-empty array of class indices, got {labels.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    elif np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            raise ValueError(
                f"{name} must hold integer class indices, got non-integer {labels.dtype} values"
            )
        labels = labels.astype(np.int64)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= K:
        outside = np.unique(labels[(labels < 0) | (labels >= K)])
        shown = ", ".join(str(v) for v in outside[:10]) + (", ..." if outside.size > 10 else "")
        raise ValueError(
            f"{name} has values [{shown}] outside the {K} classes 0..{K - 1} (shape {labels.shape})"
        )
    return labels


def _half_window(ndim: int, n_size: int) -> list[tuple[int, ...]]:
    """The offsets of the (2n+1)^d window greater than zero (lexicographically): one of each
    pair {o, -o}, the centre excluded."""
    zero = (0,) * ndim
    return [o for o in itertools.product(range(-n_size, n_size + 1), repeat=ndim) if o > zero]


def count_adjacency(labels: np.ndarray, K: int, n_size: int = 1) -> np.ndarray:
    """Count how often each class has each class in its neighbourhood.

    counts[i, j] = the number of (voxel, neighbour) pairs with the voxel in class i and the
    neighbour in class j, the neighbours of a voxel being the other voxels of its (2n+1)^d window
    that lie inside the array (d = labels.ndim, n = n_size; 3x3 in 2D, 3x3x3 in 3D for n = 1).
    The matrix is symmetric and its diagonal counts neighbours of the same class; it sums to the
    number of (voxel, neighbour) pairs, prod(3 n_a - 2) - prod(n_a) over the axes for n = 1.

    Vectorised: the array is padded with a sentinel class K, so every offset is one shift of the
    flattened array; the codes of several offsets are packed into one integer per voxel and a
    single `np.bincount` gives their joint histogram, whose marginals are the pair counts. Offsets
    o and -o give transposed counts, so half the window is counted and the transpose added. About
    40 ms for a 256x256x40 volume (K=4, one CPU core; see BENCHMARKS.md).

    Args:
        labels: `*xyz` class indices in 0..K-1 (any number of dimensions; a 3D volume gets 3D
            neighbourhoods: count slice by slice for 2D ones).
        K: number of classes.
        n_size: half width of the window (1 gives 3^d - 1 neighbours).

    Returns:
        `K K` int64 counts.

    Raises:
        ValueError: labels empty, not integer, or outside 0..K-1; K or n_size not positive.
    """
    labels = check_labels(labels, K, "labels")
    n_size = _positive_int(n_size, "n_size")
    KP = K + 1  # the classes and the sentinel
    offsets = _half_window(labels.ndim, n_size)
    group = 1  # offsets packed per code: KP^(group + 1) bins
    while group < len(offsets) and KP ** (group + 2) <= _MAX_BINS:
        group += 1
    n_bins = KP ** (group + 1)
    dtype = np.uint16 if n_bins <= 2**16 else np.uint32 if n_bins <= 2**32 else np.int64

    padded = np.pad(labels.astype(dtype), n_size, constant_values=K)
    strides = np.cumprod((1,) + padded.shape[:0:-1])[::-1]  # in elements, C order
    shifts = [int(np.dot(o, strides)) for o in offsets]
    # Every voxel of the original array keeps its neighbours at the same flat shift (the padding
    # absorbs the edges); the tail lets padding voxels near the end shift without bounds checks.
    N = padded.size
    flat = np.concatenate([padded.ravel(), np.full(max(shifts), K, dtype=dtype)])

    half = np.zeros((KP, KP), dtype=np.int64)  # counts over half the window
    for start in range(0, len(shifts), group):
        chunk = shifts[start : start + group]
        code = flat[:N].copy()  # centre class first, then one digit per offset, base KP
        for shift in chunk:
            code *= dtype(KP)
            code += flat[shift : shift + N]
        chunk_bins = KP ** (len(chunk) + 1)
        n_zero = N - np.count_nonzero(code)  # code 0: class 0 at the centre and the offsets
        if n_zero > N // 2:
            # Mostly background: bincount slows down on long runs of one value (each increment
            # waits for the last), so those are counted at once and the rest binned.
            joint = np.bincount(code[code != 0], minlength=chunk_bins)
            joint[0] += n_zero
        else:
            joint = np.bincount(code, minlength=chunk_bins)
        joint = joint.reshape((KP,) * (len(chunk) + 1))
        digits = range(1, len(chunk) + 1)
        for digit in digits:
            half += joint.sum(axis=tuple(a for a in digits if a != digit))
    half = half[:K, :K]  # drop the pairs with a padding voxel
    return half + half.T


def read_graph(path: str | os.PathLike) -> np.ndarray:
    """Read a `graph.csv` adjacency graph (K x K counts, `;` separated, no header).

    Args:
        path: the file, as written by `preprocess/extract_adjacency.py`.

    Returns:
        `K K` int64 counts.

    Raises:
        ValueError: unreadable file, or not a square matrix of non-negative integers (the
            message names the file).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data"
            values = np.loadtxt(path, delimiter=";", dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the adjacency graph {path}: {error}") from None
    return as_graph(values, f"adjacency graph {path}")


def as_graph(graph: str | os.PathLike | np.ndarray | Sequence, name: str = "graph") -> np.ndarray:
    """An adjacency graph from a `graph.csv` path or a K x K array / nested list of counts.

    Args:
        graph: a path (read with `read_graph`) or the counts themselves.
        name: the argument's name in error messages.

    Returns:
        `K K` int64 counts.

    Raises:
        ValueError: unreadable file, not a non-empty square matrix, or a value that is not a
            non-negative integer.
    """
    if isinstance(graph, str | os.PathLike):
        return read_graph(graph)
    try:
        values = np.asarray(graph, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a K x K matrix of counts, got {graph!r}") from None
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.size == 0:
        raise ValueError(f"{name} must be a square K x K matrix of counts, got {values.shape}")
    if not np.all(np.isfinite(values) & (values >= 0) & (values == np.round(values))):
        raise ValueError(f"{name} must hold non-negative integer counts")
    return values.astype(np.int64)


def forbidden_pairs(graph: np.ndarray) -> np.ndarray:
    """The class pairs never adjacent in the graph: `K K` bool, True where the count is 0.

    The diagonal is included: a class whose voxels never touch each other (isolated voxels only,
    or a class absent from the labels) is forbidden next to itself.
    """
    return as_graph(graph) == 0


def forbidden_adjacencies(
    pred: np.ndarray, forbidden: np.ndarray, n_size: int = 1
) -> tuple[int, int]:
    """How often a label map breaks the adjacency graph (Ganaye et al., MICCAI 2018).

    Args:
        pred: `*xyz` predicted class indices (2D or 3D), in 0..K-1.
        forbidden: `K K` bool, True for the forbidden pairs (`forbidden_pairs(graph)`).
        n_size: half width of the neighbourhood, as in `count_adjacency`.

    Returns:
        (pairs, components): pairs is the number of ordered (voxel, neighbour) pairs whose classes
        form a forbidden pair, as counted by `count_adjacency` (a contact between classes i and j
        counts from both sides when both (i, j) and (j, i) are forbidden); components is the
        number of connected components (`scipy.ndimage.label` per class, full connectivity)
        with at least one voxel having a forbidden neighbour: both sides of a contact count.
        A map respecting the graph gives (0, 0).

    Raises:
        ValueError: forbidden not a square bool matrix, or pred not class indices 0..K-1.
    """
    forbidden = np.asarray(forbidden)
    if forbidden.ndim != 2 or forbidden.shape[0] != forbidden.shape[1] or forbidden.size == 0:
        raise ValueError(f"forbidden must be a square K x K matrix, got shape {forbidden.shape}")
    if forbidden.dtype != bool:
        if not np.all((forbidden == 0) | (forbidden == 1)):
            raise ValueError(f"forbidden must be a bool matrix, got dtype {forbidden.dtype}")
        forbidden = forbidden.astype(bool)
    K = forbidden.shape[0]
    labels = check_labels(pred, K, "pred")
    counts = count_adjacency(labels, K, n_size)
    pairs = int(counts[forbidden].sum())
    if pairs == 0:
        return 0, 0

    window = np.ones((2 * n_size + 1,) * labels.ndim, dtype=bool)
    window[(n_size,) * labels.ndim] = False  # the neighbours, not the voxel itself
    connectivity = generate_binary_structure(labels.ndim, labels.ndim)
    components = 0
    for k in range(K):
        mask = labels == k
        if not forbidden[k].any() or not mask.any():
            continue
        has_bad_neighbour = binary_dilation(forbidden[k][labels], structure=window)
        touching = mask & has_bad_neighbour
        if touching.any():
            regions, _ = label(mask, structure=connectivity)
            components += np.unique(regions[touching]).size
    return pairs, components
