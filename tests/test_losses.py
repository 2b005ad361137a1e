"""Losses against hand-worked values, against the formulas of losses.py written with plain
sums, and against bad input. Hand values are computed in the comments."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from boundary_loss.losses.idc_losses import (
    LOSSES,
    BoundaryLoss,
    CrossEntropy,
    DiceLoss,
    FocalLoss,
    GeneralizedDice,
    HausdorffLoss,
    SurfaceLoss,
    get_loss,
)
from boundary_loss.maps import distance
from tests.host_reads import assert_checked_once, host_reads

EPS = 1e-10


def row(*values: float) -> torch.Tensor:
    """A 1 x 1 x W image row."""
    return torch.tensor(values, dtype=torch.float64)[None, None, :]


def two_class(p1: list[float], t1: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """probs and one-hot target of shape 1 x 2 x 1 x W from the class-1 probabilities/labels."""
    p = torch.tensor(p1, dtype=torch.float64)
    t = torch.tensor(t1, dtype=torch.float64)
    probs = torch.stack([1 - p, p])[None, :, None, :]
    target = torch.stack([1 - t, t])[None, :, None, :]
    return probs, target


# One 1 x 3 image: labels [0, 0, 1], class-1 probabilities [0.1, 0.4, 0.7].
PROBS, TARGET = two_class([0.1, 0.4, 0.7], [0, 0, 1])


@pytest.mark.parametrize(
    "loss, expected",
    [
        # -(log 0.9 + log 0.6 + log 0.7) / 3
        (CrossEntropy(idc=[0, 1]), -(math.log(0.9) + math.log(0.6) + math.log(0.7)) / 3),
        # only the class-1 pixel is supervised: -log 0.7 / 1
        (CrossEntropy(idc=[1]), -math.log(0.7)),
        # class 0: |t|=2, w=1/4, sum(pt)=0.9+0.6=1.5, sum p=0.9+0.6+0.3=1.8
        # class 1: |t|=1, w=1,   sum(pt)=0.7,         sum p=0.1+0.4+0.7=1.2
        # 1 - 2 (1.5/4 + 0.7) / ((1.8+2)/4 + (1.2+1)) = 1 - 2.15/3.15
        (GeneralizedDice(idc=[0, 1]), 1 - 2.15 / 3.15),
        # class 1 alone: 1 - 2 * 0.7 / 2.2
        (GeneralizedDice(idc=[1]), 1 - 1.4 / 2.2),
        # mean of 1 - 2*1.5/3.8 and 1 - 2*0.7/2.2
        (DiceLoss(idc=[0, 1]), ((1 - 3 / 3.8) + (1 - 1.4 / 2.2)) / 2),
        # -(0.1^2 log 0.9 + 0.4^2 log 0.6 + 0.3^2 log 0.7) / 3
        (
            FocalLoss(idc=[0, 1], gamma=2),
            -(0.01 * math.log(0.9) + 0.16 * math.log(0.6) + 0.09 * math.log(0.7)) / 3,
        ),
        # gamma = 0 is the cross-entropy
        (FocalLoss(idc=[1], gamma=0), -math.log(0.7)),
    ],
    ids=lambda v: repr(v) if not isinstance(v, float) else "",
)
def test_hand_worked_values(loss, expected):
    assert loss(PROBS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_surface_loss_hand_worked():
    # class-1 probabilities [0.1, 0.4, 0.7] against a signed map [2, 1, 0]:
    # mean over the 3 pixels of p*d = (0.2 + 0.4 + 0) / 3
    dist = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    dist[0, 1, 0] = torch.tensor([2.0, 1.0, 0.0])
    assert SurfaceLoss(idc=[1])(PROBS, dist).item() == pytest.approx(0.2)
    assert BoundaryLoss is SurfaceLoss


def test_surface_loss_negative_for_good_prediction():
    # A map that is negative inside the object: a confident correct prediction has a negative loss.
    dist = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    dist[0, 1, 0] = torch.tensor([2.0, 1.0, -1.0])
    probs, _ = two_class([0.0, 0.0, 1.0], [0, 0, 1])
    assert SurfaceLoss(idc=[1])(probs, dist).item() == pytest.approx(-1 / 3)


def test_hausdorff_loss_hand_worked():
    # 1 x 5 row, target class 1 at pixels 1..3, argmax prediction class 1 at pixels 2..3.
    # Dt (class 1) = [0, 1, 2, 1, 0], Dp = [0, 0, 1, 1, 0]
    # (p - t)^2 = [.01, .36, .01, .16, .04]; Dt^2 + Dp^2 = [0, 1, 5, 2, 0]
    # mean = (0.36 + 0.05 + 0.32) / 5 = 0.146
    probs, target = two_class([0.1, 0.4, 0.9, 0.6, 0.2], [0, 1, 1, 1, 0])
    assert HausdorffLoss(idc=[1])(probs, target).item() == pytest.approx(0.146)
    assert HausdorffLoss(idc=[1], pred_dist="exact")(probs, target).item() == pytest.approx(0.146)


def brute_inner_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of each True pixel to the nearest False pixel, all pairs; 0 elsewhere."""
    inside = np.argwhere(mask)
    outside = np.argwhere(~mask)
    res = np.zeros(mask.shape)
    if len(inside) and len(outside):
        d = np.sqrt(((inside[:, None, :] - outside[None, :, :]) ** 2).sum(-1)).min(1)
        res[tuple(inside.T)] = d
    return res


