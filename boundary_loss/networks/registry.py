"""Segmentation networks by name: UNet (2D and 3D), ResidualUNet, ENet, the Dimwit debugging net
and nnU-Net's plain 3D U-Net.

The networks are defined in networks.unet (UNet, UNet3D, ResidualUNet), networks.enet (ENet),
networks.dimwit (Dimwit, Dimwit3D) and networks.plain_unet (PlainUNet3D), from the building blocks
of networks.blocks; they are all importable from here. The UNet follows the networks.py of the
boundary-loss repository (Kervadec et al., MIDL 2019) layer for layer; the building blocks take the
number of spatial dimensions (2 or 3), which gives the 3D variants for free. PlainUNet3D is
nnU-Net's ``PlainConvUNet`` (Isensee et al., Nature Methods 2021), shaped by a plan's pools and
kernels.

Every network takes input ``B C H W`` (2D) or ``B C H W D`` (3D; ``B C X Y Z`` in the 3D chain's
words), returns logits ``B K H W [D]`` (no softmax: the losses apply it), and validates its input
in ``forward``: a wrong number of dimensions, a wrong channel count or a spatial size that is not a
multiple of the network's total downsampling factor (per axis for PlainUNet3D) raise a
``ValueError`` that names the network, the expected and the received shape.

Networks are built by name through :data:`NETWORKS` and :func:`get_network`, which also applies
:func:`init_weights` (the original's ``weights_init``) to the original's networks; PlainUNet3D
keeps nnU-Net's initialisation, which its constructor applies (:data:`SELF_INITIALISED`).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from boundary_loss.networks.blocks import ResidualBlock, SegmentationNet, conv_block, up_block
from boundary_loss.networks.dimwit import Dimwit, Dimwit3D, Dummy
from boundary_loss.networks.enet import ENet
from boundary_loss.networks.plain_unet import PlainUNet3D
from boundary_loss.networks.unet import ResidualUNet, UNet, UNet3D

__all__ = [
    "NETWORKS",
    "ENet",
    "PlainUNet3D",
    "SELF_INITIALISED",
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
    "PlainUNet3D": PlainUNet3D,
}

# Networks whose constructor applies the initialisation of their source, which get_network keeps:
# PlainUNet3D is initialised as nnU-Net initialises it (He normal, a = 0.01, zero biases).
SELF_INITIALISED: frozenset[type[SegmentationNet]] = frozenset({PlainUNet3D})


def get_network(name: str, n_in: int, n_out: int, **kwargs: Any) -> SegmentationNet:
    """Build a registered network and initialise it with :func:`init_weights` (the networks of
    :data:`SELF_INITIALISED` keep the initialisation their constructor applied).

    Args:
        name: a key of :data:`NETWORKS` (``"UNet"``, ``"ENet"``, ``"Dimwit"``, ...).
        n_in: input channels C (modalities).
        n_out: output channels (classes) K.
        **kwargs: extra constructor arguments, e.g. ``nG=32`` for the UNets, ``factor=2`` for
            ENet, ``pools=..., kernels=..., features=32`` for PlainUNet3D.

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
    if cls not in SELF_INITIALISED:
        net.apply(init_weights)
    return net
