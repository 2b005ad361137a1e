"""Sliding-window inference of a whole volume with a patch-trained 3D network.

The windows and their blending are those of MONAI's ``sliding_window_inference`` with
``mode="gaussian"`` (and of nnU-Net, Isensee et al. 2021): along each axis the windows start
every ``int(patch * (1 - overlap))`` voxels, the last one flush with the end of the volume; a
volume smaller than the patch along an axis is padded with zeros on both sides (half each, the
odd voxel after) and the prediction cropped back. Each window's prediction is weighted by a
Gaussian importance map (sigma = 0.125 x the patch size, maximum 1 at the centre, clamped below
at 1e-3 so that the corners still count), the weighted predictions are summed and divided by the
summed weights. Test-time mirroring averages the predictions of every combination of flips of
the given axes, each flipped back, window by window (as nnU-Net does).

Everything stays on the image's device: the window positions are Python integers computed from
the shapes beforehand, the weight map and its sum over the windows are computed once, and each
window's prediction is accumulated in place, so the loop never reads a value back to the host.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

SIGMA_SCALE = 0.125  # MONAI's and nnU-Net's: sigma = 0.125 x the patch size
MIN_WEIGHT = 1e-3  # MONAI's floor of the importance map

Predict = Callable[[Tensor], Tensor]


def _check_patch_size(owner: str, patch_size: object) -> tuple[int, int, int]:
    """`patch_size` as 3 positive ints, or ValueError naming `owner` and the value."""
    good = (
        isinstance(patch_size, Sequence)
        and not isinstance(patch_size, str)
        and len(patch_size) == 3
        and all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in patch_size)
    )
    if not good:
        raise ValueError(
            f"{owner}: patch_size must be 3 positive integers (X, Y, Z), got {patch_size!r}"
        )
    return (int(patch_size[0]), int(patch_size[1]), int(patch_size[2]))


def gaussian_importance(
    patch_size: Sequence[int],
    sigma_scale: float = SIGMA_SCALE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The Gaussian weight of each voxel of a window, as MONAI's ``compute_importance_map``.

    ``w[x, y, z] = max(g_X(x) g_Y(y) g_Z(z), 1e-3)`` with ``g_A(a) = exp(-(a - c_A)**2 /
    (2 sigma_A**2))``, ``c_A = (P_A - 1) / 2`` the centre of the axis (between two voxels for an
    even size) and ``sigma_A = sigma_scale * P_A``. The maximum is 1 at the centre voxel of an
    odd-sized patch; the floor keeps the corners' weight positive.

    Args:
        patch_size: ``(P_X, P_Y, P_Z)``, positive ints.
        sigma_scale: sigma as a fraction of the patch size (MONAI's and nnU-Net's 0.125).
        device: where to build the map (the CPU by default).
        dtype: the map's dtype; computed in float64 and rounded once.

    Returns:
        ``P_X P_Y P_Z`` weights in ``(0, 1]``, symmetric about the centre along every axis.

    Raises:
        ValueError: `patch_size` is not 3 positive ints, or `sigma_scale` is not positive.
    """
    patch = _check_patch_size("gaussian_importance", patch_size)
    if isinstance(sigma_scale, bool) or not isinstance(sigma_scale, (int, float)):
        raise ValueError(f"gaussian_importance: sigma_scale must be a number, got {sigma_scale!r}")
    if not sigma_scale > 0:
        raise ValueError(f"gaussian_importance: sigma_scale must be > 0, got {sigma_scale!r}")
    gx, gy, gz = (
        torch.exp(
            -((torch.arange(p, dtype=torch.float64, device=device) - (p - 1) / 2) ** 2)
            / (2 * (sigma_scale * p) ** 2)
        )
        for p in patch
    )
    weight = torch.einsum("x,y,z->xyz", gx, gy, gz)
    return weight.clamp_(min=MIN_WEIGHT).to(dtype)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """The start of every window along one axis, as MONAI's ``dense_patch_slices``.

    Windows start every ``max(int(patch * (1 - overlap)), 1)`` voxels while they end before
    the volume does; the last one ends flush with the volume.

    Args:
        size: the axis's size, at least `patch` (the volume padded beforehand).
        patch: the window's size along the axis.
        overlap: the fraction of a window its neighbour overlaps, in [0, 1).

    Returns:
        The starts, increasing, the last ``size - patch``.
    """
    step = max(int(patch * (1 - overlap)), 1)
    return [*range(0, size - patch, step), size - patch]


