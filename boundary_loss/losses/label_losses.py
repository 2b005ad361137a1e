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
length) raises ValueError naming the argument and the value. What the shapes, dtypes and devices
tell is checked on every call (ranks, shapes, an empty batch, `idc` against K, the meta device);
what needs the values (labels within 0..K-1, probabilities summing to one, no NaN, spacing values
finite and positive) is read back from the device, a synchronisation, so it is checked on the
first call of each loss object only, or on every call with `validate=True`. After the first call,
labels out of range still stop the loss on the CPU (ValueError) and in a CUDA kernel assertion on
a GPU; NaN inputs give a NaN loss; the maps on the CPU still check their spacing (host work).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from boundary_loss.losses.checks import (
    check_flag,
    check_idc_range,
    check_optional_idc,
    check_weight,
)
from boundary_loss.losses.idc_losses import CrossEntropy, DiceLoss, GeneralizedDice, boundary_term
from boundary_loss.losses.weight_schedules import (
    SCHEDULES,
    AddWeightLoss,
    DummyScheduler,
    StealWeight,
)
from boundary_loss.maps.distance import distance_maps
from boundary_loss.maps.distance_torch import batch_spacing, one_hot2dist_torch
from boundary_loss.maps.onehot import check_simplex, indices2one_hot

SpacingLike = Sequence[float] | Tensor | None

REGION_LOSSES = {"gdl": GeneralizedDice, "dice": DiceLoss, "ce": CrossEntropy}


def check_inputs(inputs: Tensor, labels: Tensor) -> int:
    """Check `(inputs B K *xyz, labels B *xyz)` from their types, shapes, dtypes and devices
    only: no value is read, so no device-to-host synchronisation. Returns K.

    Args:
        inputs: logits or probabilities `B K H W` / `B K X Y Z`.
        labels: integer class indices `B H W` / `B X Y Z`.

    Returns:
        K, the number of classes of inputs.

    Raises:
        ValueError: naming the argument and the value: inputs not a floating tensor of 2 or 3
            spatial axes, labels not integers, on the meta device (no values) or another device
            than inputs, empty, or not of inputs' shape without its class axis.
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
    for name, tensor in (("inputs", inputs), ("labels", labels)):
        if tensor.device.type == "meta":
            raise ValueError(
                f"{name}: on the meta device (shape {tuple(tensor.shape)}, dtype {tensor.dtype}), "
                "which holds shapes but no values; give the loss tensors on the CPU or an "
                "accelerator"
            )
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
    return inputs.shape[1]


def check_label_values(labels: Tensor, K: int) -> None:
    """Check that integer labels lie in 0..K-1: reads their extremes back from the device (one
    synchronisation).

    Args:
        labels: integer class indices, checked by `check_inputs`.
        K: the number of classes.

    Raises:
        ValueError: naming labels, their smallest and largest values and K.
    """
    low, high = torch.stack([labels.min(), labels.max()]).tolist()
    if low < 0 or high >= K:
        raise ValueError(
            f"labels: values from {low} to {high}, outside the {K} classes 0..{K - 1} of inputs "
            f"(shape {tuple(labels.shape)})"
        )


def check_values(probs: Tensor, labels: Tensor, K: int) -> None:
    """The value checks of a call, which read the device (the first call of a loss object, or
    every call with `validate=True`): labels in 0..K-1, probabilities summing to one over the
    classes (`utils.check_simplex`: raw logits, NaN or inf fail it).

    Args:
        probs: the probabilities `B K *xyz` the loss uses (softmax of logits, or as given).
        labels: integer class indices `B *xyz`.
        K: the number of classes.

    Raises:
        ValueError: naming the argument, its shape and the offending values.
    """
    check_label_values(labels, K)
    check_simplex(probs, "inputs (probabilities)")


def one_hot_labels(labels: Tensor, K: int) -> Tensor:
    """`B K *xyz` int32 one-hot of integer labels `B *xyz`, without reading them back from the
    device (`onehot.indices2one_hot`, a scatter), which refuses an index out of range on the
    CPU (ValueError here, naming the values) and by a kernel assertion on a GPU.

    Args:
        labels: integer class indices `B *xyz`.
        K: the number of classes.

    Returns:
        The one-hot tensor, on labels' device.

    Raises:
        ValueError: labels outside 0..K-1 (CPU), as `check_label_values` words it.
    """
    try:
        return indices2one_hot(labels, K)
    except RuntimeError:
        try:
            check_label_values(labels, K)  # the failure path may read the values: it names them
        except ValueError as named:
            raise named from None
        raise


def check_spacing(spacing: SpacingLike, labels: Tensor, validate: bool = True) -> Tensor | None:
    """`spacing` as a `B x ndim` float64 tensor on the CPU (None stays None), checked against
    the labels (`distance_torch.batch_spacing`: a ValueError names it and its values; the
    values with `validate`, the first call of a loss)."""
    if spacing is None:
        return None
    ndim = labels.dim() - 1
    return batch_spacing(spacing, labels.shape[0], ndim, "cpu", torch.float64, validate=validate)


def _where(inputs: Tensor) -> str:
    """What holds the K classes, for `checks.check_idc_range`'s message."""
    return f"inputs (shape {tuple(inputs.shape)})"


