"""Distance maps and 3D surface metrics in torch (maps.distance_torch, metrics.hd_hd95_torch), on
the CPU and on a CUDA device, against the original's way on the CPU.

- `one_hot2dist_torch` on a batch of 8 K=2 256x256 lesion slices (two of them without any lesion),
  spacing (0.9, 0.9), against the original boundary-loss `one_hot2dist` (per slice, per present
  class, two scipy `distance_transform_edt` calls, float64). On the CPU: no target, the figure is
  what it is. On CUDA: target at least 50x. Values equal to 1e-4 (float32 against float64).
- `hd_hd95_torch` on the 3D pair of bench_core's hausdorff_3d figure (256x256x40 lesions, spacing
  (0.9, 0.9, 5)) against medpy's `hd` and `hd95` calls: on the CPU (no target) and on CUDA (no
  target given). Values equal to 1e-6 mm.

Without CUDA the device figures are written as not yet measured.
"""

from __future__ import annotations

import numpy as np
import torch
from medpy.metric.binary import hd as medpy_hd
from medpy.metric.binary import hd95 as medpy_hd95

from benchmarks.bench_core import SPACING_3D, lesion_volume, original_one_hot2dist
from benchmarks.harness import Figure, not_yet_measured, speedup
from boundary_loss.maps.distance_torch import one_hot2dist_torch
from boundary_loss.metrics import hd_hd95_torch

SPACING_2D = (0.9, 0.9)
BATCH_NAME = "one_hot2dist_torch, batch of 8 K=2 256x256 lesion slices, spacing (0.9, 0.9)"
BATCH_BASELINE = (
    "the original's one_hot2dist per slice (per-class scipy distance_transform_edt loop, "
    "float64), CPU"
)
HD_BASELINE = "medpy.metric.binary.hd + hd95 (two calls), CPU"
NO_CUDA = "no CUDA device on this machine"
DIST_TOLERANCE = 1e-4  # mm, absolute: float32 maps against the original's float64
HD_TOLERANCE = 1e-6  # mm, absolute


def lesion_batch(batch: int = 8, size: int = 256, empty=(2, 6), seed: int = 0) -> np.ndarray:
    """`B 2 size size` one-hot batch of stroke-lesion-like slices: in each slice one to three
    lesions, each an irregular union of two to four rotated ellipses (radii 3 to 25 pixels);
    the slices listed in `empty` hold background only, as most slices of a lesion volume do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    masks = np.zeros((batch, size, size), dtype=bool)
    for b in range(batch):
        if b in empty:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
            for _ in range(rng.integers(2, 5)):
                oy, ox = rng.normal(0, 6, 2)
                ry, rx = rng.uniform(3, 25, 2)
                angle = rng.uniform(0, np.pi)
                dy, dx = yy - cy - oy, xx - cx - ox
                u = dy * np.cos(angle) + dx * np.sin(angle)
                v = -dy * np.sin(angle) + dx * np.cos(angle)
                masks[b] |= (u / ry) ** 2 + (v / rx) ** 2 < 1
    return np.stack([~masks, masks], axis=1).astype(np.float32)


def original_batch(seg: np.ndarray, spacing=SPACING_2D) -> np.ndarray:
    """The baseline: the original's one_hot2dist on every slice of the batch, float64."""
    return np.stack([original_one_hot2dist(s, spacing, dtype=np.float64) for s in seg])


def torch_batch(seg: torch.Tensor, spacing=SPACING_2D) -> torch.Tensor:
    """Ours: the whole batch at once on seg's device, waiting for the device to finish."""
    res = one_hot2dist_torch(seg, spacing)
    if seg.is_cuda:
        torch.cuda.synchronize(seg.device)
    return res


def max_batch_difference(seg: np.ndarray, device: str = "cpu") -> float:
    """Largest absolute difference (mm) between ours on `device` and the baseline."""
    ours = torch_batch(torch.from_numpy(seg).to(device)).cpu().numpy().astype(np.float64)
    return float(np.abs(ours - original_batch(seg)).max())


