"""Tests for distance_torch.py (the batched torch distance transforms) and metrics.hd_hd95_torch.

References: a brute-force all-pairs distance written here, scipy's distance_transform_edt,
utils.one_hot2dist / one_hot2hd_dist (themselves checked against the original's formula), and
metrics.hd_hd95 (checked against medpy). Every test runs on the CPU and, when present, on CUDA.
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from boundary_loss.losses.idc_losses import HausdorffLoss
from boundary_loss.maps import distance as utils
from boundary_loss.maps.distance import one_hot2dist, one_hot2hd_dist
from boundary_loss.maps.distance_torch import distance_to, one_hot2dist_torch, one_hot2hd_dist_torch
from boundary_loss.metrics import hd_hd95, hd_hd95_torch
from tests.host_reads import assert_checked_once

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def brute_distance_to(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance of every voxel to the nearest True voxel, over all pairs (inf if none)."""
    spacing = np.ones(mask.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    grid = np.indices(mask.shape).reshape(mask.ndim, -1).T * spacing  # N D
    features = grid[mask.reshape(-1)]
    if len(features) == 0:
        return np.full(mask.shape, np.inf)
    dist = np.sqrt(((grid[:, None] - features[None]) ** 2).sum(-1)).min(1)
    return dist.reshape(mask.shape)


def random_labels(rng: np.random.Generator, shape, K: int, mode: str) -> np.ndarray:
    if mode == "noise":
        return rng.integers(0, K, size=shape)
    if mode == "sparse":
        return (rng.random(shape) < 0.05) * rng.integers(1, K, size=shape)
    if mode == "full":
        return np.full(shape, rng.integers(0, K))
    labels = np.zeros(shape, dtype=int)  # a box per class
    for k in range(1, K):
        lo = rng.integers(0, np.asarray(shape) // 2)
        hi = lo + rng.integers(1, np.asarray(shape) // 2 + 1)
        labels[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = k
    return labels


def one_hot(labels: np.ndarray, K: int) -> np.ndarray:
    """`B *xyz` labels -> `B K *xyz` int32 one-hot."""
    return np.moveaxis(np.eye(K, dtype=np.int32)[labels], -1, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape, spacing",
    [((9, 7), None), ((9, 7), (0.7, 2.3)), ((1, 13), (1.5, 1.0)), ((6, 5, 4), (0.9, 0.9, 5.0))],
)
def test_distance_to_matches_brute_force(device: str, shape, spacing) -> None:
    rng = np.random.default_rng(len(shape) * 10 + shape[0])
    masks = rng.random((4, *shape)) < np.array([0.0, 0.02, 0.2, 0.9]).reshape(4, *[1] * len(shape))
    got = distance_to(torch.from_numpy(masks).to(device), spacing, dtype=torch.float64).cpu()
    for mask, values in zip(masks, got.numpy(), strict=True):
        np.testing.assert_allclose(values, brute_distance_to(mask, spacing), rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_distance_to_per_sample_spacing_and_lead_axes(device: str) -> None:
    """A `B ndim` spacing applies per batch entry; axes between batch and image are images."""
    rng = np.random.default_rng(3)
    masks = rng.random((2, 3, 8, 6)) < 0.1
    spacing = torch.tensor([[1.0, 2.0], [0.5, 0.25]])
    got = distance_to(torch.from_numpy(masks).to(device), spacing.to(device), ndim=2).cpu()
    for b in range(2):
        for c in range(3):
            ref = brute_distance_to(masks[b, c], spacing[b].tolist())
            np.testing.assert_allclose(got[b, c].numpy(), ref, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("spacing_offset", [False, True])
def test_one_hot2dist_torch_matches_one_hot2dist(device: str, ndim: int, spacing_offset: bool):
    """Equal to utils.one_hot2dist per sample (to 1e-4), every kind of label map in one batch."""
    rng = np.random.default_rng(ndim + 2 * spacing_offset)
    for K, spacing in ((2, None), (3, (0.9, 0.7, 5.0)[:ndim]), (4, (2.0, 0.5, 1.3)[:ndim])):
        shape = tuple(rng.integers(4, 20, size=ndim))
        modes = ("noise", "sparse", "full", "boxes", "boxes")
        labels = np.stack([random_labels(rng, shape, K, mode) for mode in modes])
        seg = one_hot(labels, K)
        got = one_hot2dist_torch(
            torch.from_numpy(seg).to(device), spacing, spacing_offset=spacing_offset
        )
        assert got.dtype == torch.float32 and got.device.type == device
        ref = np.stack(
            [one_hot2dist(s, spacing, dtype=np.float64, spacing_offset=spacing_offset) for s in seg]
        )
        np.testing.assert_allclose(got.cpu().numpy(), ref, atol=1e-4, rtol=0)


def test_one_hot2dist_torch_hand_values() -> None:
    """A 1 x 4 image [0 1 1 0] with spacing (1, 2): every pixel is 2 mm from the other class."""
    seg = torch.tensor([[[[1, 0, 0, 1]], [[0, 1, 1, 0]]]])
    got = one_hot2dist_torch(seg, (1.0, 2.0))
    # class 0 inside: 1 - 2 (nearest class-1 pixel is 2 mm away); outside: 2 mm to class 0
    expected = [[[1 - 2.0, 2.0, 2.0, 1 - 2.0]], [[2.0, 1 - 2.0, 1 - 2.0, 2.0]]]
    np.testing.assert_allclose(got[0].numpy(), np.array(expected), atol=1e-6)


def test_one_hot2dist_torch_full_class_follows_scipy() -> None:
    """A class filling the image: 1 - scipy's edt of an all-True mask, as the original."""
    seg = torch.zeros(1, 2, 5, 4, dtype=torch.int32)
    seg[0, 1] = 1
    got = one_hot2dist_torch(seg, (0.5, 2.0))
    ref = 1 - distance_transform_edt(np.ones((5, 4), bool), sampling=(0.5, 2.0))
    np.testing.assert_allclose(got[0, 1].numpy(), ref, atol=1e-6)
    assert torch.all(got[0, 0] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_one_hot2hd_dist_torch_matches_numpy(device: str) -> None:
    rng = np.random.default_rng(7)
    seg = one_hot(np.stack([random_labels(rng, (11, 9), 3, m) for m in ("noise", "full")]), 3)
    got = one_hot2hd_dist_torch(torch.from_numpy(seg).to(device), (0.8, 1.9)).cpu().numpy()
    ref = np.stack([one_hot2hd_dist(s, (0.8, 1.9), dtype=np.float64) for s in seg])
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: one_hot2dist_torch(torch.ones(1, 2, 3, 3)), "one-hot"),
        (lambda: one_hot2dist_torch(torch.ones(2, 3)), "B x K x spatial"),
        (lambda: one_hot2dist_torch(torch.eye(2)[None, :, :, None], (1.0,)), "one per spatial"),
        (lambda: distance_to(torch.ones(1, 3, 3, dtype=torch.bool), (1.0, 0.0)), "positive"),
        (lambda: distance_to(torch.ones(1, 3, 3)), "bool"),
    ],
)
def test_bad_input_is_named(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "signed, dtype",
    [(True, np.float32), (False, np.float32), (False, np.int32)],
    ids=["one_hot2dist", "one_hot2hd_dist", "one_hot2hd_dist truncated"],
)
def test_device_maps_read_nothing_back_without_validation(signed, dtype, monkeypatch) -> None:
    """The device path of `distance_maps` (`one_hot2dist_torch`, `one_hot2hd_dist_torch`), as a
    training step calls it after its first batch (validate=False): nothing is read back, the
    classes filling their image included (chosen on the device, not listed by `nonzero`). It is
    forced here on CPU tensors: the CPU path of `distance_maps` computes per sample with edt /
    scipy, which is host work on host data by design, not a wait for a device."""
    rng = np.random.default_rng(31)
    labels = random_labels(rng, (3, 9, 7), 3, "boxes")
    labels[1] = 2  # class 2 fills sample 1
    seg = torch.from_numpy(one_hot(labels, 3))
    spacing = torch.tensor([[0.8, 1.3], [1.0, 1.0], [2.0, 0.5]])
    monkeypatch.setattr(utils, "on_device", lambda tensor: True)
    maps = assert_checked_once(
        monkeypatch,
        lambda: utils.distance_maps(seg, spacing, signed=signed, dtype=dtype),
        lambda: utils.distance_maps(seg, spacing, signed=signed, dtype=dtype, validate=False),
    )
    transform = one_hot2dist if signed else one_hot2hd_dist
    expected = [transform(seg[b].numpy(), spacing[b].tolist(), dtype=dtype) for b in range(3)]
    np.testing.assert_allclose(maps.numpy(), np.stack(expected), rtol=1e-6, atol=1e-5)


def test_without_validation_the_input_is_not_read() -> None:
    """validate=False is for input checked once, or one-hot by construction: what only its
    values tell is not checked then; its shapes still are."""
    not_one_hot = torch.ones(1, 2, 3, 3)
    with pytest.raises(ValueError, match="one-hot"):
        one_hot2dist_torch(not_one_hot)
    assert one_hot2dist_torch(not_one_hot, validate=False).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="positive"):
        one_hot2hd_dist_torch(torch.ones(1, 2, 3, 3), (1.0, -1.0))
    with pytest.raises(ValueError, match="one per spatial"):
        one_hot2dist_torch(torch.eye(2)[None, :, :, None], (1.0,), validate=False)


# ------------------------------------------------------------------------- device HD / HD95


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ndim", [2, 3])
def test_hd_hd95_torch_matches_kd_tree_version(device: str, ndim: int) -> None:
    rng = np.random.default_rng(ndim)
    for trial in range(12):
        shape = tuple(rng.integers(2, 18, size=ndim))
        a = rng.random(shape) < rng.uniform(0.02, 0.5)
        b = rng.random(shape) < rng.uniform(0.02, 0.5)
        if trial == 0:
            b[:] = False  # one empty mask: the volume diagonal
        if trial == 1:
            a[:], b[:] = False, False
        if trial == 2:
            a[:] = True  # touches every side of the volume
        spacing = rng.uniform(0.3, 4, ndim) if trial % 2 else None
        ref = hd_hd95(a, b, spacing)
        got = hd_hd95_torch(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device), spacing)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_hd_hd95_torch_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        hd_hd95_torch(torch.ones(3, 3), torch.ones(3, 4))


@pytest.mark.parametrize("pred_dist", ["truncated", "exact"])
@pytest.mark.parametrize("shape", [(3, 2, 17, 13), (2, 2, 9, 8, 6)])
def test_hausdorff_loss_device_maps_equal_the_numpy_ones(
    pred_dist: str, shape, monkeypatch
) -> None:
    """The path HausdorffLoss takes on CUDA (utils.distance_maps on the device: the torch
    transform, floored for "truncated"), run on CPU tensors, against the numpy functions."""
    monkeypatch.setattr(utils, "on_device", lambda t: True)
    rng = np.random.default_rng(len(shape))
    labels = (rng.random((shape[0], *shape[2:])) < 0.3).astype(int)
    target = torch.from_numpy(one_hot(labels, 2)).float()
    pred = torch.from_numpy(one_hot((rng.random(labels.shape) < 0.4).astype(int), 2))
    loss = HausdorffLoss(idc=[1], pred_dist=pred_dist)
    tdm, pdm = loss.distance_maps(target[:, [1]], pred[:, [1]])
    pred_dtype = np.int32 if pred_dist == "truncated" else np.float32
    for b in range(shape[0]):
        expected_t = one_hot2hd_dist(target[b, [1]].numpy(), dtype=np.float32)
        expected_p = one_hot2hd_dist(pred[b, [1]].numpy(), dtype=pred_dtype)
        np.testing.assert_allclose(tdm[b].numpy(), expected_t, atol=1e-5)
        np.testing.assert_allclose(pdm[b].numpy(), expected_p, atol=1e-5, rtol=0)
