"""Tests for networks.sliding_window: Gaussian sliding-window inference and its importance map.

The reference is MONAI's ``sliding_window_inference(mode="gaussian")`` and
``compute_importance_map`` (skipped, saying so, when MONAI is not installed); the other checks do
not need it: window positions and weights worked out by hand, a volume that fits in one window
(the weights cancel: one pass of the predictor), test-time mirroring against the mean of the
flipped passes computed here, and the absence of host reads in the loop.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from boundary_loss.networks.sliding_window import (
    gaussian_importance,
    sliding_window,
    window_starts,
)
from tests.host_reads import host_reads

C, K = 2, 3
NO_MONAI = "MONAI, the reference of these values, is not installed (requirements-test.txt)"


def conv_predictor(kernel: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32):
    """softmax(conv(x)) with a fixed random 3D convolution: deterministic and position-dependent
    near the window's borders (zero padding), so the blending shows."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(C, K, kernel, padding=kernel // 2).to(dtype)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(conv(x), dim=1)

    return predict


def image(*spatial: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, C, *spatial), generator=generator, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# The importance map and the window positions
# ---------------------------------------------------------------------------------------------


def test_importance_map_is_one_at_the_centre_and_symmetric() -> None:
    w = gaussian_importance((5, 7, 9))
    assert w.shape == (5, 7, 9) and w.dtype == torch.float32
    assert w[2, 3, 4].item() == 1.0
    assert w.max().item() == 1.0 and int(w.argmax()) == (2 * 7 + 3) * 9 + 4
    for axis in range(3):
        torch.testing.assert_close(w, w.flip(axis), rtol=0, atol=0)


def test_importance_map_values_by_hand() -> None:
    w = gaussian_importance((5, 7, 9), dtype=torch.float64)
    # Along X (size 5): sigma = 0.125 * 5 = 0.625, centre 2; voxel 0 is 2 away.
    assert w[0, 3, 4].item() == pytest.approx(math.exp(-4 / (2 * 0.625**2)), rel=1e-12)
    # Along Z (size 9): sigma = 1.125, centre 4; voxel 7 is 3 away. Separable: the product, with
    # X voxel 1 (1 away) to stay above the floor: 0.278 * 0.0286 = 0.0079.
    expected = math.exp(-1 / (2 * 0.625**2)) * math.exp(-9 / (2 * 1.125**2))
    assert w[1, 3, 7].item() == pytest.approx(expected, rel=1e-12)
    # X voxel 0 and Z voxel 7: 0.0060 * 0.0286 = 1.7e-4, under the floor.
    assert w[0, 3, 7].item() == 1e-3
    # Even size: the centre falls between voxels 3 and 4 of 8, both 0.5 away.
    even = gaussian_importance((8, 1, 1), dtype=torch.float64)
    assert even[3, 0, 0].item() == even[4, 0, 0].item() == pytest.approx(math.exp(-0.25 / 2))


def test_importance_map_is_floored_at_1e_3() -> None:
    # Corner of a 33^3 patch: 16 voxels = 3.88 sigma from the centre along each axis, a product
    # of exp(-7.52)^3 ~ 1.6e-10 before the floor.
    w = gaussian_importance((33, 33, 33), dtype=torch.float64)
    assert w[0, 0, 0].item() == 1e-3 and w.min().item() == 1e-3


def test_importance_map_matches_monai() -> None:
    utils = pytest.importorskip("monai.data.utils", reason=NO_MONAI)
    for patch in [(8, 12, 6), (5, 5, 5), (48, 48, 24), (3, 64, 1)]:
        theirs = utils.compute_importance_map(patch, mode="gaussian", sigma_scale=0.125)
        torch.testing.assert_close(gaussian_importance(patch), theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "patch", "overlap", "expected"),
    [
        (20, 8, 0.5, [0, 4, 8, 12]),  # step 4; 12 ends flush with the volume
        (13, 6, 0.25, [0, 4, 7]),  # step int(4.5) = 4; the last one moved back to 7
        (8, 8, 0.5, [0]),  # one window
        (5, 5, 0.99, [0]),
        (7, 5, 0.99, [0, 1, 2]),  # step int(0.05) = 0 -> 1
        (10, 4, 0.0, [0, 4, 6]),
    ],
)
def test_window_starts_by_hand(size: int, patch: int, overlap: float, expected: list) -> None:
    assert window_starts(size, patch, overlap) == expected


# ---------------------------------------------------------------------------------------------
# Values: MONAI, and a volume that fits in one window
# ---------------------------------------------------------------------------------------------

