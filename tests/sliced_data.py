"""A small sliced dataset in the slicers' layout, for training tests (no slicer needed)."""

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
