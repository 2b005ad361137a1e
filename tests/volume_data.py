"""A tiny nnU-Net v2 dataset written with nibabel, for the tests of the 3D chain: five cases of
20 x 8 x 18 voxels at two spacings (so that every case is resampled to the median one), channels
CT and T2, labels 0, 1 and 3 (class indices 0, 1, 2), one test image."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (20, 8, 18)
# Cases 1, 3: (1.0, 2.0, 1.2) mm; 2, 4: (1.2, 2.0, 1.0); 5: (1.1, 2.0, 1.1). Median (1.1, 2.0,
# 1.1): case 1 becomes round(20 x 1.0 / 1.1) = 18, 8, round(18 x 1.2 / 1.1) = 20 voxels; case 2
# round(21.8) = 22, 8, round(16.4) = 16; case 5 keeps its 20 x 8 x 18.
SPACINGS = {
    1: (1.0, 2.0, 1.2),
    2: (1.2, 2.0, 1.0),
    3: (1.0, 2.0, 1.2),
    4: (1.2, 2.0, 1.0),
    5: (1.1, 2.0, 1.1),
}
LABELS = {"background": 0, "organ": 1, "lesion": 3}


def save_nii(path: Path, data: np.ndarray, spacing) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


def tiny_case(number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CT int16, T2 float32, labels uint8): smooth intensities, an ellipsoid of 1 holding a box
    of 3."""
    x, y, z = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    rng = np.random.default_rng(number)
    labels = np.zeros(SHAPE, np.uint8)
    labels[((x - 10) / 7) ** 2 + ((y - 4) / 3.5) ** 2 + ((z - 9) / 6) ** 2 < 1] = 1
    labels[8 + number % 3 : 12, 3:5, 7:10] = 3
    ct = -100 + 8 * x + 5 * z + 60 * (labels > 0) + rng.normal(0, 3, SHAPE)
    t2 = 200 + 10 * np.sin(x / 3) + 4 * z + 30 * y - 50 * (labels == 3) + number
    return ct.round().astype(np.int16), t2.astype(np.float32), labels


def make_dataset(root: Path) -> Path:
    """The tiny nnU-Net v2 dataset (module docstring) in `root`."""
    root.mkdir(parents=True)
    spec = {
        "channel_names": {"0": "CT", "1": "T2"},
        "labels": LABELS,
        "numTraining": len(SPACINGS),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    for number, spacing in SPACINGS.items():
        ct, t2, labels = tiny_case(number)
        save_nii(root / "imagesTr" / f"case_{number:03d}_0000.nii.gz", ct, spacing)
        save_nii(root / "imagesTr" / f"case_{number:03d}_0001.nii.gz", t2, spacing)
        save_nii(root / "labelsTr" / f"case_{number:03d}.nii.gz", labels, spacing)
    ct, t2, _ = tiny_case(101)
    save_nii(root / "imagesTs" / "case_101_0000.nii.gz", ct[:16], (1.0, 2.0, 1.0))
    save_nii(root / "imagesTs" / "case_101_0001.nii.gz", t2[:16], (1.0, 2.0, 1.0))
    return root
