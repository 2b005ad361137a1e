"""Segmentation networks: UNet (2D and 3D), ResidualUNet, ENet and the Dimwit debugging net.

The UNet follows the networks.py of the boundary-loss repository (Kervadec et al., MIDL 2019)
layer for layer (conv0-conv2, a residual bridge, three nearest-upsampling decoder stages). The
building blocks are written once and take the number of spatial dimensions
(2 or 3), which gives the 3D variants for free.

Every network takes input ``B C H W`` (2D) or ``B C H W D`` (3D), returns logits
``B K H W [D]`` (no softmax: the losses apply it), and validates its input in ``forward``: a
wrong number of dimensions, a wrong channel count or a spatial size that is not a multiple of
the network's total downsampling factor raise a ``ValueError`` that names the network, the
expected and the received shape.

Networks are built by name through :data:`NETWORKS` and :func:`get_network`, which also applies
:func:`init_weights` (the original's ``weights_init``).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NETWORKS",
    "ENet",
    "Dimwit",
    "Dimwit3D",
    "Dummy",
    "ResidualBlock",
    "ResidualUNet",
    "SegmentationNet",
    "UNet",
    "UNet3D",
    "conv_block",
    "get_network",
    "init_weights",
    "up_block",
]

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCHNORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_SPATIAL_AXES: dict[int, tuple[str, ...]] = {2: ("H", "W"), 3: ("H", "W", "D")}


def _check_positive_int(owner: str, arg: str, value: object) -> None:
    """Raise ValueError unless `value` is a positive int (bools refused), naming owner and arg."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {arg} must be a positive integer, got {value!r}")


def _check_dim(dim: int) -> None:
    if dim not in _CONV:
        raise ValueError(f"dim must be 2 or 3 (number of spatial dimensions), got {dim!r}")


# --------------------------------------------------------------------------------------------
# Building blocks, shared between 2D and 3D
# --------------------------------------------------------------------------------------------


def conv_block(
    nin: int,
    nout: int,
    dim: int = 2,
    kernel_size: int | tuple[int, ...] = 3,
    stride: int = 1,
    padding: int | tuple[int, ...] = 1,
    dilation: int = 1,
    bias: bool = False,
) -> nn.Sequential:
    """Convolution, BatchNorm, PReLU: the original's ``convBatch``.

    Args:
        nin: input channels C.
        nout: output channels C'.
        dim: number of spatial dimensions, 2 (``Conv2d``) or 3 (``Conv3d``).
        kernel_size: convolution kernel size.
        stride: convolution stride; 2 halves every spatial size.
        padding: zero padding; the default 1 keeps the size of a 3x3 convolution.
        dilation: convolution dilation.
        bias: whether the convolution has a bias (redundant before BatchNorm, hence False).

    Returns:
        ``nn.Sequential(conv, batchnorm, prelu)`` mapping ``B C *S`` to ``B C' *S'`` with
        ``S' = S / stride`` for the default kernel and padding.
    """
    _check_dim(dim)
    return nn.Sequential(
        _CONV[dim](
            nin,
            nout,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
        ),
        _BATCHNORM[dim](nout),
        nn.PReLU(),
    )


def up_block(nin: int, nout: int, dim: int = 2) -> nn.Sequential:
    """Nearest-neighbour upsampling by 2, then two conv blocks: the original's ``upSampleConv``.

    Args:
        nin: input channels C.
        nout: output channels C'.
        dim: number of spatial dimensions, 2 or 3.

    Returns:
        ``nn.Sequential(upsample, conv_block(nin, nout), conv_block(nout, nout))`` mapping
        ``B C *S`` to ``B C' *(2 S)``.
    """
    _check_dim(dim)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv_block(nin, nout, dim),
        conv_block(nout, nout, dim),
    )


