"""Dimwit: the smallest segmentation network, for debugging the pipeline (2D and 3D).

Called ``Dummy`` in the boundary-loss repository (the alias is kept).
"""

from __future__ import annotations

from torch import Tensor

from boundary_loss.networks.blocks import CONV, CONV_T, SegmentationNet


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
        self.down = CONV[d](nin, 10, kernel_size=2, stride=2)
        self.up = CONV_T[d](10, nout, kernel_size=2, stride=2)

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
