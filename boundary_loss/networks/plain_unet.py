"""nnU-Net's plain 3D U-Net (``PlainConvUNet``; Isensee et al., Nature Methods 2021).

The network of nnU-Net's 3D full-resolution configuration, shaped by a plan: ``pools[i]`` is the
stride (per axis X, Y, Z) of the downsampling into stage ``i + 1`` and ``kernels[i]`` the conv
kernel of stage ``i``, so an anisotropic volume gets kernels of size 1 and strides of 1 along its
thick axis until the spacing evens out. Every stage is two (conv -> InstanceNorm3d(affine) ->
LeakyReLU(0.01)) blocks, the first conv of stage ``i + 1`` strided by ``pools[i]``; the decoder
upsamples with a transposed conv (kernel = stride = the pool), concatenates the encoder's feature
map of the same resolution and runs two conv blocks. Widths double per stage from ``features``,
capped at ``max_features`` (nnU-Net's 32 and 320). Weights are initialised as nnU-Net's
``InitWeights_He(1e-2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from boundary_loss.networks.blocks import SegmentationNet, check_positive_int

NEGATIVE_SLOPE = 1e-2  # nnU-Net's LeakyReLU slope and the `a` of its He initialisation
NORM_EPS = 1e-5


def nnunet_init(m: nn.Module) -> None:
    """nnU-Net's ``InitWeights_He(1e-2)``, meant for ``net.apply(nnunet_init)``.

    Convolution and transposed-convolution weights get Kaiming-normal values for a leaky ReLU
    of slope 0.01 (std ``sqrt(2 / (1 + 0.01**2) / fan_in)``, He et al. 2015), their biases 0.
    Normalisation layers keep PyTorch's defaults (weight 1, bias 0), as in nnU-Net.

    Args:
        m: a module; modules of other types are left unchanged.
    """
    if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _triples(owner: str, arg: str, value: object, odd: bool = False) -> list[tuple[int, int, int]]:
    """`value` as a list of (X, Y, Z) positive int triples, or ValueError naming `arg`."""
    what = "odd positive integers" if odd else "positive integers"
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{owner}: {arg} must be a list of [X, Y, Z] {what}, got {value!r}")
    triples = []
    for i, item in enumerate(value):
        good = (
            isinstance(item, Sequence)
            and not isinstance(item, str)
            and len(item) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in item)
            and not (odd and any(v % 2 == 0 for v in item))
        )
        if not good:
            raise ValueError(f"{owner}: {arg}[{i}] must be [X, Y, Z] {what}, got {item!r}")
        triples.append((int(item[0]), int(item[1]), int(item[2])))
    return triples


def _conv_block(nin: int, nout: int, kernel: tuple[int, ...], stride: tuple[int, ...]) -> list:
    """conv (padding kernel // 2, with bias as nnU-Net) -> InstanceNorm3d(affine) -> LeakyReLU."""
    return [
        nn.Conv3d(nin, nout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel)),
        nn.InstanceNorm3d(nout, eps=NORM_EPS, affine=True),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    ]


def _stage(nin: int, nout: int, kernel: tuple[int, ...], stride: tuple[int, ...]) -> nn.Sequential:
    """Two conv blocks, the first strided by `stride`: ``B nin S -> B nout S / stride``."""
    return nn.Sequential(
        *_conv_block(nin, nout, kernel, stride), *_conv_block(nout, nout, kernel, (1, 1, 1))
    )