class ResidualBlock(nn.Module):
    """Residual conv block: the original's ``residualConv``.

    ``leaky_relu(bn(conv(conv_block(x))) + shortcut(x), 0.2)``, where the shortcut is the
    identity when the channel counts match and a 1x1 convolution (no bias) plus BatchNorm
    otherwise. As in the original, the second 3x3 convolution keeps its bias although a
    BatchNorm follows it; the bias has no effect in training mode but is kept so that parameter
    counts match the original.

    Args:
        nin: input channels C.
        nout: output channels C'.
        dim: number of spatial dimensions, 2 or 3.
    """

    def __init__(self, nin: int, nout: int, dim: int = 2) -> None:
        super().__init__()
        _check_dim(dim)
        self.convs = nn.Sequential(
            conv_block(nin, nout, dim),
            _CONV[dim](nout, nout, kernel_size=3, stride=1, padding=1),
            _BATCHNORM[dim](nout),
        )
        self.res: nn.Module = nn.Identity()
        if nin != nout:
            self.res = nn.Sequential(
                _CONV[dim](nin, nout, kernel_size=1, bias=False),
                _BATCHNORM[dim](nout),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``B C *S``.

        Returns:
            ``B C' *S``.
        """
        return F.leaky_relu(self.convs(x) + self.res(x), 0.2)


# --------------------------------------------------------------------------------------------
# Common base: input validation and the attributes the training code checks
# --------------------------------------------------------------------------------------------


class SegmentationNet(nn.Module):
    """Base class of the networks in this module.

    Class attributes:
        dimensions: number of spatial dimensions of the input, 2 (``B C H W``) or 3
            (``B C H W D``), so the training code can check that the data matches.
        downsampling: total downsampling factor; every spatial size of the input must be a
            positive multiple of it.

    Args:
        nin: number of input channels (modalities).
        nout: number of output channels (classes K).

    Raises:
        ValueError: if ``nin`` or ``nout`` is not a positive integer.
    """

    dimensions: ClassVar[int] = 2
    downsampling: ClassVar[int] = 1

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("nin", nin), ("nout", nout)):
            _check_positive_int(name, arg, value)
        self.nin = nin
        self.nout = nout

    def check_input(self, x: Tensor) -> Tensor:
        """Validate the input of ``forward`` and cast it to the parameters' float dtype.

        Args:
            x: ``B C H W`` (2D networks) or ``B C H W D`` (3D networks), any dtype.

        Returns:
            ``x`` as the dtype of the network's parameters (float32 unless the network was
            converted, e.g. to float64 for gradient checks; autocast handles mixed precision).

        Raises:
            ValueError: naming the network, the expected and the received shape, if ``x`` has
                the wrong number of dimensions, the wrong number of channels, or a spatial size
                that is not a positive multiple of :attr:`downsampling`.
        """
        name = type(self).__name__
        axes = _SPATIAL_AXES[self.dimensions]
        factor = self.downsampling
        expected = f"(B, {self.nin}, {', '.join(axes)})"
        if factor > 1:
            expected += f" with {', '.join(axes)} multiples of {factor}"
        got = tuple(x.shape)
        if x.ndim != self.dimensions + 2:
            raise ValueError(
                f"{name} is a {self.dimensions}D network and expects a"
                f" {self.dimensions + 2}D tensor of shape {expected},"
                f" got a {x.ndim}D tensor of shape {got}"
            )
        if x.shape[1] != self.nin:
            raise ValueError(
                f"{name} was built for {self.nin} input channel(s) and expects shape {expected},"
                f" got {x.shape[1]} channel(s) in shape {got}"
            )
        spatial = x.shape[2:]
        if any(s < 1 or s % factor for s in spatial):
            fixed = tuple(max(factor, -(-s // factor) * factor) for s in spatial)
            raise ValueError(
                f"{name} downsamples by {factor}, so it expects shape {expected}, got {got};"
                f" crop or pad the spatial sizes {tuple(spatial)} (for example to {fixed})"
            )
        return x.to(next(self.parameters()).dtype)


# --------------------------------------------------------------------------------------------
# UNet (2D and 3D)
# --------------------------------------------------------------------------------------------


class _UNetND(SegmentationNet):
    """The boundary-loss repository's UNet for a given number of spatial dimensions.

    Encoder: ``conv0`` (two conv blocks at full resolution), ``conv1`` and ``conv2`` (a stride-2
    conv block then a conv block each), ``bridge`` (stride-2 conv block, residual block, conv
    block) at 1/8 resolution with ``8 nG`` channels. Decoder: three ``up_block`` (nearest
    upsampling by 2, two conv blocks), each followed by the concatenation with the encoder
    feature map of the same resolution and two conv blocks. A final 1x1 convolution gives the
    logits.

    Args:
        nin: input channels C.
        nout: output channels (classes) K.
        nG: width of the first stage; stages have ``nG, 2 nG, 4 nG, 8 nG`` channels.
    """

    downsampling = 8

    def __init__(self, nin: int, nout: int, nG: int = 64) -> None:
        super().__init__(nin, nout)
        _check_positive_int(type(self).__name__, "nG", nG)
        d = self.dimensions
        self.nG = nG

        self.conv0 = nn.Sequential(conv_block(nin, nG, d), conv_block(nG, nG, d))
        self.conv1 = nn.Sequential(
            conv_block(nG, nG * 2, d, stride=2), conv_block(nG * 2, nG * 2, d)
        )
        self.conv2 = nn.Sequential(
            conv_block(nG * 2, nG * 4, d, stride=2), conv_block(nG * 4, nG * 4, d)
        )
        self.bridge = nn.Sequential(
            conv_block(nG * 4, nG * 8, d, stride=2),
            ResidualBlock(nG * 8, nG * 8, d),
            conv_block(nG * 8, nG * 8, d),
        )

        self.deconv1 = up_block(nG * 8, nG * 8, d)
        self.conv5 = nn.Sequential(conv_block(nG * 12, nG * 4, d), conv_block(nG * 4, nG * 4, d))
        self.deconv2 = up_block(nG * 4, nG * 4, d)
        self.conv6 = nn.Sequential(conv_block(nG * 6, nG * 2, d), conv_block(nG * 2, nG * 2, d))
        self.deconv3 = up_block(nG * 2, nG * 2, d)
        self.conv7 = nn.Sequential(conv_block(nG * 3, nG, d), conv_block(nG, nG, d))
        self.final = _CONV[d](nG, nout, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``B C *S`` with every spatial size a multiple of 8, any dtype.

        Returns:
            Logits ``B K *S`` in the parameters' dtype (float32 by default).

        Raises:
            ValueError: if the shape of ``x`` does not fit (see :meth:`check_input`).
        """
        x = self.check_input(x)
        x0 = self.conv0(x)  # B nG S
        x1 = self.conv1(x0)  # B 2nG S/2
        x2 = self.conv2(x1)  # B 4nG S/4

        bridge = self.bridge(x2)  # B 8nG S/8

        y0 = self.deconv1(bridge)  # B 8nG S/4
        y1 = self.deconv2(self.conv5(torch.cat((y0, x2), dim=1)))  # B 4nG S/2
        y2 = self.deconv3(self.conv6(torch.cat((y1, x1), dim=1)))  # B 2nG S
        y3 = self.conv7(torch.cat((y2, x0), dim=1))  # B nG S

        return self.final(y3)  # B K S


