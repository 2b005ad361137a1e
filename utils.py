"""The original boundary-loss `utils.py`: `from utils import one_hot2dist, class2one_hot` from the
repository root. The code is in `boundary_loss.maps` (label encodings, distance maps) and
`boundary_loss.metrics` (the per-slice metrics).
"""

from boundary_loss.maps.distance import (
    as_numpy,
    bounding_box,
    diagonal,
    distance_maps,
    normalise_spacing,
    on_device,
    one_hot2dist,
    one_hot2hd_dist,
)
from boundary_loss.maps.onehot import (
    check_one_hot,
    check_same_shape,
    check_simplex,
    class2one_hot,
    describe,
    eq,
    one_hot,
    probs2class,
    probs2one_hot,
    simplex,
    sset,
    uniq,
)
from boundary_loss.metrics import (
    dice_batch,
    dice_coef,
    hausdorff,
    inter_sum,
    intersection,
    meta_dice,
    union,
    union_sum,
)

__all__ = [
    "as_numpy",
    "bounding_box",
    "check_one_hot",
    "check_same_shape",
    "check_simplex",
    "class2one_hot",
    "describe",
    "diagonal",
    "dice_batch",
    "dice_coef",
    "distance_maps",
    "eq",
    "hausdorff",
    "inter_sum",
    "intersection",
    "meta_dice",
    "normalise_spacing",
    "on_device",
    "one_hot",
    "one_hot2dist",
    "one_hot2hd_dist",
    "probs2class",
    "probs2one_hot",
    "simplex",
    "sset",
    "union",
    "union_sum",
    "uniq",
]
