"""Online augmentation of a batch of 3D patches on its device (nnU-Net-like, exact geometry).

Each patch of the batch gets its own draw: a mirror of each spatial axis (p 0.5 each, as
nnU-Net's mirroring), then a rotation by a multiple of 90 degrees in each plane (X Y), (X Z),
(Y Z) whose two axes have the same spacing (within 1e-6, relative) and the same patch size,
applied alike to the image, the labels and the distance maps. These transforms only move voxels
onto voxels and keep every distance between them, so a signed distance map stays the exact map
of the moved labels (nothing is resampled, nothing recomputed). Then, on the image only, the
intensity transforms of nnU-Net (Isensee et al., Nature Methods 2021; its defaults from
batchgenerators):

- additive Gaussian noise, p 0.1: standard deviation uniform in [0, 0.1] (nnU-Net's
  `noise_variance=(0, 0.1)`, which batchgenerators passes to the normal law as its scale);
- multiplicative brightness, p 0.15: a factor uniform in [0.75, 1.25] per channel;
- contrast, p 0.15: per channel, (x - mean) * factor + mean, factor uniform in [0.75, 1.25]
  (the mean kept; nnU-Net also clips to the channel's former range, left out here).

Every decision is drawn on the CPU from the given generator, the same number of draws whatever
the batch holds, and turned there (with the spacing, which the loader keeps on the host) into
one small table per batch: the moves of each patch and its intensity factors. That table goes to
the image's device in one asynchronous copy (from pinned memory on CUDA); the noise itself is
drawn on the device with `torch.randn` (the device's global random stream: seed it,
`torch.manual_seed`, for repeatable noise). Nothing is read back from the device and no copy
waits for it: the voxel moves are one gather per tensor with an index built there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from boundary_loss.data.augment import to_device

# The rotation planes, as pairs of spatial axes (0 = X, 1 = Y, 2 = Z).
PLANES = ((0, 1), (0, 2), (1, 2))
MIRROR_P = 0.5
NOISE_P, NOISE_SIGMA = 0.1, 0.1
BRIGHTNESS_P, BRIGHTNESS_RANGE = 0.15, (0.75, 1.25)
CONTRAST_P, CONTRAST_RANGE = 0.15, (0.75, 1.25)
SAME_SPACING = 1e-6  # relative tolerance of "equal spacing"


@dataclass
class Draw3D:
    """The random decisions for a batch of B patches of C channels (CPU tensors)."""

    flips: Tensor  # B 3 bool: mirror spatial axis d
    turns: Tensor  # B 3 int64 in 0..3: quarter turns in PLANES[p] (when that plane allows it)
    noise: Tensor  # B bool
    noise_sigma: Tensor  # B float32, standard deviation of the noise
    brightness: Tensor  # B bool
    brightness_factor: Tensor  # B C float32
    contrast: Tensor  # B bool
    contrast_factor: Tensor  # B C float32


def _uniform(size: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator):
    low, high = bounds
    return low + (high - low) * torch.rand(size, generator=generator)


def draw_3d(batch: int, channels: int, generator: torch.Generator) -> Draw3D:
    """Every random decision of a batch, in a fixed order and number from `generator`."""
    return Draw3D(
        flips=torch.rand(batch, 3, generator=generator) < MIRROR_P,
        turns=torch.randint(0, 4, (batch, len(PLANES)), generator=generator),
        noise=torch.rand(batch, generator=generator) < NOISE_P,
        noise_sigma=_uniform((batch,), (0.0, NOISE_SIGMA), generator),
        brightness=torch.rand(batch, generator=generator) < BRIGHTNESS_P,
        brightness_factor=_uniform((batch, channels), BRIGHTNESS_RANGE, generator),
        contrast=torch.rand(batch, generator=generator) < CONTRAST_P,
        contrast_factor=_uniform((batch, channels), CONTRAST_RANGE, generator),
    )


def rotation_allowed(spacing: Tensor, shape: Sequence[int]) -> Tensor:
    """Whether each patch may turn in each plane: `B 3` bool on spacing's device, True where the
    plane's two axes have the same patch size and spacings equal within 1e-6 (relative)."""
    allowed = []
    for a, b in PLANES:
        sa, sb = spacing[:, a], spacing[:, b]
        same = (sa - sb).abs() <= SAME_SPACING * torch.maximum(sa.abs(), sb.abs())
        allowed.append(same & (shape[a] == shape[b]))
    return torch.stack(allowed, dim=1)