MONAI_CASES = [
    # (volume X Y Z, patch, overlap, batch size)
    ((20, 9, 13), (8, 12, 6), 0.5, 1),  # larger along X and Z, smaller along Y (padded)
    ((20, 9, 13), (8, 12, 6), 0.25, 3),
    ((33, 17, 5), (10, 7, 6), 0.5, 4),  # odd sizes, Z padded by 1 after
    ((11, 12, 13), (5, 5, 5), 0.25, 3),
    ((7, 7, 7), (8, 8, 8), 0.5, 1),  # smaller along every axis: one padded window
]


@pytest.mark.parametrize(("shape", "patch", "overlap", "batch"), MONAI_CASES)
def test_equals_monai_sliding_window_inference(
    shape: tuple, patch: tuple, overlap: float, batch: int
) -> None:
    inferers = pytest.importorskip("monai.inferers", reason=NO_MONAI)
    predict, x = conv_predictor(), image(*shape)
    with torch.inference_mode():
        ours = sliding_window(predict, x, patch, overlap=overlap, batch_size=batch)
        theirs = inferers.sliding_window_inference(
            x,
            patch,
            batch,
            predict,
            overlap=overlap,
            mode="gaussian",
            sigma_scale=0.125,
            padding_mode="constant",
            cval=0,
        )
    assert ours.shape == (1, K, *shape)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_equals_monai_in_float64() -> None:
    inferers = pytest.importorskip("monai.inferers", reason=NO_MONAI)
    predict = conv_predictor(dtype=torch.float64)
    x = image(15, 10, 9, dtype=torch.float64)
    with torch.inference_mode():
        ours = sliding_window(predict, x, (6, 6, 6), overlap=0.5, batch_size=2)
        theirs = inferers.sliding_window_inference(x, (6, 6, 6), 2, predict, 0.5, "gaussian")
    assert ours.dtype == torch.float64
    # MONAI builds the weights in float32 and casts them; ours are computed in float64.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)


def test_one_window_is_one_pass_of_the_predictor() -> None:
    predict, x = conv_predictor(), image(6, 5, 4)
    with torch.inference_mode():
        out = sliding_window(predict, x, (6, 5, 4), overlap=0.5)
        torch.testing.assert_close(out, predict(x), rtol=0, atol=1e-6)


def test_smaller_volume_is_padded_half_before_and_cropped_back() -> None:
    predict, x = conv_predictor(), image(5, 4, 6)
    # Patch (8, 4, 9): X lacks 3 -> 1 voxel before, 2 after; Z lacks 3 -> 1 before, 2 after.
    padded = F.pad(x, (1, 2, 0, 0, 1, 2))
    with torch.inference_mode():
        out = sliding_window(predict, x, (8, 4, 9))
        expected = predict(padded)[:, :, 1:6, :, 1:7]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_two_windows_by_hand() -> None:
    """Along X, a 6-voxel volume and 4-voxel windows at 0 and 2 (overlap 0.5): on the overlap
    the prediction is the mean of the two windows' weighted by their Gaussians."""
    predict, x = conv_predictor(), image(6, 3, 3)
    with torch.inference_mode():
        out = sliding_window(predict, x, (4, 3, 3), overlap=0.5)
        first, second = predict(x[:, :, 0:4]), predict(x[:, :, 2:6])
    w = gaussian_importance((4, 3, 3))
    expected = torch.zeros(1, K, 6, 3, 3)
    weights = torch.zeros(6, 3, 3)
    for start, p in ((0, first), (2, second)):
        expected[:, :, start : start + 4] += p * w
        weights[start : start + 4] += w
    torch.testing.assert_close(out, expected / weights, rtol=0, atol=1e-6)


def test_leading_form_follows_the_input() -> None:
    predict, x = conv_predictor(), image(10, 6, 7)
    with torch.inference_mode():
        batched = sliding_window(predict, x, (6, 6, 4), batch_size=2)
        single = sliding_window(predict, x[0], (6, 6, 4), batch_size=2)
    assert batched.shape == (1, K, 10, 6, 7) and single.shape == (K, 10, 6, 7)
    torch.testing.assert_close(batched[0], single, rtol=0, atol=0)


