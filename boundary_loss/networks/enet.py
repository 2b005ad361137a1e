"""ENet (Paszke, Chaurasia, Kim, Culurciello 2016, arXiv:1606.02147), a 2D real-time network.

The network of the boundary-loss repository's ACDC experiment: an initial block, two encoder
stages of downsampling, regular, dilated and asymmetric bottlenecks, and a light decoder of
max-unpooling bottlenecks; every spatial size of the input a multiple of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from boundary_loss.networks.blocks import SegmentationNet, check_positive_int, conv_block

_PROJECTION = 4  # ENet bottlenecks work internally on channels / 4 (the paper's projection)


class _InitialBlock(nn.Module):
    """ENet initial block: a 3x3 stride-2 conv to ``nout - nin`` channels, concatenated with a
    2x2 max-pool of the input (``nin`` channels), then BatchNorm and PReLU: ``B nin H W`` to
    ``B nout H/2 W/2``. With RGB input and ``nout=16`` this is the paper's 13 + 3."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nin, nout - nin, kernel_size=3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(nout)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(torch.cat((self.conv(x), self.pool(x)), dim=1)))


def _expand(mid: int, nout: int, dropout: float) -> list[nn.Module]:
    """The closing 1x1 expansion of a bottleneck: conv (no bias), BatchNorm, spatial dropout."""
    return [
        nn.Conv2d(mid, nout, kernel_size=1, bias=False),
        nn.BatchNorm2d(nout),
        nn.Dropout2d(dropout),
    ]


class _Bottleneck(nn.Module):
    """ENet regular, dilated or asymmetric bottleneck, ``B C H W`` to ``B C H W``.

    ``prelu(x + expand(conv(project(x))))``, where ``project`` is a 1x1 conv block to ``C / 4``
    channels and ``conv`` is a 3x3 conv (dilated when ``dilation > 1``) or, when
    ``asymmetric``, a 5x1 conv followed by a 1x5 conv, then BatchNorm and PReLU.
    """

    def __init__(
        self, channels: int, dropout: float, dilation: int = 1, asymmetric: bool = False
    ) -> None:
        super().__init__()
        mid = channels // _PROJECTION
        if asymmetric:
            middle = nn.Sequential(
                nn.Conv2d(mid, mid, kernel_size=(5, 1), padding=(2, 0), bias=False),
                conv_block(mid, mid, kernel_size=(1, 5), padding=(0, 2)),
            )
        else:
            middle = conv_block(mid, mid, padding=dilation, dilation=dilation)
        self.branch = nn.Sequential(
            conv_block(channels, mid, kernel_size=1, padding=0),
            middle,
            *_expand(mid, channels, dropout),
        )
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.branch(x))


class _DownBottleneck(nn.Module):
    """ENet downsampling bottleneck, ``B C H W`` to ``B C' H/2 W/2`` plus the pooling indices.

    Main branch: 2x2 max-pool (indices kept for the decoder's max-unpooling), zero-padded from
    C to C' channels. Side branch: 2x2 stride-2 conv block to ``C / 4``, 3x3 conv block,
    1x1 expansion to C'.
    """

    def __init__(self, nin: int, nout: int, dropout: float) -> None:
        super().__init__()
        mid = nin // _PROJECTION
        self.extra_channels = nout - nin
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.branch = nn.Sequential(
            conv_block(nin, mid, kernel_size=2, stride=2, padding=0),
            conv_block(mid, mid),
            *_expand(mid, nout, dropout),
        )
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        main, indices = self.pool(x)  # B C H/2 W/2
        main = F.pad(main, (0, 0, 0, 0, 0, self.extra_channels))  # B C' H/2 W/2
        return self.act(main + self.branch(x)), indices


class _UpBottleneck(nn.Module):
    """ENet upsampling bottleneck, ``B C H W`` (+ pooling indices) to ``B C' 2H 2W``.

    Main branch: 1x1 conv + BatchNorm from C to C', then max-unpooling with the indices of the
    matching downsampling bottleneck. Side branch: 1x1 conv block to ``C / 4``, 3x3 stride-2
    transposed conv + BatchNorm + PReLU, 1x1 expansion to C'.
    """

    def __init__(self, nin: int, nout: int, dropout: float) -> None:
        super().__init__()
        mid = nin // _PROJECTION
        self.main = nn.Sequential(
            nn.Conv2d(nin, nout, kernel_size=1, bias=False), nn.BatchNorm2d(nout)
        )
        self.unpool = nn.MaxUnpool2d(2)
        self.branch = nn.Sequential(
            conv_block(nin, mid, kernel_size=1, padding=0),
            nn.ConvTranspose2d(
                mid, mid, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False
            ),
            nn.BatchNorm2d(mid),
            nn.PReLU(),
            *_expand(mid, nout, dropout),
        )
        self.act = nn.PReLU()

    def forward(self, x: Tensor, indices: Tensor) -> Tensor:
        main = self.unpool(self.main(x), indices)  # B C' 2H 2W
        return self.act(main + self.branch(x))


