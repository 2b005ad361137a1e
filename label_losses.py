"""The boundary loss for anyone's training loop: what CrossEntropyLoss takes, in and out.

`losses.SurfaceLoss` reads signed distance maps precomputed by the data pipeline, as the
original boundary-loss code does. Most training loops (plain torch, MONAI's, nnU-Net's) hand a
loss `(logits B K H W [D], integer labels B H W [D])` instead. The classes here take exactly that:

- `LabelBoundaryLoss`: the boundary loss (Kervadec et al., MIDL 2019) from the labels. The signed
  maps are computed on the labels' device, exactly, never interpolated: on an accelerator by the
  separable transform of `distance_torch.one_hot2dist_torch`, on the CPU by the faster C++/scipy
  transforms of `utils` (the dispatcher `utils.distance_maps`), both with the original's
  conventions (the maps `utils.one_hot2dist` gives: negative inside, one pixel subtracted
  inside, per-sample spacing); then `losses.SurfaceLoss`'s mean(p * d): value and gradients
  equal the precomputed-map path on the same batch.
- `RegionBoundaryLoss`: a region loss (GDL, Dice or CE, from `losses.py`) plus the boundary term,
  its weight alpha moved once per epoch by `step()` with the original's schedules: `steal`
  (`scheduler.StealWeight`: the region weight falls by `step_size`, floored at 0.1, alpha rises
  by it), `add` (`scheduler.AddWeightLoss`: alpha rises by `step_size`), `constant`. Its
  `state_dict()` holds the weights and the epoch, so a resumed training goes on exactly.

Bad input (labels out of range, float labels, a shape that does not match, a spacing of the wrong
length) raises ValueError naming the argument and the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distance_torch import batch_spacing, one_hot2dist_torch
from losses import CrossEntropy, DiceLoss, GeneralizedDice
from scheduler import AddWeightLoss, DummyScheduler, StealWeight
from utils import check_simplex, distance_maps

SpacingLike = Sequence[float] | Tensor | None

REGION_LOSSES = {"gdl": GeneralizedDice, "dice": DiceLoss, "ce": CrossEntropy}
SCHEDULES = ("steal", "add", "constant")


def check_inputs(inputs: Tensor, labels: Tensor) -> int:
    """Check `(inputs B K *xyz, labels B *xyz)` as a loss receives them; returns K.

    Raises:
        ValueError: naming the argument and the value: inputs not a floating tensor of 2 or 3
            spatial axes, labels not integers, not of inputs' shape without its class axis, or
            with values outside 0..K-1.
    """
    if not torch.is_tensor(inputs) or not inputs.is_floating_point():
        raise ValueError(f"inputs: expected a floating tensor B x K x spatial, got {inputs!r:.80}")
    if inputs.dim() not in (4, 5):
        raise ValueError(
            f"inputs: expected B x K x H x W or B x K x X x Y x Z, got shape {tuple(inputs.shape)}"
        )
    if not torch.is_tensor(labels) or labels.dtype.is_floating_point or labels.dtype.is_complex:
        dtype = labels.dtype if torch.is_tensor(labels) else type(labels).__name__
        raise ValueError(f"labels: expected integer class indices, got {dtype}")
    if labels.device != inputs.device:
        raise ValueError(
            f"labels: on {labels.device}, but inputs are on {inputs.device}; move both to one "
            "device"
        )
    if labels.numel() == 0:
        raise ValueError(f"labels: empty, shape {tuple(labels.shape)}")
    expected = (inputs.shape[0], *inputs.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels: shape {tuple(labels.shape)} does not match inputs {tuple(inputs.shape)} "
            f"without its class axis {expected}"
        )
    K = inputs.shape[1]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= K:
        raise ValueError(
            f"labels: values from {low} to {high}, outside the {K} classes 0..{K - 1} of inputs"
        )
    return K


def check_spacing(spacing: SpacingLike, labels: Tensor) -> Tensor | None:
    """`spacing` as a `B x ndim` float64 tensor on the CPU (None stays None), checked against
    the labels (`distance_torch.batch_spacing`: a ValueError names it and its values)."""
    if spacing is None:
        return None
    return batch_spacing(spacing, labels.shape[0], labels.dim() - 1, "cpu", torch.float64)


def _check_idc(idc: Sequence[int] | None, what: str) -> list[int] | None:
    if idc is None:
        return None
    integers = (int, np.integer)
    valid = not isinstance(idc, str) and len(idc) > 0
    if not valid or not all(isinstance(i, integers) and i >= 0 for i in idc):
        raise ValueError(f"{what}: expected a list of class indices >= 0, got {idc!r}")
    return [int(i) for i in idc]


def boundary_term(probs: Tensor, dist: Tensor, idc: Sequence[int]) -> Tensor:
    """`losses.SurfaceLoss`'s value, mean(p * d) over the classes `idc`, in float32, without
    its guard against labels given as maps: the maps here are computed, and can hold only 0s and
    1s (a class whose every pixel touches another, at unit spacing)."""
    return (probs[:, idc].float() * dist[:, idc].float()).mean()


class LabelBoundaryLoss:
    """The boundary loss from logits (or probabilities) and integer labels.

    Args:
        idc: the classes supervised (None: all of them; for two classes the paper uses [1]).
        from_logits: inputs are logits (softmax applied here), else probabilities.
        spacing: voxel size per spatial axis (mm) for every call without its own; None: 1.
        spacing_offset: as in `utils.one_hot2dist` (False: the original's one-pixel offset).

    Call: `loss(inputs, labels, spacing=None)` with inputs `B K H W` or `B K X Y Z`, labels
    `B H W` / `B X Y Z` integer class indices on the same device, spacing one value per spatial
    axis or a `B x ndim` tensor (per sample). Returns a scalar: `SurfaceLoss(idc)(softmax(inputs),
    one_hot2dist(one_hot(labels), spacing))`, the maps computed without gradient.
    """

    def __init__(
        self,
        idc: Sequence[int] | None = None,
        *,
        from_logits: bool = True,
        spacing: SpacingLike = None,
        spacing_offset: bool = False,
    ) -> None:
        self.idc = _check_idc(idc, "idc")
        self.from_logits = bool(from_logits)
        self.spacing = spacing
        self.spacing_offset = bool(spacing_offset)

    def __repr__(self) -> str:
        return f"LabelBoundaryLoss(idc={self.idc}, from_logits={self.from_logits})"

    def distance_maps(self, labels: Tensor, K: int, spacing: SpacingLike = None) -> Tensor:
        """The signed maps `B K *xyz` (float32, labels' device) of integer labels: the exact
        torch transform on an accelerator, the CPU transforms of `utils` (faster there) on the
        CPU (`utils.distance_maps`); both give the maps of `utils.one_hot2dist`."""
        one_hot = F.one_hot(labels.long(), K).movedim(-1, 1)
        spacing = check_spacing(self.spacing if spacing is None else spacing, labels)
        with torch.no_grad():
            if self.spacing_offset:
                return one_hot2dist_torch(one_hot, spacing, spacing_offset=True)
            return distance_maps(one_hot, spacing).to(labels.device)

    def probabilities(self, inputs: Tensor) -> Tensor:
        """softmax over the classes of logits (float32), or the probabilities as given."""
        return F.softmax(inputs.float(), dim=1) if self.from_logits else inputs

    def __call__(self, inputs: Tensor, labels: Tensor, spacing: SpacingLike = None) -> Tensor:
        K = check_inputs(inputs, labels)
        idc = self.idc if self.idc is not None else list(range(K))
        if max(idc) >= K:
            raise ValueError(f"idc: {idc} outside the {K} classes of inputs")
        probs = self.probabilities(inputs)
        check_simplex(probs, "inputs (probabilities)")
        return boundary_term(probs, self.distance_maps(labels, K, spacing), idc)


class RegionBoundaryLoss:
    """A region loss plus the boundary loss, weighted `region_weight` and `alpha`, scheduled.

    Args:
        region: "gdl" (generalised Dice), "dice" or "ce" (cross-entropy), on `region_idc`.
        region_idc: classes of the region loss (None: all).
        boundary_idc: classes of the boundary loss (None: all but 0).
        alpha: the boundary weight at the start (the paper: 0.01).
        schedule: "steal", "add" or "constant": how `step()` moves the weights.
        step_size: the change per `step()` (the paper: 0.01).
        from_logits: inputs are logits, else probabilities.
        spacing: voxel size per spatial axis (mm) for every call without its own.

    Call: `loss(inputs, labels, spacing=None)` -> scalar. `step()` once per epoch;
    `state_dict()` / `load_state_dict()` save and restore the weights and epoch.
    """

    def __init__(
        self,
        region: str = "gdl",
        *,
        region_idc: Sequence[int] | None = None,
        boundary_idc: Sequence[int] | None = None,
        alpha: float = 0.01,
        schedule: str = "steal",
        step_size: float = 0.01,
        from_logits: bool = True,
        spacing: SpacingLike = None,
    ) -> None:
        if region not in REGION_LOSSES:
            raise ValueError(f"region: expected one of {', '.join(REGION_LOSSES)}, got {region!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        for name, value in (("alpha", alpha), ("step_size", step_size)):
            if not isinstance(value, Real) or not 0 <= value < float("inf"):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        self.region_name, self.schedule = region, schedule
        self.region_idc = _check_idc(region_idc, "region_idc")
        boundary_idc = _check_idc(boundary_idc, "boundary_idc")
        self.boundary = LabelBoundaryLoss(boundary_idc, from_logits=from_logits, spacing=spacing)
        self.boundary_idc = self.boundary.idc
        self.weights = [1.0, float(alpha)]
        self.epoch = 0
        self.step_size = float(step_size)
        if schedule == "steal":
            self._scheduler: DummyScheduler = StealWeight(to_steal=self.step_size)
        elif schedule == "add":
            self._scheduler = AddWeightLoss(to_add=[0.0, self.step_size])
        else:
            self._scheduler = DummyScheduler()

    @property
    def alpha(self) -> float:
        """The boundary term's weight now."""
        return self.weights[1]

    def __repr__(self) -> str:
        return (
            f"RegionBoundaryLoss(region={self.region_name!r}, weights={self.weights}, "
            f"schedule={self.schedule!r}, epoch={self.epoch})"
        )

    def __call__(self, inputs: Tensor, labels: Tensor, spacing: SpacingLike = None) -> Tensor:
        K = check_inputs(inputs, labels)
        if K < 2:
            raise ValueError(f"inputs: {K} class; the boundary term needs 2 classes or more")
        region_idc = self.region_idc if self.region_idc is not None else list(range(K))
        boundary_idc = self.boundary_idc if self.boundary_idc is not None else list(range(1, K))
        if max(region_idc + boundary_idc) >= K:
            raise ValueError(f"idc: {region_idc} / {boundary_idc} outside the {K} classes")
        probs = self.boundary.probabilities(inputs)
        one_hot = F.one_hot(labels.long(), K).movedim(-1, 1)
        region = REGION_LOSSES[self.region_name](idc=region_idc)(probs, one_hot)
        boundary = boundary_term(
            probs, self.boundary.distance_maps(labels, K, spacing), boundary_idc
        )
        return self.weights[0] * region + self.weights[1] * boundary

    def step(self) -> None:
        """End of an epoch: move the weights by the schedule."""
        self.weights = self._scheduler(self.epoch, [self.weights])[0]
        self.epoch += 1

    def state_dict(self) -> dict:
        """The weights and the number of epochs stepped, for a checkpoint."""
        return {"weights": list(self.weights), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        weights = [float(w) for w in state["weights"]]
        if len(weights) != 2:
            raise ValueError(f"state: expected two weights, got {state['weights']!r}")
        self.weights, self.epoch = weights, int(state["epoch"])