def test_hausdorff_loss_truncated_and_exact_pred_distances():
    # Prediction: everything class 1 but the corner pixel, so the pixel (1, 1) is at sqrt(2)
    # of the background. The original computes Dp on an int32 one-hot: truncated to 1.
    H = W = 4
    pred_fg = np.ones((H, W), dtype=bool)
    pred_fg[0, 0] = False
    p1 = torch.tensor(np.where(pred_fg, 0.8, 0.3))
    t1 = torch.zeros(H, W, dtype=torch.float64)
    t1[1:3, 1:3] = 1
    probs = torch.stack([1 - p1, p1])[None]
    target = torch.stack([1 - t1, t1])[None]

    dt = brute_inner_distance(t1.numpy().astype(bool))
    dp = brute_inner_distance(pred_fg)
    delta = (p1.numpy() - t1.numpy()) ** 2
    exact = np.mean(delta * (dt**2 + dp**2)) / 1  # one class supervised
    truncated = np.mean(delta * (dt**2 + np.trunc(dp) ** 2))
    assert exact != pytest.approx(truncated)
    assert HausdorffLoss(idc=[1], pred_dist="exact")(probs, target).item() == pytest.approx(exact)
    assert HausdorffLoss(idc=[1])(probs, target).item() == pytest.approx(truncated)


# ---------------------------------------------------------------------------------------------
# The formulas of the losses.py docstring written with plain sums, on random 2D and 3D tensors.
# ---------------------------------------------------------------------------------------------


def spec_formula(name: str, p: torch.Tensor, t: torch.Tensor, gamma: float = 2.0) -> float:
    """p, t: the idc-selected B x K' x spatial tensors (float64)."""
    B, K = p.shape[:2]
    p2, t2 = p.reshape(B, K, -1), t.reshape(B, K, -1)
    if name == "CrossEntropy":
        return float(-(t2 * torch.log(p2 + EPS)).sum() / (t2.sum() + EPS))
    if name == "FocalLoss":
        return float(-((1 - p2) ** gamma * t2 * torch.log(p2 + EPS)).sum() / (t2.sum() + EPS))
    if name == "DiceLoss":
        per = 1 - (2 * (p2 * t2).sum(-1) + EPS) / (p2.sum(-1) + t2.sum(-1) + EPS)
        return float(per.mean())
    if name == "GeneralizedDice":
        w = 1 / (t2.sum(-1) + EPS) ** 2
        num = (w * (p2 * t2).sum(-1)).sum(-1) + EPS
        den = (w * (p2.sum(-1) + t2.sum(-1))).sum(-1) + EPS
        return float((1 - 2 * num / den).mean())
    if name == "SurfaceLoss":
        return float((p2 * t2).mean())
    raise KeyError(name)


