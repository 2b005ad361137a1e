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
- NonAdjacencyLoss:    lambda_ * (sum of the soft adjacency A over the forbidden class pairs) /
                       (number of forbidden pairs), A from `AdjacencyEstimator`; it needs no
                       ground truth (Ganaye et al., MICCAI 2018)

Why the boundary loss can be negative: d is negative inside the objects, so a good prediction
sums negative values. Only its gradient matters; used alone from scratch it can collapse to an
empty prediction, which is why it is paired with a regional loss and its weight scheduled.

Inputs are validated with ValueError naming the argument and its shape (`python -O` keeps it).
What the types, shapes and `idc` tell is checked on every call, without reading the device. What
needs the values (probabilities summing to one, a one-hot target, distance maps that are not the
labels) is read back from the device, a synchronisation: it is checked on the first call of each
loss object, or on every call with `validate=True` (the rule of `label_losses`). After the first
call, NaN inputs give a NaN loss.

Computation is in float32, as the original's `.type(torch.float32)`, whatever the input dtype
(half precision from autocast included); FocalLoss, like the original's, keeps float64 inputs in
float64.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, einsum

from boundary_loss.losses.checks import check_flag, check_idc, check_idc_range
from boundary_loss.maps.adjacency import as_graph, forbidden_pairs
from boundary_loss.maps.distance import distance_maps
from boundary_loss.maps.onehot import check_same_shape, check_simplex, indices2one_hot, one_hot

EPS = 1e-10


class _IdcLoss:
    """Base of the losses: holds and checks `idc`, validates the inputs of each call.

    Args:
        idc: the class indices supervised (negative ones count from the end, as the original).
        validate: check the values (probabilities summing to one, the target's) on every call, a
            device-to-host synchronisation each; False (the default): on the first call only.
            Types, shapes and `idc` are checked on every call either way.

    `target` says what the second argument of a call is: "one-hot" labels, a signed
    "distance map", or None (the loss needs no ground truth); the training checks it against
    the `is_hot` flag of the loss's `--folders` entry."""

    target: str | None = "one-hot"

    def __init__(self, *, idc: Sequence[int], validate: bool = False, **unknown: object) -> None:
        name = type(self).__name__
        if unknown:
            raise TypeError(
                f"{name}: unknown argument(s) {sorted(unknown)}; it takes {self._arguments()}"
            )
        self.idc: list[int] = check_idc(idc, f"{name}: idc", negative=True)
        self.validate = check_flag(validate, f"{name}: validate")
        self._values_checked = False  # the value checks passed once

    def __repr__(self) -> str:
        return f"{type(self).__name__}(idc={self.idc})"

    @classmethod
    def _arguments(cls) -> str:
        return "idc, validate"

    def _check(self, probs: Tensor, target: object) -> None:
        """The checks of a call: `_check_static` always, `_check_values` (which reads the
        device) on the first call that passes them, or on every call with `validate`."""
        self._check_static(probs, target)
        if self.validate or not self._values_checked:
            self._check_values(probs, target)
            self._values_checked = True

    def _check_probs(self, probs: Tensor) -> None:
        """probs a `B K *xyz` tensor holding the classes `idc`: from its type and shape."""
        name = type(self).__name__
        if not torch.is_tensor(probs):
            raise TypeError(f"{name}: probs must be a torch.Tensor, got {type(probs).__name__}")
        if probs.dim() < 3:
            raise ValueError(
                f"{name}: probs must be a B x K x spatial tensor, got {tuple(probs.shape)}"
            )
        where = f"probs (shape {tuple(probs.shape)})"
        check_idc_range(self.idc, probs.shape[1], f"{name}: idc", where, negative=True)

    def _check_static(self, probs: Tensor, target: Tensor) -> None:
        """What the types and shapes tell: nothing is read from the device."""
        self._check_probs(probs)
        check_same_shape(probs, target, (f"{type(self).__name__}: probs", "target"))

    def _check_values(self, probs: Tensor, target: Tensor) -> None:
        """What needs the values, read back from the device: probs and target sum to one."""
        name = type(self).__name__
        check_simplex(probs, f"{name}: probs")
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

    target = "distance map"

    def _check_static(self, probs: Tensor, dist_maps: Tensor) -> None:
        self._check_probs(probs)
        name = type(self).__name__
        if not torch.is_tensor(dist_maps):
            raise TypeError(
                f"{name}: dist_maps must be a torch.Tensor, got {type(dist_maps).__name__}"
            )
        check_same_shape(probs, dist_maps, (f"{name}: probs", "dist_maps"))

    def _check_values(self, probs: Tensor, dist_maps: Tensor) -> None:
        name = type(self).__name__
        check_simplex(probs, f"{name}: probs")
        if one_hot(dist_maps):
            raise ValueError(
                f"{name}: dist_maps is one-hot ({tuple(dist_maps.shape)}): it expects the signed "
                "distance maps (dist_map_transform), not the labels"
            )

    def __call__(self, probs: Tensor, dist_maps: Tensor) -> Tensor:
        self._check(probs, dist_maps)
        return boundary_term(probs, dist_maps, self.idc)


