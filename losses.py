"""Segmentation losses with the conventions of the original boundary-loss implementation.

Every loss is built with keyword arguments, `idc` being the class indices it supervises, and
called as `loss(probs, target)`, probs the softmax output `B K *xyz` (2D `B K H W` or 3D
`B K X Y Z`). With p = probs[:, idc], t = target[:, idc] and eps = 1e-10:

- CrossEntropy:        -sum(t log(p + eps)) / (sum(t) + eps)
- GeneralizedDice:     per b, 1 - 2 (sum_k w sum(p t) + eps) / (sum_k w (sum p + sum t) + eps),
                       w = 1 / (sum t + eps)^2 per (b, k); mean over b (Sudre et al., 2017)
- DiceLoss:            per (b, k), 1 - (2 sum(p t) + eps) / (sum p + sum t + eps); mean
- SurfaceLoss / BoundaryLoss: mean(p * d), the target being the signed distance map d of
                       `utils.one_hot2dist` (Kervadec et al., MIDL 2019)
- FocalLoss:           -sum((1 - p)^gamma t log(p + eps)) / (sum(t) + eps) (Lin et al., 2017)
- HausdorffLoss:       mean((p - t)^2 (Dt^2 + Dp^2)) (Karimi and Salcudean, 2019, in the
                       original's variant), Dt / Dp the unsigned maps of the target / argmax

Why the boundary loss can be negative: d is negative inside the objects, so a good prediction
sums negative values. Only its gradient matters; used alone from scratch it can collapse to an
empty prediction, which is why it is paired with a regional loss and its weight scheduled.

Inputs are validated with ValueError naming the argument and its shape (`python -O` keeps it).
Computation is in float32, as the original's `.type(torch.float32)`, whatever the input dtype
(half precision from autocast included); FocalLoss, like the original's, keeps float64 inputs in
float64.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Real

import numpy as np
import torch
from torch import Tensor, einsum

from utils import check_same_shape, check_simplex, one_hot, one_hot2hd_dist, probs2one_hot

EPS = 1e-10


class _IdcLoss:
    """Base of the losses: holds and checks `idc`, validates the inputs of each call."""

    def __init__(self, *, idc: Sequence[int], **unknown: object) -> None:
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unknown argument(s) {sorted(unknown)}; it takes "
                f"{self._arguments()}"
            )
        valid = isinstance(idc, Iterable) and not isinstance(idc, str)
        valid = valid and all(isinstance(i, int | np.integer) for i in idc)
        if not valid:
            raise ValueError(
                f"{type(self).__name__}: idc must be a list of class indices, got {idc!r}"
            )
        if len(idc) == 0:
            raise ValueError(f"{type(self).__name__}: idc must name at least one class")
        self.idc: list[int] = list(idc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(idc={self.idc})"

    @classmethod
    def _arguments(cls) -> str:
        return "idc"

    def _check_probs(self, probs: Tensor) -> None:
        name = type(self).__name__
        if not torch.is_tensor(probs):
            raise TypeError(f"{name}: probs must be a torch.Tensor, got {type(probs).__name__}")
        if probs.dim() < 3:
            raise ValueError(
                f"{name}: probs must be a B x K x spatial tensor, got {tuple(probs.shape)}"
            )
        K = probs.shape[1]
        if not all(-K <= i < K for i in self.idc):
            raise ValueError(f"{name}: idc {self.idc} out of range for {K} classes in probs")
        check_simplex(probs, f"{name}: probs")

    def _check(self, probs: Tensor, target: Tensor) -> None:
        self._check_probs(probs)
        name = type(self).__name__
        check_same_shape(probs, target, (f"{name}: probs", "target"))
        check_simplex(target, f"{name}: target")

    @staticmethod
    def _float(t: Tensor) -> Tensor:
        """float32, as the original's `.type(torch.float32)` (float64 inputs included)."""
        return t.to(torch.float32)


