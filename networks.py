"""The original boundary-loss `networks.py`: `from networks import ENet` from the repository root.
The code is in `boundary_loss.networks`.
"""

from boundary_loss.networks.registry import (
    NETWORKS,
    Dimwit,
    Dimwit3D,
    Dummy,
    ENet,
    ResidualUNet,
    UNet,
    UNet3D,
    get_network,
    init_weights,
)

__all__ = [
    "Dimwit",
    "Dimwit3D",
    "Dummy",
    "ENet",
    "NETWORKS",
    "ResidualUNet",
    "UNet",
    "UNet3D",
    "get_network",
    "init_weights",
]
