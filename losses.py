"""The original boundary-loss `losses.py`: `from losses import SurfaceLoss, GeneralizedDice` from
the repository root. The code is `boundary_loss.losses.idc_losses`.
"""

from boundary_loss.losses.idc_losses import (
    EPS,
    LOSSES,
    AdjacencyEstimator,
    BoundaryLoss,
    CompoundLoss,
    CrossEntropy,
    DiceLoss,
    FocalLoss,
    GeneralizedDice,
    HausdorffLoss,
    NonAdjacencyLoss,
    SurfaceLoss,
    get_loss,
)

__all__ = [
    "AdjacencyEstimator",
    "BoundaryLoss",
    "CompoundLoss",
    "CrossEntropy",
    "DiceLoss",
    "EPS",
    "FocalLoss",
    "GeneralizedDice",
    "HausdorffLoss",
    "LOSSES",
    "NonAdjacencyLoss",
    "SurfaceLoss",
    "get_loss",
]