class CrossEntropy(_IdcLoss):
    """Cross-entropy over the classes `idc`, averaged over the supervised pixels.

    Args:
        idc: class indices to supervise.

    Call: `loss(probs, target)`, both `B K *xyz`, probs a softmax output, target one-hot (or
    soft labels summing to one). Returns a scalar.
    """

    def __call__(self, probs: Tensor, target: Tensor) -> Tensor:
        self._check(probs, target)
        log_p = (self._float(probs[:, self.idc, ...]) + EPS).log()
        mask = self._float(target[:, self.idc, ...])
        loss = -einsum("bk...,bk...->", mask, log_p)
        return loss / (mask.sum() + EPS)


class GeneralizedDice(_IdcLoss):
    """Generalised Dice loss (Sudre et al., 2017), class weights 1 / (class size)^2 per image.

    Args:
        idc: class indices to supervise.
    """

    def __call__(self, probs: Tensor, target: Tensor) -> Tensor:
        self._check(probs, target)
        pc = self._float(probs[:, self.idc, ...])  # B K' *xyz
        tc = self._float(target[:, self.idc, ...])

        w = 1 / ((einsum("bk...->bk", tc) + EPS) ** 2)  # B K'
        intersection = w * einsum("bk...,bk...->bk", pc, tc)
        union = w * (einsum("bk...->bk", pc) + einsum("bk...->bk", tc))
        divided = 1 - 2 * (einsum("bk->b", intersection) + EPS) / (einsum("bk->b", union) + EPS)
        return divided.mean()


class DiceLoss(_IdcLoss):
    """Soft Dice loss per image and class, averaged.

    Args:
        idc: class indices to supervise.
    """

    def __call__(self, probs: Tensor, target: Tensor) -> Tensor:
        self._check(probs, target)
        pc = self._float(probs[:, self.idc, ...])
        tc = self._float(target[:, self.idc, ...])

        intersection = einsum("bk...,bk...->bk", pc, tc)  # B K'
        union = einsum("bk...->bk", pc) + einsum("bk...->bk", tc)
        divided = 1 - (2 * intersection + EPS) / (union + EPS)
        return divided.mean()


class SurfaceLoss(_IdcLoss):
    """Boundary loss (Kervadec et al., MIDL 2019): mean of probs times signed distance maps.

    Args:
        idc: class indices to supervise (for two-class problems, usually the foreground only).

    Call: `loss(probs, dist_maps)`, dist_maps `B K *xyz` from `utils.one_hot2dist` (negative
    inside the objects: the loss is negative for good predictions, see the module docstring).
    """

    def __call__(self, probs: Tensor, dist_maps: Tensor) -> Tensor:
        self._check_probs(probs)
        name = type(self).__name__
        if not torch.is_tensor(dist_maps):
            raise TypeError(
                f"{name}: dist_maps must be a torch.Tensor, got {type(dist_maps).__name__}"
            )
        check_same_shape(probs, dist_maps, (f"{name}: probs", "dist_maps"))
        if one_hot(dist_maps):
            raise ValueError(
                f"{name}: dist_maps is one-hot ({tuple(dist_maps.shape)}): it expects the signed "
                "distance maps (dist_map_transform), not the labels"
            )
        pc = self._float(probs[:, self.idc, ...])
        dc = self._float(dist_maps[:, self.idc, ...])
        return einsum("bk...,bk...->bk...", pc, dc).mean()


BoundaryLoss = SurfaceLoss


