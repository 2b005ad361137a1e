"""The UNet family: the boundary-loss repository's UNet (2D and 3D) and a residual variant.

``UNet`` follows the networks.py of the boundary-loss repository (Kervadec et al., MIDL 2019)
layer for layer (conv0-conv2, a residual bridge, three nearest-upsampling decoder stages);
``UNet3D`` is the same network on ``B C H W D`` input, built from the same dimension-generic
blocks (networks.blocks). ``ResidualUNet`` has the same topology with residual stages.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from boundary_loss.networks.blocks import (
    CONV,
    ResidualBlock,
    SegmentationNet,
    check_positive_int,
    conv_block,
    up_block,
)


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
        check_positive_int(type(self).__name__, "nG", nG)
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
        self.final = CONV[d](nG, nout, kernel_size=1)

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
        check_positive_int("ResidualUNet", "nG", nG)
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
