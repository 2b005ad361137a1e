"""Tests for the label, distance-map and overlap helpers of utils.py (docs/conventions.md).

Every expected value is worked out here, independently of utils.py: literal arrays computed by
hand, brute-force all-pairs distances over coordinate lists, or scipy's distance transform.
"""

import math
import multiprocessing

import numpy as np
import pytest
import torch
from scipy.ndimage import (
    binary_erosion,
    distance_transform_edt,
    generate_binary_structure,
    uniform_filter,
)

from boundary_loss.maps import distance
from boundary_loss.maps.distance import one_hot2dist, one_hot2hd_dist
from boundary_loss.maps.onehot import class2one_hot, one_hot, probs2class, probs2one_hot, simplex
from boundary_loss.metrics import dice_batch, dice_coef, hausdorff
from tests.host_reads import assert_checked_once

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ONE_HOT_MSG = r"(?i)one[-_ ]?hot|simplex"
SQ2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- brute-force references


def _coords(shape: tuple[int, ...], spacing) -> np.ndarray:
    """Physical coordinates (N, D) of every pixel of `shape`, in C order."""
    grid = np.indices(shape).reshape(len(shape), -1).T.astype(np.float64)
    return grid * np.asarray(spacing, dtype=np.float64)


def _nearest(shape: tuple[int, ...], spacing, targets: np.ndarray) -> np.ndarray:
    """For every pixel, the weighted Euclidean distance to the nearest pixel of `targets`."""
    pts = _coords(shape, spacing)  # (N, D)
    tgt = pts[targets.ravel()]  # (M, D)
    dist = np.sqrt(((pts[:, None, :] - tgt[None, :, :]) ** 2).sum(-1))  # (N, M)
    return dist.min(axis=1).reshape(shape)


def brute_signed_dist(seg: np.ndarray, spacing, offset: float = 1.0) -> np.ndarray:
    """Signed map: outside, distance to the object; inside, -(distance to background - offset)."""
    out = np.zeros(seg.shape, dtype=np.float64)
    for k, mask in enumerate(seg.astype(bool)):
        if not mask.any():
            continue
        assert not mask.all(), "brute-force reference needs some background"
        to_obj = _nearest(mask.shape, spacing, mask)
        to_bg = _nearest(mask.shape, spacing, ~mask)
        out[k] = np.where(mask, -(to_bg - offset), to_obj)
    return out


def brute_hd_dist(seg: np.ndarray, spacing) -> np.ndarray:
    """Unsigned map: inside each class, distance to the nearest pixel not in the class."""
    out = np.zeros(seg.shape, dtype=np.float64)
    for k, mask in enumerate(seg.astype(bool)):
        if not mask.any():
            continue
        assert not mask.all(), "brute-force reference needs some background"
        out[k] = np.where(mask, _nearest(mask.shape, spacing, ~mask), 0.0)
    return out


def original_formula(seg: np.ndarray, resolution=None) -> np.ndarray:
    """The original repository's per-class formula, written with scipy (any rank)."""
    out = np.zeros(seg.shape, dtype=np.float64)
    for k, mask in enumerate(seg.astype(bool)):
        if mask.any():
            neg = ~mask
            out[k] = (
                distance_transform_edt(neg, sampling=resolution) * neg
                - (distance_transform_edt(mask, sampling=resolution) - 1) * mask
            )
    return out