def random_case(spatial: tuple[int, ...], K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((2, K, *spatial), generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, dim=1)
    labels = torch.randint(0, K, (2, *spatial), generator=g)
    target = torch.nn.functional.one_hot(labels, K).movedim(-1, 1).to(torch.float64)
    return probs, target


@pytest.mark.parametrize("spatial", [(6, 7), (4, 5, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", ["CrossEntropy", "FocalLoss", "DiceLoss", "GeneralizedDice"])
@pytest.mark.parametrize("idc", [[0, 1, 2], [1], [0, 2]])
def test_matches_spec_formula(name, spatial, idc):
    probs, target = random_case(spatial, 3, seed=len(spatial) * 10 + len(idc))
    kwargs = {"gamma": 2.0} if name == "FocalLoss" else {}
    got = get_loss(name, idc=idc, **kwargs)(probs, target).item()
    expected = spec_formula(name, probs[:, idc], target[:, idc])
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("spatial", [(6, 7), (4, 5, 3)], ids=["2d", "3d"])
def test_surface_matches_spec_formula(spatial):
    probs, _ = random_case(spatial, 2, seed=3)
    dist = torch.randn(probs.shape, dtype=torch.float64) * 5
    got = SurfaceLoss(idc=[1])(probs, dist).item()
    assert got == pytest.approx(spec_formula("SurfaceLoss", probs[:, [1]], dist[:, [1]]))


@pytest.mark.parametrize(
    "name", ["CrossEntropy", "GeneralizedDice", "DiceLoss", "SurfaceLoss", "HausdorffLoss"]
)
def test_computed_in_float32_whatever_the_input_dtype(name):
    # The original casts with .type(torch.float32): float64 and half inputs give float32 values.
    probs, target = random_case((8, 8), 3, seed=5)
    if name == "SurfaceLoss":
        target = torch.randn(target.shape, dtype=torch.float64)
    loss = get_loss(name, idc=[0, 1, 2])
    expected = loss(probs.float(), target.float())
    assert expected.dtype == torch.float32
    for dtype in (torch.float64, torch.bfloat16):
        got = loss(probs.to(dtype), target.to(dtype))
        assert got.dtype == torch.float32
    assert loss(probs, target).item() == expected.item()  # float64 input: the same float32 sums


def test_focal_loss_keeps_float64_as_the_original():
    probs, target = random_case((8, 8), 3, seed=5)
    assert FocalLoss(idc=[0, 1], gamma=2)(probs, target).dtype == torch.float64
    assert FocalLoss(idc=[0, 1], gamma=2)(probs.half(), target.half()).dtype == torch.float32


def test_perfect_prediction_gives_exactly_zero_dice_losses():
    probs, target = random_case((6, 6), 3, seed=4)
    for name in ["GeneralizedDice", "DiceLoss"]:
        assert get_loss(name, idc=[0, 1, 2])(target, target).item() == 0.0


def test_soft_targets_are_accepted_as_in_the_original():
    probs, target = random_case((5, 5), 2, seed=9)
    soft = 0.9 * target + 0.05
    expected = spec_formula("CrossEntropy", probs, soft)
    assert CrossEntropy(idc=[0, 1])(probs, soft).item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(8, 8), (6, 6, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("CrossEntropy", {}),
        ("GeneralizedDice", {}),
        ("DiceLoss", {}),
        ("SurfaceLoss", {}),
        ("BoundaryLoss", {}),
        ("FocalLoss", {"gamma": 2}),
        ("HausdorffLoss", {}),
    ],
)
def test_gradients_flow(name, kwargs, spatial):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 2, *spatial), generator=g, requires_grad=True)
    labels = torch.zeros((2, *spatial), dtype=torch.int64)
    labels[(slice(None),) + tuple(slice(2, 5) for _ in spatial)] = 1
    target = torch.nn.functional.one_hot(labels, 2).movedim(-1, 1).float()
    if name in ("SurfaceLoss", "BoundaryLoss"):
        target = torch.randn(target.shape, generator=g)
    loss = get_loss(name, idc=[0, 1], **kwargs)(torch.softmax(logits, 1), target)
    loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_gradcheck_focal_loss_in_float64():
    probs, target = random_case((3, 4), 2, seed=1)
    logits = probs.log().clone().requires_grad_(True)
    loss = FocalLoss(idc=[0, 1], gamma=2)
    assert torch.autograd.gradcheck(lambda x: loss(torch.softmax(x, 1), target), (logits,))


def test_negative_idc_index_from_the_end_as_in_the_original():
    probs, target = random_case((4, 4), 3, seed=6)
    assert (
        CrossEntropy(idc=[-1])(probs, target).item() == CrossEntropy(idc=[2])(probs, target).item()
    )


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_registry_holds_every_loss():
    assert set(LOSSES) >= {
        "CrossEntropy",
        "GeneralizedDice",
        "DiceLoss",
        "SurfaceLoss",
        "BoundaryLoss",
        "FocalLoss",
        "HausdorffLoss",
    }
    with pytest.raises(ValueError, match="unknown loss 'Dice'.*GeneralizedDice"):
        get_loss("Dice", idc=[0])
    with pytest.raises(ValueError, match="FocalLoss: bad arguments"):
        get_loss("FocalLoss", idc=[0])
    with pytest.raises(ValueError, match=r"CrossEntropy: unknown argument\(s\) \['weight'\]"):
        get_loss("CrossEntropy", idc=[0], weight=3)
    with pytest.raises(TypeError, match=r"FocalLoss: unknown argument.*takes idc, gamma"):
        FocalLoss(idc=[0], gamma=2, alpha=0.25)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CrossEntropy(idc=1), "idc must be a list"),
        (lambda: CrossEntropy(idc=[]), "at least one class"),
        (lambda: CrossEntropy(idc=None), "idc must be a list"),
        (lambda: CrossEntropy(idc=[0.5]), "idc must be a list"),
        (lambda: FocalLoss(idc=[1], gamma=-1), "gamma"),
        (lambda: FocalLoss(idc=[1], gamma="2"), "gamma"),
        (lambda: HausdorffLoss(idc=[1], pred_dist="rounded"), "pred_dist"),
    ],
)
def test_bad_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", ["CrossEntropy", "GeneralizedDice", "DiceLoss", "HausdorffLoss"])
def test_bad_calls(name):
    loss = get_loss(name, idc=[0, 1])
    probs, target = random_case((4, 4), 2, seed=2)
    with pytest.raises(ValueError, match=r"probs is not a probability simplex.*\(2, 2, 4, 4\)"):
        loss(probs * 2, target)
    nan_probs = probs.clone()
    nan_probs[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not a probability simplex"):
        loss(nan_probs, target)
    with pytest.raises(ValueError, match=r"same shape.*\(2, 2, 4, 4\) and \(2, 2, 4, 3\)"):
        loss(probs, target[..., :3])
    with pytest.raises(ValueError, match="target is not a probability simplex"):
        loss(probs, target * 255)
    with pytest.raises(
        ValueError,
        match=rf"{name}: idc: \[2\] outside the 2 classes of probs \(shape \(2, 2, 4, 4\)\)",
    ):
        get_loss(name, idc=[0, 2])(probs, target)
    with pytest.raises(ValueError, match="B x K x spatial"):
        loss(probs[0, 0], target[0, 0])


def test_surface_loss_refuses_labels_for_distance_maps():
    probs, target = random_case((4, 4), 2, seed=2)
    with pytest.raises(ValueError, match="dist_maps is one-hot"):
        SurfaceLoss(idc=[1])(probs, target)
    with pytest.raises(TypeError, match="dist_maps must be a torch.Tensor, got ndarray"):
        SurfaceLoss(idc=[1])(probs, target.numpy())
    with pytest.raises(TypeError, match="probs must be a torch.Tensor"):
        SurfaceLoss(idc=[1])(probs.numpy(), target)


def test_validation_survives_python_optimise_flag():
    # CFLAGS=-O runs python -O, which strips asserts: the checks must be real exceptions.
    code = (
        "import torch; from losses import GeneralizedDice\n"
        "try:\n"
        "    GeneralizedDice(idc=[0, 1])(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2))\n"
        "except ValueError:\n"
        "    print('refused')\n"
    )
    out = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True, cwd="."
    )
    assert out.stdout.strip() == "refused"


