"""The label-input boundary loss and its compound with a region loss (label_losses.py).

The reference is the precomputed-map path of the pipeline: `utils.one_hot2dist` (scipy / edt on
the CPU, per sample) then `losses.SurfaceLoss`. The label-input loss must give the same value and
the same gradients on the same batch, 2D and 3D, with anisotropic and per-sample spacing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from boundary_loss.losses.idc_losses import GeneralizedDice, SurfaceLoss
from boundary_loss.losses.label_losses import LabelBoundaryLoss, RegionBoundaryLoss
from boundary_loss.maps import distance
from boundary_loss.maps.distance import one_hot2dist
from tests.host_reads import assert_checked_once, host_reads


def batch(shape: tuple[int, ...], K: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits `B K *shape` and labels `B *shape` holding blobs of every class."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], K, *shape[1:], generator=generator)
    labels = torch.zeros(shape, dtype=torch.long)
    for b in range(shape[0]):
        for k in range(1, K):
            corner = [int(torch.randint(0, n - 3, (1,), generator=generator)) for n in shape[1:]]
            labels[(b, *(slice(c, c + 3 + k) for c in corner))] = k
    return logits, labels


def reference(logits, labels, idc, spacing_per_sample):
    """Value and gradient of the precomputed-map path: one_hot2dist per sample on the CPU."""
    logits = logits.clone().requires_grad_(True)
    K = logits.shape[1]
    one_hot = F.one_hot(labels, K).movedim(-1, 1).numpy()
    maps = np.stack(
        [
            one_hot2dist(one_hot[b], resolution=spacing_per_sample[b], dtype=np.float32)
            for b in range(len(one_hot))
        ]
    )
    value = SurfaceLoss(idc=idc)(F.softmax(logits, 1), torch.from_numpy(maps))
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize(
    "shape, K, idc, spacing",
    [
        ((3, 24, 20), 2, [1], (0.9, 1.7)),
        ((2, 12, 10, 6), 3, [0, 1, 2], (0.8, 1.1, 3.0)),
        ((2, 16, 16), 4, [1, 3], None),
    ],
    ids=["2D K=2 anisotropic", "3D K=3 anisotropic", "2D K=4 unit"],
)
def test_value_and_gradients_equal_the_precomputed_map_path(shape, K, idc, spacing):
    logits, labels = batch(shape, K)
    per_sample = [spacing] * shape[0]
    expected, expected_grad = reference(logits, labels, idc, per_sample)
    logits = logits.clone().requires_grad_(True)
    value = LabelBoundaryLoss(idc)(logits, labels, spacing)
    value.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(logits.grad, expected_grad, rtol=1e-5, atol=1e-8)


def test_per_sample_spacing_and_probabilities():
    logits, labels = batch((3, 20, 18), 2, seed=1)
    spacing = torch.tensor([[1.0, 1.0], [0.5, 2.0], [3.0, 0.7]])
    expected, _ = reference(logits, labels, [1], spacing.tolist())
    probs = F.softmax(logits, 1)
    value = LabelBoundaryLoss([1], from_logits=False)(probs, labels, spacing)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    default = LabelBoundaryLoss([1], spacing=(0.5, 2.0))  # the constructor's spacing
    assert default(logits[1:2], labels[1:2]).item() == pytest.approx(
        reference(logits[1:2], labels[1:2], [1], [(0.5, 2.0)])[0].item(), rel=1e-5
    )


@pytest.mark.parametrize(
    "labels, spacing, message",
    [
        (torch.full((2, 8, 8), 2), None, "labels: values from 2 to 2, outside the 2 classes"),
        (torch.full((2, 8, 8), -1), None, "labels: values from -1 to -1"),
        (torch.zeros(2, 8, 8), None, "labels: expected integer class indices, got torch.float32"),
        (torch.zeros(2, 8, 7, dtype=torch.long), None, "labels: shape (2, 8, 7) does not match"),
        (torch.zeros(2, 8, 8, dtype=torch.long), (1.0, 1.0, 1.0), "spacing must have 2 values"),
        (torch.zeros(2, 8, 8, dtype=torch.long), (1.0, -1.0), "spacing values must be finite"),
    ],
    ids=["above K", "negative", "float", "shape", "spacing length", "spacing value"],
)
def test_bad_input_names_the_argument_and_the_value(labels, spacing, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LabelBoundaryLoss([1])(torch.zeros(2, 2, 8, 8), labels, spacing)


def test_region_boundary_loss_is_the_weighted_sum():
    logits, labels = batch((2, 16, 16), 3, seed=2)
    loss = RegionBoundaryLoss("gdl", alpha=0.25)
    one_hot = F.one_hot(labels, 3).movedim(-1, 1)
    region = GeneralizedDice(idc=[0, 1, 2])(F.softmax(logits, 1), one_hot)
    boundary = LabelBoundaryLoss([1, 2])(logits, labels)
    assert loss(logits, labels).item() == pytest.approx((region + 0.25 * boundary).item(), 1e-6)


@pytest.mark.parametrize(
    "schedule, after_three",
    [("steal", [0.97, 0.04]), ("add", [1.0, 0.04]), ("constant", [1.0, 0.01])],
)
def test_schedules_move_the_weights_once_per_step(schedule, after_three):
    loss = RegionBoundaryLoss("dice", schedule=schedule, alpha=0.01, step_size=0.01)
    for _ in range(3):
        loss.step()
    assert loss.weights == pytest.approx(after_three) and loss.epoch == 3


def test_steal_floors_the_region_weight_and_state_resumes():
    loss = RegionBoundaryLoss("ce", alpha=0.0, step_size=0.5)
    for _ in range(3):
        loss.step()
    assert loss.weights == pytest.approx([0.1, 1.5])  # max(0.1, 1 - 1.5)
    resumed = RegionBoundaryLoss("ce", alpha=0.0, step_size=0.5)
    resumed.load_state_dict(loss.state_dict())
    loss.step()
    resumed.step()
    assert resumed.state_dict() == loss.state_dict() == {"weights": [0.1, 2.0], "epoch": 4}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"region": "focal"}, "region: expected one of gdl, dice, ce, got 'focal'"),
        ({"schedule": "cosine"}, "schedule: expected one of steal, add, constant"),
        ({"alpha": -1.0}, "alpha: expected a finite number >= 0, got -1.0"),
        ({"alpha": True}, "alpha: expected a finite number >= 0, got True"),
        ({"step_size": False}, "step_size: expected a finite number >= 0, got False"),
        ({"alpha": float("nan")}, "alpha: expected a finite number >= 0, got nan"),
        (
            {"boundary_idc": "1"},
            "RegionBoundaryLoss: boundary_idc must be a list of class indices, got '1'",
        ),
        (
            {"region_idc": [True]},
            r"RegionBoundaryLoss: region_idc must be a list of class indices, got \[True\]",
        ),
        (
            {"region_idc": [-1]},
            r"RegionBoundaryLoss: region_idc must be class indices >= 0, got \[-1\]",
        ),
        ({"boundary_idc": []}, r"boundary_idc must name at least one class, got \[\]"),
        ({"validate": "yes"}, "validate: expected True or False, got 'yes'"),
    ],
)
def test_region_boundary_loss_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RegionBoundaryLoss(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_maps_come_from_the_torch_transform_with_the_same_result():
    logits, labels = batch((2, 12, 10, 6), 3, seed=6)
    spacing = (0.8, 1.1, 3.0)
    expected, expected_grad = reference(logits, labels, [1, 2], [spacing] * 2)
    logits = logits.cuda().requires_grad_(True)
    value = LabelBoundaryLoss([1, 2])(logits, labels.cuda(), spacing)
    value.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(logits.grad.cpu(), expected_grad, rtol=1e-4, atol=1e-7)


def test_spacing_offset_uses_the_smallest_spacing_inside():
    logits, labels = batch((2, 16, 12), 2, seed=7)
    one_hot = F.one_hot(labels, 2).movedim(-1, 1).numpy()
    maps = np.stack([one_hot2dist(s, (0.5, 2.0), np.float32, spacing_offset=True) for s in one_hot])
    expected = SurfaceLoss(idc=[1])(F.softmax(logits, 1), torch.from_numpy(maps)).item()
    value = LabelBoundaryLoss([1], spacing_offset=True)(logits, labels, (0.5, 2.0)).item()
    assert value == pytest.approx(expected, rel=1e-5)


def test_maps_of_only_zeros_and_ones_are_accepted():
    """One-pixel stripes: every pixel touches the other class, so at unit spacing the maps hold
    only 0 and 1, which a check for labels passed as maps must not refuse."""
    labels = (torch.arange(8)[None, :, None] % 2).expand(2, 8, 6).contiguous()
    logits = torch.randn(2, 2, 8, 6)
    one_hot = F.one_hot(labels, 2).movedim(-1, 1).numpy()
    maps = torch.from_numpy(np.stack([one_hot2dist(s, dtype=np.float32) for s in one_hot]))
    assert set(maps.unique().tolist()) == {0.0, 1.0}
    expected = (F.softmax(logits, 1) * maps).mean().item()  # SurfaceLoss would refuse the maps
    assert LabelBoundaryLoss([0, 1])(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_numpy_indices_and_weights_are_accepted_and_odd_input_refused():
    logits, labels = batch((2, 12, 12), 3, seed=8)
    loss = RegionBoundaryLoss("gdl", boundary_idc=np.array([1, 2]), alpha=np.float32(0.5))
    assert loss.boundary_idc == [1, 2] and loss.alpha == 0.5
    assert torch.isfinite(loss(logits, labels))
    with pytest.raises(ValueError, match="labels: empty"):
        LabelBoundaryLoss()(torch.zeros(0, 2, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="inputs: 1 class"):
        RegionBoundaryLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_labels_on_another_device_are_named():
    with pytest.raises(ValueError, match="labels: on cpu, but inputs are on cuda"):
        LabelBoundaryLoss()(torch.zeros(1, 2, 4, 4, device="cuda"), torch.zeros(1, 4, 4).long())


# ---------------------------------------------------------------------------------------------
# Checks: shapes, dtypes and devices on every call; values on the first call (or validate=True)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state, message",
    [
        (
            {"weights": [1.0, float("nan")], "epoch": 2},
            r"state\['weights'\]: expected two "
            r"finite numbers >= 0, got \[1.0, nan\]",
        ),
        ({"weights": [float("inf"), 0.1], "epoch": 2}, r"got \[inf, 0.1\]"),
        ({"weights": [1.0, True], "epoch": 2}, r"got \[1.0, True\]"),
        ({"weights": [1.0, -0.5], "epoch": 2}, r"got \[1.0, -0.5\]"),
        ({"weights": [1.0], "epoch": 2}, r"state\['weights'\]: expected two weights, got \[1.0\]"),
        ({"weights": "ab", "epoch": 2}, r"state\['weights'\]: expected two numbers, got 'ab'"),
        (
            {"weights": [1.0, 0.1], "epoch": -1},
            r"state\['epoch'\]: expected an integer >= 0, "
            r"got -1",
        ),
        ({"weights": [1.0, 0.1], "epoch": 2.5}, r"state\['epoch'\]: .* got 2.5"),
        ({"weights": [1.0, 0.1], "epoch": True}, r"state\['epoch'\]: .* got True"),
        (
            {"weights": [1.0, 0.1]},
            r"state: expected the mapping of state_dict\(\) with 'weights' "
            r"and 'epoch'",
        ),
    ],
    ids=[
        "nan",
        "inf",
        "bool",
        "negative",
        "one weight",
        "string",
        "epoch -1",
        "epoch float",
        "epoch bool",
        "no epoch",
    ],
)
def test_load_state_dict_refuses_what_state_dict_cannot_give(state, message):
    loss = RegionBoundaryLoss("gdl", alpha=0.2)
    with pytest.raises(ValueError, match=message):
        loss.load_state_dict(state)
    assert loss.state_dict() == {"weights": [1.0, 0.2], "epoch": 0}  # left as it was
    loss.load_state_dict({"weights": (np.float32(0.5), 1), "epoch": np.int64(3)})
    assert loss.state_dict() == {"weights": [0.5, 1.0], "epoch": 3}


@pytest.mark.parametrize("meta", ["inputs", "labels", "both"])
def test_meta_tensors_are_refused_naming_the_argument_and_the_device(meta):
    """Meta tensors (shapes without values, as some model-building tools make) cannot give a
    loss: refused with the argument named, before any device mismatch."""
    inputs = torch.zeros(2, 2, 8, 8, device="meta" if meta != "labels" else "cpu")
    labels = torch.zeros(2, 8, 8, dtype=torch.long, device="meta" if meta != "inputs" else "cpu")
    name, tensor = ("labels", labels) if meta == "labels" else ("inputs", inputs)
    expected = f"{name}: on the meta device (shape {tuple(tensor.shape)}, dtype {tensor.dtype})"
    for loss in (LabelBoundaryLoss([1]), RegionBoundaryLoss("dice")):
        with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            loss(inputs, labels)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: LabelBoundaryLoss([2]),
            r"LabelBoundaryLoss: idc: \[2\] outside the 2 classes of inputs \(shape "
            r"\(2, 2, 8, 8\)\)",
        ),
        (
            lambda: RegionBoundaryLoss("gdl", region_idc=[0, 3]),
            r"RegionBoundaryLoss: region_idc: \[3\] outside the 2 classes of inputs",
        ),
        (
            lambda: RegionBoundaryLoss("ce", boundary_idc=[2]),
            r"RegionBoundaryLoss: boundary_idc: \[2\] outside the 2 classes of inputs",
        ),
    ],
    ids=["idc", "region_idc", "boundary_idc"],
)
def test_idc_beyond_the_classes_is_refused_on_every_call(make, message):
    loss = make()
    with pytest.raises(ValueError, match=message):
        loss(torch.zeros(2, 2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LabelBoundaryLoss([1]),
        lambda: LabelBoundaryLoss([1], spacing_offset=True),
        lambda: RegionBoundaryLoss(),
    ],
    ids=["LabelBoundaryLoss", "spacing_offset", "RegionBoundaryLoss"],
)
def test_after_the_first_call_nothing_is_read_back_from_the_device(make, monkeypatch):
    """The value checks (labels, probabilities, spacing) read the device back once, on the
    first call; the next calls read nothing. The maps are computed by the transform of an
    accelerator (`distance_torch`), forced here on CPU tensors: on the CPU the loss computes
    them on the host (edt / scipy, `distance.one_hot2dist`), which is host work on host data by
    design, not a wait for a device."""
    logits, labels = batch((2, 16, 16), 2, seed=9)
    spacing = torch.tensor([[0.9, 1.2], [1.0, 0.7]])
    on_the_cpu = make()(logits, labels, spacing)
    monkeypatch.setattr(distance, "on_device", lambda tensor: True)
    loss = make()
    first = assert_checked_once(monkeypatch, lambda: loss(logits, labels, spacing))
    # The device's transform gives the maps of the CPU's, to float32 rounding.
    torch.testing.assert_close(first, on_the_cpu)
    validating = make()
    validating.validate = True
    validating(logits, labels, spacing)
    with host_reads(monkeypatch) as reads:
        validating(logits, labels, spacing)
    assert reads, "validate=True checks every call"


def test_values_are_checked_on_the_first_call_or_every_call_with_validate():
    logits, labels = batch((2, 12, 12), 2, seed=10)
    nan_logits = logits.clone()
    nan_logits[1, 0, 3, 4] = math.nan
    probs_message = (
        r"inputs \(probabilities\) is not a probability simplex over axis 1 .* up to nan"
    )
    for cls in (LabelBoundaryLoss, RegionBoundaryLoss):
        once, every = cls(), cls(validate=True)
        with pytest.raises(ValueError, match=probs_message):
            once(nan_logits, labels)  # the first call that holds values
        once(logits, labels), every(logits, labels)
        # Later, NaN inputs give a NaN loss (nothing is read back) unless validate=True.
        assert torch.isnan(once(nan_logits, labels))
        with pytest.raises(ValueError, match=probs_message):
            every(nan_logits, labels)
        with pytest.raises(ValueError, match="labels: values from 0 to 5, outside the 2 classes"):
            every(logits, labels * 5)


def test_probabilities_that_are_logits_are_refused_on_the_first_call():
    logits, labels = batch((2, 12, 12), 2, seed=11)
    with pytest.raises(ValueError, match=r"inputs \(probabilities\) is not a probability simplex"):
        LabelBoundaryLoss([1], from_logits=False)(logits, labels)
    with pytest.raises(ValueError, match=r"inputs \(probabilities\) is not a probability simplex"):
        RegionBoundaryLoss("dice", from_logits=False)(logits, labels)


def test_labels_out_of_range_after_the_first_call_are_still_named_on_the_cpu():
    """Unchecked calls build the one-hot labels by a scatter, which refuses an index out of
    range on the CPU: the loss then names the labels as the first call would."""
    logits, labels = batch((2, 12, 12), 2, seed=12)
    for loss in (LabelBoundaryLoss([1]), RegionBoundaryLoss()):
        loss(logits, labels)
        for bad, low, high in ((labels + 1, 1, 2), (labels - 1, -1, 0)):
            message = f"labels: values from {low} to {high}, outside the 2 classes 0..1"
            with pytest.raises(ValueError, match=message):
                loss(logits, bad)
