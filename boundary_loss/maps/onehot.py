"""Label encodings and their validators, as in the original boundary-loss `utils.py`.

Tensors are `B K *xyz` (2D slices `B K H W` or volumes `B K X Y Z`); probabilities sum to one
over K (`simplex`); one-hot encodings are `torch.int32` (`class2one_hot`, `probs2one_hot`).
The names, signatures and behaviour are the original's (Kervadec et al., MIDL 2019 / MedIA 2021).

Each `check_*` reads the tensor's values, a device-to-host synchronisation: callers on the
training path run them once, not per batch, and encode labels with `indices2one_hot`, which
reads nothing. User input is validated with `ValueError` (never `assert`, which `python -O`
removes).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Validators
# ---------------------------------------------------------------------------------------------


def uniq(a: Tensor) -> set:
    """The set of values present in a tensor (half precision included)."""
    values = torch.unique(a.detach().cpu())
    if values.dtype in (torch.bfloat16, torch.float16):
        values = values.float()
    return set(values.numpy().tolist())


def sset(a: Tensor, sub: Iterable) -> bool:
    """True when every value of `a` belongs to `sub`."""
    return uniq(a).issubset(sub)


def simplex(t: Tensor, axis: int = 1) -> bool:
    """True when `t` sums to one along `axis`.

    torch.allclose's tolerances, as the original, for float32 and wider; half-precision tensors
    (autocast) get a tolerance of a few of their own rounding steps per class.
    """
    total = t.sum(axis, dtype=torch.float32)
    if t.dtype in (torch.float16, torch.bfloat16):
        atol = 4 * t.shape[axis] * torch.finfo(t.dtype).eps
        return torch.allclose(total, torch.ones_like(total), rtol=0, atol=atol)
    return torch.allclose(total, torch.ones_like(total))


def one_hot(t: Tensor, axis: int = 1) -> bool:
    """True when `t` is a simplex along `axis` whose values are all 0 or 1."""
    return simplex(t, axis) and bool(((t == 0) | (t == 1)).all())


def eq(a: Tensor, b: Tensor) -> bool:
    """True when two tensors are equal everywhere."""
    return bool(torch.eq(a, b).all())


def describe(t: Tensor | np.ndarray) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}"


def check_simplex(t: Tensor, name: str, axis: int = 1) -> None:
    """Raise ValueError unless `t` is a probability simplex along `axis`.

    The message names the argument, its shape and the largest deviation of the sums from 1.
    """
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() <= axis:
        raise ValueError(f"{name} must have a class axis {axis}, got {describe(t)}")
    if not simplex(t, axis):
        deviation = (t.detach().sum(axis).to(torch.float64) - 1).abs().max().item()
        raise ValueError(
            f"{name} is not a probability simplex over axis {axis} ({describe(t)}): "
            f"sums deviate from 1 by up to {deviation:.3g} (softmax missing, or NaN/inf values?)"
        )


def check_one_hot(t: Tensor, name: str, axis: int = 1) -> None:
    """Raise ValueError unless `t` is one-hot along `axis` (values 0/1 summing to one)."""
    check_simplex(t, name, axis)
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(
            f"{name} is not one-hot along axis {axis} ({describe(t)}): values {sorted(uniq(t))}"
        )


def check_same_shape(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    """Raise ValueError when two tensors differ in shape, naming both."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


# ---------------------------------------------------------------------------------------------
# Label encodings
# ---------------------------------------------------------------------------------------------


def class2one_hot(seg: Tensor, K: int) -> Tensor:
    """One-hot encode class indices.

    Args:
        seg: `B *xyz` integer class indices in [0, K) (a numpy array is accepted too).
        K: number of classes.

    Returns:
        `B K *xyz` torch.int32 one-hot tensor on seg's device.

    Raises:
        ValueError: values outside 0..K-1 (with a hint when the mask looks saved as 0/255),
            or non-integer values.
    """
    if not torch.is_tensor(seg):
        seg = torch.as_tensor(np.asarray(seg))
    if K < 1:
        raise ValueError(f"K must be a positive number of classes, got {K}")
    if seg.dim() < 1:
        raise ValueError(f"seg must be B x spatial class indices, got {describe(seg)}")
    if seg.dtype.is_floating_point or seg.dtype.is_complex:
        if not bool((seg == seg.round()).all()):
            raise ValueError(f"seg must hold integer class indices, got {describe(seg)}")
    values = uniq(seg)
    if not values.issubset(range(K)):
        hint = ""
        if values.issubset({0, 255}) and K == 2:
            hint = " The mask looks saved as 0/255: divide it by 255 to get class indices."
        raise ValueError(
            f"seg has values {sorted(values)} outside the {K} classes 0..{K - 1} "
            f"({describe(seg)}).{hint}"
        )

    return indices2one_hot(seg, K)


def indices2one_hot(labels: Tensor, K: int) -> Tensor:
    """One-hot encode class indices without reading them: the encoding of `class2one_hot`,
    unchecked, for the training path.

    A scatter, so nothing is read back from the device (`F.one_hot` reads the labels' extremes
    on the CPU): an index outside 0..K-1 makes the scatter raise RuntimeError on the CPU and
    stops a GPU kernel with an assertion; callers that want a message naming the values check
    them first (`class2one_hot`) or on that failure (`label_losses.one_hot_labels`).

    Args:
        labels: `B *xyz` integer class indices (any integer dtype, or integral floats).
        K: number of classes.

    Returns:
        `B K *xyz` torch.int32 one-hot tensor on labels' device, contiguous.
    """
    b, *img_shape = labels.shape
    index = labels.to(torch.int64)[:, None, ...]
    res = torch.zeros((b, K, *img_shape), dtype=torch.int32, device=labels.device)
    return res.scatter_(1, index, 1)


def probs2class(probs: Tensor) -> Tensor:
    """Class with the highest probability: `B K *xyz` simplex -> `B *xyz` int64 indices."""
    check_simplex(probs, "probs")
    return probs.argmax(dim=1)


def probs2one_hot(probs: Tensor) -> Tensor:
    """Hard prediction as one-hot: `B K *xyz` simplex -> `B K *xyz` int32 one-hot."""
    _, K, *_ = probs.shape
    return class2one_hot(probs2class(probs), K)