def test_compound_loss_skips_zero_weights_and_logs_them_as_nan():
    from boundary_loss.losses.idc_losses import CompoundLoss, GeneralizedDice, SurfaceLoss

    probs = torch.softmax(torch.randn(2, 2, 8, 8), dim=1)
    labels = torch.nn.functional.one_hot(torch.randint(0, 2, (2, 8, 8)), 2).movedim(-1, 1)
    dist = torch.randn(2, 2, 8, 8)
    gdl, surface = GeneralizedDice(idc=[0, 1]), SurfaceLoss(idc=[1])
    compound = CompoundLoss([gdl, surface], ["GeneralizedDice", "SurfaceLoss"])
    total, values = compound(probs, [labels, dist], [1.0, 0.01])
    expected = 1.0 * gdl(probs, labels) + 0.01 * surface(probs, dist)
    assert torch.allclose(total, expected, rtol=0, atol=0)  # same terms, same order
    total, values = compound(probs, [labels, dist], [0.0, 0.5])
    assert values[0] is None and torch.equal(total, 0.5 * surface(probs, dist))
    raw = compound.raw(values)
    assert math.isnan(raw[0]) and raw[1] == pytest.approx(float(surface(probs, dist)))
    assert compound(probs, [labels, dist], [0.0, 0.0]) == (None, [None, None])
    kept = CompoundLoss([gdl, surface], ["a", "b"], skip_zero=False)
    _, values = kept(probs, [labels, dist], [0.0, 0.5])
    assert values[0] is not None
    with pytest.raises(ValueError, match="one target and one weight per loss"):
        compound(probs, [labels], [1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Host reads: the value checks read the device on the first call only (or with validate=True)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("CrossEntropy", {}),
        ("GeneralizedDice", {}),
        ("DiceLoss", {}),
        ("FocalLoss", {"gamma": 2}),
        ("SurfaceLoss", {}),
        ("HausdorffLoss", {}),
        ("HausdorffLoss", {"pred_dist": "exact"}),
    ],
)
def test_after_the_first_call_nothing_is_read_back_from_the_device(name, kwargs, monkeypatch):
    """The first call reads the value checks' results back; the next calls read nothing, and
    give the same value. HausdorffLoss's maps come from the transform of an accelerator
    (`distance_torch`), forced here on CPU tensors: on the CPU they are computed on the host
    (edt / scipy per sample), which is host work on host data by design, not a device wait."""
    monkeypatch.setattr(distance, "on_device", lambda tensor: True)
    probs, target = random_case((8, 8), 3, seed=21)
    if name == "SurfaceLoss":
        target = torch.randn(target.shape, generator=torch.Generator().manual_seed(3))
    loss = get_loss(name, idc=[0, 2], **kwargs)
    first = assert_checked_once(monkeypatch, lambda: loss(probs, target))
    validating = get_loss(name, idc=[0, 2], validate=True, **kwargs)
    validating(probs, target)
    with host_reads(monkeypatch) as reads:
        assert torch.equal(validating(probs, target), first)
    assert reads, "validate=True checks every call"


