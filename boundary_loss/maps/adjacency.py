"""Adjacency graphs of label maps: the semantic constraint of Ganaye et al., "Semi-supervised
learning for segmentation under semantic constraint" (MICCAI 2018).

`count_adjacency` counts, for every ordered pair of classes (i, j), the voxels of class i having a
voxel of class j in their neighbourhood (3 x 3 in 2D, 3 x 3 x 3 in 3D with the default
`n_size=1`); the pairs never adjacent in the training labels are the forbidden pairs
(`forbidden_pairs`). The graph is stored as `graph.csv` (K x K integer counts, `;` separated, no
header): `graph_csv` writes that text, `read_graph` / `as_graph` read it back. This module is the
one place of that file format: `preprocess/extract_adjacency.py` writes the graph, the
`NonAdjacencyLoss` of `losses.py` and the forbidden-adjacency metric of `metrics.py` read it.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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


def graph_csv(counts: np.ndarray) -> str:
    """The `graph.csv` text of a `K K` count matrix: one row per line, `;` separated."""
    counts = as_graph(counts, "counts")
    return "".join(";".join(str(int(v)) for v in row) + "\n" for row in counts)