def _flip_combinations(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every non-empty combination of the spatial axes, as dims of a ``B C X Y Z`` batch."""
    dims = [2 + a for a in mirror_axes]
    return [c for r in range(1, len(dims) + 1) for c in itertools.combinations(dims, r)]


def _check_arguments(
    predict: object,
    image: object,
    overlap: object,
    batch_size: object,
    mirror_axes: object,
) -> None:
    """The checks of :func:`sliding_window` other than the patch size's."""
    if not callable(predict):
        raise ValueError(f"sliding_window: predict must be callable, got {predict!r}")
    if not isinstance(image, Tensor):
        raise ValueError(f"sliding_window: image must be a tensor, got {type(image).__name__}")
    if image.ndim not in (4, 5) or (image.ndim == 5 and image.shape[0] != 1):
        raise ValueError(
            "sliding_window: image must be C X Y Z or 1 C X Y Z (one volume),"
            f" got shape {tuple(image.shape)}"
        )
    if any(s < 1 for s in image.shape[-4:]):
        raise ValueError(f"sliding_window: image has an empty axis, shape {tuple(image.shape)}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)):
        raise ValueError(f"sliding_window: overlap must be a number in [0, 1), got {overlap!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"sliding_window: overlap must be in [0, 1), got {overlap!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"sliding_window: batch_size must be a positive integer, got {batch_size!r}"
        )
    good = (
        isinstance(mirror_axes, Sequence)
        and not isinstance(mirror_axes, str)
        and all(isinstance(a, int) and not isinstance(a, bool) for a in mirror_axes)
        and set(mirror_axes) <= {0, 1, 2}
        and len(set(mirror_axes)) == len(mirror_axes)
    )
    if not good:
        raise ValueError(
            "sliding_window: mirror_axes must be distinct spatial axes among 0, 1, 2 (X, Y, Z),"
            f" got {mirror_axes!r}"
        )


def _check_prediction(prediction: object, n: int, patch: tuple[int, int, int]) -> int:
    """The number of classes K of the first prediction, or ValueError naming its shape."""
    if not isinstance(prediction, Tensor):
        raise ValueError(
            f"sliding_window: predict must return a tensor, got {type(prediction).__name__}"
        )
    if prediction.ndim != 5 or prediction.shape[0] != n or tuple(prediction.shape[2:]) != patch:
        px, py, pz = patch
        raise ValueError(
            f"sliding_window: predict must map a batch of windows ({n}, C, {px}, {py}, {pz})"
            f" to ({n}, K, {px}, {py}, {pz}), got shape {tuple(prediction.shape)}"
        )
    return prediction.shape[1]


def sliding_window(
    predict: Predict,
    image: Tensor,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 1,
    mirror_axes: Sequence[int] = (),
) -> Tensor:
    """Predict a whole volume window by window, blending the windows with Gaussian weights.

    The same values as MONAI's ``sliding_window_inference(image, patch_size, batch_size,
    predict, overlap, mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=0)``
    without mirroring. Gradients are not turned off here: call it under ``torch.inference_mode()``
    (or ``torch.no_grad()``) to keep no graph.

    Args:
        predict: maps a batch of windows ``B C P_X P_Y P_Z`` to ``B K P_X P_Y P_Z`` (for
            example the softmax of a network's logits), on the image's device, each window on
            its own (no mixing across the batch); it must not write into its input (a single
            window may be passed as a view of `image`).
        image: one volume ``C X Y Z`` or ``1 C X Y Z``.
        patch_size: the window ``(P_X, P_Y, P_Z)``.
        overlap: the fraction of a window its neighbour overlaps along each axis, in [0, 1).
        batch_size: windows per call of `predict` (the last call may get fewer).
        mirror_axes: spatial axes (0, 1, 2 = X, Y, Z) of test-time mirroring: each window's
            prediction is the mean of `predict` over every combination of flips of these axes,
            each flipped back (``2 ** len(mirror_axes)`` calls per batch of windows).

    Returns:
        ``K X Y Z`` (or ``1 K X Y Z``, the input's leading form): the weighted mean of the
        windows' predictions, on the image's device, float64 for a float64 image and float32
        otherwise.

    Raises:
        ValueError: naming the argument and its value, if `patch_size` is not 3 positive ints,
            `overlap` is not in [0, 1), `batch_size` is not a positive int, `mirror_axes` are not
            distinct axes among 0, 1, 2, `image` is not one 3D volume with channels, or the
            first call of `predict` does not return ``B K P_X P_Y P_Z`` for ``B`` windows.
    """
    patch = _check_patch_size("sliding_window", patch_size)
    _check_arguments(predict, image, overlap, batch_size, mirror_axes)
    volume = image[0] if image.ndim == 5 else image  # C X Y Z
    shape = tuple(volume.shape[1:])
    # Pad the axes smaller than the patch: half before, the odd voxel after (MONAI's split).
    lacking = [max(p - s, 0) for p, s in zip(patch, shape, strict=True)]
    before = [d // 2 for d in lacking]
    if any(lacking):
        pad: list[int] = []  # F.pad's order: the last axis first
        for b, d in zip(before[::-1], lacking[::-1], strict=True):
            pad += [b, d - b]
        volume = F.pad(volume, pad, mode="constant", value=0)
    padded = tuple(volume.shape[1:])
    windows = [
        tuple(slice(s, s + p) for s, p in zip(starts, patch, strict=True))
        for starts in itertools.product(
            *(window_starts(size, p, overlap) for size, p in zip(padded, patch, strict=True))
        )
    ]
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    weight = gaussian_importance(patch, device=volume.device, dtype=dtype)
    total_weight = torch.zeros(padded, dtype=dtype, device=volume.device)
    for window in windows:
        total_weight[window] += weight
    flips = _flip_combinations(mirror_axes)
    share = 1 / (1 + len(flips))
    # Batches of several windows are gathered into one buffer; a single window is passed as a
    # view of the volume (no copy: `predict` must not write into its input).
    batch = torch.empty(
        (min(batch_size, len(windows)), volume.shape[0], *patch),
        dtype=volume.dtype,
        device=volume.device,
    )
    out: Tensor | None = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        if len(chunk) == 1:
            x = volume[(None, slice(None), *chunk[0])]
        else:
            x = batch[: len(chunk)]
            for i, window in enumerate(chunk):
                x[i].copy_(volume[(slice(None), *window)])
        prediction = predict(x)
        if out is None:
            n_class = _check_prediction(prediction, len(chunk), patch)
            out = torch.zeros((n_class, *padded), dtype=dtype, device=volume.device)
        if flips:
            prediction = prediction.to(dtype, copy=True)
            for dims in flips:
                prediction += predict(x.flip(dims)).flip(dims)
        for i, window in enumerate(chunk):
            out[(slice(None), *window)].addcmul_(prediction[i], weight, value=share)
    assert out is not None  # at least one window
    out.div_(total_weight)
    out = out[(slice(None), *(slice(b, b + s) for b, s in zip(before, shape, strict=True)))]
    return out[None] if image.ndim == 5 else out