BoundaryLoss = SurfaceLoss


def _mean_product(a: Tensor, b: Tensor) -> Tensor:
    """mean(a * b) of two `B K *xyz` tensors, in the einsum the original's losses write."""
    return einsum("bk...,bk...->bk...", a, b).mean()


def boundary_term(probs: Tensor, dist_maps: Tensor, idc: Sequence[int]) -> Tensor:
    """The boundary loss's value, mean(p * d) over the classes `idc`, in float32, unchecked:
    the one computation of `SurfaceLoss` and of the losses on labels
    (`label_losses.LabelBoundaryLoss`, `RegionBoundaryLoss`).

    Args:
        probs: probabilities `B K *xyz`.
        dist_maps: the signed distance maps `B K *xyz`.
        idc: the classes supervised.

    Returns:
        A scalar float32 tensor.
    """
    pc = probs[:, idc, ...].to(torch.float32)
    dc = dist_maps[:, idc, ...].to(torch.float32)
    return _mean_product(pc, dc)


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
        return "idc, gamma, validate"

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
        return "idc, pred_dist, validate"

    def __call__(self, probs: Tensor, target: Tensor) -> Tensor:
        self._check(probs, target)
        pc = self._float(probs[:, self.idc, ...])  # B K' *xyz
        tc = self._float(target[:, self.idc, ...])
        # The argmax prediction one-hot (`probs2one_hot`, without its checks: done by _check).
        predicted = indices2one_hot(probs.detach().argmax(dim=1), probs.shape[1])
        pred = predicted[:, self.idc, ...]  # B K' *xyz int32
        tdm, pdm = self.distance_maps(tc.detach(), pred)
        delta = (pc - tc) ** 2
        dtm = tdm.to(pc.dtype) ** 2 + pdm.to(pc.dtype) ** 2
        return _mean_product(delta, dtm)

    def distance_maps(self, target: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
        """Dt and Dp (`B K' *xyz`, in pixels), where the tensors are (`utils.distance_maps`).

        With "truncated", Dp is computed as the original does, on the int32 prediction; on the
        device its distances are floored, which is the same: without spacing the squared
        distances are exact integers and the square root of an integer square is exact.
        """
        pred_dtype = np.int32 if self.pred_dist == "truncated" else np.float32
        tdm = distance_maps(target, signed=False, dtype=np.float32)
        pdm = distance_maps(pred, signed=False, dtype=pred_dtype)
        return tdm, pdm


class AdjacencyEstimator:
    """Soft adjacency matrix of a segmentation (Ganaye et al., MICCAI 2018).

    A[i, j] = sum over b and space of probs_i * box(probs_j) / (B * prod(xyz)), box being the
    3x3 mean filter (3x3x3 in 3D) with zero padding, applied to each class alone (a depthwise
    convolution). A is symmetric. On a one-hot map, 9 B N A[i, j] (27 B N in 3D) is the count of
    (voxel of class i, neighbour of class j) pairs of `adjacency.count_adjacency` for i != j; on the
    diagonal it also counts each voxel with itself, so A[i, i] > 0 wherever class i is predicted.

    A plain callable rather than an nn.Module: it has nothing to learn or to save, and building
    the 3^d kernel on the input's device and dtype at each call (K x 3^d numbers) lets it follow
    probs anywhere without `.to(device)` or an entry in the network's state dict, like the
    losses. It is differentiable with respect to probs.

    Args:
        K: number of classes.
        dims: spatial dimensions, 2 (`B K H W`) or 3 (`B K X Y Z`).

    Call: `estimator(probs)`, probs `B K *xyz` (softmax output, or any non-negative maps).
    Returns the `K K` matrix A, in float32 (float64 for float64 input).

    Raises:
        TypeError: probs not a tensor.
        ValueError: K or dims invalid; probs of the wrong rank or number of classes, or not
            floating point.
    """

    def __init__(self, K: int, dims: int = 2) -> None:
        if not isinstance(K, int | np.integer) or isinstance(K, bool) or K < 1:
            raise ValueError(f"AdjacencyEstimator: K must be a positive integer, got {K!r}")
        if dims not in (2, 3) or isinstance(dims, bool):
            raise ValueError(f"AdjacencyEstimator: dims must be 2 or 3, got {dims!r}")
        self.K = int(K)
        self.dims = int(dims)

    def __repr__(self) -> str:
        return f"AdjacencyEstimator(K={self.K}, dims={self.dims})"

    def __call__(self, probs: Tensor) -> Tensor:
        name = "AdjacencyEstimator: probs"
        if not torch.is_tensor(probs):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
        if probs.dim() != self.dims + 2 or probs.shape[1] != self.K:
            layout = "B K H W" if self.dims == 2 else "B K X Y Z"
            raise ValueError(
                f"{name} must be {layout} with K={self.K}, got shape {tuple(probs.shape)}"
            )
        if not probs.dtype.is_floating_point:
            raise ValueError(f"{name} must be floating point, got {probs.dtype}")
        B, K, *xyz = probs.shape
        p = probs.to(torch.promote_types(probs.dtype, torch.float32))  # B K *xyz
        window = 3**self.dims
        kernel = torch.full((K, 1, *(3,) * self.dims), 1 / window, dtype=p.dtype, device=p.device)
        conv = F.conv2d if self.dims == 2 else F.conv3d
        neighbours = conv(p, kernel, padding=1, groups=K)  # B K *xyz, mean over each window
        return einsum("bi...,bj...->ij", p, neighbours) / (B * math.prod(xyz))  # K K


class NonAdjacencyLoss(_IdcLoss):
    """Penalty on the class pairs never adjacent in the training labels (Ganaye et al., MICCAI
    2018, the NonAdjLoss).

    loss = lambda_ * sum of A[i, j] over the forbidden pairs / number of forbidden pairs, A the
    soft adjacency of `AdjacencyEstimator` and the forbidden pairs those with a count of 0 in the
    graph (`preprocess/extract_adjacency.py`), both classes in `idc`. The diagonal can be
    forbidden too (a class never next to itself in the graph): then any prediction of that class
    is penalised, since A[i, i] includes each voxel with itself. Without forbidden pair the loss
    is 0 (a UserWarning says so at construction).

    It needs no ground truth, so it can run on unlabelled images (semi-supervised training):
    `target` is ignored, and any tensor, or None, may be passed.

    Args:
        idc: the classes whose pairs are constrained.
        graph: path of a `graph.csv` (K x K counts, `;` separated) or the K x K counts.
        lambda_: weight of the penalty; an attribute, so a scheduler can change it between
            epochs (must stay a finite non-negative number).

    Call: `loss(probs, target=None)`, probs `B K H W` or `B K X Y Z` (a softmax output).
    Returns a scalar.

    Raises:
        ValueError: unreadable or malformed graph, idc outside the graph's classes, bad lambda_;
            at call time, probs not a simplex, not 2D / 3D, or with a number of classes other
            than the graph's.
    """

    target = None

    def __init__(
        self,
        *,
        idc: Sequence[int],
        graph: str | os.PathLike | np.ndarray | Sequence,
        lambda_: float = 1.0,
        **unknown: object,
    ) -> None:
        super().__init__(idc=idc, **unknown)
        self.graph_source = os.fspath(graph) if isinstance(graph, str | os.PathLike) else None
        try:
            self.graph = as_graph(graph, "graph")  # K K counts
        except ValueError as error:
            raise ValueError(f"NonAdjacencyLoss: {error}") from None
        K = self.graph.shape[0]
        where = f"the graph {self.graph_source}" if self.graph_source else "the graph"
        check_idc_range(self.idc, K, "NonAdjacencyLoss: idc", where, negative=True)
        constrained = np.zeros((K, K), dtype=bool)
        classes = [i % K for i in self.idc]
        constrained[np.ix_(classes, classes)] = True
        self.forbidden = forbidden_pairs(self.graph) & constrained  # K K bool
        self.n_forbidden = int(self.forbidden.sum())
        if self.n_forbidden == 0:
            warnings.warn(
                f"NonAdjacencyLoss: no forbidden pair among classes {self.idc} in the graph "
                f"{self.graph_source or '(array)'}: the loss is always 0",
                UserWarning,
                stacklevel=2,
            )
        self.lambda_ = lambda_

    @property
    def lambda_(self) -> float:
        """Weight of the penalty (settable, e.g. by a lambda scheduler)."""
        return self._lambda

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        if not isinstance(value, Real) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(
                f"NonAdjacencyLoss: lambda_ must be a finite non-negative number, got {value!r}"
            )
        self._lambda = float(value)

    def __repr__(self) -> str:
        graph = (
            repr(self.graph_source)
            if self.graph_source
            else f"<{len(self.graph)}x{len(self.graph)} array>"
        )
        return f"NonAdjacencyLoss(idc={self.idc}, graph={graph}, lambda_={self.lambda_})"

    @classmethod
    def _arguments(cls) -> str:
        return "idc, graph, lambda_, validate"

    def _check_static(self, probs: Tensor, target: object) -> None:
        self._check_probs(probs)
        B, K, *xyz = probs.shape
        if K != len(self.graph):
            raise ValueError(
                f"NonAdjacencyLoss: the graph {self.graph_source or '(array)'} has "
                f"{len(self.graph)} classes but probs has {K} ({tuple(probs.shape)})"
            )
        if len(xyz) not in (2, 3):
            raise ValueError(
                f"NonAdjacencyLoss: probs must be B K H W or B K X Y Z, got {tuple(probs.shape)}"
            )

    def _check_values(self, probs: Tensor, target: object) -> None:
        check_simplex(probs, "NonAdjacencyLoss: probs")

    def __call__(self, probs: Tensor, target: object = None) -> Tensor:
        self._check(probs, target)
        B, K, *xyz = probs.shape
        p = self._float(probs)  # B K *xyz
        adjacency = AdjacencyEstimator(K, dims=len(xyz))(p)  # K K
        if self.n_forbidden == 0:
            return (adjacency * 0).sum()
        mask = torch.as_tensor(self.forbidden, dtype=adjacency.dtype, device=adjacency.device)
        return self.lambda_ * einsum("ij,ij->", adjacency, mask) / self.n_forbidden


LOSSES: dict[str, type[_IdcLoss]] = {
    "CrossEntropy": CrossEntropy,
    "GeneralizedDice": GeneralizedDice,
    "DiceLoss": DiceLoss,
    "SurfaceLoss": SurfaceLoss,
    "BoundaryLoss": BoundaryLoss,
    "FocalLoss": FocalLoss,
    "HausdorffLoss": HausdorffLoss,
    "NonAdjacencyLoss": NonAdjacencyLoss,
}


class CompoundLoss:
    """A weighted sum of losses, as training uses them: `sum_i w_i loss_i(probs, target_i)`.

    A term whose weight is 0 is not computed at all (nnU-Net's compound losses do the same): a
    loss alone needs no zero-weight companion, and a term a scheduler has switched off costs
    nothing. Its raw value is logged as NaN. A scheduler that sets a weight from the term's raw
    value (the adjacency weight controller) needs every term: `skip_zero=False` computes them
    all, the zero-weight ones adding 0 to the sum.

    A call reads nothing back from the device beyond its losses' own value checks (their first
    call, see the module docstring): the terms stay tensors. `raw_tensor` stacks them on the
    device for the logs; `raw` reads them as floats, one synchronisation for all.

    Args:
        losses: the loss objects, in order.
        names: their names, for logs and messages.
        skip_zero: skip the terms of weight 0.
    """

    def __init__(
        self, losses: Sequence[_IdcLoss], names: Sequence[str], skip_zero: bool = True
    ) -> None:
        if len(losses) != len(names):
            raise ValueError(f"CompoundLoss: {len(losses)} losses but {len(names)} names")
        self.losses, self.names, self.skip_zero = list(losses), list(names), skip_zero

    def __len__(self) -> int:
        return len(self.losses)

    def __repr__(self) -> str:
        return f"CompoundLoss({self.losses})"

    def __call__(
        self, probs: Tensor, targets: Sequence[Tensor], weights: Sequence[float]
    ) -> tuple[Tensor | None, list[Tensor | None]]:
        """The weighted sum and each term (None where the weight is 0).

        Args:
            probs: softmax output `B K *xyz`.
            targets: one target per loss (one-hot labels or distance maps).
            weights: one weight per loss.

        Returns:
            The weighted sum (None when every weight is 0) and the unweighted terms.

        Raises:
            ValueError: not one target and one weight per loss, or a loss's own input checks.
        """
        if not len(targets) == len(weights) == len(self.losses):
            raise ValueError(
                f"CompoundLoss: {len(self.losses)} losses, {len(targets)} targets and "
                f"{len(weights)} weights; expected one target and one weight per loss"
            )
        values = [
            fn(probs, target) if weight != 0 or not self.skip_zero else None
            for fn, target, weight in zip(self.losses, targets, weights, strict=True)
        ]
        terms = [w * v for w, v in zip(weights, values, strict=True) if v is not None]
        return (sum(terms) if terms else None), values

    @staticmethod
    def raw_tensor(values: Sequence[Tensor | None], device: torch.device | None = None) -> Tensor:
        """The terms stacked, detached, float32, NaN where a term was skipped: on the terms'
        device, read nothing back (a training loop adds them up there and reads the epoch's
        sums once).

        Args:
            values: the terms of a call.
            device: where the result goes when every term was skipped (default: the CPU).

        Returns:
            A float32 vector of one value per loss.
        """
        computed = [v for v in values if v is not None]
        device = computed[0].device if computed else device
        skipped = torch.full((), math.nan, dtype=torch.float32, device=device)
        terms = [skipped if v is None else v.detach().float() for v in values]
        return torch.stack(terms) if terms else torch.empty(0, device=device)

    @staticmethod
    def raw(values: Sequence[Tensor | None]) -> list[float]:
        """The terms as floats for the logs, NaN where a term was skipped: `raw_tensor` read
        back, one synchronisation."""
        return CompoundLoss.raw_tensor(values).tolist()


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