def test_values_are_checked_on_the_first_call_or_every_call_with_validate():
    probs, target = random_case((4, 4), 2, seed=22)
    nan_probs = probs.clone()
    nan_probs[0, 1, 0, 0] = math.nan
    makers = (lambda **kw: CrossEntropy(idc=[0, 1], **kw), lambda **kw: DiceLoss(idc=[1], **kw))
    for make in makers:
        once, every = make(), make(validate=True)
        with pytest.raises(ValueError, match="probs is not a probability simplex"):
            once(probs * 2, target)  # a first call that fails stays a first call
        once(probs, target), every(probs, target)
        # Later, NaN probabilities give a NaN loss (nothing is read back) unless validate=True.
        assert torch.isnan(once(nan_probs, target))
        with pytest.raises(ValueError, match="probs is not a probability simplex"):
            every(nan_probs, target)
        with pytest.raises(ValueError, match="target is not a probability simplex"):
            every(probs, target * 255)
        # What the shapes tell is checked on every call.
        with pytest.raises(ValueError, match="same shape"):
            once(probs, target[..., :3])
    surface, validating = SurfaceLoss(idc=[1]), SurfaceLoss(idc=[1], validate=True)
    maps = torch.randn(target.shape, generator=torch.Generator().manual_seed(4))
    surface(probs, maps), validating(probs, maps)
    assert torch.isfinite(surface(probs, target))  # labels as maps: not read back any more
    with pytest.raises(ValueError, match="dist_maps is one-hot"):
        validating(probs, target)


def test_validate_must_be_a_bool():
    with pytest.raises(ValueError, match="CrossEntropy: validate: expected True or False"):
        CrossEntropy(idc=[0], validate="yes")
    with pytest.raises(ValueError, match=r"CrossEntropy: idc must be a list .* got \[True\]"):
        CrossEntropy(idc=[True])


def test_compound_loss_reads_nothing_and_its_raw_terms_stay_on_the_device(monkeypatch):
    from boundary_loss.losses.idc_losses import CompoundLoss

    probs, target = random_case((8, 8), 2, seed=23)
    maps = torch.randn(target.shape, generator=torch.Generator().manual_seed(5))
    compound = CompoundLoss(
        [GeneralizedDice(idc=[0, 1]), SurfaceLoss(idc=[1]), CrossEntropy(idc=[0, 1])],
        ["GeneralizedDice", "SurfaceLoss", "CrossEntropy"],
    )
    weights = [1.0, 0.01, 0.0]
    first, first_values = compound(probs, [target, maps, target], weights)
    with host_reads(monkeypatch) as reads:
        total, values = compound(probs, [target, maps, target], weights)
        raw = compound.raw_tensor(values)
    assert reads == []
    assert torch.equal(total, first) and values[2] is None
    assert raw.dtype == torch.float32 and raw.shape == (3,) and math.isnan(raw[2])
    assert torch.equal(raw[:2], torch.stack([v.float() for v in first_values[:2]]))
    # `raw` is the same terms read back as floats.
    floats = compound.raw(values)
    assert floats[:2] == raw[:2].tolist() and math.isnan(floats[2])
    none = CompoundLoss.raw_tensor([None, None])
    assert none.shape == (2,) and torch.isnan(none).all()
    assert CompoundLoss.raw([]) == [] and CompoundLoss.raw_tensor([]).shape == (0,)