def test_batch_size_does_not_change_the_values() -> None:
    predict, x = conv_predictor(), image(12, 9, 8)
    with torch.inference_mode():
        one = sliding_window(predict, x, (6, 5, 4), batch_size=1)
        many = [sliding_window(predict, x, (6, 5, 4), batch_size=b) for b in (3, 64)]
    for out in many:
        torch.testing.assert_close(out, one, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Test-time mirroring
# ---------------------------------------------------------------------------------------------


def mirrored_by_hand(predict, axes: tuple[int, ...]):
    """The mean of predict over every combination of flips of `axes`, each flipped back."""

    def mean(x: torch.Tensor) -> torch.Tensor:
        dims = [2 + a for a in axes]
        combos = [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]
        return sum(predict(x.flip(c)).flip(c) for c in combos) / len(combos)

    return mean


def test_mirroring_a_flip_equivariant_predictor_changes_nothing() -> None:
    predict, x = conv_predictor(kernel=1), image(10, 7, 6)  # pointwise: flips commute with it
    with torch.inference_mode():
        plain = sliding_window(predict, x, (6, 4, 4), batch_size=2)
        mirrored = sliding_window(predict, x, (6, 4, 4), batch_size=2, mirror_axes=(0, 1, 2))
    torch.testing.assert_close(mirrored, plain, rtol=0, atol=1e-6)


def test_mirroring_one_window_is_the_mean_of_the_flipped_passes() -> None:
    predict, x = conv_predictor(), image(6, 5, 4)
    with torch.inference_mode():
        plain = sliding_window(predict, x, (6, 5, 4))
        out = sliding_window(predict, x, (6, 5, 4), mirror_axes=(0, 1, 2))
        passes = [
            predict(x.flip(dims)).flip(dims)
            for dims in [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        ]
    expected = torch.stack(passes).mean(0)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert (out - plain).abs().max() > 1e-3  # the 3x3x3 conv is not flip-equivariant


@pytest.mark.parametrize("axes", [(0,), (2, 0), (0, 1, 2)])
def test_mirroring_many_windows_mirrors_each_window(axes: tuple[int, ...]) -> None:
    predict, x = conv_predictor(), image(11, 9, 7)
    with torch.inference_mode():
        out = sliding_window(predict, x, (6, 5, 4), overlap=0.25, batch_size=3, mirror_axes=axes)
        expected = sliding_window(mirrored_by_hand(predict, axes), x, (6, 5, 4), 0.25, 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Device work: no host reads, no graph under no_grad
# ---------------------------------------------------------------------------------------------


def test_no_value_is_read_back_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    predict, x = conv_predictor(), image(13, 9, 7)
    with torch.inference_mode(), host_reads(monkeypatch) as reads:
        sliding_window(predict, x, (6, 5, 4), batch_size=3, mirror_axes=(1,))
    assert reads == []


def test_no_graph_under_no_grad() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv3d(C, K, 3, padding=1)
    with torch.no_grad():
        out = sliding_window(lambda t: net(t).softmax(1), image(8, 6, 6), (4, 4, 4))
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_cpu() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(C, K, 3, padding=1)
    x = image(20, 9, 13)
    with torch.inference_mode():
        cpu = sliding_window(lambda t: conv(t).softmax(1), x, (8, 12, 6), batch_size=3)
        conv = conv.cuda()
        gpu = sliding_window(lambda t: conv(t).softmax(1), x.cuda(), (8, 12, 6), batch_size=3)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Refused arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_size": (4, 4)}, r"patch_size must be 3 positive integers.*\(4, 4\)"),
        ({"patch_size": (4, 0, 4)}, r"patch_size must be 3 positive integers.*\(4, 0, 4\)"),
        ({"patch_size": (4.0, 4, 4)}, r"patch_size.*\(4\.0, 4, 4\)"),
        ({"overlap": 1.0}, r"overlap must be in \[0, 1\), got 1\.0"),
        ({"overlap": -0.1}, r"overlap must be in \[0, 1\), got -0\.1"),
        ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
        ({"mirror_axes": (3,)}, r"mirror_axes must be distinct spatial axes.*\(3,\)"),
        ({"mirror_axes": (0, 0)}, r"mirror_axes.*\(0, 0\)"),
        ({"image": torch.zeros(2, 1, 8, 8, 8)}, r"image must be C X Y Z or 1 C.*\(2, 1, 8, 8, 8\)"),
        ({"image": torch.zeros(8, 8, 8)}, r"image must be C X Y Z or 1 C X Y Z.*\(8, 8, 8\)"),
        ({"predict": lambda t: t[:, 0]}, r"predict must map.*\(1, K, 4, 4, 4\).*\(1, 4, 4, 4\)"),
        ({"predict": lambda t: t[..., :2]}, r"predict must map.*got shape \(1, 1, 4, 4, 2\)"),
        ({"predict": lambda t: t.numpy()}, r"predict must return a tensor, got ndarray"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    args = {"predict": lambda t: t, "image": torch.zeros(1, 8, 8, 8), "patch_size": (4, 4, 4)}
    with pytest.raises(ValueError, match="sliding_window: " + match):
        sliding_window(**(args | kwargs))


@pytest.mark.parametrize(
    ("patch", "sigma", "match"),
    [((4, 4), 0.125, r"patch_size must be 3"), ((4, 4, 4), 0.0, r"sigma_scale must be > 0")],
)
def test_bad_importance_arguments_are_refused(patch: tuple, sigma: float, match: str) -> None:
    with pytest.raises(ValueError, match="gaussian_importance: " + match):
        gaussian_importance(patch, sigma)