def _flip_matrix(axis: int, size: int) -> Tensor:
    """Homogeneous `4 4` map from output to source coordinates of a mirror of `axis`."""
    m = torch.eye(4, dtype=torch.float64)
    m[axis, axis], m[axis, 3] = -1.0, size - 1
    return m


def _turn_matrix(a: int, b: int, size: int) -> Tensor:
    """Output -> source coordinates of one quarter turn in plane (a, b), numpy's and torch's
    rot90(k=1, axes=(a, b)): source a = output b, source b = size - 1 - output a."""
    m = torch.eye(4, dtype=torch.float64)
    m[a, a], m[b, b] = 0.0, 0.0
    m[a, b], m[b, a], m[b, 3] = 1.0, -1.0, size - 1
    return m


def source_maps(d: Draw3D, allowed: Tensor, shape: Sequence[int]) -> Tensor:
    """The draw's transform of each patch as a map from output to source voxel coordinates:
    `B 4 4` float64 homogeneous matrices (signed permutations and offsets) on allowed's device.

    The mirrors come first, then the turns in the order of PLANES; a transform applied after
    another one is composed on the right (`source = M_first M_second output`).
    """
    device = allowed.device
    eye = torch.eye(4, dtype=torch.float64, device=device)
    total = eye.expand(len(allowed), 4, 4)
    for axis in range(3):
        options = torch.stack([eye, _flip_matrix(axis, shape[axis]).to(device)])
        total = total @ options[d.flips[:, axis].long().to(device)]
    for p, (a, b) in enumerate(PLANES):
        turn = _turn_matrix(a, b, shape[a]).to(device)
        powers = torch.stack([eye, turn, turn @ turn, turn @ turn @ turn])
        chosen = powers[d.turns[:, p].to(device)]
        total = total @ torch.where(allowed[:, p, None, None], chosen, eye)
    return total


def _gather_index(weights: Tensor, offset: Tensor, shape: Sequence[int]) -> Tensor:
    """Flat source index of every output voxel: `B X Y Z` int64 on the weights' device.

    With source = A output + t and strides s of the X Y Z layout, the flat source index is
    s.t + sum over output axes e of (s.A)_e output_e: one weight per axis (`B 3`) and an offset
    (`B`).
    """
    X, Y, Z = shape
    device = weights.device
    ox = torch.arange(X, device=device)[:, None, None]
    oy = torch.arange(Y, device=device)[None, :, None]
    oz = torch.arange(Z, device=device)[None, None, :]
    w = weights[:, :, None, None, None]
    return offset[:, None, None, None] + w[:, 0] * ox + w[:, 1] * oy + w[:, 2] * oz


def _move(t: Tensor, index: Tensor) -> Tensor:
    """`B C X Y Z` tensor with voxel o of each patch taken from its flat source index."""
    B, C = t.shape[:2]
    flat = index.reshape(B, 1, -1).expand(B, C, -1)
    return torch.gather(t.reshape(B, C, -1), 2, flat).reshape(t.shape)