def brute_surface_hd(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric Hausdorff distance between the 1-voxel borders (connectivity 1) of two masks."""
    a, b = a.astype(bool), b.astype(bool)
    spacing = np.asarray(spacing, dtype=np.float64)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float(np.sqrt(((np.asarray(a.shape) * spacing) ** 2).sum()))
    footprint = generate_binary_structure(a.ndim, 1)
    ba = np.argwhere(a ^ binary_erosion(a, structure=footprint)) * spacing
    bb = np.argwhere(b ^ binary_erosion(b, structure=footprint)) * spacing
    dist = np.sqrt(((ba[:, None, :] - bb[None, :, :]) ** 2).sum(-1))
    return float(max(dist.min(axis=1).max(), dist.min(axis=0).max()))


def random_labels(rng: np.random.Generator, shape, n_labels: int, smooth: bool) -> np.ndarray:
    """Integer label map with values in 0..n_labels-1: salt-and-pepper, or smooth blobs."""
    if not smooth:
        return rng.integers(0, n_labels, size=shape)
    fields = np.stack([uniform_filter(rng.random(shape), size=3) for _ in range(n_labels)])
    return fields.argmax(axis=0)


def labels2onehot_np(labels: np.ndarray, K: int, dtype=np.uint8) -> np.ndarray:
    """K x spatial one-hot of an integer label map (numpy)."""
    ks = np.arange(K).reshape((K,) + (1,) * labels.ndim)
    return (labels[None] == ks).astype(dtype)


def labels2onehot_torch(labels: torch.Tensor, K: int) -> torch.Tensor:
    """B x K x spatial int32 one-hot of a B x spatial integer tensor."""
    oh = torch.nn.functional.one_hot(labels.long(), K)  # B x spatial x K
    return oh.movedim(-1, 1).to(torch.int32)


# ------------------------------------------------------------------------------ one_hot2dist

SQUARE_LABELS = np.array(
    [
        [0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 1, 1, 1, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ]
)

# Class 0 is the ring around the square, class 1 the 3x3 square, class 2 is empty.
SQUARE_DIST = np.array(
    [
        [
            [1 - SQ2, 0, 0, 0, 1 - SQ2],
            [0, 1, 1, 1, 0],
            [0, 1, 2, 1, 0],
            [0, 1, 1, 1, 0],
            [1 - SQ2, 0, 0, 0, 1 - SQ2],
        ],
        [
            [SQ2, 1, 1, 1, SQ2],
            [1, 0, 0, 0, 1],
            [1, 0, -1, 0, 1],
            [1, 0, 0, 0, 1],
            [SQ2, 1, 1, 1, SQ2],
        ],
        np.zeros((5, 5)),
    ]
)

# Unsigned map of the same image: inside distance to the nearest outside pixel, 0 elsewhere.
SQUARE_HD_DIST = np.array(
    [
        [
            [SQ2, 1, 1, 1, SQ2],
            [1, 0, 0, 0, 1],
            [1, 0, 0, 0, 1],
            [1, 0, 0, 0, 1],
            [SQ2, 1, 1, 1, SQ2],
        ],
        [
            [0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 1, 2, 1, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0],
        ],
        np.zeros((5, 5)),
    ]
)


def test_one_hot2dist_square_by_hand():
    seg = labels2onehot_np(SQUARE_LABELS, 3)
    res = one_hot2dist(seg, dtype=np.float64)
    assert res.shape == (3, 5, 5)
    assert res.dtype == np.float64
    np.testing.assert_allclose(res, SQUARE_DIST, rtol=1e-12, atol=1e-12)
    assert res[1, 2, 2] == pytest.approx(-1.0)  # centre of the square
    np.testing.assert_array_equal(res[2], 0)  # empty class


def test_one_hot2dist_square_spacing_by_hand():
    """Isotropic spacing 2: every distance doubles, the default offset stays one (in mm)."""
    seg = labels2onehot_np(SQUARE_LABELS, 2)
    res = one_hot2dist(seg, resolution=(2.0, 2.0), dtype=np.float64)
    expected_sq = np.array(
        [
            [2 * SQ2, 2, 2, 2, 2 * SQ2],
            [2, -1, -1, -1, 2],
            [2, -1, -3, -1, 2],
            [2, -1, -1, -1, 2],
            [2 * SQ2, 2, 2, 2, 2 * SQ2],
        ]
    )
    np.testing.assert_allclose(res[1], expected_sq, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("s", [0.5, 0.7, 2.0, 3.0])
def test_one_hot2dist_spacing_offset_zero_border(s):
    seg = labels2onehot_np(SQUARE_LABELS, 2)
    res = one_hot2dist(seg, resolution=(s, s), dtype=np.float64, spacing_offset=True)
    square_border = SQUARE_DIST[1] == 0  # the 8 pixels of the square next to the ring
    ring_edges = SQUARE_DIST[0] == 0  # ring pixels 4-adjacent to the square (not the corners)
    assert square_border.sum() == 8 and ring_edges.sum() == 12
    assert np.all(res[1][square_border] == 0.0)
    assert res[1, 2, 2] == pytest.approx(-s)  # centre: -(2 s - s)
    assert np.all(res[0][ring_edges] == 0.0)
    corner = (1 - SQ2) * s  # -(sqrt(2) s - s)
    np.testing.assert_allclose(res[0][[0, 0, 4, 4], [0, 4, 0, 4]], corner, rtol=1e-12)


def test_one_hot2dist_spacing_offset_anisotropic():
    """The corrected offset subtracts min(resolution) inside, whatever the other axes."""
    rng = np.random.default_rng(3)
    spacing = (0.9, 2.5)
    for _ in range(3):
        seg = labels2onehot_np(random_labels(rng, (7, 9), 3, smooth=True), 3)
        res = one_hot2dist(seg, resolution=spacing, dtype=np.float64, spacing_offset=True)
        expected = brute_signed_dist(seg, spacing, offset=0.9)
        np.testing.assert_allclose(res, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "shape, box, centre",
    [
        ((9, 9), (slice(2, 7), slice(2, 7)), (4, 4)),
        ((9, 11), (slice(1, 8), slice(3, 10)), (4, 6)),
        ((7, 7, 7), (slice(1, 6), slice(1, 6), slice(1, 6)), (3, 3, 3)),
    ],
)
def test_one_hot2dist_box_minimum_at_centre(shape, box, centre):
    labels = np.zeros(shape, dtype=np.int64)
    labels[box] = 1
    res = one_hot2dist(labels2onehot_np(labels, 2), dtype=np.float64)
    fg = res[1]
    assert np.unravel_index(np.argmin(fg), shape) == centre
    assert np.sum(fg == fg.min()) == 1
    # A box of odd side 2r+1 has its centre at r+1 from the background: value -r.
    r = min(s.stop - s.start for s in box) // 2
    assert fg[centre] == pytest.approx(-float(r))
    assert np.all(fg[labels == 1] <= 0)
    assert np.all(fg[labels == 0] >= 1)


SIGNED_CASES = [
    # (shape, K, spacing, n_labels, smooth)
    ((7, 9), 2, (1.0, 1.0), 2, False),
    ((7, 9), 3, (1.0, 1.0), 3, True),
    ((7, 9), 3, (0.9, 2.5), 3, False),
    ((7, 9), 4, (0.9, 2.5), 4, True),
    ((7, 9), 4, (2.5, 0.9), 3, True),  # class 3 absent
    ((5, 6, 4), 2, (1.0, 1.0, 1.0), 2, True),
    ((5, 6, 4), 3, (0.9, 0.9, 5.0), 3, False),
    ((5, 6, 4), 4, (0.9, 0.9, 5.0), 4, True),
    ((5, 6, 4), 4, (1.5, 0.7, 3.0), 3, False),  # class 3 absent
]


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-8), (np.float32, 1e-6)])
@pytest.mark.parametrize("shape, K, spacing, n_labels, smooth", SIGNED_CASES)
def test_one_hot2dist_brute_force(shape, K, spacing, n_labels, smooth, dtype, atol):
    rng = np.random.default_rng(len(shape) * 100 + K * 10 + n_labels)
    for _ in range(3):
        seg = labels2onehot_np(random_labels(rng, shape, n_labels, smooth), K)
        res = one_hot2dist(seg, resolution=spacing, dtype=dtype)
        assert res.shape == seg.shape
        assert res.dtype == dtype
        expected = brute_signed_dist(seg, spacing, offset=1.0)
        np.testing.assert_allclose(res, expected, rtol=1e-5, atol=atol)
        for k in range(n_labels, K):
            np.testing.assert_array_equal(res[k], 0)


@pytest.mark.parametrize(
    "shape, K, smooth",
    [((7, 9), 2, True), ((7, 9), 4, False), ((16, 12), 3, True), ((5, 6, 4), 3, True)],
)
def test_one_hot2dist_matches_original_formula(shape, K, smooth):
    rng = np.random.default_rng(11)
    for _ in range(3):
        seg = labels2onehot_np(random_labels(rng, shape, K, smooth), K, dtype=np.float64)
        res = one_hot2dist(seg)
        assert res.dtype == np.float64
        np.testing.assert_allclose(res, original_formula(seg), rtol=0, atol=1e-12)


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0), (0.9, 2.5)])
def test_one_hot2dist_full_class(spacing):
    """A class filling the image: inside values are 1 - scipy's EDT of the all-ones mask."""
    seg = np.zeros((2, 4, 5), dtype=np.uint8)
    seg[0] = 1
    res = one_hot2dist(seg, resolution=spacing, dtype=np.float64)
    expected = 1 - distance_transform_edt(seg[0].astype(bool), sampling=spacing)
    np.testing.assert_allclose(res[0], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(res[1], 0)


def test_one_hot2dist_float32_in_float32_out():
    seg = labels2onehot_np(SQUARE_LABELS, 3, dtype=np.float32)
    res = one_hot2dist(seg)
    assert res.dtype == np.float32
    np.testing.assert_allclose(res, SQUARE_DIST, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_one_hot2dist_integer_input_truncates_with_warning(dtype):
    rng = np.random.default_rng(5)
    seg = labels2onehot_np(random_labels(rng, (7, 9), 3, smooth=True), 3, dtype=dtype)
    spacing = (0.9, 2.5)
    with pytest.warns(UserWarning):
        res = one_hot2dist(seg, resolution=spacing)
    assert res.dtype == dtype
    exact = brute_signed_dist(seg, spacing)
    np.testing.assert_array_equal(res, np.trunc(exact).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_hot2dist_explicit_dtype_on_integer_input(dtype):
    seg = labels2onehot_np(SQUARE_LABELS, 3, dtype=np.int64)
    res = one_hot2dist(seg, dtype=dtype)
    assert res.dtype == dtype
    np.testing.assert_allclose(res, SQUARE_DIST, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "seg",
    [
        np.array([[[1, 0], [0, 0]], [[1, 1], [1, 1]]], dtype=np.uint8),  # pixel in two classes
        np.array([[[1, 0], [0, 0]], [[0, 1], [1, 0]]], dtype=np.uint8),  # pixel in no class
        np.array([[[2, 0], [0, 0]], [[0, 1], [1, 1]]], dtype=np.uint8),  # value 2
    ],
)
def test_one_hot2dist_rejects_non_one_hot(seg):
    with pytest.raises(ValueError, match=ONE_HOT_MSG):
        one_hot2dist(seg, dtype=np.float64)


@pytest.mark.parametrize("fn", [one_hot2dist, one_hot2hd_dist])
@pytest.mark.parametrize("resolution", [(1.0, 1.0, 1.0), (1.0, 0.0), (-0.9, 2.5)])
def test_distance_maps_reject_bad_resolution(fn, resolution):
    seg = labels2onehot_np(SQUARE_LABELS, 2)
    with pytest.raises(ValueError, match=r"(?i)resolution|spacing"):
        fn(seg, resolution=resolution, dtype=np.float64)


# One transform per class and the minimum over the other classes for the inside, cropped boxes,
# float32 squared distances from edt, threads: each case below against the original's formula
# written with scipy (`scipy_signed_dist`), to 1e-5 relative (exact zeros where it has zeros).


def scipy_signed_dist(seg: np.ndarray, spacing=None, offset: float = 1.0) -> np.ndarray:
    """The original's per-class formula with scipy's float64 transforms, and the offset given."""
    out = np.zeros(seg.shape, dtype=np.float64)
    for k, mask in enumerate(np.asarray(seg).astype(bool)):
        if mask.any():
            neg = ~mask
            out[k] = (
                distance_transform_edt(neg, sampling=spacing) * neg
                - (distance_transform_edt(mask, sampling=spacing) - offset) * mask
            )
    return out


def assert_relative(res: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> float:
    """Every value within rtol of the reference, relative to it (so its zeros exactly); returns
    the largest relative difference."""
    diff = np.abs(res.astype(np.float64) - expected)
    scale = np.abs(expected)
    assert np.all(diff <= rtol * scale), (
        f"{int(np.sum(diff > rtol * scale))} values beyond {rtol:g} relative; largest difference "
        f"{diff.max():.3g} at reference {expected.flat[np.argmax(diff)]:.6g}"
    )
    return float(np.max(np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)))


def signed_case(case: str, shape: tuple[int, ...], K: int, seed: int = 0) -> np.ndarray:
    """`K *shape` uint8 one-hot map of a named layout.

    smooth: blobs of every class; salt: salt and pepper; absent: class K-1 has no voxel;
    all_but_one: class 0 everywhere except one inner voxel of class 1 (the other classes absent);
    corner_voxel: the same with the voxel in a corner; border: class 1 a slab along the first
    face, class K-1 the far corner voxel, the rest blobs.
    """
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, shape, K, smooth=case != "salt")
    if case == "absent":
        labels[labels == K - 1] = 0
    elif case in ("all_but_one", "corner_voxel"):
        labels[...] = 0
        labels[tuple(n // 2 for n in shape) if case == "all_but_one" else (-1,) * len(shape)] = 1
    elif case == "border":
        labels[labels == 1] = 0
        labels[:2] = 1
        labels[(-1,) * len(shape)] = K - 1
    return labels2onehot_np(labels, K)


SIGNED_LAYOUTS = ["smooth", "salt", "absent", "all_but_one", "corner_voxel", "border"]
SIGNED_GRIDS = [
    ((24, 19), (1.0, 1.0)),
    ((24, 19), (0.9, 2.5)),
    ((12, 10, 7), (1.0, 1.0, 1.0)),
    ((12, 10, 7), (0.9, 0.9, 3.0)),
    ((12, 10, 7), (1.5, 0.7, 2.0)),
]


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("case", SIGNED_LAYOUTS)
@pytest.mark.parametrize("shape, spacing", SIGNED_GRIDS)
def test_one_hot2dist_matches_scipy(shape, spacing, case, K):
    seg = signed_case(case, shape, K, seed=len(shape) + K)
    expected = scipy_signed_dist(seg, spacing)
    if case == "absent" or (case in ("all_but_one", "corner_voxel") and K == 4):
        assert not seg[-1].any()
    for dtype in (np.float32, np.float64):
        res = one_hot2dist(seg, spacing, dtype=dtype)
        assert res.dtype == dtype and res.shape == seg.shape
        assert_relative(res, expected)
        for k in np.flatnonzero(~seg.reshape(K, -1).any(axis=1)):
            np.testing.assert_array_equal(res[k], 0)  # an absent class: zeros, as the original
        if set(spacing) == {1.0}:  # unit grid: the original's values bit for bit
            np.testing.assert_array_equal(res, expected.astype(dtype))


@pytest.mark.parametrize("shape, spacing", SIGNED_GRIDS)
def test_one_hot2dist_spacing_offset_matches_scipy(shape, spacing):
    seg = signed_case("smooth", shape, 4, seed=7)
    res = one_hot2dist(seg, spacing, dtype=np.float64, spacing_offset=True)
    assert_relative(res, scipy_signed_dist(seg, spacing, offset=min(spacing)))


@pytest.mark.parametrize("seg_dtype", [np.float32, np.float64, np.float16])
def test_one_hot2dist_dtype_none_keeps_float_input(seg_dtype):
    seg = signed_case("smooth", (12, 10, 7), 4).astype(seg_dtype)
    spacing = (0.9, 0.9, 3.0)
    res = one_hot2dist(seg, spacing)
    assert res.dtype == seg_dtype
    expected = scipy_signed_dist(seg, spacing)
    # float16 keeps 11 significant bits, so its values are the reference's to 2^-11
    assert_relative(res, expected, rtol=1e-3 if seg_dtype == np.float16 else 1e-5)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint8])
@pytest.mark.parametrize("shape, spacing", [SIGNED_GRIDS[1], SIGNED_GRIDS[3]])
def test_one_hot2dist_integer_dtypes_truncate_the_scipy_values(shape, spacing, dtype):
    """Integer outputs: the original's float64 values cast as numpy casts them (truncation)."""
    seg = signed_case("smooth", shape, 4, seed=3)
    res = one_hot2dist(seg, spacing, dtype=dtype)
    assert res.dtype == dtype
    expected = np.zeros(seg.shape, dtype=dtype)
    expected[...] = scipy_signed_dist(seg, spacing)  # the original: zeros_like, then assignment
    np.testing.assert_array_equal(res, expected)


def test_one_hot2dist_non_contiguous_inputs():
    base = signed_case("smooth", (20, 18, 9), 4, seed=5)
    spacing = (0.9, 0.9, 3.0)
    views = {
        "strided": base[:, ::2, 1:, :],
        "fortran": np.asfortranarray(base),
        "swapped axes": base.transpose(0, 2, 1, 3),
        "reversed": base[:, ::-1, :, ::-1],
        "class axis last": np.moveaxis(np.moveaxis(base, 0, -1).copy(), -1, 0),
    }
    for name, seg in views.items():
        assert not seg.flags.c_contiguous, name
        res = one_hot2dist(seg, spacing, dtype=np.float32)
        assert res.flags.c_contiguous, name
        assert_relative(res, scipy_signed_dist(np.ascontiguousarray(seg), spacing))
    tensor = torch.from_numpy(base).permute(0, 2, 1, 3)  # a tensor view
    assert_relative(
        one_hot2dist(tensor, spacing, dtype=np.float32),
        scipy_signed_dist(tensor.contiguous().numpy(), spacing),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("shape, spacing", [((40, 36), (0.9, 2.5)), ((20, 18, 9), (0.9, 0.9, 3.0))])
def test_one_hot2dist_threads_do_not_change_values(shape, spacing, dtype, monkeypatch):
    """Float maps: edt's threads; integer maps: scipy's transforms of the classes on a pool."""
    seg = signed_case("smooth", shape, 4, seed=9)
    one = one_hot2dist(seg, spacing, dtype=dtype, threads=1)
    if dtype == np.float32:
        assert_relative(one, scipy_signed_dist(seg, spacing))
    for threads in (None, 2, 3):
        np.testing.assert_array_equal(one_hot2dist(seg, spacing, dtype, threads=threads), one)
    # edt's own threads start at 2^20 voxels; on this small map too once that bound is lowered
    monkeypatch.setattr(distance, "_PARALLEL_MIN_VOXELS", 0)
    for threads in (2, 3):
        np.testing.assert_array_equal(one_hot2dist(seg, spacing, dtype, threads=threads), one)


@pytest.mark.parametrize(
    "shape, spacing", [((40,), (0.7,)), ((40,), None), ((6, 5, 4, 3), (0.9, 1.1, 2.0, 3.0))]
)
def test_one_hot2dist_other_ranks_match_scipy(shape, spacing):
    """1D and 4D maps take scipy's transform: the original's values bit for bit."""
    seg = signed_case("smooth", shape, 3, seed=13)
    for dtype in (np.float32, np.float64):
        res = one_hot2dist(seg, spacing, dtype=dtype)
        np.testing.assert_array_equal(res, scipy_signed_dist(seg, spacing).astype(dtype))


@pytest.mark.parametrize("spacing", [g[1] for g in SIGNED_GRIDS])
def test_one_hot2dist_takes_edt_on_usual_spacings(spacing):
    """The float32 probe passes edt's values for these grids: the comparisons above test edt's
    transform, not the scipy fallback kept for offsets that cancel (spacings near one voxel)."""
    assert distance._float32_is_enough(spacing, 1.0)
    assert not distance._float32_is_enough((0.99999,) * len(spacing), 1.0)


def _integer_maps_in_child(queue) -> None:
    seg = signed_case("smooth", (20, 18, 9), 4, seed=9)
    queue.put(one_hot2dist(seg, (0.9, 0.9, 3.0), np.int32, threads=2))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
# Python 3.12+ warns on forking a process with threads, which is the case tested here
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_one_hot2dist_thread_pool_after_fork():
    """A forked child (a data-loader worker) copies its parent's thread pool without threads:
    it must build its own rather than wait on the copy."""
    seg = signed_case("smooth", (20, 18, 9), 4, seed=9)
    parent = one_hot2dist(seg, (0.9, 0.9, 3.0), np.int32, threads=2)  # starts the pool here
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_integer_maps_in_child, args=(queue,))
    child.start()
    try:
        np.testing.assert_array_equal(queue.get(timeout=30), parent)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_one_hot2dist_rejects_bad_threads(threads):
    with pytest.raises(ValueError, match="threads"):
        one_hot2dist(labels2onehot_np(SQUARE_LABELS, 2), dtype=np.float32, threads=threads)


def test_one_hot2dist_larger_volume_matches_scipy():
    """A 4-class anisotropic volume large enough for real crops: blobs, one of them on a face."""
    shape, spacing = (48, 40, 24), (0.9, 0.9, 3.0)
    seg = signed_case("border", shape, 4, seed=11)
    res = one_hot2dist(seg, spacing, dtype=np.float32, threads=2)
    assert_relative(res, scipy_signed_dist(seg, spacing))


# ---------------------------------------------------------------------------- one_hot2hd_dist


def test_one_hot2hd_dist_square_by_hand():
    seg = labels2onehot_np(SQUARE_LABELS, 3)
    res = one_hot2hd_dist(seg, dtype=np.float64)
    np.testing.assert_allclose(res, SQUARE_HD_DIST, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "shape, spacing",
    [((7, 9), (1.0, 1.0)), ((7, 9), (0.9, 2.5)), ((5, 6, 4), (0.9, 0.9, 5.0))],
)
def test_one_hot2hd_dist_brute_force_overlapping_masks(shape, spacing, dtype):
    """Classes need not be one-hot: three independent, overlapping masks and an empty one."""
    rng = np.random.default_rng(21)
    for _ in range(3):
        seg = np.zeros((4,) + shape, dtype=np.uint8)
        for k in range(3):
            seg[k] = random_labels(rng, shape, 2, smooth=k != 1)
        seg[0].flat[0], seg[0].flat[1] = 1, 0  # neither empty nor full
        res = one_hot2hd_dist(seg, resolution=spacing, dtype=dtype)
        assert res.dtype == dtype
        np.testing.assert_allclose(res, brute_hd_dist(seg, spacing), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(res[3], 0)


def test_one_hot2hd_dist_dtype_rule():
    seg32 = labels2onehot_np(SQUARE_LABELS, 3, dtype=np.float32)
    res = one_hot2hd_dist(seg32)
    assert res.dtype == np.float32
    np.testing.assert_allclose(res, SQUARE_HD_DIST, rtol=1e-6, atol=1e-6)

    seg_int = labels2onehot_np(SQUARE_LABELS, 3, dtype=np.int64)
    with pytest.warns(UserWarning):
        res_int = one_hot2hd_dist(seg_int)
    assert res_int.dtype == np.int64
    np.testing.assert_array_equal(res_int, np.trunc(SQUARE_HD_DIST).astype(np.int64))


# ----------------------------------------------------------------------- simplex / one_hot


@pytest.mark.parametrize(
    "t, axis, expected",
    [
        (torch.tensor([[[0.2], [0.8]], [[0.5], [0.5]]]), 1, True),
        (torch.tensor([[[0.2], [0.9]], [[0.5], [0.5]]]), 1, False),
        (torch.tensor([[0.25, 0.75], [0.0, 1.0]]), 1, True),
        (torch.tensor([[0.25, 0.75], [0.0, 1.0]]), 0, False),
        (torch.tensor([[0.25, 0.5], [0.75, 0.5]]), 0, True),
    ],
)
def test_simplex(t, axis, expected):
    res = simplex(t, axis=axis)
    assert isinstance(res, bool)
    assert res is expected


@pytest.mark.parametrize(
    "t, axis, expected",
    [
        (torch.tensor([[[1, 0]], [[0, 1]]]).permute(0, 2, 1), 1, True),  # B=2, K=2, 1 pixel
        (torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.int32), 1, True),
        (torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.int32), 0, False),
        (torch.tensor([[0.5, 0.5], [0.0, 1.0]]), 1, False),  # simplex, not one-hot
        (torch.tensor([[1, 1], [0, 1]]), 1, False),  # values in {0, 1}, not a simplex
        (torch.tensor([[2, -1], [0, 1]]), 1, False),  # sums to one, values outside {0, 1}
    ],
)
def test_one_hot(t, axis, expected):
    res = one_hot(t, axis=axis)
    assert isinstance(res, bool)
    assert res is expected


# ------------------------------------------------------------------------------ class2one_hot


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_dtype", [torch.int64, torch.int32, torch.uint8])
def test_class2one_hot_by_hand(device, in_dtype):
    seg = torch.tensor([[[0, 1], [2, 1]], [[1, 1], [0, 0]]], dtype=in_dtype, device=device)
    expected = torch.tensor(
        [
            [[[1, 0], [0, 0]], [[0, 1], [0, 1]], [[0, 0], [1, 0]]],
            [[[0, 0], [1, 1]], [[1, 1], [0, 0]], [[0, 0], [0, 0]]],
        ],
        dtype=torch.int32,
    )
    res = class2one_hot(seg, 3)
    assert res.shape == (2, 3, 2, 2)
    assert res.dtype == torch.int32
    assert res.device == seg.device
    torch.testing.assert_close(res.cpu(), expected)


def test_class2one_hot_extra_classes_and_3d():
    seg = torch.tensor([[[[0, 1], [1, 0]], [[1, 1], [0, 0]]]])  # B=1, 2 x 2 x 2
    res = class2one_hot(seg, 4)
    assert res.shape == (1, 4, 2, 2, 2)
    assert res.dtype == torch.int32
    torch.testing.assert_close(res[:, 0], (seg == 0).to(torch.int32))
    torch.testing.assert_close(res[:, 1], (seg == 1).to(torch.int32))
    assert res[:, 2:].sum() == 0
    assert torch.all(res.sum(1) == 1)


@pytest.mark.parametrize(
    "seg, K",
    [
        (torch.tensor([[[0, 1], [3, 1]]]), 3),
        (torch.tensor([[[0, 1], [-1, 1]]]), 3),
        (torch.tensor([[[0, 255], [0, 255]]]), 2),
    ],
)
def test_class2one_hot_rejects_out_of_range(seg, K):
    with pytest.raises(ValueError, match=r"(?i)label|class|range|\bK\b"):
        class2one_hot(seg, K)


# ------------------------------------------------------------------ probs2class / probs2one_hot

PROBS = torch.tensor(
    [
        [  # b = 0, K = 3, 2 x 2
            [[0.7, 0.1], [0.2, 0.3]],
            [[0.2, 0.6], [0.3, 0.3]],
            [[0.1, 0.3], [0.5, 0.4]],
        ],
        [  # b = 1
            [[0.1, 0.05], [0.9, 0.25]],
            [[0.8, 0.05], [0.05, 0.5]],
            [[0.1, 0.9], [0.05, 0.25]],
        ],
    ]
)
PROBS_CLASS = torch.tensor([[[0, 1], [2, 2]], [[1, 2], [0, 1]]])


@pytest.mark.parametrize("device", DEVICES)
def test_probs2class_by_hand(device):
    res = probs2class(PROBS.to(device))
    assert res.shape == (2, 2, 2)
    torch.testing.assert_close(res.cpu().long(), PROBS_CLASS)


@pytest.mark.parametrize("device", DEVICES)
def test_probs2one_hot_by_hand(device):
    res = probs2one_hot(PROBS.to(device))
    expected = torch.stack([(PROBS_CLASS == k) for k in range(3)], dim=1).to(torch.int32)
    assert res.shape == (2, 3, 2, 2)
    assert res.dtype == torch.int32
    torch.testing.assert_close(res.cpu(), expected)


def test_probs2one_hot_3d():
    probs = torch.softmax(torch.randn(2, 4, 3, 5, 6, generator=torch.Generator().manual_seed(0)), 1)
    res = probs2one_hot(probs)
    assert res.shape == probs.shape
    assert res.dtype == torch.int32
    torch.testing.assert_close(res.argmax(1), probs.argmax(1))
    assert torch.all(res.sum(1) == 1)


@pytest.mark.parametrize("fn", [probs2class, probs2one_hot])
@pytest.mark.parametrize(
    "probs",
    [
        PROBS * 2,  # sums to two
        PROBS[:, :2],  # a class dropped
        torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)),  # logits
    ],
)
def test_probs_reject_non_simplex(fn, probs):
    with pytest.raises(ValueError, match=r"(?i)simplex|sum"):
        fn(probs)