def _distance_map_batch(device: str, target_ratio: float | None, repeat: int) -> Figure:
    seg = lesion_batch()
    seg_t = torch.from_numpy(seg).to(device)
    diff = max_batch_difference(seg, device)
    lesion = seg[:, 1].reshape(len(seg), -1).mean(1)
    where = "on the CPU, torch's threads" if device == "cpu" else f"on {device}, synchronized"
    figure = speedup(
        f"{BATCH_NAME}, {device}",
        lambda: torch_batch(seg_t),
        lambda: original_batch(seg),
        baseline_name=BATCH_BASELINE,
        repeat=repeat,
        target_ratio=target_ratio,
        same_values=diff <= DIST_TOLERANCE,
        notes=f"ours {where}, the whole batch in one call, float32; largest difference "
        f"{diff:.2g} mm (tolerance {DIST_TOLERANCE:g} mm). Lesion share per slice "
        f"{', '.join(f'{x:.2%}' for x in lesion)} (two slices without lesion: zero maps for "
        "that class, as the original).",
    )
    if figure.ratio < 1:
        figure.notes += (
            " Slower than the scipy loop on this CPU: the exact brute-force envelope takes "
            f"{seg.shape[-1]} operations per pixel along the second axis (scipy's linear-time "
            "pass takes a few), work a GPU spreads over its cores and a CPU does not."
        )
    return figure


def distance_map_batch_cpu() -> Figure:
    return _distance_map_batch("cpu", target_ratio=None, repeat=10)


def distance_map_batch_device() -> Figure:
    if not torch.cuda.is_available():
        return not_yet_measured(
            f"{BATCH_NAME}, cuda", NO_CUDA, unit="ms", baseline=BATCH_BASELINE, target_ratio=50
        )
    return _distance_map_batch("cuda", target_ratio=50, repeat=30)


def hausdorff_pair() -> tuple[np.ndarray, np.ndarray]:
    """The (prediction, reference) of bench_core's hausdorff_3d figure: lesions, and the same
    lesions shifted plus false positives in half of the volume."""
    gt = lesion_volume(seed=0)
    pred = np.roll(gt, shift=(2, -1, 1), axis=(0, 1, 2)) | lesion_volume(seed=1) & (
        np.arange(256)[:, None, None] < 128
    )
    return pred, gt


def _hausdorff_3d(device: str, repeat: int) -> Figure:
    pred, gt = hausdorff_pair()
    pred_t, gt_t = torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device)
    ours = hd_hd95_torch(pred_t, gt_t, SPACING_3D)
    base = (medpy_hd(pred, gt, voxelspacing=SPACING_3D), medpy_hd95(pred, gt, SPACING_3D))
    diff = float(np.abs(np.subtract(ours, base)).max())
    return speedup(
        f"3D hd + hd95 in torch, 256x256x40 volume, spacing (0.9, 0.9, 5), {device}",
        lambda: hd_hd95_torch(pred_t, gt_t, SPACING_3D),  # returns floats: synchronized
        lambda: (medpy_hd(pred, gt, SPACING_3D), medpy_hd95(pred, gt, SPACING_3D)),
        baseline_name=HD_BASELINE,
        repeat=repeat,
        target_ratio=None,
        same_values=diff <= HD_TOLERANCE,
        notes=f"the volumes of the hausdorff_3d figure, already on {device}; hd {ours[0]:.4f} "
        f"mm, hd95 {ours[1]:.4f} mm, largest difference to medpy {diff:.2g} mm (tolerance "
        f"{HD_TOLERANCE:g} mm).",
    )


def hausdorff_3d_torch_cpu() -> Figure:
    return _hausdorff_3d("cpu", repeat=3)


def hausdorff_3d_device() -> Figure:
    if not torch.cuda.is_available():
        return not_yet_measured(
            "3D hd + hd95 in torch, 256x256x40 volume, spacing (0.9, 0.9, 5), cuda",
            NO_CUDA,
            unit="ms",
            baseline=HD_BASELINE,
        )
    return _hausdorff_3d("cuda", repeat=5)


BENCHES = {
    "distance_map_batch_cpu": distance_map_batch_cpu,
    "distance_map_batch_device": distance_map_batch_device,
    "hausdorff_3d_torch_cpu": hausdorff_3d_torch_cpu,
    "hausdorff_3d_device": hausdorff_3d_device,
}
