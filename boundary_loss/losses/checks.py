"""The checks of a loss's settings, one home for the torch losses on probabilities
(`idc_losses`) and on labels (`label_losses`), the Keras losses (`keras_loss`) and the
training's `--losses` (`training.config`).

- `check_idc` and `check_idc_range`: the class indices a loss supervises, `idc`. The form is
  checked when the loss is built; the range needs the number of classes K, which a loss learns
  at its call (from the shapes, so on every call without reading the device) and the training
  from `--n_class`.
- `check_weight`: a loss weight or step, a finite number >= 0.
- `check_flag`: True or False (`validate`).

Every message names what is checked, the loss and its argument as the caller words it, and the
bad value:

    SurfaceLoss: idc must be a list of class indices, got 1
    RegionBoundaryLoss: region_idc must be class indices >= 0, got [-1]
    LabelBoundaryLoss: idc: [2] outside the 2 classes of inputs (shape (2, 2, 8, 8))
    --losses: idc of SurfaceLoss names class(es) [1] more than once
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from numbers import Real

import numpy as np


def _is_index(value: object) -> bool:
    """An int or a numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_idc(
    idc: object, what: str, *, negative: bool = False, error: type[Exception] = ValueError
) -> list[int]:
    """`idc` as a list of ints, checked: a list, tuple, range or 1D numpy array (not a string)
    of at least one integer (a bool is none).

    Args:
        idc: the value given.
        what: the loss and its argument, for the messages ("SurfaceLoss: idc").
        negative: allow negative indices, counting from the end as in Python's indexing (the
            original's losses on probabilities do); else they are refused.
        error: the exception raised (the training's configuration raises its ConfigError).

    Returns:
        The indices, as Python ints.

    Raises:
        error: naming `what` and the value: not a sequence of integers, empty, or (without
            `negative`) an index below 0.
    """
    is_sequence = isinstance(idc, Sequence) and not isinstance(idc, str | bytes)
    is_sequence = is_sequence or isinstance(idc, np.ndarray) and idc.ndim == 1
    if not is_sequence or not all(_is_index(i) for i in idc):
        raise error(f"{what} must be a list of class indices, got {idc!r:.80}")
    indices = [int(i) for i in idc]
    if not indices:
        raise error(f"{what} must name at least one class, got {idc!r:.80}")
    if not negative and min(indices) < 0:
        raise error(f"{what} must be class indices >= 0, got {str(indices)[:80]}")
    return indices


def check_optional_idc(idc: object, what: str) -> list[int] | None:
    """`check_idc` (indices >= 0) of an idc that may be None, for the losses whose default is
    every class (or every class but the background): None stays None."""
    return None if idc is None else check_idc(idc, what)


def check_idc_range(
    idc: Sequence[int],
    K: int,
    what: str,
    where: str,
    *,
    negative: bool = False,
    distinct: bool = False,
    error: type[Exception] = ValueError,
) -> None:
    """Every index of `idc` (from `check_idc`) within the K classes: 0..K-1, or -K..K-1 with
    `negative`. Reads nothing but the Python ints.

    Args:
        idc: the indices.
        K: the number of classes.
        what: as in `check_idc`.
        where: what holds the K classes, for the message ("probs (shape (2, 2, 8, 8))").
        negative: as in `check_idc`.
        distinct: refuse a class named twice (-1 and K-1 are one class).
        error: as in `check_idc`.

    Raises:
        error: naming `what`, the indices outside (the first five) and K; or the classes named
            more than once.
    """
    low = -K if negative else 0
    outside = [i for i in idc if not low <= i < K]
    if outside:
        raise error(f"{what}: {str(outside[:5])[:80]} outside the {K} classes of {where}")
    if distinct:
        counts = Counter(i % K for i in idc)
        repeated = sorted(c for c, n in counts.items() if n > 1)
        if repeated:
            raise error(f"{what} names class(es) {repeated} more than once")


def check_weight(value: object, name: str) -> float:
    """A loss weight or step: a finite number >= 0 (a bool is none) as a float, else ValueError
    naming it."""
    is_number = isinstance(value, Real) and not isinstance(value, bool | np.bool_)
    if not is_number or not 0 <= value < float("inf"):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_flag(value: object, name: str) -> bool:
    """True or False (numpy's included) as a bool, else ValueError naming it."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)
