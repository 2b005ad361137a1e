"""Seeded random generators and the shapes the stand-in data generators draw with.

Every random draw of the generators comes from `patient_rng`, a `numpy.random.default_rng`
seeded with (seed, dataset, patient), so that each patient's volumes depend on nothing else.
The shapes are given in millimetres on the volume's voxel grid: coordinates centred on the volume
(`voxel_axes`), in-plane rotations, smooth random intensity fields, irregular ellipsoids with a
partial-volume edge, and quantisation to values exact in binary (so that last-bit differences in
floating-point maths between machines almost never reach the bytes written).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Array = np.ndarray

DATASET_KEY = {"isles": 1, "wmh": 2, "acdc": 3, "nnunet": 4}  # part of every seed


def patient_rng(seed: int, dataset: str, *key: int) -> np.random.Generator:
    """The random generator of one patient: seeded from (seed, dataset, patient key).

    Args:
        seed: the generator's seed.
        dataset: a key of DATASET_KEY ("isles", "wmh", "acdc" or "nnunet").
        *key: the patient's key (its number, and for ISLES its split).

    Returns:
        A fresh generator; the same arguments give the same draws.
    """
    return np.random.default_rng([seed, DATASET_KEY[dataset], *key])


def voxel_axes(shape: Sequence[int], zooms: Sequence[float]) -> tuple[Array, ...]:
    """Voxel centre coordinates (mm) along each axis, centred on the volume.

    Args:
        shape: the volume's size per axis.
        zooms: the voxel size per axis (mm).

    Returns:
        One 1-D array per axis.
    """
    return tuple((np.arange(n) - (n - 1) / 2) * z for n, z in zip(shape, zooms, strict=True))


def rotate(dx: Array | float, dy: Array | float, angle: float) -> tuple:
    """In-plane coordinates rotated by `angle` (radians): into the frame of a rotated shape.

    Args:
        dx, dy: coordinates (mm) relative to the shape's centre, arrays or numbers.
        angle: the shape's rotation (radians).

    Returns:
        (u, v), the coordinates along the shape's own axes.
    """
    c, s = math.cos(angle), math.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def unrotate(u: float, v: float, angle: float) -> tuple[float, float]:
    """The inverse of `rotate`: from a shape's frame back to image axes.

    Args:
        u, v: coordinates (mm) along the shape's own axes.
        angle: the shape's rotation (radians).

    Returns:
        (dx, dy), the coordinates along the image axes.
    """
    c, s = math.cos(angle), math.sin(angle)
    return c * u - s * v, s * u + c * v


def random_field(
    rng: np.random.Generator, coords: Sequence[Array], wavelengths: tuple[float, float]
):
    """A smooth random field in [-1, 1]: three plane cosine waves of random direction and phase.

    Args:
        coords: coordinate arrays (mm) shaped X 1 1, 1 Y 1 and optionally 1 1 Z.
        wavelengths: range of the wave lengths (mm).

    Returns:
        The field, X Y 1 or X Y Z. The cosines are taken in-plane and along Z separately
        (cos(a + b) = cos a cos b - sin a sin b), which is much cheaper than on the volume.
    """
    total: Array | float = 0.0
    weights = 0.0
    for _ in range(3):
        direction = rng.normal(size=len(coords))
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(*wavelengths) * direction
        weight = rng.uniform(0.5, 1.0)
        plane = k[0] * coords[0] + k[1] * coords[1] + rng.uniform(0, 2 * np.pi)  # X Y 1
        if len(coords) == 3:
            along = k[2] * coords[2]  # 1 1 Z
            wave = np.cos(plane) * np.cos(along) - np.sin(plane) * np.sin(along)
        else:
            wave = np.cos(plane)
        total = total + weight * wave
        weights += weight
    return total / weights


def irregular_ellipsoid(
    rng: np.random.Generator,
    axes: Sequence[Array],
    centre: Sequence[float],
    radii: Sequence[float],
    reach: float = 1.3,
    wobble: float = 0.25,
) -> tuple[tuple[slice, slice, slice], Array]:
    """An irregular ellipsoid (rotated in-plane) on the bounding box where it can matter.

    Args:
        axes: the volume's 1-D voxel coordinates (mm) per axis.
        centre, radii: the ellipsoid (mm).
        reach: the box covers `reach` radii around the centre.
        wobble: relative amplitude of the boundary irregularity.

    Returns:
        The box as slices into the volume, and on it the normalised squared radius q (q < 1
        inside the irregular ellipsoid).
    """
    box = []
    for coord, c, r in zip(axes, centre, (max(radii[:2]), max(radii[:2]), radii[2]), strict=True):
        lo = int(np.searchsorted(coord, c - reach * r, side="left"))
        hi = int(np.searchsorted(coord, c + reach * r, side="right"))
        box.append(slice(lo, hi))
    x, y, z = axes
    dx = x[box[0], None, None] - centre[0]
    dy = y[None, box[1], None] - centre[1]
    dz = z[None, None, box[2]] - centre[2]
    u, v = rotate(dx, dy, rng.uniform(0, np.pi))
    q = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (dz / radii[2]) ** 2
    scale = 2.5 / min(radii[:2])  # a few bumps around the boundary
    bumps = np.cos(scale * u + rng.uniform(0, 2 * np.pi)) * np.cos(
        scale * v + rng.uniform(0, 2 * np.pi)
    )
    return (box[0], box[1], box[2]), q * (1 + wobble * bumps)


def soft_membership(q: Array, edge: float = 1.0) -> Array:
    """Partial-volume membership from a normalised squared radius: 1 inside, 0.5 at q = edge.

    Args:
        q: normalised squared radius, as `irregular_ellipsoid` returns it.
        edge: the value of q where the membership is one half.

    Returns:
        The membership in [0, 1], shaped like `q`.
    """
    return np.clip((edge - q) * 2.0 + 0.5, 0.0, 1.0)


def quantise(values: Array, step: float, dtype: type) -> Array:
    """Round to a multiple of `step` (a power of two: exact in binary) and cast.

    Args:
        values: the values.
        step: the grid, 1/16 or 1/4 for instance.
        dtype: the stored dtype.

    Returns:
        The quantised values as `dtype`.
    """
    return (np.round(values / step) * step).astype(dtype)
