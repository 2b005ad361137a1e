"""A small sliced dataset in the slicers' layout, for training tests (no slicer needed), and the
command line of a small training on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_sliced_dataset(
    root: Path,
    n_train: int = 3,
    n_val: int = 2,
    slices: int = 4,
    size: int = 32,
    K: int = 2,
    C: int = 2,
    seed: int = 0,
) -> Path:
    """Write `root/{train,val}/{in_npy,gt_npy}`, spacing.json and spacing_3d.json.

    Each slice holds 0 or 1 disc per foreground class (every third slice is empty), brighter
    than the background in every channel, so a small network learns it in a few steps.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    spacing_3d = {}
    for split, n in (("train", n_train), ("val", n_val)):
        split_dir = root / split
        for folder in ("in_npy", "gt_npy"):
            (split_dir / folder).mkdir(parents=True, exist_ok=True)
        spacing = {}
        for p in range(n):
            patient = f"case_{p + (1 if split == 'train' else 100)}"
            spacing_3d[patient] = [0.9, 0.9, 3.0]
            for z in range(slices):
                stem = f"{patient}_00_{z:04d}"
                gt = np.zeros((size, size), np.uint8)
                if z % 3 != 2:
                    for k in range(1, K):
                        cy, cx = rng.integers(size // 5, size - size // 5, 2)
                        r = rng.integers(max(2, size // 16), max(3, size // 7))
                        gt[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
                image = rng.normal(0.3, 0.05, (C, size, size))
                image += 0.5 * (gt > 0) + 0.1 * gt
                np.save(split_dir / "in_npy" / f"{stem}.npy", image.astype(np.float32))
                np.save(split_dir / "gt_npy" / f"{stem}.npy", gt)
                spacing[stem] = [0.9, 0.9, 3.0]
        (split_dir / "spacing.json").write_text(json.dumps(spacing))
    (root / "spacing_3d.json").write_text(json.dumps(spacing_3d))
    return root


# The small trainings on this data: GDL plus the boundary loss, on the input, the ground truth and
# its distance maps; STEAL: the paper's schedule of the boundary weight.
LOSSES = "[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]"
FOLDERS = (
    "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True), "
    "('gt_npy', dist_map_transform, False)]"
)
STEAL = ("--scheduler", "StealWeight", "--scheduler_params", "{'to_steal': 0.01}")


def training_argv(
    dataset: Path, workdir: Path, *extra: str, batch_size: int, n_epoch: int = 2
) -> list[str]:
    """main.py's arguments for a small training of Dimwit on the CPU on `make_sliced_dataset`'s
    data (two classes, two channels, slices grouped by case), with LOSSES on FOLDERS, then
    `extra`."""
    paths = ["--dataset", str(dataset), "--workdir", str(workdir), "--cpu"]
    network = "--network Dimwit --n_class 2 --modalities 2 --use_spacing".split()
    sizes = ["--batch_size", str(batch_size), "--n_epoch", str(n_epoch)]
    data = ["--grp_regex", r"(case_\d+_\d+)_\d+", "--losses", LOSSES, "--folders", FOLDERS]
    return [*paths, *network, *sizes, *data, *extra]