class _Unchecked:
    """Mixin for the region losses of `losses.py` used here: their checks are skipped (the
    simplex checks of probabilities and target read the device, and the region term is a new
    object at each call, whose every call would be a first), the inputs having been checked by
    `check_inputs` and `check_values` and the target being the one-hot labels built here."""

    def _check(self, probs: Tensor, target: Tensor) -> None:
        return None


_REGION_TERMS = {
    name: type(cls.__name__, (_Unchecked, cls), {}) for name, cls in REGION_LOSSES.items()
}


class LabelBoundaryLoss:
    """The boundary loss from logits (or probabilities) and integer labels.

    Args:
        idc: the classes supervised (None: all of them; for two classes the paper uses [1]).
        from_logits: inputs are logits (softmax applied here), else probabilities.
        spacing: voxel size per spatial axis (mm) for every call without its own; None: 1.
        spacing_offset: as in `utils.one_hot2dist` (False: the original's one-pixel offset).
        validate: check the values (labels in range, probabilities summing to one, no NaN) on
            every call, a device-to-host synchronisation each; False (the default): on the first
            call only. Shapes, dtypes, devices and `idc` are checked on every call either way.

    Call: `loss(inputs, labels, spacing=None)` with inputs `B K H W` or `B K X Y Z`, labels
    `B H W` / `B X Y Z` integer class indices on the same device, spacing one value per spatial
    axis or a `B x ndim` tensor (per sample). Returns a scalar: `SurfaceLoss(idc)(softmax(inputs),
    one_hot2dist(one_hot(labels), spacing))`, the maps computed without gradient.

    Raises:
        ValueError: at construction, a bad `idc` or `validate`; at a call, naming the argument
            and the value, as `check_inputs` and `check_values` say.
    """

    def __init__(
        self,
        idc: Sequence[int] | None = None,
        *,
        from_logits: bool = True,
        spacing: SpacingLike = None,
        spacing_offset: bool = False,
        validate: bool = False,
    ) -> None:
        self.idc = check_optional_idc(idc, "LabelBoundaryLoss: idc")
        self.from_logits = bool(from_logits)
        self.spacing = spacing
        self.spacing_offset = bool(spacing_offset)
        self.validate = check_flag(validate, "validate")
        self._values_checked = False  # the value checks passed once

    def __repr__(self) -> str:
        return f"LabelBoundaryLoss(idc={self.idc}, from_logits={self.from_logits})"

    def distance_maps(
        self,
        labels: Tensor,
        K: int,
        spacing: SpacingLike = None,
        one_hot: Tensor | None = None,
        *,
        validate: bool = True,
    ) -> Tensor:
        """The signed maps `B K *xyz` (float32, labels' device) of integer labels: the exact
        torch transform on an accelerator, the CPU transforms of `utils` (faster there) on the
        CPU (`utils.distance_maps`); both give the maps of `utils.one_hot2dist`.

        Args:
            labels: integer class indices `B *xyz`, checked.
            K: the number of classes.
            spacing: as in a call (None: the constructor's).
            one_hot: `one_hot_labels(labels, K)` when the caller has it already.
            validate: check the spacing's values (a call: on the first call, or every call
                with the loss's `validate`). The one-hot labels, built by a scatter, are one-hot
                by construction: the transform on the device does not read them to check it.

        Returns:
            The maps, without gradient.

        Raises:
            ValueError: labels outside 0..K-1 (on the CPU), a bad spacing.
        """
        one_hot = one_hot_labels(labels, K) if one_hot is None else one_hot
        spacing = check_spacing(self.spacing if spacing is None else spacing, labels, validate)
        with torch.no_grad():
            if self.spacing_offset:
                return one_hot2dist_torch(one_hot, spacing, spacing_offset=True, validate=False)
            return distance_maps(one_hot, spacing, validate=False).to(labels.device)

    def probabilities(self, inputs: Tensor) -> Tensor:
        """softmax over the classes of logits (float32), or the probabilities as given."""
        return F.softmax(inputs.float(), dim=1) if self.from_logits else inputs

    def __call__(self, inputs: Tensor, labels: Tensor, spacing: SpacingLike = None) -> Tensor:
        K = check_inputs(inputs, labels)
        idc = self.idc if self.idc is not None else list(range(K))
        check_idc_range(idc, K, "LabelBoundaryLoss: idc", _where(inputs))
        probs = self.probabilities(inputs)
        due = self.validate or not self._values_checked
        if due:
            check_values(probs, labels, K)
        maps = self.distance_maps(labels, K, spacing, validate=due)
        self._values_checked = True
        return boundary_term(probs, maps, idc)


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
        validate: check the values on every call (a synchronisation each), as
            `LabelBoundaryLoss`; False (the default): on the first call only.

    Call: `loss(inputs, labels, spacing=None)` -> scalar. `step()` once per epoch;
    `state_dict()` / `load_state_dict()` save and restore the weights and epoch.

    Raises:
        ValueError: at construction, a setting out of its domain (alpha or step_size not a
            finite number >= 0, a bool included); at a call, as `LabelBoundaryLoss`.
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
        validate: bool = False,
    ) -> None:
        if region not in REGION_LOSSES:
            raise ValueError(f"region: expected one of {', '.join(REGION_LOSSES)}, got {region!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        alpha, step_size = check_weight(alpha, "alpha"), check_weight(step_size, "step_size")
        self.validate = check_flag(validate, "validate")
        self._values_checked = False  # the value checks passed once
        self.region_name, self.schedule = region, schedule
        self.region_idc = check_optional_idc(region_idc, "RegionBoundaryLoss: region_idc")
        boundary_idc = check_optional_idc(boundary_idc, "RegionBoundaryLoss: boundary_idc")
        self.boundary = LabelBoundaryLoss(boundary_idc, from_logits=from_logits, spacing=spacing)
        self.boundary_idc = self.boundary.idc
        self.weights = [1.0, alpha]
        self.epoch = 0
        self.step_size = step_size
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
        check_idc_range(region_idc, K, "RegionBoundaryLoss: region_idc", _where(inputs))
        check_idc_range(boundary_idc, K, "RegionBoundaryLoss: boundary_idc", _where(inputs))
        probs = self.boundary.probabilities(inputs)
        due = self.validate or not self._values_checked
        if due:
            check_values(probs, labels, K)
        one_hot = one_hot_labels(labels, K)
        maps = self.boundary.distance_maps(labels, K, spacing, one_hot, validate=due)
        self._values_checked = True
        region = _REGION_TERMS[self.region_name](idc=region_idc)(probs, one_hot)
        boundary = boundary_term(probs, maps, boundary_idc)
        return self.weights[0] * region + self.weights[1] * boundary

    def step(self) -> None:
        """End of an epoch: move the weights by the schedule."""
        self.weights = self._scheduler(self.epoch, [self.weights])[0]
        self.epoch += 1

    def state_dict(self) -> dict:
        """The weights and the number of epochs stepped, for a checkpoint."""
        return {"weights": list(self.weights), "epoch": self.epoch}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what `state_dict` returned.

        Args:
            state: `{"weights": [region, alpha], "epoch": n}`.

        Raises:
            ValueError: naming the entry and its value: not such a mapping, weights that are not
                two finite numbers >= 0 (NaN, a bool), an epoch that is not an integer >= 0.
        """
        if not isinstance(state, Mapping) or not {"weights", "epoch"} <= set(state):
            raise ValueError(
                f"state: expected the mapping of state_dict() with 'weights' and 'epoch', got "
                f"{state!r:.120}"
            )
        weights, epoch = state["weights"], state["epoch"]
        if isinstance(weights, str | bytes) or not isinstance(weights, Sequence | np.ndarray):
            raise ValueError(f"state['weights']: expected two numbers, got {weights!r}")
        if len(weights) != 2:
            raise ValueError(f"state['weights']: expected two weights, got {weights!r}")
        try:
            weights = [check_weight(w, "weight") for w in weights]
        except ValueError:
            raise ValueError(
                f"state['weights']: expected two finite numbers >= 0, got {list(weights)!r}"
            ) from None
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"state['epoch']: expected an integer >= 0, got {epoch!r}")
        self.weights, self.epoch = weights, int(epoch)
