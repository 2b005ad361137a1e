"""The 3D patch loader: patches per second from a prepared 3D split to augmented batches.

`patch_loader`: a generated split of 8 cases of 2 x 128 x 128 x 64 (image), labels of 4 classes
and their whole-volume distance maps (4 x 128 x 128 x 64), in the prepared 3D layout under
benchmarks/cache/ (made once). One measured call runs 4 batches of 2 patches of 64 x 64 x 32
through `make_patch_loader` (sampling with nnU-Net's oversampling, the crop of image, labels
and maps, one-hot labels, collate; in this process) and `augment_batch_3d` on the CPU. The
baseline is the same chain reading each case the straightforward way: its three .npy files
loaded whole (np.load without a memory map) for every patch, nothing else changed. The two
alternate in the same run; the batches of both are checked equal.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.harness import ROOT, Figure, interleaved_seconds, machine_name
from boundary_loss.data.augment3d import augment_batch_3d
from boundary_loss.data.loader import (
    FolderSpec,
    collate,
    gt_transform,
    raw_npy_transform,
    tensor_transform,
)
from boundary_loss.data.patches import EpochBatchSampler, PatchDataset, make_patch_loader
from boundary_loss.maps.distance import one_hot2dist

CACHE = ROOT / "benchmarks" / "cache"
CASES, C, K = 8, 2, 4
SHAPE = (128, 128, 64)
SPACING = (1.0, 1.0, 2.0)
PATCH = (64, 64, 32)
BATCH, ITERATIONS = 2, 4
REPEAT = 5
SPECS = [
    FolderSpec("in_npy", tensor_transform, False),
    FolderSpec("gt_npy", gt_transform, True),
    FolderSpec("3d_distmap", raw_npy_transform, False),
]
NAME = "3D loader: patches/s"
BASELINE = "the same loader loading each case's .npy files whole (np.load, no memory map) per patch"


def case_labels(rng: np.random.Generator) -> np.ndarray:
    """`X Y Z` uint8: three ellipsoids of classes 1..3 at random places, in the spacing's mm."""
    x, y, z = np.indices(SHAPE, dtype=np.float32)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for k in range(1, K):
        centre = rng.uniform(0.2, 0.8, 3) * SHAPE
        radius = rng.uniform(6, 20)
        inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + ((z - centre[2]) * SPACING[2]) ** 2
        labels[inside <= radius**2] = k
    return labels


def prepared_split() -> Path:
    """The generated train split, under benchmarks/cache/ (made once)."""
    root = CACHE / f"patches-3d-{CASES}x{'x'.join(map(str, SHAPE))}" / "train"
    if root.is_dir():
        return root
    tmp = root.parent.with_name(root.parent.name + "_tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(0)
    for folder in ("in_npy", "gt_npy", "3d_distmap"):
        (tmp / "train" / folder).mkdir(parents=True)
    for i in range(CASES):
        labels = case_labels(rng)
        one_hot = np.moveaxis(np.eye(K, dtype=np.int32)[labels], -1, 0)
        image = rng.standard_normal((C, *SHAPE), dtype=np.float32)
        np.save(tmp / "train" / "in_npy" / f"case_{i}.npy", image)
        np.save(tmp / "train" / "gt_npy" / f"case_{i}.npy", labels)
        maps = one_hot2dist(one_hot, SPACING, dtype=np.float32)
        np.save(tmp / "train" / "3d_distmap" / f"case_{i}.npy", maps)
    tmp.rename(root.parent)
    return root


class WholeFileDataset(PatchDataset):
    """The baseline: every read loads the whole file (np.load without a memory map)."""

    def array(self, case: int, spec: int) -> np.ndarray:
        return np.load(self.files[case][spec])


def _run(loader, seed: int = 0) -> list:
    """Every batch of one epoch, augmented on the CPU (decisions and noise seeded)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    out = []
    for batch in loader:
        hot = [not t.is_floating_point() for t in batch["labels"]]
        out.append(
            augment_batch_3d(batch["images"], batch["labels"], hot, batch["spacing"], generator)
        )
    return out


def patch_loader() -> Figure:
    root = prepared_split()
    spacing = {f"case_{i}": list(SPACING) for i in range(CASES)}
    ours = make_patch_loader(root, SPECS, K, PATCH, spacing, BATCH, ITERATIONS, 0, workers=0)
    whole = WholeFileDataset(root, SPECS, K, PATCH, spacing, BATCH, ITERATIONS, 0)
    baseline = DataLoader(whole, batch_sampler=EpochBatchSampler(whole), collate_fn=collate)
    same = all(
        torch.equal(a_image, b_image)
        and all(torch.equal(a, b) for a, b in zip(a_labels, b_labels, strict=True))
        for (a_image, a_labels, _), (b_image, b_labels, _) in zip(
            _run(ours), _run(baseline), strict=True
        )
    )
    t_base, t_ours = interleaved_seconds(
        lambda: _run(baseline), lambda: _run(ours), repeat=REPEAT, warmup=1
    )
    # The loading alone (no augmentation), for the notes.
    load_base, load_ours = interleaved_seconds(
        lambda: list(baseline), lambda: list(ours), repeat=REPEAT, warmup=1
    )
    patches = BATCH * ITERATIONS
    value, base_value = patches / t_ours, patches / t_base
    return Figure(
        name=NAME,
        value=round(value, 1),
        unit="patches/s",
        baseline=BASELINE,
        baseline_value=round(base_value, 1),
        ratio=round(value / base_value, 2),
        target_ratio=None,
        same_values=bool(same),
        machine=machine_name(),
        notes=f"higher is better; ratio = ours / baseline. {CASES} cases of {C} x "
        f"{' x '.join(map(str, SHAPE))} (float32 image, uint8 labels, {K} float32 maps), "
        f"patches of {' x '.join(map(str, PATCH))}, batches of {BATCH}, {ITERATIONS} batches per "
        f"call, {REPEAT} calls each alternated (medians), files in the page cache; in one "
        "process: sampling, crop, one-hot, collate and augment_batch_3d on the CPU. Same values: "
        "every augmented batch (image, labels, maps) equal, with the same seeds. The loading "
        f"alone, without the augmentation: {patches / load_ours:.1f} against "
        f"{patches / load_base:.1f} patches/s ({load_base / load_ours:.2f}x).",
        date=time.strftime("%Y-%m-%d"),
    )


BENCHES = {"patch_loader": patch_loader}
