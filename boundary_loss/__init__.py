"""Boundary loss for highly unbalanced segmentation (Kervadec et al., MIDL 2019 / MedIA 2021).

The losses and distance maps a training loop needs:

    from boundary_loss import LabelBoundaryLoss, one_hot2dist

- `LabelBoundaryLoss`, `RegionBoundaryLoss`: a regional loss plus the boundary term, from the
  network's logits or probabilities and integer label maps (`losses.label_losses`);
- `SurfaceLoss`, `GeneralizedDice`: the original's losses on probabilities and one-hot targets
  (`losses.idc_losses`);
- `one_hot2dist`: the signed distance map of a one-hot label map (`maps.distance`).

The pipeline (slicing, training, report) is laid out in sub-packages that follow the data:
`io` -> `maps` -> `losses` -> `metrics` -> `networks` -> `data` -> `preprocessing` ->
`runfolder` -> `training` -> `inference` -> `report`; each imports only those before it.
"""

from boundary_loss.losses.idc_losses import GeneralizedDice, SurfaceLoss
from boundary_loss.losses.label_losses import LabelBoundaryLoss, RegionBoundaryLoss
from boundary_loss.maps.distance import one_hot2dist

__all__ = [
    "GeneralizedDice",
    "LabelBoundaryLoss",
    "RegionBoundaryLoss",
    "SurfaceLoss",
    "one_hot2dist",
]
