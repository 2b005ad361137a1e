"""Tests for the 3D surface metrics of metrics.py: HD and HD95 (medpy definitions).

Expected values come from a brute-force all-pairs surface distance written here, from analytic
shapes, and from medpy.metric.binary (skipped when medpy is absent).
"""

import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter, generate_binary_structure

from boundary_loss.metrics import hd, hd95, hd_hd95


def _border(mask: np.ndarray, connectivity: int) -> np.ndarray:
    footprint = generate_binary_structure(mask.ndim, connectivity)
    return mask ^ binary_erosion(mask, structure=footprint)


def brute_surface_distances(a, b, spacing, connectivity=1) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances a->b and b->a between the border voxels of two non-empty masks."""
    a, b = a.astype(bool), b.astype(bool)
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (a.ndim,))
    pa = np.argwhere(_border(a, connectivity)) * spacing  # (Na, D) in mm
    pb = np.argwhere(_border(b, connectivity)) * spacing  # (Nb, D)
    dist = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))  # (Na, Nb)
    return dist.min(axis=1), dist.min(axis=0)


def brute_hd_hd95(a, b, spacing=1.0, connectivity=1) -> tuple[float, float]:
    d_ab, d_ba = brute_surface_distances(a, b, spacing, connectivity)
    hd_value = max(d_ab.max(), d_ba.max())
    hd95_value = np.percentile(np.concatenate([d_ab, d_ba]), 95)
    return float(hd_value), float(hd95_value)


def random_mask(rng: np.random.Generator, shape, smooth: float, fill: float) -> np.ndarray:
    """Non-empty binary mask: thresholded noise, smoothed into blobs when smooth > 0."""
    field = rng.random(shape)
    if smooth > 0:
        field = gaussian_filter(field, smooth)
    mask = field > np.quantile(field, 1 - fill)
    mask.flat[rng.integers(mask.size)] = True
    return mask


def diagonal(shape, spacing) -> float:
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (len(shape),))
    return float(np.sqrt(((np.asarray(shape) * spacing) ** 2).sum()))


# ------------------------------------------------------------------------- brute-force cases

BRUTE_CASES = [
    # (shape, spacing, connectivity, smooth, fill)
    ((12, 10), None, 1, 0.0, 0.3),
    ((12, 10), (0.9, 2.5), 1, 1.0, 0.4),
    ((12, 10), (2.5, 0.9), 2, 1.0, 0.3),
    ((12, 10), 1.7, 1, 0.0, 0.5),
    ((6, 7, 5), (0.9, 0.9, 5.0), 1, 1.0, 0.3),
    ((6, 7, 5), (1.0, 1.0, 1.0), 1, 0.0, 0.2),
    ((6, 7, 5), (0.7, 1.3, 2.0), 2, 1.0, 0.4),
    ((6, 7, 5), (0.7, 1.3, 2.0), 3, 0.0, 0.4),
    ((4, 5, 3, 3), (1.0, 2.0, 0.5, 1.5), 1, 0.0, 0.4),
]


@pytest.mark.parametrize("shape, spacing, connectivity, smooth, fill", BRUTE_CASES)
def test_hd_hd95_brute_force(shape, spacing, connectivity, smooth, fill):
    rng = np.random.default_rng(sum(shape) + 7 * connectivity)
    for _ in range(3):
        a = random_mask(rng, shape, smooth, fill)
        b = random_mask(rng, shape, smooth, fill)
        exp_hd, exp_hd95 = brute_hd_hd95(a, b, 1.0 if spacing is None else spacing, connectivity)
        kwargs = {"voxelspacing": spacing, "connectivity": connectivity}
        res_hd = hd(a, b, **kwargs)
        res_hd95 = hd95(a, b, **kwargs)
        assert isinstance(res_hd, float) and isinstance(res_hd95, float)
        assert res_hd == pytest.approx(exp_hd, rel=1e-6)
        assert res_hd95 == pytest.approx(exp_hd95, rel=1e-6)
        both = hd_hd95(a, b, **kwargs)
        assert isinstance(both, tuple) and len(both) == 2
        assert both[0] == pytest.approx(res_hd, rel=1e-12)
        assert both[1] == pytest.approx(res_hd95, rel=1e-12)
        assert hd(b, a, **kwargs) == pytest.approx(res_hd, rel=1e-12)  # symmetric
        assert hd95(b, a, **kwargs) == pytest.approx(res_hd95, rel=1e-12)


# ---------------------------------------------------------------------------- analytic cases


def _single(shape, idx) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[idx] = True
    return mask


@pytest.mark.parametrize(
    "shape, p, q, spacing, expected",
    [
        ((6, 8), (1, 2), (4, 6), None, 5.0),
        ((6, 8), (1, 2), (4, 6), (1.0, 1.0), 5.0),
        ((6, 8), (1, 2), (4, 6), (2.0, 0.5), math.sqrt(6.0**2 + 2.0**2)),
        ((6, 8), (1, 2), (4, 6), 3.0, 15.0),
        ((4, 5, 6), (0, 0, 0), (1, 2, 2), None, 3.0),
        ((4, 5, 6), (0, 0, 0), (1, 2, 2), (0.5, 1.0, 3.0), math.sqrt(0.25 + 4.0 + 36.0)),
    ],
)
def test_single_voxels(shape, p, q, spacing, expected):
    a, b = _single(shape, p), _single(shape, q)
    assert hd(a, b, voxelspacing=spacing) == pytest.approx(expected, rel=1e-12)
    assert hd95(a, b, voxelspacing=spacing) == pytest.approx(expected, rel=1e-12)
    assert hd_hd95(a, b, voxelspacing=spacing) == pytest.approx((expected, expected), rel=1e-12)


@pytest.mark.parametrize(
    "shape, box, axis, spacing",
    [
        ((12, 10), (slice(2, 6), slice(3, 7)), 0, (5.0, 1.0)),
        ((10, 12), (slice(3, 7), slice(2, 6)), 1, (1.0, 5.0)),
        ((10, 9, 8), (slice(2, 6), slice(3, 7), slice(1, 4)), 0, (5.0, 1.0, 1.0)),
        ((9, 8, 10), (slice(3, 7), slice(1, 4), slice(2, 6)), 2, (1.0, 1.0, 5.0)),
    ],
)
def test_box_shifted_by_two_voxels(shape, box, axis, spacing):
    """A box and its copy shifted by 2 voxels along an axis of spacing 5 are 10 mm apart."""
    a = np.zeros(shape, dtype=np.uint8)
    a[box] = 1
    b = np.roll(a, 2, axis=axis)
    assert hd(a, b, voxelspacing=spacing) == pytest.approx(10.0, rel=1e-12)
    assert hd(b, a, voxelspacing=spacing) == pytest.approx(10.0, rel=1e-12)
    assert hd95(a, b, voxelspacing=spacing) == pytest.approx(
        brute_hd_hd95(a, b, spacing)[1], rel=1e-12
    )


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 4)])
def test_identical_masks(shape):
    a = random_mask(np.random.default_rng(0), shape, 1.0, 0.4)
    assert hd(a, a) == 0.0
    assert hd95(a, a) == 0.0
    assert hd_hd95(a, a.astype(np.int64), voxelspacing=(2.0,) * len(shape)) == (0.0, 0.0)


def test_scalar_spacing_equals_sequence():
    rng = np.random.default_rng(2)
    a = random_mask(rng, (8, 9, 7), 1.0, 0.3)
    b = random_mask(rng, (8, 9, 7), 1.0, 0.3)
    assert hd(a, b, voxelspacing=2.5) == pytest.approx(hd(a, b, voxelspacing=(2.5, 2.5, 2.5)))
    assert hd95(a, b, voxelspacing=2.5) == pytest.approx(2.5 * hd95(a, b), rel=1e-12)


# ------------------------------------------------------------------------ empty conventions


@pytest.mark.parametrize(
    "shape, spacing",
    [((7, 9), None), ((7, 9), (0.9, 2.5)), ((5, 6, 4), (0.9, 0.9, 5.0)), ((5, 6, 4), 2.0)],
)
def test_empty_masks(shape, spacing):
    empty = np.zeros(shape, dtype=bool)
    some = random_mask(np.random.default_rng(1), shape, 0.0, 0.3)
    diag = diagonal(shape, 1.0 if spacing is None else spacing)
    for fn in (hd, hd95):
        assert fn(empty, empty, voxelspacing=spacing) == 0.0
        assert fn(empty, some, voxelspacing=spacing) == pytest.approx(diag, rel=1e-12)
        assert fn(some, empty, voxelspacing=spacing) == pytest.approx(diag, rel=1e-12)
    assert hd_hd95(empty, empty, voxelspacing=spacing) == (0.0, 0.0)
    assert hd_hd95(some, empty, voxelspacing=spacing) == pytest.approx((diag, diag), rel=1e-12)


def test_empty_prediction_diagonal_by_hand():
    """Volume 10 x 20 x 4 with spacing (1, 0.5, 5): diagonal sqrt(100 + 100 + 400) mm."""
    truth = np.zeros((10, 20, 4), dtype=np.uint8)
    truth[4:6, 8:12, 1:3] = 1
    pred = np.zeros_like(truth)
    assert hd(pred, truth, voxelspacing=(1.0, 0.5, 5.0)) == pytest.approx(math.sqrt(600.0))


# ------------------------------------------------------------------------------ medpy parity

MEDPY_CASES = [
    # (shape, spacing, connectivity)
    ((40, 36), None, 1),
    ((40, 36), (0.9, 2.5), 1),
    ((40, 36), (0.9, 2.5), 2),
    ((20, 18, 10), (0.9, 0.9, 5.0), 1),
    ((20, 18, 10), (1.0, 1.0, 1.0), 1),
    ((20, 18, 10), (0.7, 1.3, 3.0), 2),
    ((20, 18, 10), 1.5, 3),
]


@pytest.mark.parametrize("shape, spacing, connectivity", MEDPY_CASES)
def test_agrees_with_medpy(shape, spacing, connectivity):
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(len(shape) * 10 + connectivity)
    for _ in range(3):
        a = random_mask(rng, shape, 2.0, 0.25)
        b = random_mask(rng, shape, 2.0, 0.25)
        exp_hd = binary.hd(a, b, voxelspacing=spacing, connectivity=connectivity)
        exp_hd95 = binary.hd95(a, b, voxelspacing=spacing, connectivity=connectivity)
        kwargs = {"voxelspacing": spacing, "connectivity": connectivity}
        assert hd(a, b, **kwargs) == pytest.approx(exp_hd, rel=1e-4)
        assert hd95(a, b, **kwargs) == pytest.approx(exp_hd95, rel=1e-4)
        assert hd_hd95(a, b, **kwargs) == pytest.approx((exp_hd, exp_hd95), rel=1e-4)


# -------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("fn", [hd, hd95, hd_hd95])
def test_rejects_mismatched_shapes(fn):
    with pytest.raises(ValueError, match=r"(?i)shape"):
        fn(np.ones((4, 5), dtype=bool), np.ones((5, 4), dtype=bool))


@pytest.mark.parametrize("fn", [hd, hd95, hd_hd95])
@pytest.mark.parametrize(
    "spacing",
    [(1.0, 1.0, 1.0), (1.0,), (1.0, 0.0), (-1.0, 1.0), 0.0, -2.0],
)
def test_rejects_bad_spacing(fn, spacing):
    a = np.zeros((4, 5), dtype=bool)
    a[1:3, 1:3] = True
    with pytest.raises(ValueError, match=r"(?i)spacing"):
        fn(a, a, voxelspacing=spacing)