class UNet(_UNetND):
    """2D UNet of the boundary-loss repository (Kervadec et al., MIDL 2019), input ``B C H W``.

    Three stride-2 downsamplings, BatchNorm + PReLU conv blocks, a residual bridge and
    nearest-neighbour upsampling; see :class:`_UNetND` for the layer list. With ``nG=64``,
    ``nin=1`` and ``nout=2`` it has 18,702,551 parameters.

    Args:
        nin: input channels C.
        nout: output channels (classes) K.
        nG: width of the first stage (64 in the paper).
    """

    dimensions = 2


class UNet3D(_UNetND):
    """3D version of :class:`UNet`, input ``B C H W D``; every spatial size a multiple of 8.

    The default width is ``nG=16`` instead of 64: a 3x3x3 kernel has 3 times the weights of a
    3x3 one, and every feature map gains a depth axis, so at ``nG=64`` the network would have
    about 56 M parameters and a single 96^3 patch would need about 220 MB per full-resolution
    feature map. ``nG=16`` divides the parameters by 16 (about 3.5 M) and the activations by 4,
    which fits patch-based training on one GPU.

    Args:
        nin: input channels C.
        nout: output channels (classes) K.
        nG: width of the first stage.
    """

    dimensions = 3

    def __init__(self, nin: int, nout: int, nG: int = 16) -> None:
        super().__init__(nin, nout, nG)