def _batch_table(d: Draw3D, maps: Tensor, shape: Sequence[int]) -> Tensor:
    """What the device needs of a batch's draw, in one float64 `B (5 + 2C + 1)` table on the
    host: the gather weights (3) and offset (1) of each patch, its noise deviation (1), its
    brightness factors (C), its contrast factors (C, 1 where not drawn) and contrast flag (1)."""
    X, Y, Z = shape
    strides = torch.tensor([Y * Z, Z, 1], dtype=torch.float64, device=maps.device)
    weights = torch.einsum("d,bde->be", strides, maps[:, :3, :3]).round()
    offset = torch.einsum("d,bd->b", strides, maps[:, :3, 3]).round()
    sigma = torch.where(d.noise, d.noise_sigma, 0.0).double()
    factor = torch.where(d.brightness[:, None], d.brightness_factor, 1.0).double()
    columns = [sigma[:, None], factor, d.contrast_factor.double(), d.contrast[:, None].double()]
    drawn = torch.cat(columns, dim=1).to(maps.device)
    return torch.cat([weights, offset[:, None], drawn], dim=1)


def _intensity(image: Tensor, table: Tensor) -> Tensor:
    """Noise, brightness and contrast of each selected patch (`B C X Y Z` float), from the
    batch's table on the image's device."""
    C, dtype = image.shape[1], image.dtype
    sigma = table[:, 4].to(dtype).view(-1, 1, 1, 1, 1)
    factor = table[:, 5 : 5 + C].to(dtype)[:, :, None, None, None]
    contrast = table[:, 5 + C : 5 + 2 * C].to(dtype)[:, :, None, None, None]
    chosen = table[:, 5 + 2 * C].bool().view(-1, 1, 1, 1, 1)
    image = image + torch.randn(image.shape, device=image.device, dtype=dtype) * sigma
    image = image * factor
    mean = image.mean(dim=(2, 3, 4), keepdim=True)
    return torch.where(chosen, (image - mean) * contrast + mean, image)


def augment_batch_3d(
    image: Tensor,
    labels: Sequence[Tensor],
    hot: Sequence[bool],
    spacing: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, list[Tensor], Tensor]:
    """One random transform per patch, alike on the image and every target.

    Args:
        image: `B C X Y Z` float, on any device.
        labels: `B K X Y Z` tensors on image's device: one-hot labels or real-valued maps (the
            voxels move exactly, so both kinds are moved alike and keep their dtype).
        hot: per target, whether it is one-hot (as the 2D augment_batch takes it).
        spacing: `B 3` voxel spacing (X Y Z), on the host as the loader gives it (on a device,
            the table of the batch is built there); returned permuted as the axes.
        generator: a CPU generator, drawing every decision (`draw_3d`).

    Returns:
        (image, labels, spacing), transformed, on the input devices and dtypes.

    Raises:
        ValueError: shapes that do not fit, a target count differing from `hot`, or a generator
            that is not on the CPU.
    """
    if image.dim() != 5:
        raise ValueError(f"image must be B C X Y Z, got shape {tuple(image.shape)}")
    B, C, *shape = image.shape
    if len(labels) != len(hot):
        raise ValueError(f"hot has {len(hot)} flags for {len(labels)} targets in labels")
    for i, t in enumerate(labels):
        if t.dim() != 5 or t.shape[0] != B or list(t.shape[2:]) != shape:
            raise ValueError(
                f"labels[{i}] must be B K X Y Z with the image's B X Y Z {(B, *shape)}, got "
                f"shape {tuple(t.shape)}"
            )
    if tuple(spacing.shape) != (B, 3):
        raise ValueError(f"spacing must be B x 3 ({B} x 3), got shape {tuple(spacing.shape)}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")

    d = draw_3d(B, C, generator)
    allowed = rotation_allowed(spacing, shape)
    maps = source_maps(d, allowed, shape)  # on the spacing's device: the host, from the loader
    table = to_device(_batch_table(d, maps, shape), image.device)
    index = _gather_index(table[:, :3].long(), table[:, 3].long(), shape)
    # Output axis e has the spacing of the source axis it reads: |A|[d, e] picks it.
    moved = torch.einsum("bde,bd->be", maps[:, :3, :3].abs(), spacing.to(torch.float64))
    image = _intensity(_move(image, index), table)
    labels = [_move(t, index) for t in labels]
    return image, labels, moved.to(spacing.dtype)