class FocalLoss(_IdcLoss):
    """Focal loss (Lin et al., 2017): cross-entropy weighted by (1 - p)^gamma.

    Args:
        idc: class indices to supervise.
        gamma: focusing parameter (0 gives CrossEntropy).
    """

    def __init__(self, *, idc: Sequence[int], gamma: float, **unknown: object) -> None:
        super().__init__(idc=idc, **unknown)
        if not isinstance(gamma, Real) or isinstance(gamma, bool) or gamma < 0:
            raise ValueError(f"FocalLoss: gamma must be a non-negative number, got {gamma!r}")
        self.gamma = float(gamma)

    def __repr__(self) -> str:
        return f"FocalLoss(idc={self.idc}, gamma={self.gamma})"

    @classmethod
    def _arguments(cls) -> str:
        return "idc, gamma"

    def __call__(self, probs: Tensor, target: Tensor) -> Tensor:
        self._check(probs, target)
        dtype = torch.promote_types(probs.dtype, torch.float32)
        masked_probs = probs[:, self.idc, ...].to(dtype)
        log_p = (masked_probs + EPS).log()
        mask = target[:, self.idc, ...].to(dtype)
        w = (1 - masked_probs) ** self.gamma
        loss = -einsum("bk...,bk...,bk...->", w, mask, log_p)
        return loss / (mask.sum() + EPS)


class HausdorffLoss(_IdcLoss):
    """Distance-transform Hausdorff loss (Karimi and Salcudean, IEEE TMI 2019).

    mean((p - t)^2 (Dt^2 + Dp^2)), Dt (Dp) the unsigned distance of each foreground pixel of the
    target (argmax prediction) to the nearest background pixel, per class, in pixels.

    Args:
        idc: class indices to supervise.
        pred_dist: "truncated" (default, the original's behaviour: Dp is computed on the int32
            one-hot prediction, so its distances are truncated to integers) or "exact".
    """

    def __init__(
        self, *, idc: Sequence[int], pred_dist: str = "truncated", **unknown: object
    ) -> None:
        super().__init__(idc=idc, **unknown)
        if pred_dist not in ("truncated", "exact"):
            raise ValueError(
                f"HausdorffLoss: pred_dist must be 'truncated' or 'exact', got {pred_dist!r}"
            )
        self.pred_dist = pred_dist

    def __repr__(self) -> str:
        return f"HausdorffLoss(idc={self.idc}, pred_dist={self.pred_dist!r})"

    @classmethod
    def _arguments(cls) -> str:
        return "idc, pred_dist"

    def __call__(self, probs: Tensor, target: Tensor) -> Tensor:
        self._check(probs, target)
        B = probs.shape[0]
        pc = self._float(probs[:, self.idc, ...])  # B K' *xyz
        tc = self._float(target[:, self.idc, ...])

        n_target = tc.detach().cpu().numpy()
        n_pred = probs2one_hot(probs.detach())[:, self.idc, ...].cpu().numpy()  # int32
        pred_dtype = np.int32 if self.pred_dist == "truncated" else np.float32
        tdm = np.stack([one_hot2hd_dist(n_target[b], dtype=n_target.dtype) for b in range(B)])
        pdm = np.stack([one_hot2hd_dist(n_pred[b], dtype=pred_dtype) for b in range(B)])
        tdm_t = torch.as_tensor(tdm, device=probs.device, dtype=pc.dtype)
        pdm_t = torch.as_tensor(pdm, device=probs.device, dtype=pc.dtype)

        delta = (pc - tc) ** 2
        dtm = tdm_t**2 + pdm_t**2
        return einsum("bk...,bk...->bk...", delta, dtm).mean()


LOSSES: dict[str, type[_IdcLoss]] = {
    "CrossEntropy": CrossEntropy,
    "GeneralizedDice": GeneralizedDice,
    "DiceLoss": DiceLoss,
    "SurfaceLoss": SurfaceLoss,
    "BoundaryLoss": BoundaryLoss,
    "FocalLoss": FocalLoss,
    "HausdorffLoss": HausdorffLoss,
}


def get_loss(name: str, **kwargs) -> _IdcLoss:
    """Build a loss by name from `LOSSES`.

    Raises:
        ValueError: unknown name (the message lists the known ones), or bad keyword arguments.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"{name}: bad arguments {kwargs}: {error}") from None