# --------------------------------------------------------------------------------------------
# ResidualUNet
# --------------------------------------------------------------------------------------------


class ResidualUNet(SegmentationNet):
    """2D U-Net whose encoder and decoder stages are residual blocks; input ``B C H W``.

    Design (same topology and downsampling factor 8 as :class:`UNet`, residual stages):

    - ``enc0``: two residual blocks ``nin -> nG -> nG`` at full resolution (the first one has a
      1x1 shortcut since the channel counts differ);
    - ``enc1``, ``enc2``: a stride-2 conv block doubling the width, then a residual block;
    - ``bridge``: a stride-2 conv block ``4nG -> 8nG`` and two residual blocks at 1/8;
    - three decoder stages: ``up_block`` halving the width while doubling the resolution,
      concatenation with the encoder map of the same resolution, and a residual block that
      merges ``2w -> w`` channels (with its 1x1 shortcut);
    - a final 1x1 convolution to the logits.

    Args:
        nin: input channels C.
        nout: output channels (classes) K.
        nG: width of the first stage; stages have ``nG, 2 nG, 4 nG, 8 nG`` channels.
    """

    dimensions = 2
    downsampling = 8

    def __init__(self, nin: int, nout: int, nG: int = 32) -> None:
        super().__init__(nin, nout)
        _check_positive_int("ResidualUNet", "nG", nG)
        self.nG = nG
        self.enc0 = nn.Sequential(ResidualBlock(nin, nG), ResidualBlock(nG, nG))
        self.enc1 = nn.Sequential(conv_block(nG, nG * 2, stride=2), ResidualBlock(nG * 2, nG * 2))
        self.enc2 = nn.Sequential(
            conv_block(nG * 2, nG * 4, stride=2), ResidualBlock(nG * 4, nG * 4)
        )
        self.bridge = nn.Sequential(
            conv_block(nG * 4, nG * 8, stride=2),
            ResidualBlock(nG * 8, nG * 8),
            ResidualBlock(nG * 8, nG * 8),
        )
        self.up2 = up_block(nG * 8, nG * 4)
        self.dec2 = ResidualBlock(nG * 8, nG * 4)
        self.up1 = up_block(nG * 4, nG * 2)
        self.dec1 = ResidualBlock(nG * 4, nG * 2)
        self.up0 = up_block(nG * 2, nG)
        self.dec0 = ResidualBlock(nG * 2, nG)
        self.final = nn.Conv2d(nG, nout, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``B C H W`` with H and W multiples of 8, any dtype.

        Returns:
            Logits ``B K H W`` in the parameters' dtype (float32 by default).

        Raises:
            ValueError: if the shape of ``x`` does not fit (see :meth:`check_input`).
        """
        x = self.check_input(x)
        x0 = self.enc0(x)  # B nG H W
        x1 = self.enc1(x0)  # B 2nG H/2 W/2
        x2 = self.enc2(x1)  # B 4nG H/4 W/4
        b = self.bridge(x2)  # B 8nG H/8 W/8
        y2 = self.dec2(torch.cat((self.up2(b), x2), dim=1))  # B 4nG H/4 W/4
        y1 = self.dec1(torch.cat((self.up1(y2), x1), dim=1))  # B 2nG H/2 W/2
        y0 = self.dec0(torch.cat((self.up0(y1), x0), dim=1))  # B nG H W
        return self.final(y0)  # B K H W


# --------------------------------------------------------------------------------------------
# ENet (Paszke, Chaurasia, Kim, Culurciello 2016, arXiv:1606.02147)
# --------------------------------------------------------------------------------------------

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
        _check_positive_int("ENet", "factor", factor)
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


# --------------------------------------------------------------------------------------------
# Dimwit: the debugging network
# --------------------------------------------------------------------------------------------


class Dimwit(SegmentationNet):
    """Smallest possible segmentation network, for debugging the pipeline (input ``B C H W``).

    One 2x2 stride-2 convolution to 10 channels and one 2x2 stride-2 transposed convolution back
    to K channels; H and W must be even. Called ``Dummy`` in the original (alias kept).

    Args:
        nin: input channels C.
        nout: output channels (classes) K.
    """

    dimensions = 2
    downsampling = 2

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__(nin, nout)
        d = self.dimensions
        self.down = _CONV[d](nin, 10, kernel_size=2, stride=2)
        self.up = _CONV_T[d](10, nout, kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``B C *S`` with even spatial sizes, any dtype.

        Returns:
            Logits ``B K *S`` in the parameters' dtype (float32 by default).

        Raises:
            ValueError: if the shape of ``x`` does not fit (see :meth:`check_input`).
        """
        return self.up(self.down(self.check_input(x)))


class Dimwit3D(Dimwit):
    """3D :class:`Dimwit` (``Conv3d`` and ``ConvTranspose3d``), input ``B C H W D``."""

    dimensions = 3


Dummy = Dimwit


# --------------------------------------------------------------------------------------------
# Initialisation and registry
# --------------------------------------------------------------------------------------------


def init_weights(m: nn.Module) -> None:
    """The original's ``weights_init``, meant for ``net.apply(init_weights)``.

    Convolution and transposed-convolution weights (2D and 3D) get Xavier-normal values
    (std ``sqrt(2 / (fan_in + fan_out))``, Glorot and Bengio 2010); BatchNorm weights are drawn
    from N(1, 0.02) and BatchNorm biases set to 0. Convolution biases and all other modules keep
    PyTorch's default initialisation, as in the original.

    Args:
        m: a module; modules of other types are left unchanged.
    """
    if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.xavier_normal_(m.weight)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


NETWORKS: dict[str, type[SegmentationNet]] = {
    "UNet": UNet,
    "UNet3D": UNet3D,
    "ResidualUNet": ResidualUNet,
    "ENet": ENet,
    "Dimwit": Dimwit,
    "Dummy": Dummy,
    "Dimwit3D": Dimwit3D,
}


def get_network(name: str, n_in: int, n_out: int, **kwargs: Any) -> SegmentationNet:
    """Build a registered network and initialise it with :func:`init_weights`.

    Args:
        name: a key of :data:`NETWORKS` (``"UNet"``, ``"ENet"``, ``"Dimwit"``, ...).
        n_in: input channels C (modalities).
        n_out: output channels (classes) K.
        **kwargs: extra constructor arguments, e.g. ``nG=32`` for the UNets, ``factor=2`` for
            ENet.

    Returns:
        The initialised network, in training mode.

    Raises:
        ValueError: if ``name`` is not registered (the message lists the known names) or the
            constructor rejects an argument value.
        TypeError: if a keyword argument is not accepted by the network's constructor.
    """
    if name not in NETWORKS:
        raise ValueError(f"Unknown network {name!r}; known networks: {', '.join(NETWORKS)}")
    cls = NETWORKS[name]
    try:
        inspect.signature(cls).bind(n_in, n_out, **kwargs)
    except TypeError as e:
        raise TypeError(f"get_network: bad arguments for network {name!r}: {e}") from None
    net = cls(n_in, n_out, **kwargs)
    net.apply(init_weights)
    return net
