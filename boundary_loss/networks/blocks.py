"""Building blocks of the segmentation networks, written once for 2D and 3D.

The blocks take the number of spatial dimensions (2 or 3) and pick ``Conv2d`` or ``Conv3d``,
``BatchNorm2d`` or ``BatchNorm3d`` accordingly: ``conv_block`` (the boundary-loss repository's
``convBatch``), ``up_block`` (``upSampleConv``) and ``ResidualBlock`` (``residualConv``).
``SegmentationNet`` is the base class of every network: it holds the attributes the training code
checks (``dimensions``, ``downsampling``) and validates the input of ``forward``, raising a
``ValueError`` that names the network, the expected and the received shape.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

# Layer classes by number of spatial dimensions.
CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_T: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BATCHNORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_SPATIAL_AXES: dict[int, tuple[str, ...]] = {2: ("H", "W"), 3: ("H", "W", "D")}


def check_positive_int(owner: str, arg: str, value: object) -> None:
    """Raise ValueError unless `value` is a positive int (bools refused), naming owner and arg.

    Args:
        owner: the network or block, named in the message.
        arg: the argument's name.
        value: its value.

    Raises:
        ValueError: `value` is not a positive integer.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {arg} must be a positive integer, got {value!r}")


def _check_dim(dim: int) -> None:
    """Raise ValueError unless `dim` is 2 or 3."""
    if dim not in CONV:
        raise ValueError(f"dim must be 2 or 3 (number of spatial dimensions), got {dim!r}")


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
        CONV[dim](
            nin,
            nout,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
        ),
        BATCHNORM[dim](nout),
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
            CONV[dim](nout, nout, kernel_size=3, stride=1, padding=1),
            BATCHNORM[dim](nout),
        )
        self.res: nn.Module = nn.Identity()
        if nin != nout:
            self.res = nn.Sequential(
                CONV[dim](nin, nout, kernel_size=1, bias=False),
                BATCHNORM[dim](nout),
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
            check_positive_int(name, arg, value)
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