# ---------------------------------------------------------------------- dice_coef / dice_batch

# Two 2 x 2 slices, K = 3; class 2 is missing from the prediction of slice 0 and from both
# label and prediction of slice 1.
DICE_LABEL = torch.tensor([[[0, 1], [2, 1]], [[1, 1], [0, 0]]])
DICE_PRED = torch.tensor([[[0, 1], [1, 1]], [[1, 0], [0, 0]]])
EPS = 1e-8
DICE_COEF_EXPECTED = torch.tensor(
    [
        [(2 * 1 + EPS) / (1 + 1 + EPS), (2 * 2 + EPS) / (2 + 3 + EPS), EPS / (1 + EPS)],
        [(2 * 2 + EPS) / (2 + 3 + EPS), (2 * 1 + EPS) / (2 + 1 + EPS), EPS / EPS],
    ],
    dtype=torch.float64,
)
DICE_BATCH_EXPECTED = torch.tensor(
    [(2 * 3 + EPS) / (3 + 4 + EPS), (2 * 3 + EPS) / (4 + 4 + EPS), EPS / (1 + EPS)],
    dtype=torch.float64,
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.float32])
def test_dice_coef_by_hand(device, dtype):
    label = labels2onehot_torch(DICE_LABEL, 3).to(device, dtype)
    pred = labels2onehot_torch(DICE_PRED, 3).to(device, dtype)
    res = dice_coef(label, pred)
    assert res.shape == (2, 3)
    assert res.dtype == torch.float32
    torch.testing.assert_close(res.cpu().double(), DICE_COEF_EXPECTED, rtol=1e-6, atol=1e-12)
    assert res[1, 2].item() == pytest.approx(1.0)  # both empty: 1 thanks to the smoothing


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.float32])
def test_dice_batch_by_hand(device, dtype):
    label = labels2onehot_torch(DICE_LABEL, 3).to(device, dtype)
    pred = labels2onehot_torch(DICE_PRED, 3).to(device, dtype)
    res = dice_batch(label, pred)
    assert res.shape == (3,)
    assert res.dtype == torch.float32
    torch.testing.assert_close(res.cpu().double(), DICE_BATCH_EXPECTED, rtol=1e-6, atol=1e-12)


