"""Online augmentation of a training batch on its device (`main.py --augment`, off by default).

Each slice of the batch gets its own random draw of a horizontal flip, a vertical flip, a
rotation by a multiple of 90 degrees and a small rotation (uniform in +-`max_degrees`). Flips and
90-degree rotations move pixels exactly; the small rotation resamples (bilinear for images and
other real-valued maps, nearest for one-hot labels, so they stay one-hot; border values fill the
corners). A 90-degree turn swaps the slice's in-plane spacing; the small rotation treats the
pixel grid as isotropic.

The distance-map targets are not resampled: main.py recomputes them exactly from the augmented
labels (`data.loader.DEVICE_TRANSFORMS`), which is the point of doing this on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Draw:
    """The random transform of each slice of a batch (all tensors of length B)."""

    flip_h: Tensor  # bool: mirror the last axis
    flip_v: Tensor  # bool: mirror the second-to-last axis
    quarter_turns: Tensor  # int64 in 0..3
    radians: Tensor  # float32 small rotation


def draw(batch: int, square: bool, max_degrees: float, generator: torch.Generator) -> Draw:
    """Random transforms for `batch` slices (on the CPU generator, so runs are reproducible).

    Non-square slices only get 0 or 2 quarter turns: one turn would change their shape.
    """
    flips = torch.rand(batch, 2, generator=generator) < 0.5
    turns = torch.randint(0, 4, (batch,), generator=generator)
    if not square:
        turns = turns - turns % 2
    radians = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(max_degrees)
    return Draw(flips[:, 0], flips[:, 1], turns, radians)


def _exact(t: Tensor, d: Draw) -> Tensor:
    """Flips and quarter turns of each slice of `t` (B ... H W), pixel for pixel."""
    out = []
    for b in range(t.shape[0]):
        x = t[b]
        if d.flip_h[b]:
            x = x.flip(-1)
        if d.flip_v[b]:
            x = x.flip(-2)
        out.append(torch.rot90(x, int(d.quarter_turns[b]), dims=(-2, -1)))
    return torch.stack(out)


def to_device(table: Tensor, device: torch.device) -> Tensor:
    """A host tensor of a batch's draws on `device`, in one copy that does not make the host
    wait for the device (pinned memory on CUDA; a plain copy from pageable memory waits for
    every kernel queued before it)."""
    if device.type == "cuda" and table.device.type == "cpu":
        table = table.pin_memory()
    return table.to(device, non_blocking=True)


def _rotate(t: Tensor, radians: Tensor, mode: str) -> Tensor:
    """Rotate each slice of `t` (B C H W, float) about its centre by its angle (`radians`, on
    `t`'s device), in pixels.

    affine_grid works in coordinates normalised per axis ([-1, 1] across W and across H), so a
    rotation of the pixel grid is scaled by the aspect ratio there.
    """
    H, W = t.shape[-2:]
    cos, sin = radians.cos(), radians.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack(
        [torch.stack([cos, -sin * H / W, zero], -1), torch.stack([sin * W / H, cos, zero], -1)], 1
    )
    grid = F.affine_grid(theta.to(t.dtype), list(t.shape), align_corners=False)
    return F.grid_sample(t, grid, mode=mode, padding_mode="border", align_corners=False)


def augment_batch(
    images: Tensor,
    targets: Sequence[Tensor],
    one_hot: Sequence[bool],
    spacing: Tensor,
    max_degrees: float,
    generator: torch.Generator,
) -> tuple[Tensor, list[Tensor], Tensor]:
    """Apply one random transform per slice to the images and every target alike.

    Args:
        images: `B C H W` float.
        targets: `B K H W` tensors (one-hot labels, or real-valued maps).
        one_hot: per target, whether it is a one-hot label map (nearest resampling, dtype kept).
        spacing: `B 3` slice spacing (x, y, z); the in-plane values swap on odd quarter turns.
        max_degrees: largest small rotation; 0 turns it off.
        generator: CPU generator of the draws.

    Returns:
        (images, targets, spacing), transformed, on the input devices and dtypes.
    """
    B, _, H, W = images.shape
    d = draw(B, H == W, max_degrees, generator)
    images = _exact(images, d)
    targets = [_exact(t, d) for t in targets]
    odd = to_device(d.quarter_turns % 2 == 1, spacing.device)
    spacing = spacing.clone()
    spacing[odd, 0], spacing[odd, 1] = spacing[odd, 1], spacing[odd, 0]
    if max_degrees > 0:
        radians = to_device(d.radians, images.device)
        images = _rotate(images, radians, "bilinear")
        targets = [
            _rotate(t.float(), radians, "nearest" if hot else "bilinear").to(t.dtype)
            for t, hot in zip(targets, one_hot, strict=True)
        ]
    return images, targets, spacing
