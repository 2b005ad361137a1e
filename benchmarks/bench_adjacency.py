"""Adjacency graph extraction (Ganaye et al., MICCAI 2018): `maps.adjacency.count_adjacency` against
the straightforward per-voxel Python loop (every voxel, every offset of its 3x3x3 window, a bounds
check and one increment), on a K=4 256x256x40 cardiac-like label volume. Target: at least 1000x,
same counts.

The loop would take minutes on the whole volume, so it is timed on a 64x64x8 sub-volume through
the heart and its time scaled by the ratio of voxel counts; both give the same counts there.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from benchmarks.harness import Figure, speedup
from boundary_loss.maps.adjacency import count_adjacency

K = 4
SHAPE = (256, 256, 40)
SUB = (slice(96, 160), slice(96, 160), slice(16, 24))  # 64x64x8, through all four classes


def cardiac_volume(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """K=4 labels: LV cavity (3) ringed by myocardium (2), right ventricle (1) beside, in a
    heart that narrows from base to apex along the last axis; background (0) elsewhere."""
    X, Y, Z = shape
    xx, yy = np.mgrid[:X, :Y].astype(np.float64)
    cx, cy = X * 0.5, Y * 0.52
    labels = np.zeros(shape, dtype=np.uint8)
    for z in range(Z):
        scale = math.sqrt(max(0.0, 1 - ((z - Z / 2) / (0.55 * Z)) ** 2))  # ellipsoidal heart
        if scale == 0:
            continue
        r = np.hypot(xx - cx, yy - cy)
        labels[..., z][np.hypot((xx - cx) / 1.1, yy - cy + 38 * scale) < 30 * scale] = 1
        labels[..., z][r < 34 * scale] = 2
        labels[..., z][r < 24 * scale] = 3
    return labels


def loop_adjacency(labels: np.ndarray, K: int) -> np.ndarray:
    """The straightforward way: for every voxel and every neighbour in its 3x3x3 window inside
    the volume, counts[label(voxel), label(neighbour)] += 1."""
    X, Y, Z = labels.shape
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=3) if any(o)]
    counts = np.zeros((K, K), dtype=np.int64)
    for x in range(X):
        for y in range(Y):
            for z in range(Z):
                centre = labels[x, y, z]
                for dx, dy, dz in offsets:
                    u, v, w = x + dx, y + dy, z + dz
                    if 0 <= u < X and 0 <= v < Y and 0 <= w < Z:
                        counts[centre, labels[u, v, w]] += 1
    return counts


def adjacency_3d() -> Figure:
    labels = cardiac_volume()
    sub = np.ascontiguousarray(labels[SUB])
    scale = labels.size / sub.size
    same = bool(np.array_equal(count_adjacency(sub, K), loop_adjacency(sub, K)))
    counts = count_adjacency(labels, K)
    pairs = math.prod(3 * n - 2 for n in labels.shape) - labels.size  # (voxel, neighbour) pairs
    figure = speedup(
        "count_adjacency, K=4 256x256x40 label volume, 3x3x3 window",
        lambda: count_adjacency(labels, K),
        lambda: loop_adjacency(sub, K),
        baseline_name="per-voxel Python loop over the 26 neighbours (time scaled from a "
        "64x64x8 sub-volume)",
        repeat=3,
        target_ratio=1000,
        same_values=same and int(counts.sum()) == pairs,
        notes=f"the loop is timed on a 64x64x8 sub-volume through the heart ({sub.size} voxels) "
        f"and its time multiplied by {scale:g}, the ratio of voxel counts (a slight advantage to "
        "the loop: the sub-volume has proportionally more edge voxels, which skip increments); "
        "both give identical counts on the sub-volume (np.array_equal), and the whole volume's "
        f"counts sum to the {pairs} (voxel, neighbour) pairs of its shape. "
        f"{int((counts == 0).sum())} forbidden pairs of {K * K}.",
    )
    baseline = round(figure.baseline_value * scale, 3)
    return dataclasses.replace(
        figure, baseline_value=baseline, ratio=round(baseline / figure.value, 2)
    )


BENCHES = {
    "adjacency_3d": adjacency_3d,
}
