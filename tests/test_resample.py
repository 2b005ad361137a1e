"""Tests of the resampling of the 3D chain (boundary_loss.preprocessing.resample).

The expected values are worked out by hand (a ramp resampled linearly, nearest indices along a
thick axis), with skimage's `resize` (what nnU-Net calls, mode "edge", no anti-aliasing), and by
brute force (every voxel a round trip changed has a neighbour of its new class in the original).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from skimage.transform import resize

from boundary_loss.preprocessing.resample import (
    median_spacing,
    resample_image,
    resample_labels,
    resample_probabilities,
    separate_z_axis,
    target_shape,
)

ANISOTROPIC = (0.9, 3.0, 1.1)  # the stand-in's spacing: axis 1 is 3.3 times the finest
TARGET = (1.0, 1.5, 1.0)


def ramp(values: list[float], axis: int) -> np.ndarray:
    """A `1 X Y Z` volume holding `values` along `axis`, one voxel along the others."""
    shape = [1, 1, 1]
    shape[axis] = len(values)
    return np.asarray(values, dtype=np.float64).reshape(1, *shape)


def test_equal_shapes_give_the_input_back():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 5, 4, 3))
    out = resample_image(image, (5, 4, 3), spacing=ANISOTROPIC, target_spacing=ANISOTROPIC)
    assert out.dtype == np.float32 and out.shape == (2, 5, 4, 3)
    np.testing.assert_array_equal(out, image.astype(np.float32))
    probs = rng.dirichlet(np.ones(3), size=(5, 4, 3)).transpose(3, 0, 1, 2)
    np.testing.assert_array_equal(resample_probabilities(probs, (5, 4, 3)), probs.astype("f4"))
    labels = rng.integers(0, 3, (5, 4, 3))
    out_labels = resample_labels(labels, (5, 4, 3), 3)
    assert out_labels.dtype == np.uint8
    np.testing.assert_array_equal(out_labels, labels)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_linear_resampling_of_a_ramp_by_hand(axis):
    # Output voxel i of n -> m samples the input at (i + 0.5) n / m - 0.5, the edge value beyond.
    # 4 -> 8: -0.25 (edge: 0), 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25 (edge: 3).
    up = resample_probabilities(ramp([0, 1, 2, 3], axis), np.roll([8, 1, 1], axis))
    np.testing.assert_allclose(up.ravel(), [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)
    # 4 -> 2: 0.5 and 2.5; 3 -> 2: 0.25 and 1.75 of [0, 10, 30] -> 2.5 and 25.
    down = resample_probabilities(ramp([0, 1, 2, 3], axis), np.roll([2, 1, 1], axis))
    np.testing.assert_allclose(down.ravel(), [0.5, 2.5], atol=1e-6)
    odd = resample_probabilities(ramp([0, 10, 30], axis), np.roll([2, 1, 1], axis))
    np.testing.assert_allclose(odd.ravel(), [2.5, 25], atol=1e-5)


@pytest.mark.parametrize("order", [1, 3])
def test_resampling_matches_skimage_resize_as_nnunet_calls_it(order):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 9, 7, 6))
    out = resample_image(image, (6, 11, 8), order=order)
    for c in range(2):
        expected = resize(image[c], (6, 11, 8), order=order, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(out[c], expected, atol=1e-5)


def test_separate_z_axis_follows_nnunet():
    assert separate_z_axis(ANISOTROPIC, TARGET) == 1  # 3.0 / 0.9 > 3 in the source
    assert separate_z_axis((1.0, 1.0, 1.0), (1.0, 1.0, 3.5)) == 2  # the target's, else
    assert separate_z_axis((1.0, 1.0, 3.0), (1.0, 1.0, 2.0)) is None  # a ratio of 3 exactly
    assert separate_z_axis((0.24, 1.25, 1.25), (1.0, 1.0, 1.0)) is None  # two coarsest axes
    assert separate_z_axis(None, TARGET) is None


def test_separate_z_resamples_the_thick_axis_by_nearest_voxel():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(1, 5, 3, 6))  # axis 1 is the thick one: 4 mm against 1
    spacing, new = (1.0, 4.0, 1.0), (7, 6, 4)
    out = resample_image(image, new, spacing=spacing)
    # 3 -> 6 by nearest voxel: output j takes input floor((j + 0.5) 3 / 6) = 0, 0, 1, 1, 2, 2.
    for j, source in enumerate([0, 0, 1, 1, 2, 2]):
        in_plane = resize(image[0, :, source], (7, 4), order=3, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(out[0, :, j], in_plane, atol=1e-5)
    # Without the spacings, cubic along every axis: the output slices differ.
    cubic = resample_image(image, new)
    assert not np.allclose(cubic[0, :, 0], cubic[0, :, 1])


def test_target_shape_and_median_spacing_by_hand():
    # 56 x 0.9 / 1.0 = 50.4 -> 50; 12 x 3.0 / 1.5 = 24; 46 x 1.1 / 1.0 = 50.6 -> 51.
    assert target_shape((56, 12, 46), ANISOTROPIC, TARGET) == (50, 24, 51)
    assert target_shape((1, 2, 3), (0.1, 1.0, 1.0), (5.0, 1.0, 1.0)) == (1, 2, 3)  # at least 1
    spacings = [(1.0, 2.0, 5.0), (0.8, 2.0, 3.0), (1.2, 2.5, 4.0)]
    assert median_spacing(spacings) == (1.0, 2.0, 4.0)
    assert median_spacing(spacings[:2]) == (0.9, 2.0, 4.0)
    with pytest.raises(ValueError):
        median_spacing([])
    with pytest.raises(ValueError, match="positive"):
        target_shape((4, 4, 4), (1.0, 0.0, 1.0), TARGET)


def anisotropic_labels() -> np.ndarray:
    """20 x 8 x 18 labels: two ellipsoids (1, 2) and one voxel of class 3 at (5, 5, 5)."""
    x, y, z = np.meshgrid(np.arange(20), np.arange(8), np.arange(18), indexing="ij")
    labels = np.zeros((20, 8, 18), np.uint8)
    labels[((x - 11) / 6) ** 2 + ((y - 4) / 3) ** 2 + ((z - 10) / 6) ** 2 < 1] = 1
    labels[((x - 14) / 3) ** 2 + ((y - 3) / 2) ** 2 + ((z - 7) / 3) ** 2 < 1] = 2
    labels[5, 5, 5] = 3
    return labels


def plain_argmax(labels: np.ndarray, shape: tuple, K: int, **spacings) -> np.ndarray:
    """The argmax of the linearly resampled one-hot, without the no-class-lost rule."""
    one_hot = labels[None] == np.arange(K).reshape(K, 1, 1, 1)
    return resample_probabilities(one_hot, shape, **spacings).argmax(axis=0)


def test_label_round_trip_keeps_every_class_and_moves_only_boundaries():
    labels = anisotropic_labels()
    shape = target_shape(labels.shape, ANISOTROPIC, TARGET)
    assert shape == (18, 16, 20)
    there = {"spacing": ANISOTROPIC, "target_spacing": TARGET}
    back = {"spacing": TARGET, "target_spacing": ANISOTROPIC}
    # The one voxel of class 3 sits where x (20 -> 18) and z (18 -> 20) sample it at weights of
    # at most 0.5 and 0.65: argmax alone loses it.
    assert 3 not in plain_argmax(labels, shape, 4, **there)
    down = resample_labels(labels, shape, 4, **there)
    assert down.dtype == np.uint8 and down.shape == shape
    assert set(np.unique(down)) == {0, 1, 2, 3}
    round_trip = resample_labels(down, labels.shape, 4, **back)
    assert set(np.unique(round_trip)) == {0, 1, 2, 3}
    changed = np.argwhere(round_trip != labels)
    assert 0 < len(changed) < 0.05 * labels.size
    for x, y, z in changed:  # brute force: a neighbour of the new class in the original
        box = labels[max(x - 1, 0) : x + 2, max(y - 1, 0) : y + 2, max(z - 1, 0) : z + 2]
        assert (box == round_trip[x, y, z]).any(), (x, y, z)


def test_labels_without_spacings_and_no_class_invented():
    labels = anisotropic_labels()
    labels[labels == 1] = 4  # classes 0, 2, 3, 4 of K = 6: 1 and 5 absent
    out = resample_labels(labels, (9, 13, 11), 6)
    assert set(np.unique(out)) == {0, 2, 3, 4}
    # Where the winner is clear (no tie), the plain argmax decides.
    plain = plain_argmax(labels, (9, 13, 11), 6)
    assert np.mean(out == plain) > 0.99


def test_lost_classes_get_their_best_voxels_back_by_hand():
    # 6 -> 3 along x samples 0.5, 2.5 and 4.5: each output voxel averages two input voxels.
    # [1, 0, 0, 0, 0, 2]: classes 1 and 2 tie with the background (0.5 each) at the ends, and
    # argmax takes the lowest class, 0 everywhere; each is given its best voxel back.
    labels = np.array([1, 0, 0, 0, 0, 2]).reshape(6, 1, 1)
    assert resample_labels(labels, (3, 1, 1), 3).ravel().tolist() == [1, 0, 2]
    # [0, 0, 1, 2, 2, 0]: argmax gives [0, 1, 0] (ties: the lowest class); class 2 weighs 0.5 at
    # output voxels 1 and 2, but voxel 1 is the only one of class 1: it takes voxel 2 alone.
    labels = np.array([0, 0, 1, 2, 2, 0]).reshape(6, 1, 1)
    assert resample_labels(labels, (3, 1, 1), 3).ravel().tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: resample_labels(np.zeros((2, 2)), (2, 2, 2), 2), "X Y Z"),
        (lambda: resample_labels(np.full((2, 2, 2), 3), (2, 2, 2), 2), "outside 0 .. 1"),
        (lambda: resample_image(np.zeros((2, 2, 2)), (2, 2, 2)), "C X Y Z"),
        (lambda: resample_image(np.zeros((1, 2, 2, 2)), (2, 0, 2)), "positive sizes"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_probabilities_stay_a_simplex():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=(6, 5, 4)).transpose(3, 0, 1, 2)
    for shape in itertools.product((3, 9), (2, 7), (4,)):
        out = resample_probabilities(probs, shape, spacing=(1.0, 1.0, 4.0))
        assert out.min() >= 0
        np.testing.assert_allclose(out.sum(axis=0), 1, atol=1e-5)