def _dilated_stage(channels: int, dropout: float) -> nn.Sequential:
    """The eight bottlenecks shared by ENet stages 2 and 3 (after bottleneck 2.0)."""
    return nn.Sequential(
        _Bottleneck(channels, dropout),
        _Bottleneck(channels, dropout, dilation=2),
        _Bottleneck(channels, dropout, asymmetric=True),
        _Bottleneck(channels, dropout, dilation=4),
        _Bottleneck(channels, dropout),
        _Bottleneck(channels, dropout, dilation=8),
        _Bottleneck(channels, dropout, asymmetric=True),
        _Bottleneck(channels, dropout, dilation=16),
    )


class ENet(SegmentationNet):
    """ENet (Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time
    Semantic Segmentation", arXiv:1606.02147); input ``B C H W``, H and W multiples of 8.

    Layout (widths scaled by ``factor``; every bottleneck projects to a quarter of its input):

    - initial block: 3x3 stride-2 conv to ``16 factor - C`` channels concatenated with a 2x2
      max-pool of the input, giving ``16 factor`` channels at 1/2;
    - stage 1: downsampling bottleneck to ``64 factor`` (1/4) and 4 regular bottlenecks,
      spatial dropout 0.01;
    - stage 2: downsampling bottleneck to ``128 factor`` (1/8), then regular, dilated 2,
      asymmetric 5, dilated 4, regular, dilated 8, asymmetric 5, dilated 16; dropout 0.1;
    - stage 3: stage 2 without its downsampling bottleneck;
    - stage 4: upsampling bottleneck to ``64 factor`` (max-unpooling with the indices of stage 2)
      and 2 regular bottlenecks;
    - stage 5: upsampling bottleneck to ``16 factor`` (indices of stage 1) and 1 regular one;
    - a 2x2 stride-2 transposed convolution to K channels at full resolution.

    PReLU everywhere. The paper does not give the decoder's dropout rate; 0.1 is used.

    Args:
        nin: input channels C (must be below ``16 factor``).
        nout: output channels (classes) K.
        factor: width multiplier (1 is the paper's network).

    Raises:
        ValueError: if ``factor`` is not a positive integer or ``nin >= 16 factor``.
    """

    dimensions = 2
    downsampling = 8

    def __init__(self, nin: int, nout: int, factor: int = 1) -> None:
        super().__init__(nin, nout)
        check_positive_int("ENet", "factor", factor)
        if nin >= 16 * factor:
            raise ValueError(
                f"ENet: the initial block concatenates the {nin} input channels with a conv to"
                f" reach 16 * factor = {16 * factor} channels, so nin must be below that;"
                f" raise factor"
            )
        self.factor = factor
        c16, c64, c128 = 16 * factor, 64 * factor, 128 * factor

        self.initial = _InitialBlock(nin, c16)
        self.down1 = _DownBottleneck(c16, c64, 0.01)
        self.stage1 = nn.Sequential(*(_Bottleneck(c64, 0.01) for _ in range(4)))
        self.down2 = _DownBottleneck(c64, c128, 0.1)
        self.stage2 = _dilated_stage(c128, 0.1)
        self.stage3 = _dilated_stage(c128, 0.1)
        self.up4 = _UpBottleneck(c128, c64, 0.1)
        self.stage4 = nn.Sequential(_Bottleneck(c64, 0.1), _Bottleneck(c64, 0.1))
        self.up5 = _UpBottleneck(c64, c16, 0.1)
        self.stage5 = _Bottleneck(c16, 0.1)
        self.final = nn.ConvTranspose2d(c16, nout, kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``B C H W`` with H and W multiples of 8, any dtype.

        Returns:
            Logits ``B K H W`` in the parameters' dtype (float32 by default).

        Raises:
            ValueError: if the shape of ``x`` does not fit (see :meth:`check_input`).
        """
        x = self.check_input(x)
        x = self.initial(x)  # B 16f H/2 W/2
        x, indices1 = self.down1(x)  # B 64f H/4 W/4
        x = self.stage1(x)
        x, indices2 = self.down2(x)  # B 128f H/8 W/8
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, indices2))  # B 64f H/4 W/4
        x = self.stage5(self.up5(x, indices1))  # B 16f H/2 W/2
        return self.final(x)  # B K H W