def test_dice_3d_and_symmetry():
    gen = torch.Generator().manual_seed(4)
    a = labels2onehot_torch(torch.randint(0, 3, (2, 4, 5, 3), generator=gen), 3)
    b = labels2onehot_torch(torch.randint(0, 3, (2, 4, 5, 3), generator=gen), 3)
    res = dice_coef(a, b)
    inter = (a * b).double().sum((2, 3, 4))
    expected = (2 * inter + EPS) / (a.double().sum((2, 3, 4)) + b.double().sum((2, 3, 4)) + EPS)
    torch.testing.assert_close(res.double(), expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(dice_coef(b, a), res)
    torch.testing.assert_close(dice_coef(a, a), torch.ones(2, 3))


@pytest.mark.parametrize("fn", [dice_coef, dice_batch])
def test_dice_rejects_mismatched_shapes(fn):
    label = labels2onehot_torch(DICE_LABEL, 3)
    with pytest.raises(ValueError, match=r"(?i)shape"):
        fn(label, label[:1])
    with pytest.raises(ValueError, match=r"(?i)shape"):
        fn(label, labels2onehot_torch(DICE_PRED, 4))


@pytest.mark.parametrize("fn", [dice_coef, dice_batch])
def test_dice_rejects_non_one_hot(fn):
    label = labels2onehot_torch(DICE_LABEL, 3)
    probs = torch.full(label.shape, 1 / 3)
    with pytest.raises(ValueError, match=ONE_HOT_MSG):
        fn(label, probs)
    with pytest.raises(ValueError, match=ONE_HOT_MSG):
        fn(label * 2, label)


@pytest.mark.parametrize("fn", [dice_coef, dice_batch])
def test_dice_without_validation_reads_nothing_back_and_gives_the_same_value(fn, monkeypatch):
    """A training loop checks its first batch (the default, validate=True) and passes
    validate=False for the next: the one-hot check, the only read of the device, is skipped, and
    the value is the same. The shapes are still checked."""
    label = labels2onehot_torch(DICE_LABEL, 3)
    pred = labels2onehot_torch(DICE_PRED, 3)
    assert_checked_once(
        monkeypatch, lambda: fn(label, pred), lambda: fn(label, pred, validate=False)
    )
    with pytest.raises(ValueError, match=r"(?i)shape"):
        fn(label, label[:1], validate=False)
    with pytest.raises(ValueError, match=ONE_HOT_MSG):
        fn(label * 2, label, validate=True)


# --------------------------------------------------------------------------------- hausdorff


def _expected_hausdorff(preds: torch.Tensor, target: torch.Tensor, spacing) -> torch.Tensor:
    B, K, *_ = preds.shape
    out = torch.zeros(B, K, dtype=torch.float64)
    for b in range(B):
        for k in range(K):
            out[b, k] = brute_surface_hd(preds[b, k].numpy(), target[b, k].numpy(), spacing[b])
    return out


@pytest.mark.parametrize("K", [2, 3, 4])
def test_hausdorff_brute_force_random(K):
    rng = np.random.default_rng(K)
    B, shape = 3, (12, 10)
    pred_lab = torch.from_numpy(np.stack([random_labels(rng, shape, K, True) for _ in range(B)]))
    targ_lab = torch.from_numpy(np.stack([random_labels(rng, shape, K, True) for _ in range(B)]))
    preds, target = labels2onehot_torch(pred_lab, K), labels2onehot_torch(targ_lab, K)
    spacing = torch.tensor([[0.9, 2.5], [1.0, 1.0], [3.0, 0.5]], dtype=torch.float64)
    res = hausdorff(preds, target, spacing)
    assert res.shape == (B, K)
    assert res.dtype == torch.float32
    expected = _expected_hausdorff(preds, target, spacing.numpy())
    torch.testing.assert_close(res.double(), expected, rtol=1e-4, atol=1e-6)


def test_hausdorff_default_spacing_is_one():
    rng = np.random.default_rng(8)
    lab = torch.from_numpy(np.stack([random_labels(rng, (9, 11), 3, True) for _ in range(4)]))
    preds, target = labels2onehot_torch(lab[:2], 3), labels2onehot_torch(lab[2:], 3)
    res = hausdorff(preds, target)
    expected = _expected_hausdorff(preds, target, np.ones((2, 2)))
    torch.testing.assert_close(res.double(), expected, rtol=1e-4, atol=1e-6)


def test_hausdorff_analytic_and_empty():
    """Slice 0: square shifted by 2 rows, spacing 5 along rows -> 10 mm.
    Slice 1: class 2 empty in both (0) and class 1 only in the target (diagonal)."""
    H, W = 10, 8
    target = torch.zeros(2, H, W, dtype=torch.int64)
    preds = torch.zeros(2, H, W, dtype=torch.int64)
    target[0, 2:6, 2:6] = 1
    preds[0, 4:8, 2:6] = 1
    target[1, 3:5, 3:5] = 1
    spacing = torch.tensor([[5.0, 1.0], [0.5, 2.0]])
    res = hausdorff(labels2onehot_torch(preds, 3), labels2onehot_torch(target, 3), spacing)
    diag1 = math.sqrt((H * 0.5) ** 2 + (W * 2.0) ** 2)
    assert res[0, 1].item() == pytest.approx(10.0, rel=1e-6)
    assert res[0, 2].item() == 0.0
    assert res[1, 1].item() == pytest.approx(diag1, rel=1e-6)
    assert res[1, 2].item() == 0.0
    assert res[1, 0].item() == pytest.approx(
        brute_surface_hd((preds[1] == 0).numpy(), (target[1] == 0).numpy(), (0.5, 2.0)), rel=1e-6
    )


@pytest.mark.parametrize("device", DEVICES)
def test_hausdorff_device(device):
    preds = labels2onehot_torch(DICE_PRED, 3).to(device)
    target = labels2onehot_torch(DICE_LABEL, 3).to(device)
    res = hausdorff(preds, target)
    assert res.shape == (2, 3)
    assert res.dtype == torch.float32
    expected = _expected_hausdorff(preds.cpu(), target.cpu(), np.ones((2, 2)))
    torch.testing.assert_close(res.cpu().double(), expected, rtol=1e-4, atol=1e-6)


def test_hausdorff_rejects_mismatched_shapes():
    preds = labels2onehot_torch(DICE_PRED, 3)
    with pytest.raises(ValueError, match=r"(?i)shape"):
        hausdorff(preds, preds[:1])


# ---------------------------------------------------------------------------------------------
# Other ranks, the original's small helpers, and more bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, resolution",
    [((9,), None), ((9,), (0.7,)), ((4, 5, 3, 3), None), ((4, 5, 3, 3), (1.0, 0.5, 2.0, 3.0))],
    ids=["1d", "1d-spacing", "4d", "4d-spacing"],
)
def test_one_hot2dist_other_ranks_use_the_original_arithmetic(shape, resolution):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, size=shape)
    seg = np.moveaxis(np.eye(3)[labels], -1, 0)
    np.testing.assert_allclose(
        one_hot2dist(seg, resolution, dtype=np.float64), original_formula(seg, resolution)
    )
    hd_map = one_hot2hd_dist(seg, resolution, dtype=np.float64)
    assert hd_map.shape == seg.shape


