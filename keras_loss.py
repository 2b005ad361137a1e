"""The Keras 3 losses from the repository root: `from keras_loss import SurfaceLoss`. The code is
`boundary_loss.losses.keras_loss`.
"""

from boundary_loss.losses.keras_loss import (
    EPS,
    HALF_EPS,
    SCHEDULES,
    AlphaScheduler,
    GeneralizedDiceLoss,
    RegionBoundaryLoss,
    SurfaceLoss,
    boundary_targets,
    dist_maps,
    generalized_dice_loss,
    surface_loss,
)

__all__ = [
    "AlphaScheduler",
    "EPS",
    "GeneralizedDiceLoss",
    "HALF_EPS",
    "RegionBoundaryLoss",
    "SCHEDULES",
    "SurfaceLoss",
    "boundary_targets",
    "dist_maps",
    "generalized_dice_loss",
    "surface_loss",
]
