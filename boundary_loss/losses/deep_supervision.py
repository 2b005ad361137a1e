"""Deep supervision: the regional terms also on a network's lower-resolution outputs.

nnU-Net (Isensee et al., Nature Methods 2021) trains its U-Net on every decoder stage's output,
the target downsampled to each, with the weights 1/2**i normalised to sum to 1, the lowest
resolution's set to 0 (PlainUNet3D does not give that output at all). Here the
regional terms (`REGIONAL`: cross-entropy and the Dice family) are spread over the scales that
way, while the boundary and adjacency terms stay on the full-resolution output alone, with
their own weights: a distance map cannot be downsampled as a label map can, and the boundary
term of the paper is defined on the full-resolution prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from boundary_loss.losses.idc_losses import CompoundLoss

# The losses spread over the scales (their target: one-hot labels, downsampled exactly).
REGIONAL = frozenset({"CrossEntropy", "GeneralizedDice", "DiceLoss", "FocalLoss"})


def scale_weights(n: int) -> list[float]:
    """nnU-Net's deep-supervision weights of `n` outputs, full resolution first: 1/2**i,
    normalised to sum to 1 (n=3: 4/7, 2/7, 1/7)."""
    if n < 1:
        raise ValueError(f"deep supervision needs at least one output, got {n}")
    raw = [0.5**i for i in range(n)]
    return [w / sum(raw) for w in raw]


def downsample_labels(target: Tensor, size: Sequence[int]) -> Tensor:
    """One-hot labels `B K *xyz` at a lower resolution `size` (nearest voxel, so still one-hot;
    nnU-Net downsamples its segmentation targets with order 0 too)."""
    return F.interpolate(target.float(), size=tuple(size), mode="nearest").to(target.dtype)


def deep_supervision_loss(
    total: Tensor,
    values: Sequence[Tensor | None],
    coarse: Sequence[Tensor],
    targets: Sequence[Tensor],
    compound: CompoundLoss,
    weights: Sequence[float],
) -> Tensor:
    """The weighted loss of a deep-supervised output.

    Args:
        total: the compound loss of the full-resolution output (every term at its weight).
        values: its unweighted terms (None where skipped).
        coarse: the softmax of the lower-resolution outputs, `B K *xyz` each, finest first.
        targets: one target per loss, at full resolution.
        compound: the losses.
        weights: one weight per loss.

    Returns:
        `total` with each computed regional term moved from weight w to
        w * (a_0 * term(full) + sum_i a_i * term(scale i)), a = `scale_weights`.
    """
    scales = scale_weights(1 + len(coarse))
    for name, fn, value, target, w in zip(
        compound.names, compound.losses, values, targets, weights, strict=True
    ):
        if name not in REGIONAL or value is None:
            continue
        total = total + w * (scales[0] - 1) * value
        for a, probs in zip(scales[1:], coarse, strict=True):
            total = total + w * a * fn(probs, downsample_labels(target, probs.shape[2:]))
    return total