def test_intersection_union_and_their_sums():
    from boundary_loss.maps.onehot import eq
    from boundary_loss.metrics import inter_sum, intersection, union, union_sum

    a = torch.tensor([[[[1, 1], [0, 0]]]], dtype=torch.int32)  # 1 x 1 x 2 x 2
    b = torch.tensor([[[[1, 0], [1, 0]]]], dtype=torch.int32)
    assert eq(intersection(a, b), torch.tensor([[[[1, 0], [0, 0]]]], dtype=torch.int32))
    assert eq(union(a, b), torch.tensor([[[[1, 1], [1, 0]]]], dtype=torch.int32))
    assert inter_sum(a, b).tolist() == [[1.0]]
    assert union_sum(a, b).tolist() == [[3.0]]
    assert eq(union(a.float(), b.float()), union(a, b).float())
    with pytest.raises(ValueError, match=r"a must be binary \(0/1\), got values \[0, 2\]"):
        intersection(a * 2, b)


def test_class2one_hot_refuses_a_scalar():
    with pytest.raises(ValueError, match="seg must be B x spatial"):
        class2one_hot(torch.tensor(1), 2)


def test_hausdorff_names_a_bad_spacing():
    t = torch.zeros(1, 2, 4, 4, dtype=torch.int32)
    t[:, 0] = 1
    with pytest.raises(ValueError, match=r"spacing must be finite and positive"):
        hausdorff(t, t, spacing=torch.tensor([[1.0, float("nan")]]))


def test_half_precision_probabilities_are_accepted():
    probs = torch.softmax(torch.randn(2, 3, 8, 8), dim=1).to(torch.bfloat16)
    assert probs2one_hot(probs).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="not one-hot"):
        dice_coef(probs, probs)
