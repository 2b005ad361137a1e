"""The boundary loss from labels (losses.label_losses, keras_loss.py) against the ways people write
it without this project.

- `LabelBoundaryLoss` on a batch of 8 K=2 256x256 lesion slices (bench_device's batch, spacing
  (0.9, 0.9)), logits and integer labels in, the scalar out, against the way of the widely read
  walkthrough of the paper: softmax, then per sample the scipy maps of the original's
  `one_hot2dist` on the CPU, then the product. Same values (1e-5 relative). On the CPU no target;
  on CUDA (ours on the device, the walkthrough's on the CPU, as it is written) at least 50x, and
  the loss's share of a training step of a 2D UNet on that batch.
- The Keras 3 `SurfaceLoss` per batch, its maps from the data pipeline step `dist_maps`
  (`one_hot2dist`), against the original repository's contributed Keras port: the labels taken
  out of the graph by a Python callback, scipy maps of each sample's `H W K` array, the product.
  The port's maps are not the original's (it treats the class axis as a third spatial axis), so
  the values differ; the figure compares the work per batch.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from benchmarks.bench_core import original_one_hot2dist
from benchmarks.bench_device import NO_CUDA, SPACING_2D, lesion_batch
from benchmarks.harness import Figure, not_yet_measured, speedup
from boundary_loss.losses.label_losses import LabelBoundaryLoss

NAME = "LabelBoundaryLoss, batch of 8 K=2 256x256 lesion slices, spacing (0.9, 0.9)"
WALKTHROUGH = "the walkthrough's BDLoss: per-sample scipy maps (the original's one_hot2dist), CPU"
KERAS_NAME = "keras_loss.SurfaceLoss per batch of 8 K=2 256x256 slices, maps by dist_maps"
PORT = "the original's contributed Keras port: a Python callback with scipy maps per sample"
TOLERANCE = 1e-5  # relative


def walkthrough_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The walkthrough's way: maps per sample with scipy on the CPU, then mean(probs * maps)."""
    probs = F.softmax(logits, dim=1)
    one_hot = F.one_hot(labels, probs.shape[1]).movedim(-1, 1).cpu().numpy()
    maps = np.stack([original_one_hot2dist(s, SPACING_2D, dtype=np.float32) for s in one_hot])
    maps_t = torch.from_numpy(maps).to(probs.device)
    return (probs[:, 1:] * maps_t[:, 1:]).mean()


def inputs(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.from_numpy(lesion_batch()[:, 1].astype(np.int64)).to(device)
    logits = torch.randn(8, 2, 256, 256, generator=torch.Generator().manual_seed(0)).to(device)
    return logits, labels


def _synchronised(fn, device: str):
    def call():
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return call


def _label_loss(device: str, repeat: int, target: float | None) -> Figure:
    logits, labels = inputs(device)
    loss = LabelBoundaryLoss(idc=[1], spacing=SPACING_2D)
    ours, theirs = loss(logits, labels).item(), walkthrough_loss(logits.cpu(), labels.cpu()).item()
    same = abs(ours - theirs) <= TOLERANCE * abs(theirs)
    figure = speedup(
        f"{NAME}, {device}",
        _synchronised(lambda: loss(logits, labels), device),
        lambda: walkthrough_loss(logits.cpu(), labels.cpu()),
        baseline_name=WALKTHROUGH,
        repeat=repeat,
        target_ratio=target,
        same_values=same,
        notes=f"logits and labels in, the scalar out (maps included), ours on {device}; loss "
        f"{ours:.6f} against {theirs:.6f} (tolerance {TOLERANCE:g} relative).",
    )
    if device == "cuda":
        figure.notes += " " + _share_of_a_step(logits, labels, loss)
    return figure


def _share_of_a_step(logits: torch.Tensor, labels: torch.Tensor, loss) -> str:
    """The loss's share of a training step of a 2D UNet (width 16) on the batch, on CUDA."""
    from boundary_loss.networks.registry import get_network

    net = get_network("UNet", 1, 2, nG=16).cuda()
    optimizer = torch.optim.Adam(net.parameters())
    images = torch.randn(8, 1, 256, 256, device="cuda")

    def step(with_loss: bool) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad()
        out = net(images)
        value = loss(out, labels) if with_loss else out.float().mean()
        value.backward()
        optimizer.step()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3):
        step(True), step(False)
    full = np.median([step(True) for _ in range(20)])
    bare = np.median([step(False) for _ in range(20)])
    return (
        f"Share of a training step (UNet nG=16, batch 8, Adam): {100 * (full - bare) / full:.1f}% "
        f"({1e3 * full:.2f} ms a step with the loss, {1e3 * bare:.2f} ms with a mean instead)."
    )


def label_loss_cpu() -> Figure:
    return _label_loss("cpu", repeat=10, target=None)


def label_loss_device() -> Figure:
    if not torch.cuda.is_available():
        return not_yet_measured(
            f"{NAME}, cuda", NO_CUDA, unit="ms", baseline=WALKTHROUGH, target_ratio=50
        )
    return _label_loss("cuda", repeat=30, target=50)


def port_maps(one_hot: np.ndarray) -> np.ndarray:
    """The contributed port's `calc_dist_map_batch`: per sample, scipy on the `H W K` array."""
    maps = np.zeros_like(one_hot, dtype=np.float32)
    for b, seg in enumerate(one_hot):
        pos = seg.astype(bool)
        if pos.any():
            neg = ~pos
            maps[b] = distance_transform_edt(neg) * neg - (distance_transform_edt(pos) - 1) * pos
    return maps


def keras_loss_batch() -> Figure:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
        from keras import ops

        from boundary_loss.losses import keras_loss as kl
    except ImportError as error:
        return not_yet_measured(
            KERAS_NAME, f"keras not installed ({error})", unit="ms", baseline=PORT
        )
    labels = lesion_batch()[:, 1].astype(np.int64)  # B H W
    one_hot = np.eye(2, dtype=np.float32)[labels]  # B H W K, Keras' layout
    rng = np.random.default_rng(0)
    logits = rng.normal(size=one_hot.shape)
    probs = ops.convert_to_tensor(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    probs = ops.cast(probs, "float32")
    loss = kl.SurfaceLoss([1])

    def ours():
        return ops.convert_to_numpy(loss(kl.dist_maps(labels, 2), probs))

    def port():
        y_true = ops.convert_to_numpy(ops.convert_to_tensor(one_hot))  # out of the graph
        maps = ops.convert_to_tensor(port_maps(y_true))  # and back in
        return ops.convert_to_numpy(ops.mean(probs * maps))

    return speedup(
        KERAS_NAME,
        ours,
        port,
        baseline_name=PORT,
        repeat=10,
        target_ratio=None,
        same_values=False,
        notes=f"Keras {keras.__version__}, {os.environ['KERAS_BACKEND']} backend, "
        "CPU; both compute their maps from the labels every batch. Values differ by design: the "
        "port's maps treat the class axis as a third spatial axis (and all classes), ours are "
        "the original's per-class maps of class 1.",
    )


BENCHES = {
    "label_loss_cpu": label_loss_cpu,
    "label_loss_device": label_loss_device,
    "keras_loss_batch": keras_loss_batch,
}