class PlainUNet3D(SegmentationNet):
    """nnU-Net's plain 3D U-Net (``PlainConvUNet``, Isensee et al. 2021), input ``B C X Y Z``.

    Stage ``i`` has ``min(features * 2**i, max_features)`` channels and two conv blocks of
    kernel ``kernels[i]``; stage ``i + 1`` starts with a conv strided by ``pools[i]``. The
    decoder stage above stage ``i + 1`` upsamples with ``ConvTranspose3d(kernel = stride =
    pools[i])``, concatenates stage ``i``'s output and runs two conv blocks of kernel
    ``kernels[i]``. A 1x1x1 conv gives the logits.

    Every spatial size of the input must be a multiple of the product of its axis's pools
    (:attr:`factors`); the class attribute ``downsampling`` (one factor for every axis) does not
    apply and stays 1.

    Args:
        n_in: input channels C.
        n_class: output channels (classes) K.
        pools: ``[[px, py, pz], ...]``, the stride of each downsampling (len = stages - 1 >= 1).
        kernels: ``[[kx, ky, kz], ...]``, the odd conv kernel of each stage (len = stages).
        features: channels of the first stage (nnU-Net: 32).
        max_features: cap on the channels of a stage (nnU-Net: 320 in 3D).
        deep_supervision: in training mode, return the logits of every decoder stage.

    Raises:
        ValueError: an argument out of range, named with the value received.
    """

    dimensions = 3

    def __init__(
        self,
        n_in: int,
        n_class: int,
        pools: Sequence[Sequence[int]],
        kernels: Sequence[Sequence[int]],
        features: int = 32,
        max_features: int = 320,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__(n_in, n_class)
        name = type(self).__name__
        check_positive_int(name, "features", features)
        check_positive_int(name, "max_features", max_features)
        if not isinstance(deep_supervision, bool):
            raise ValueError(
                f"{name}: deep_supervision must be True or False, got {deep_supervision!r}"
            )
        self.pools = _triples(name, "pools", pools)
        self.kernels = _triples(name, "kernels", kernels, odd=True)
        if not self.pools:
            raise ValueError(f"{name}: pools must hold at least one downsampling, got {pools!r}")
        if len(self.kernels) != len(self.pools) + 1:
            raise ValueError(
                f"{name}: kernels must have one entry per stage, len(pools) + 1 ="
                f" {len(self.pools) + 1}, got {len(self.kernels)}: {kernels!r}"
            )
        self.deep_supervision = deep_supervision
        self.factors = tuple(math.prod(p[a] for p in self.pools) for a in range(3))
        widths = [min(features * 2**i, max_features) for i in range(len(self.kernels))]
        self.widths = widths

        strides = [(1, 1, 1), *self.pools]
        self.encoder = nn.ModuleList(
            _stage(c_in, c_out, kernel, stride)
            for c_in, c_out, kernel, stride in zip(
                [n_in, *widths[:-1]], widths, self.kernels, strides, strict=True
            )
        )
        # Decoder stages from the lowest up: upsampling from stage i + 1 to stage i.
        below = range(len(self.pools) - 1, -1, -1)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], self.pools[i], stride=self.pools[i])
            for i in below
        )
        self.decoder = nn.ModuleList(
            _stage(2 * widths[i], widths[i], self.kernels[i], (1, 1, 1)) for i in below
        )
        heads = below if deep_supervision else [0]
        self.heads = nn.ModuleList(nn.Conv3d(widths[i], n_class, 1) for i in heads)
        self.apply(nnunet_init)

    def check_input(self, x: Tensor) -> Tensor:
        """Validate the input of ``forward`` and cast it to the parameters' float dtype.

        Args:
            x: ``B C X Y Z``, any dtype.

        Returns:
            ``x`` as the dtype of the network's parameters.

        Raises:
            ValueError: naming the network, the expected and the received shape, if ``x`` is
                not 5D, has the wrong number of channels, or a spatial size that is not a
                positive multiple of its axis's total downsampling (:attr:`factors`).
        """
        name = type(self).__name__
        factors = self.factors
        expected = f"(B, {self.nin}, X, Y, Z) with X, Y, Z multiples of {factors}"
        got = tuple(x.shape)
        if x.ndim != 5:
            raise ValueError(
                f"{name} is a 3D network and expects a 5D tensor of shape {expected},"
                f" got a {x.ndim}D tensor of shape {got}"
            )
        if x.shape[1] != self.nin:
            raise ValueError(
                f"{name} was built for {self.nin} input channel(s) and expects shape {expected},"
                f" got {x.shape[1]} channel(s) in shape {got}"
            )
        spatial = tuple(x.shape[2:])
        if any(s < 1 or s % f for s, f in zip(spatial, factors, strict=True)):
            fixed = tuple(max(f, -(-s // f) * f) for s, f in zip(spatial, factors, strict=True))
            raise ValueError(
                f"{name} downsamples X, Y, Z by {factors}, so it expects shape {expected},"
                f" got {got}; crop or pad the spatial sizes {spatial} (for example to {fixed})"
            )
        return x.to(next(self.parameters()).dtype)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Args:
            x: ``B C X Y Z``, each spatial size a multiple of its axis's :attr:`factors`.

        Returns:
            Logits ``B K X Y Z``; with deep supervision in training mode, a list of logits
            ``[B K X Y Z, B K X/p0 Y/p0 Z/p0, ...]`` (``p0 = pools[0]`` per axis), one per
            decoder stage, full resolution first.

        Raises:
            ValueError: if the shape of ``x`` does not fit (see :meth:`check_input`).
        """
        x = self.check_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        supervise = self.deep_supervision and self.training
        outputs = []
        for j, (up, stage) in enumerate(zip(self.upsample, self.decoder, strict=True)):
            x = stage(torch.cat((up(x), skips[-(j + 2)]), dim=1))
            if supervise:
                outputs.append(self.heads[j](x))
        if supervise:
            return outputs[::-1]
        return self.heads[-1](x)
