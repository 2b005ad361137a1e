"""Tests for the slicing of 3D volumes into 2D data (preprocess/slicing.py and its modules).

Small unpacked datasets with the real layouts, names and dtypes are written with nibabel; the
expected outputs are worked out here from the source files: min-max normalisation of the whole
volume, skimage resizes, the scaled spacing by hand (dx x old size / new size), the split by
`random.Random(seed).shuffle`, and the 3D distance map of utils.one_hot2dist (tested on its own
in test_utils.py) on the whole resized label volume.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.transform import resize

from boundary_loss.io.atomic import STAGING
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.maps.onehot import class2one_hot
from boundary_loss.preprocessing.slice_acdc import ACDC
from boundary_loss.preprocessing.slice_isles import ISLES
from boundary_loss.preprocessing.slice_wmh import WMH
from boundary_loss.preprocessing.slices import draw_transform
from boundary_loss.preprocessing.slicing import (
    SliceError,
    seeded_folds,
    slice_dataset,
    split_patients,
)
from boundary_loss.preprocessing.unpack import unpack
from tests.cli import assert_clean_error, on_small_disk, run_script, small_disk_available

ROOT = Path(__file__).resolve().parent.parent
SMALL = (64, 64)  # WMH and ACDC are resized to this, to stay fast
OPTIONS = {"workers": 1, "progress": False}

# ------------------------------------------------------------------------------ source builders


def save_nii(path: Path, data: np.ndarray, spacing) -> Path:
    """Write `data` with its dtype and a diagonal affine of `spacing` (mm)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


def load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def blobs(rng: np.random.Generator, shape, n: int, radius: float) -> np.ndarray:
    """`n` random ellipsoids (radius in voxels in-plane, 1.5 slices along z) in `shape`."""
    grid = np.indices(shape, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        centre = [rng.uniform(radius, s - radius) if s > 2 * radius else s / 2 for s in shape]
        scale = [1.0, 1.0, 1.5 / radius]  # about three slices thick: some slices miss a ball
        dist2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, scale, strict=True))
        mask |= dist2 <= radius**2
    return mask


def intensities(rng: np.random.Generator, shape, dtype, low: float, high: float) -> np.ndarray:
    """Noise whose range grows with z, so one slice's min/max differ from the volume's."""
    depth = shape[2]
    scale = (np.arange(depth) + 1) / depth
    values = low + (high - low) * rng.random(shape) * scale
    if np.issubdtype(dtype, np.integer):
        values = np.round(values)
    return values.astype(dtype)


ISLES_INPUTS = {  # source modality -> (dtype, value range)
    "CT": (np.int32, (-50, 1500)),
    "CT_CBF": (np.uint16, (0, 600)),
    "CT_CBV": (np.uint16, (0, 90)),
    "CT_MTT": (np.float64, (0.0, 14.0)),
    "CT_Tmax": (np.float64, (0.0, 60.0)),
}
ISLES_CASES = {  # case number -> (shape, spacing)
    1: ((256, 256, 3), (0.9, 0.9, 5.0)),
    2: ((256, 256, 2), (0.7, 1.1, 6.0)),  # anisotropic in-plane: no quarter turns
    3: ((256, 256, 3), (1.0, 1.0, 4.0)),
    5: ((256, 256, 2), (0.8, 0.8, 8.0)),
    12: ((200, 256, 2), (0.9, 0.9, 5.0)),  # not 256 x 256: resized
}


def isles_case(source: Path, case: int) -> Path:
    return source / "TRAINING" / f"case_{case}"


def isles_file(source: Path, case: int, mod: str) -> Path:
    """The .nii of one modality; the <ID> is derived from the case and modality."""
    name = f"SMIR.Brain.XX.O.{mod}.{340000 + 10 * case + [*ISLES_INPUTS, 'OT'].index(mod)}"
    return isles_case(source, case) / name / f"{name}.nii"


def make_isles(source: Path) -> Path:
    """Unpacked ISLES 2018: TRAINING cases, plus parts the slicer must ignore."""
    rng = np.random.default_rng(1)
    for case, (shape, spacing) in ISLES_CASES.items():
        for mod, (dtype, (low, high)) in ISLES_INPUTS.items():
            save_nii(
                isles_file(source, case, mod), intensities(rng, shape, dtype, low, high), spacing
            )
        lesion = blobs(rng, shape, n=2, radius=9).astype(np.uint8)
        save_nii(isles_file(source, case, "OT"), lesion, spacing)
    # Left behind by an unpacking that kept everything: never read.
    pwi = source / "TRAINING" / "case_1" / "SMIR.Brain.XX.O.CT_4DPWI.349999"
    save_nii(pwi / f"{pwi.name}.nii", np.zeros((4, 4, 2, 3), np.int16), (1, 1, 1))
    (source / "__MACOSX" / "TRAINING").mkdir(parents=True)
    (source / "__MACOSX" / "TRAINING" / "._case_1").write_bytes(b"\0\5\26\7")
    testing = source / "TESTING" / "case_1" / "SMIR.Brain.XX.O.CT.345000"
    save_nii(testing / f"{testing.name}.nii", np.ones((256, 256, 2), np.int32), (1, 1, 5))
    return source


WMH_PATIENTS = {  # (site, pid) -> (shape, spacing), in-plane sizes differ by site
    ("GE3T", "0"): ((60, 50, 4), (0.96, 0.96, 3.0)),
    ("GE3T", "2"): ((60, 50, 3), (0.96, 0.96, 3.0)),
    ("Singapore", "50"): ((50, 60, 4), (1.0, 1.0, 3.0)),
    ("Singapore", "51"): ((50, 60, 3), (1.0, 1.0, 3.0)),
    ("Utrecht", "100"): ((40, 64, 4), (0.98, 1.2, 3.0)),
    ("Utrecht", "101"): ((40, 64, 3), (0.98, 1.2, 3.0)),
}


def wmh_files(source: Path, site: str, pid: str) -> tuple[Path, Path, Path]:
    folder = source / site / pid
    return folder / "pre" / "FLAIR.nii.gz", folder / "pre" / "T1.nii.gz", folder / "wmh.nii.gz"


def make_wmh(source: Path) -> Path:
    """Unpacked WMH 2017: three sites, FLAIR float32, T1 uint16, labels float32 in {0, 1, 2}."""
    rng = np.random.default_rng(2)
    for (site, pid), (shape, spacing) in WMH_PATIENTS.items():
        flair, t1, label = wmh_files(source, site, pid)
        save_nii(flair, intensities(rng, shape, np.float32, 0.0, 900.0), spacing)
        save_nii(t1, intensities(rng, shape, np.uint16, 0, 3000), spacing)
        labels = np.zeros(shape, np.float32)
        labels[blobs(rng, shape, n=2, radius=6)] = 1
        labels[blobs(rng, shape, n=1, radius=5)] = 2  # other pathology
        save_nii(label, labels, spacing)
    return source


ACDC_PATIENTS = {  # patient number -> (shape, spacing, frames)
    1: ((60, 50, 3), (1.5, 1.5, 10.0), ("01", "12")),
    2: ((50, 60, 4), (1.37, 1.37, 6.5), ("01", "09")),
    3: ((60, 50, 3), (1.6, 1.6, 5.0), ("01", "14")),
    4: ((64, 56, 3), (1.4, 1.4, 7.0), ("01", "11")),
    5: ((60, 50, 2), (1.5, 1.5, 10.0), ("01", "08")),
}


def acdc_files(source: Path, number: int, frame: str) -> tuple[Path, Path]:
    pid = f"patient{number:03d}"
    folder = source / "training" / pid
    return folder / f"{pid}_frame{frame}.nii.gz", folder / f"{pid}_frame{frame}_gt.nii.gz"


def heart(shape, centre, radius: float) -> np.ndarray:
    """ACDC-like labels: LV cavity (3), a myocardium ring around it (2), an RV beside it (1)."""
    x, y = np.indices(shape[:2], dtype=np.float64)
    r = np.hypot(x - centre[0], y - centre[1])
    rv = np.hypot(x - centre[0], y - centre[1] - 2.2 * radius) <= radius
    plane = np.select([r <= radius, r <= 1.5 * radius, rv], [3, 2, 1], 0).astype(np.uint8)
    labels = np.repeat(plane[:, :, None], shape[2], axis=2)
    labels[:, :, -1] = np.where(labels[:, :, -1] == 1, 0, labels[:, :, -1])  # apex: no RV
    return labels


def make_acdc(source: Path) -> Path:
    """Unpacked ACDC 2017: two frames per patient, int16 images, uint8 labels 0..3, Info.cfg."""
    rng = np.random.default_rng(3)
    for number, (shape, spacing, frames) in ACDC_PATIENTS.items():
        for frame in frames:
            image, gt = acdc_files(source, number, frame)
            save_nii(image, intensities(rng, shape, np.int16, 0, 700), spacing)
            centre = (shape[0] / 2 + rng.uniform(-3, 3), shape[1] / 3 + rng.uniform(-2, 2))
            save_nii(gt, heart(shape, centre, radius=rng.uniform(5, 7)), spacing)
        info = image.parent / "Info.cfg"
        info.write_text(f"ED: 1\nES: {int(frames[1])}\nGroup: NOR\nHeight: 170.0\nNbFrame: 30\n")
    return source


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def isles_src(tmp_path_factory) -> Path:
    return make_isles(tmp_path_factory.mktemp("isles") / "ISLES")


@pytest.fixture(scope="module")
def wmh_src(tmp_path_factory) -> Path:
    return make_wmh(tmp_path_factory.mktemp("wmh") / "WMH")


@pytest.fixture(scope="module")
def acdc_src(tmp_path_factory) -> Path:
    return make_acdc(tmp_path_factory.mktemp("acdc") / "ACDC")


@pytest.fixture(scope="module")
def isles_out(isles_src, tmp_path_factory) -> Path:
    return slice_dataset(
        ISLES, isles_src, tmp_path_factory.mktemp("isles_out") / "out", retain=2, **OPTIONS
    )


@pytest.fixture(scope="module")
def isles_aug(isles_src, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("isles_aug") / "out"
    return slice_dataset(ISLES, isles_src, dest, retain=1, n_augment=2, seed=3, **OPTIONS)


@pytest.fixture(scope="module")
def wmh_out(wmh_src, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("wmh_out") / "out"
    return slice_dataset(WMH, wmh_src, dest, retain=2, shape=SMALL, **OPTIONS)


@pytest.fixture(scope="module")
def acdc_out(acdc_src, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("acdc_out") / "out"
    return slice_dataset(ACDC, acdc_src, dest, retain=2, shape=SMALL, n_augment=1, **OPTIONS)


# ------------------------------------------------------------------------------ helpers


def stems(folder: Path, suffix: str = ".npy") -> list[str]:
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def whole_volume_norm(path: Path) -> np.ndarray:
    volume = load(path).astype(np.float64)
    return (volume - volume.min()) / (volume.max() - volume.min())


def resize_slice(plane: np.ndarray, shape, order: int) -> np.ndarray:
    return resize(plane, shape, order=order, preserve_range=True, anti_aliasing=False)


def expected_distmap(labels: np.ndarray, spacing, K: int) -> np.ndarray:
    """`K H W Z` map of the whole (resized) `H W Z` label volume."""
    one_hot = class2one_hot(torch.from_numpy(labels[None].astype(np.int64)), K)[0]
    return one_hot2dist(one_hot.numpy(), resolution=spacing, dtype=np.float32)


DIHEDRAL = {  # (quarter turns, flip of the first axis) -> transform of the last two axes
    (k, flip): (lambda a, k=k, flip=flip: np.rot90(a[..., ::-1, :] if flip else a, k, (-2, -1)))
    for k in range(4)
    for flip in (False, True)
}


def check_split_outputs(
    split_dir: Path, modalities: list[str], K: int, shape, classes: set[int]
) -> list[str]:
    """Every output kind of a split: same stems, shapes, dtypes and value ranges. Returns stems."""
    names = stems(split_dir / "in_npy")
    assert names, split_dir
    for folder in ["gt", *modalities]:
        assert stems(split_dir / folder, ".png") == names, folder
    for folder in ["gt_npy", "3d_distmap"]:
        assert stems(split_dir / folder) == names, folder
    assert sorted(read_json(split_dir / "spacing.json")) == names
    for stem in names:
        image = np.load(split_dir / "in_npy" / f"{stem}.npy")
        assert image.dtype == np.float32 and image.shape == (len(modalities), *shape)
        assert 0 <= image.min() and image.max() <= 1
        for c, name in enumerate(modalities):
            picture = png(split_dir / name / f"{stem}.png")
            assert picture.dtype == np.uint8 and picture.shape == tuple(shape)
            np.testing.assert_array_equal(picture, np.rint(image[c].astype(np.float64) * 255))
        label = np.load(split_dir / "gt_npy" / f"{stem}.npy")
        assert label.dtype == np.uint8 and label.shape == tuple(shape)
        assert set(np.unique(label).tolist()) <= classes
        np.testing.assert_array_equal(png(split_dir / "gt" / f"{stem}.png"), label)
        distmap = np.load(split_dir / "3d_distmap" / f"{stem}.npy")
        assert distmap.dtype == np.float32 and distmap.shape == (K, *shape)
    return names


def depth_of(path: Path) -> int:
    return nib.load(str(path)).shape[2]


# ------------------------------------------------------------------------------ ISLES


def test_isles_outputs(isles_src, isles_out):
    split = read_json(isles_out / "split.json")
    patients = [f"case_{n}" for n in ISLES_CASES]
    assert sorted(split["train"] + split["val"]) == sorted(patients)
    assert len(split["val"]) == 2 and split["seed"] == 0 and split["retain"] == 2
    assert not (isles_out.parent / "out_tmp").exists()

    modalities = ["ct", "cbf", "cbv", "mtt", "tmax"]
    for name in ("train", "val"):
        names = check_split_outputs(isles_out / name, modalities, 2, (256, 256), {0, 1})
        cases = [int(p.removeprefix("case_")) for p in split[name]]
        depths = sum(depth_of(isles_file(isles_src, n, "OT")) for n in cases)
        assert len(names) == depths  # no augmentation: one file per source slice
        assert {re.match(r"(case_\d+)_\d+_\d+", s)[1] for s in names} == set(split[name])
        assert all(re.fullmatch(r"case_\d+_00_\d{4}", s) for s in names)
    # TESTING (no OT), CT_4DPWI and __MACOSX are not sliced
    assert sorted(read_json(isles_out / "spacing_3d.json")) == sorted(patients)


def test_isles_whole_volume_normalisation(isles_src, isles_out):
    split = read_json(isles_out / "split.json")
    for case in (1, 3, 5):
        name = "train" if f"case_{case}" in split["train"] else "val"
        for c, mod in enumerate(ISLES_INPUTS):
            norm = whole_volume_norm(isles_file(isles_src, case, mod))
            for z in range(norm.shape[2]):
                image = np.load(isles_out / name / "in_npy" / f"case_{case}_00_{z:04d}.npy")
                np.testing.assert_allclose(image[c], norm[:, :, z], rtol=0, atol=1e-6)
        # the last slice holds the volume's maximum, the others do not reach 1
        assert (
            image.max() == 1
            and np.load(isles_out / name / "in_npy" / f"case_{case}_00_0000.npy").max() < 0.9
        )


def test_isles_distmap_is_3d_with_true_spacing(isles_src, isles_out):
    split = read_json(isles_out / "split.json")
    spacing_3d = read_json(isles_out / "spacing_3d.json")
    differs_from_2d = False
    for case in (1, 2, 3, 5):
        shape, spacing = ISLES_CASES[case]
        stem = f"case_{case}"
        name = "train" if stem in split["train"] else "val"
        np.testing.assert_allclose(spacing_3d[stem], spacing, rtol=1e-6)
        labels = load(isles_file(isles_src, case, "OT"))
        expected = expected_distmap(labels, spacing_3d[stem], 2)
        per_slice = read_json(isles_out / name / "spacing.json")
        for z in range(shape[2]):
            got = np.load(isles_out / name / "3d_distmap" / f"{stem}_00_{z:04d}.npy")
            np.testing.assert_allclose(got, expected[..., z], rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(
                np.load(isles_out / name / "gt_npy" / f"{stem}_00_{z:04d}.npy"), labels[..., z]
            )
            assert per_slice[f"{stem}_00_{z:04d}"] == spacing_3d[stem]
            flat = class2one_hot(torch.from_numpy(labels[None, ..., z].astype(np.int64)), 2)[0]
            flat = one_hot2dist(flat.numpy(), resolution=spacing[:2], dtype=np.float32)
            differs_from_2d |= not np.allclose(got, flat)
    assert differs_from_2d  # the map sees the neighbouring slices


def test_isles_other_in_plane_size_is_resized(isles_src, isles_out):
    split = read_json(isles_out / "split.json")
    name = "train" if "case_12" in split["train"] else "val"
    (old_x, old_y, depth), (dx, dy, dz) = ISLES_CASES[12]
    expected = [dx * old_x / 256, dy * old_y / 256, dz]  # 0.9 x 200 / 256 = 0.703125
    np.testing.assert_allclose(read_json(isles_out / "spacing_3d.json")["case_12"], expected)
    labels = load(isles_file(isles_src, 12, "OT"))
    ct = whole_volume_norm(isles_file(isles_src, 12, "CT"))
    for z in range(depth):
        gt = np.load(isles_out / name / "gt_npy" / f"case_12_00_{z:04d}.npy")
        np.testing.assert_array_equal(gt, resize_slice(labels[..., z], (256, 256), order=0))
        image = np.load(isles_out / name / "in_npy" / f"case_12_00_{z:04d}.npy")
        np.testing.assert_allclose(
            image[0], resize_slice(ct[..., z], (256, 256), order=1), rtol=0, atol=1e-6
        )


def test_isles_augmentation(isles_src, isles_aug):
    n_augment = 2
    split = read_json(isles_aug / "split.json")
    train = check_split_outputs(
        isles_aug / "train", ["ct", "cbf", "cbv", "mtt", "tmax"], 2, (256, 256), {0, 1}
    )
    val = stems(isles_aug / "val" / "in_npy")
    cases = {name: [int(p.removeprefix("case_")) for p in split[name]] for name in ("train", "val")}
    depths = {n: ISLES_CASES[n][0][2] for n in ISLES_CASES}
    assert len(train) == (1 + n_augment) * sum(depths[n] for n in cases["train"])
    assert len(val) == sum(depths[n] for n in cases["val"])
    assert all(re.fullmatch(r"case_\d+_00_\d{4}", s) for s in val)  # validation: no copies
    groups = {re.match(r"(case_\d+_\d+)_\d+", s)[1] for s in train}
    assert groups == {f"case_{n}_{a:02d}" for n in cases["train"] for a in range(3)}

    spacing = read_json(isles_aug / "train" / "spacing.json")
    folder = isles_aug / "train"
    used = set()
    for stem in train:
        case, aug, z = re.fullmatch(r"(case_\d+)_(\d+)_(\d+)", stem).groups()
        if aug == "00":
            continue
        base = f"{case}_00_{z}"
        arrays = {}
        for kind in ("in_npy", "gt_npy", "3d_distmap"):
            arrays[kind] = (
                np.load(folder / kind / f"{base}.npy"),
                np.load(folder / kind / f"{stem}.npy"),
            )
        arrays["ct"] = (png(folder / "ct" / f"{base}.png"), png(folder / "ct" / f"{stem}.png"))
        matches = [
            key
            for key, transform in DIHEDRAL.items()
            if all(np.array_equal(transform(a), b) for a, b in arrays.values())
        ]
        assert len(matches) == 1 and matches[0] != (0, False), stem  # one non-identity transform
        turns, _ = matches[0]
        used.add(matches[0])
        dx, dy, dz = spacing[base]
        assert spacing[stem] == ([dy, dx, dz] if turns % 2 else [dx, dy, dz])
        if case == "case_2":  # anisotropic in-plane spacing: flips and half turns only
            assert turns in (0, 2)
    assert any(k % 2 for k, _ in used)  # quarter turns do happen on isotropic slices


def test_draw_transform_is_seeded_by_seed_and_stem():
    names = [f"case_{n}_01_{z:04d}" for n in range(20) for z in range(5)]
    draws = [draw_transform(0, s, True) for s in names]
    assert draws == [draw_transform(0, s, True) for s in names]
    assert draws != [draw_transform(1, s, True) for s in names]
    assert set(draws) == set(DIHEDRAL) - {(0, False)}  # the seven non-identity elements
    assert {draw_transform(0, s, False) for s in names} == {(0, True), (2, False), (2, True)}


# ------------------------------------------------------------------------------ split


def expected_split(ids: list[str], retain: int, seed: int) -> set[str]:
    ordered = sorted(ids)
    random.Random(seed).shuffle(ordered)
    return set(ordered[:retain])


def test_split_is_a_seeded_shuffle_of_sorted_ids():
    ids = [f"case_{n}" for n in range(1, 95)]
    for seed in range(5):
        train, val = split_patients(reversed(ids), 20, seed)  # input order does not matter
        assert set(val) == expected_split(ids, 20, seed) and len(val) == 20
        assert set(train) == set(ids) - set(val)
    # pinned: the same on every machine and Python version
    assert split_patients(["a", "b", "c", "d", "e"], 2, 0) == (["a", "d", "e"], ["b", "c"])


@pytest.mark.parametrize(
    ("n", "retain"), [(5, 1), (16, 3), (16, 6), (17, 3), (17, 4), (23, 5), (23, 1), (23, 19)]
)
def test_seeded_folds_partition_the_cases(n, retain):
    ids = [f"case_{k:03d}" for k in range(1, n + 1)]
    for seed in (0, 7):
        folds = seeded_folds(reversed(ids), retain, seed)  # input order does not matter
        assert len(folds) == 5
        # fold 0 is the seeded split of every slicer
        train, val = split_patients(ids, retain, seed)
        assert folds[0] == val and sorted(train + val) == ids
        # each case validated in exactly one fold
        assert sorted(case for fold in folds for case in fold) == ids
        # the rest of the shuffle cut in order into four parts, the larger ones first
        ordered = sorted(ids)
        random.Random(seed).shuffle(ordered)
        sizes = [len(fold) for fold in folds[1:]]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        assert sum(sizes) == n - retain and min(sizes) >= 1
        start = retain
        for fold, size in zip(folds[1:], sizes, strict=True):
            assert fold == sorted(ordered[start : start + size], key=lambda c: int(c[5:]))
            start += size
        assert seeded_folds(ids, retain, seed) == folds  # deterministic


def test_seeded_folds_pinned_and_refused():
    # pinned: the same on every machine and Python version (fold 0 as in the test above)
    folds = [["c", "e"], ["a", "b"], ["f"], ["d"], ["g"]]
    assert seeded_folds(list("gfedcba"), 2, 0) == folds
    assert split_patients(list("abcdefg"), 2, 0) == (["a", "b", "d", "f", "g"], folds[0])
    with pytest.raises(SliceError, match="4 patients cannot fill 5 folds"):
        seeded_folds(["a", "b", "c", "d"], 1, 0)
    with pytest.raises(SliceError, match=r"--retain 3: leaves 3 of the 6 patients .* at most 2"):
        seeded_folds(list("abcdef"), 3, 0)
    with pytest.raises(SliceError, match="--retain 0: expected at least 1"):
        seeded_folds(list("abcdef"), 0, 0)


def test_split_json_same_seed_same_split(isles_src, isles_out, tmp_path):
    ids = [f"case_{n}" for n in ISLES_CASES]
    seeds = [s for s in range(1, 50) if expected_split(ids, 2, s) != expected_split(ids, 2, 0)]
    again = read_json(
        slice_dataset(ISLES, isles_src, tmp_path / "a", retain=2, **OPTIONS) / "split.json"
    )
    assert again == read_json(isles_out / "split.json")
    assert set(again["val"]) == expected_split(ids, 2, 0)
    other = slice_dataset(ISLES, isles_src, tmp_path / "b", retain=2, seed=seeds[0], **OPTIONS)
    other_split = read_json(other / "split.json")
    assert set(other_split["val"]) == expected_split(ids, 2, seeds[0]) != set(again["val"])
    assert other_split["seed"] == seeds[0]


# ------------------------------------------------------------------------------ WMH


def test_wmh_outputs_resize_and_label_2(wmh_src, wmh_out):
    split = read_json(wmh_out / "split.json")
    assert sorted(split["train"] + split["val"]) == sorted(pid for _, pid in WMH_PATIENTS)
    spacing_3d = read_json(wmh_out / "spacing_3d.json")
    for name in ("train", "val"):
        names = check_split_outputs(wmh_out / name, ["flair", "t1"], 2, SMALL, {0, 1})
        assert {re.match(r"(\d+)_\d+_\d+", s)[1] for s in names} == set(split[name])
        assert {re.match(r"(\d+_\d+)_\d+", s)[1] for s in names} == {f"{p}_00" for p in split[name]}
        per_slice = read_json(wmh_out / name / "spacing.json")
        depth = 0
        for (site, pid), (shape, (dx, dy, dz)) in WMH_PATIENTS.items():
            if pid not in split[name]:
                continue
            depth += shape[2]
            scaled = [dx * shape[0] / SMALL[0], dy * shape[1] / SMALL[1], dz]
            np.testing.assert_allclose(spacing_3d[pid], scaled, rtol=1e-6)
            flair_path, t1_path, label_path = wmh_files(wmh_src, site, pid)
            source = load(label_path)
            assert (source == 2).any()
            labels = np.where(source == 2, 0, source)  # other pathology is background
            resized = np.stack(
                [resize_slice(labels[..., z], SMALL, order=0) for z in range(shape[2])], -1
            ).astype(np.uint8)
            distmap = expected_distmap(resized, spacing_3d[pid], 2)
            norms = [whole_volume_norm(flair_path), whole_volume_norm(t1_path)]
            for z in range(shape[2]):
                stem = f"{pid}_00_{z:04d}"
                np.testing.assert_array_equal(
                    np.load(wmh_out / name / "gt_npy" / f"{stem}.npy"), resized[..., z]
                )
                image = np.load(wmh_out / name / "in_npy" / f"{stem}.npy")
                for c, norm in enumerate(norms):
                    expected = resize_slice(norm[..., z], SMALL, order=1)
                    np.testing.assert_allclose(image[c], expected, rtol=0, atol=1e-6)
                got = np.load(wmh_out / name / "3d_distmap" / f"{stem}.npy")
                np.testing.assert_allclose(got, distmap[..., z], rtol=1e-6, atol=1e-6)
                assert per_slice[stem] == spacing_3d[pid]
        assert len(names) == depth


def test_augmentation_keeps_non_square_slices_whole(wmh_src, tmp_path):
    """Quarter turns would swap H and W: a 48 x 64 slice is only flipped or turned by half."""
    dest = slice_dataset(
        WMH, wmh_src, tmp_path / "out", retain=2, shape=(48, 64), n_augment=2, **OPTIONS
    )
    names = check_split_outputs(dest / "train", ["flair", "t1"], 2, (48, 64), {0, 1})
    spacing = read_json(dest / "train" / "spacing.json")
    for stem in names:
        pid, z = re.fullmatch(r"(\d+)_\d+_(\d+)", stem).groups()
        assert spacing[stem] == spacing[f"{pid}_00_{z}"]  # never swapped
    train = read_json(dest / "split.json")["train"]
    assert len(names) == 3 * sum(
        shape[2] for (_, p), (shape, _) in WMH_PATIENTS.items() if p in train
    )


# ------------------------------------------------------------------------------ ACDC


def test_acdc_outputs(acdc_src, acdc_out):
    split = read_json(acdc_out / "split.json")
    assert len(split["val"]) == 2 and len(split["train"]) == 3
    spacing_3d = read_json(acdc_out / "spacing_3d.json")
    volumes = {
        f"patient{n:03d}_{f}": (shape, spacing)
        for n, (shape, spacing, frames) in ACDC_PATIENTS.items()
        for f in frames
    }
    assert sorted(spacing_3d) == sorted(volumes)
    for name, copies in (("train", 2), ("val", 1)):
        names = check_split_outputs(acdc_out / name, ["img"], 4, SMALL, {0, 1, 2, 3})
        mine = {v: s for v, s in volumes.items() if v[:10] in split[name]}  # both frames together
        assert len(names) == copies * sum(shape[2] for shape, _ in mine.values())
        groups = {re.match(r"(patient\d+_\d+_\d+)_\d+", s)[1] for s in names}
        assert groups == {f"{v}_{a:02d}" for v in mine for a in range(copies)}
        for vid, (shape, (dx, dy, dz)) in mine.items():
            scaled = [dx * shape[0] / SMALL[0], dy * shape[1] / SMALL[1], dz]
            np.testing.assert_allclose(spacing_3d[vid], scaled, rtol=1e-6)
            number, frame = re.fullmatch(r"patient(\d+)_(\d+)", vid).groups()
            labels = load(acdc_files(acdc_src, int(number), frame)[1])
            resized = np.stack(
                [resize_slice(labels[..., z], SMALL, order=0) for z in range(shape[2])], -1
            ).astype(np.uint8)
            assert set(np.unique(resized).tolist()) == {0, 1, 2, 3}
            distmap = expected_distmap(resized, spacing_3d[vid], 4)
            for z in range(shape[2]):
                got = np.load(acdc_out / name / "3d_distmap" / f"{vid}_00_{z:04d}.npy")
                np.testing.assert_allclose(got, distmap[..., z], rtol=1e-6, atol=1e-6)


def test_cli_acdc_with_pool_matches_in_process(acdc_src, acdc_out, tmp_path):
    """The script run by path, `--retains` and two workers give the in-process files."""
    dest = tmp_path / "cli"
    command = [sys.executable, "preprocess/slice_acdc.py", "--source_dir", str(acdc_src)]
    command += ["--dest_dir", str(dest), "--retains", "2", "--shape", "64", "64"]
    command += ["--n_augment", "1", "--workers", "2"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert read_json(dest / "split.json") == read_json(acdc_out / "split.json")
    assert (dest / "spacing_3d.json").read_text() == (acdc_out / "spacing_3d.json").read_text()
    for name in ("train", "val"):
        assert (dest / name / "spacing.json").read_text() == (
            acdc_out / name / "spacing.json"
        ).read_text()
        for kind in ("in_npy", "gt_npy", "3d_distmap"):
            for stem in stems(acdc_out / name / kind):
                a = np.load(acdc_out / name / kind / f"{stem}.npy")
                np.testing.assert_array_equal(np.load(dest / name / kind / f"{stem}.npy"), a)


# ------------------------------------------------------------------------------ source forms
# The boundary-loss repository's makefiles pass the folder holding the patient folders as
# --source_dir (ISLES `TRAINING/`, ACDC `training/`, WMH its three sites' patients moved up one
# level), into `--dest_dir X_tmp` that they then move to X.


def flatten_wmh(source: Path, dest: Path) -> Path:
    """The WMH source as wmh.make leaves it: every site's patient folders moved up one level."""
    dest.mkdir()
    for site in ("GE3T", "Singapore", "Utrecht"):
        for patient in (source / site).iterdir():
            shutil.copytree(patient, dest / patient.name)
    return dest


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, relative path -> content."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


ORIGINAL_FORMS = {
    # dataset -> (the form's source from the root form's, flags as the original spells them,
    # the fixture sliced from the root form with the same settings)
    "isles": (
        lambda src, tmp: src / "TRAINING",
        ["--n_augment=0", "--retain=2"],
        "isles_out",
    ),
    "wmh": (
        lambda src, tmp: flatten_wmh(src, tmp / "wmh"),
        ["--n_augment=0", "--retain=2", "--shape", "64", "64"],
        "wmh_out",
    ),
    "acdc": (
        lambda src, tmp: src / "training",
        ["--seed=0", "--retain", "2", "--n_augment=1", "--shape", "64", "64"],
        "acdc_out",
    ),
}


@pytest.mark.parametrize("dataset", list(ORIGINAL_FORMS))
def test_original_source_form_slices_like_the_root(dataset, request, tmp_path):
    """`--source_dir` holding the patient folders, `--dest_dir X_tmp` then `mv X_tmp X`: the
    same bytes as slicing the unpacked root."""
    form, flags, reference = ORIGINAL_FORMS[dataset]
    source = form(request.getfixturevalue(f"{dataset}_src"), tmp_path)
    dest = tmp_path / "data" / "X_tmp"
    command = [
        sys.executable,
        str(ROOT / "preprocess" / f"slice_{dataset}.py"),
        f"--source_dir={source}",
        f"--dest_dir={dest}",
        *flags,
        "--workers",
        "1",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in dest.parent.iterdir()) == ["X_tmp"]  # its own X_tmp_tmp gone
    final = dest.rename(dest.parent / "X")
    expected = tree_bytes(request.getfixturevalue(reference))
    got = tree_bytes(final)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []


# ------------------------------------------------------------------------------ bad input


def garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    return path


def resave(path: Path, change) -> Path:
    """Rewrite a NIfTI with `change(data)` (same spacing)."""
    image = nib.load(str(path))
    data = change(np.asanyarray(image.dataobj).copy())
    return save_nii(path, data, image.header.get_zooms()[:3])


def regrid(path: Path, scale=(1.0, 1.0, 1.0), shift=(0.0, 0.0, 0.0)) -> Path:
    """Rewrite a NIfTI, same voxels, with its voxel sizes scaled and its origin moved (mm)."""
    image = nib.load(str(path))
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] @ np.diag(scale)
    affine[:3, 3] += shift
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj).copy(), affine), str(path))
    return path


def truncate_gz(path: Path) -> Path:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(raw) // 4])
    return path


def _nan(data):
    data[3, 4, 1] = np.nan
    return data


def _inf(data):
    data[0, 0, 0] = np.inf
    return data


def _deeper(data):
    return np.concatenate([data, data[..., :1]], axis=2)


def _label(value):
    def change(data):
        data[10, 10, 0] = value
        return data

    return change


def odd_folder_in_flat_wmh(source: Path) -> Path:
    """Turn `source` into the flat WMH form with a folder `notes` beside the patients."""
    flat = flatten_wmh(source, source.parent / "flat")
    shutil.rmtree(source)
    flat.rename(source)
    (source / "notes").mkdir()
    return source / "notes"


I3, W51, A3 = 3, ("Singapore", "51"), 3  # the patients broken below
BAD_INPUTS = {
    # name -> (dataset, break the source and return the path the message names, extra pattern)
    "isles missing CBF": (
        "isles",
        lambda s: shutil.rmtree(isles_file(s, I3, "CT_CBF").parent) or isles_case(s, I3),
        "CT_CBF",
    ),
    "isles missing OT file": (
        "isles",
        lambda s: isles_file(s, I3, "OT").unlink() or isles_file(s, I3, "OT"),
        "OT",
    ),
    "isles shapes disagree": (
        "isles",
        lambda s: resave(isles_file(s, I3, "CT_CBV"), _deeper),
        r"shape \(256, 256, 4\)",
    ),
    "isles CBV spacing differs": (
        "isles",
        lambda s: regrid(isles_file(s, I3, "CT_CBV"), scale=(1.05, 1.05, 1.0)),
        r"voxel spacing \[1\.05, 1\.05, 4\] mm differs from .*CT\.\d+\.nii \[1, 1, 4\] mm",
    ),
    "isles OT shifted": (
        "isles",
        lambda s: regrid(isles_file(s, I3, "OT"), shift=(0.0, 2.5, 0.0)),
        r"affine \[\[1, 0, 0, 0\], \[0, 1, 0, 2\.5\], .* differs from .*CT\.\d+\.nii "
        r"\[\[1, 0, 0, 0\], \[0, 1, 0, 0\], .*by up to 2\.5 mm",
    ),
    "isles label 2": ("isles", lambda s: resave(isles_file(s, I3, "OT"), _label(2)), r"\[2\]"),
    "isles NaN": ("isles", lambda s: resave(isles_file(s, I3, "CT_MTT"), _nan), "1 NaN"),
    "isles inf": ("isles", lambda s: resave(isles_file(s, I3, "CT_Tmax"), _inf), "1 infinite"),
    "isles constant": (
        "isles",
        lambda s: resave(isles_file(s, I3, "CT"), lambda d: d * 0 + 7),
        "constant",
    ),
    "isles garbage nii": ("isles", lambda s: garbage(isles_file(s, I3, "CT_CBV")), "NIfTI"),
    "isles empty source": (
        "isles",
        lambda s: shutil.rmtree(s / "TRAINING") or (s / "TRAINING"),
        "not found",
    ),
    "isles empty TRAINING": (
        "isles",
        lambda s: [shutil.rmtree(p) for p in (s / "TRAINING").iterdir()] and s,
        "no ISLES patient",
    ),
    "isles both forms": (
        "isles",
        lambda s: (s / "case_99").mkdir() or s,
        r"both TRAINING/ and patient folders \(case_99\)",
    ),
    "wmh missing T1": (
        "wmh",
        lambda s: wmh_files(s, *W51)[1].unlink() or wmh_files(s, *W51)[1],
        "T1",
    ),
    "wmh garbage nii.gz": ("wmh", lambda s: garbage(wmh_files(s, *W51)[0]), "NIfTI"),
    "wmh truncated nii.gz": ("wmh", lambda s: truncate_gz(wmh_files(s, *W51)[1]), "NIfTI"),
    "wmh label spacing differs": (
        "wmh",
        lambda s: regrid(wmh_files(s, *W51)[2], scale=(1.0, 1.0, 1.2)),
        r"voxel spacing \[1, 1, 3\.6\] mm differs from .*FLAIR\.nii\.gz \[1, 1, 3\] mm",
    ),
    "wmh T1 shifted": (
        "wmh",
        lambda s: regrid(wmh_files(s, *W51)[1], shift=(0.0, 0.0, -0.01)),
        r"FLAIR\.nii\.gz .*by up to 0\.01 mm, more than 0\.001",
    ),
    "wmh label 3": ("wmh", lambda s: resave(wmh_files(s, *W51)[2], _label(3)), r"\[3\]"),
    "wmh label 0.5": ("wmh", lambda s: resave(wmh_files(s, *W51)[2], _label(0.5)), "integer"),
    "wmh label NaN": ("wmh", lambda s: resave(wmh_files(s, *W51)[2], _nan), "NaN"),
    "wmh no site": (
        "wmh",
        lambda s: [shutil.rmtree(p) for p in s.iterdir()] and s,
        "GE3T, Singapore, Utrecht",
    ),
    "wmh both forms": (
        "wmh",
        lambda s: (s / "7").mkdir() or s,
        r"both site folders \(GE3T\) and patient folders \(7\)",
    ),
    "wmh flat form, odd folder": (
        "wmh",
        odd_folder_in_flat_wmh,
        "expected numbered patient folders",
    ),
    "acdc no training": (
        "acdc",
        lambda s: shutil.rmtree(s / "training") or s / "training",
        "patient<NNN>/ folders directly in",
    ),
    "acdc both forms": (
        "acdc",
        lambda s: (s / "patient099").mkdir() or s,
        r"both training/ and patient folders \(patient099\)",
    ),
    "acdc label 4": ("acdc", lambda s: resave(acdc_files(s, A3, "14")[1], _label(4)), r"\[4\]"),
    "acdc missing gt": (
        "acdc",
        lambda s: acdc_files(s, A3, "01")[1].unlink() or acdc_files(s, A3, "01")[1],
        "file",
    ),
    "acdc gt spacing differs": (
        "acdc",
        lambda s: regrid(acdc_files(s, A3, "01")[1], scale=(1.001, 1.0, 1.0)),
        r"voxel spacing \[1\.6016, 1\.6, 5\] mm differs",
    ),
    "acdc shapes disagree": (
        "acdc",
        lambda s: resave(acdc_files(s, A3, "01")[1], _deeper),
        "label shape",
    ),
}
DATASETS = {"isles": ISLES, "wmh": WMH, "acdc": ACDC}


def earlier_output(dest: Path) -> dict[str, str]:
    """Make `dest` look like an earlier output of the slicer; returns its files and contents."""
    files = {"split.json": '{"seed": 0}\n', "train/in_npy/old.npy": "an older product"}
    for name, text in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(text)
    return files


def contents(folder: Path) -> dict[str, str]:
    """Every file under `folder`, relative path -> text."""
    return {
        p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_file_and_leaves_nothing(case, request, tmp_path):
    dataset, breaks, pattern = BAD_INPUTS[case]
    source = shutil.copytree(request.getfixturevalue(f"{dataset}_src"), tmp_path / "src")
    named = breaks(source)
    dest = tmp_path / "out"
    before = earlier_output(dest)  # an earlier product: left as it was by a failed run
    with pytest.raises(SliceError, match=re.escape(str(named))) as error:
        slice_dataset(DATASETS[dataset], source, dest, retain=1, shape=SMALL, **OPTIONS)
    assert re.search(pattern, str(error.value)), str(error.value)
    assert contents(dest) == before and not (tmp_path / "out_tmp").exists()


def test_retain_too_large_names_both_numbers(isles_src, tmp_path):
    with pytest.raises(SliceError, match=r"--retain 5\b.*\b5 patients"):
        slice_dataset(ISLES, isles_src, tmp_path / "out", retain=5, **OPTIONS)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out_tmp").exists()


def test_missing_source_and_overlapping_dest(tmp_path, isles_src):
    with pytest.raises(SliceError, match=re.escape(str(tmp_path / "nowhere"))):
        slice_dataset(ISLES, tmp_path / "nowhere", tmp_path / "out", **OPTIONS)
    with pytest.raises(SliceError, match="overlaps"):
        slice_dataset(ISLES, isles_src, isles_src / "TRAINING", **OPTIONS)
    assert (isles_src / "TRAINING" / "case_1").is_dir()  # the source is never deleted


def test_existing_dest_is_replaced(isles_src, tmp_path):
    """An earlier output (it has split.json) and an empty folder are replaced."""
    dest = tmp_path / "out"
    earlier_output(dest)
    (tmp_path / "out_tmp" / "out" / "train").mkdir(parents=True)  # left by an interrupted run
    (tmp_path / "out_tmp" / "out" / "train" / "half.npy").write_bytes(b"half")
    (tmp_path / "out_tmp" / STAGING).write_text(json.dumps({"tool": "slicer", "dest": "out"}))
    slice_dataset(ISLES, isles_src, dest, retain=4, **OPTIONS)
    assert not (dest / "train" / "in_npy" / "old.npy").exists()
    assert read_json(dest / "split.json")["retain"] == 4
    assert not (tmp_path / "out_tmp").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    slice_dataset(ISLES, isles_src, empty, retain=4, **OPTIONS)
    assert (empty / "split.json").is_file()


def test_cli_error_exits_1_without_traceback(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    command = [sys.executable, "preprocess/slice_wmh.py", "--source_dir", str(empty)]
    command += ["--dest_dir", str(tmp_path / "out"), "--workers", "1"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.startswith("error: ") and str(empty) in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out_tmp").exists()


def test_tiny_header_differences_are_tolerated(wmh_src, tmp_path):
    """float32 header noise between the files of one grid is within the tolerances."""
    source = shutil.copytree(wmh_src, tmp_path / "src")
    flair, t1, label = wmh_files(source, *W51)
    regrid(t1, scale=(1 + 2e-7, 1.0, 1 - 3e-6))
    regrid(label, shift=(4e-4, -2e-4, 1e-4))
    dest = slice_dataset(WMH, source, tmp_path / "out", retain=2, shape=SMALL, **OPTIONS)
    written = [s for name in ("train", "val") for s in stems(dest / name / "in_npy")]
    assert [s for s in written if s.startswith("51_")] == ["51_00_0000", "51_00_0001", "51_00_0002"]


# ------------------------------------------------------------------------------ failing runs
# A failed run removes the slicer's own DEST_tmp and nothing else, from the command line too.


def slicer(dataset: str, source: Path, dest: Path, *extra: object) -> list[str]:
    """The command line of a slicer script."""
    return [
        sys.executable,
        str(ROOT / "preprocess" / f"slice_{dataset}.py"),
        "--source_dir",
        str(source),
        "--dest_dir",
        str(dest),
        *map(str, extra),
    ]


@pytest.mark.parametrize("source", ["nonexistent", "real"])
def test_cli_refuses_a_dest_that_is_not_its_output(source, isles_src, tmp_path):
    dest = tmp_path / "v"
    dest.mkdir()
    (dest / "thesis.txt").write_text("x")
    beside = tmp_path / "notes.txt"
    beside.write_text("mine")
    src = isles_src if source == "real" else tmp_path / "nonexistent"
    proc = run_script("preprocess/slice_isles.py", "--source_dir", src, "--dest_dir", dest)
    assert_clean_error(proc, f"--dest_dir {dest}:", "slicer did not write", "not replaced")
    assert contents(dest) == {"thesis.txt": "x"} and beside.read_text() == "mine"
    assert not (tmp_path / "v_tmp").exists()


def test_cli_refuses_a_file_as_dest(isles_src, tmp_path):
    dest = tmp_path / "v"
    dest.write_text("x")
    proc = run_script("preprocess/slice_isles.py", "--source_dir", isles_src, "--dest_dir", dest)
    assert_clean_error(proc, f"--dest_dir {dest}:", "not a folder")
    assert dest.read_text() == "x" and not (tmp_path / "v_tmp").exists()


def test_cli_bad_input_in_a_worker_removes_only_tmp(wmh_src, tmp_path):
    """A SliceError raised in a pool worker ends the run with its message."""
    source = shutil.copytree(wmh_src, tmp_path / "src")
    named = resave(wmh_files(source, *W51)[2], _label(3))
    dest = tmp_path / "out"
    before = earlier_output(dest)
    command = slicer("wmh", source, dest, "--retain", 2, "--shape", 64, 64, "--workers", 2)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert_clean_error(proc, str(named), "[3] outside")
    assert contents(dest) == before and not (tmp_path / "out_tmp").exists()


def make_slow_wmh(source: Path, patients: int, shape) -> Path:
    """WMH patients with many slices, so that slicing them takes seconds."""
    rng = np.random.default_rng(4)
    for pid in range(patients):
        flair, t1, label = wmh_files(source, "GE3T", str(pid))
        save_nii(flair, intensities(rng, shape, np.float32, 0.0, 900.0), (1.0, 1.0, 3.0))
        save_nii(t1, intensities(rng, shape, np.uint16, 0, 3000), (1.0, 1.0, 3.0))
        save_nii(label, blobs(rng, shape, n=2, radius=6).astype(np.float32), (1.0, 1.0, 3.0))
    return source


def child_pids(pid: int) -> list[int]:
    """The live child processes of `pid`, read from /proc (their parent pid, in `stat`)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return children


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def start_and_signal(command: list[str], signum: int, to_worker: bool, tmp: Path):
    """Start a slicer, wait for its pool workers and `tmp`, then send `signum` to one worker
    (`to_worker`) or to the slicer itself.

    Returns:
        The finished process and the worker pids.
    """
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # Ctrl-C as at a terminal: a shell running the tests in the background (`&`) ignores
        # SIGINT, the slicer would inherit that, and Python then installs no handler for it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        workers = []
        while len(workers) < 2 or not tmp.is_dir():
            assert proc.poll() is None, f"ended before the signal: {proc.communicate()}"
            assert time.monotonic() < deadline, "no pool workers after 60 s"
            time.sleep(0.01)
            workers = child_pids(proc.pid)
        os.kill(workers[0] if to_worker else proc.pid, signum)
        start = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)  # a hang fails here
        assert time.monotonic() - start < 30
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), workers


@pytest.fixture(scope="module")
def slow_wmh_src(tmp_path_factory) -> Path:
    # 24 patients: slicing them takes long enough (several seconds, more on a loaded machine)
    # for the signal to arrive while the pool works; the tests end at the signal.
    return make_slow_wmh(tmp_path_factory.mktemp("slow") / "WMH", patients=24, shape=(64, 64, 120))


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_cli_worker_killed_ends_the_run(slow_wmh_src, tmp_path):
    """A worker killed (as by the out-of-memory killer) ends the run within seconds."""
    dest = tmp_path / "out"
    before = earlier_output(dest)
    beside = tmp_path / "notes.txt"
    beside.write_text("mine")
    command = slicer("wmh", slow_wmh_src, dest, "--retain", 1, "--shape", 64, 64)
    proc, workers = start_and_signal(
        [*command, "--workers", "2"], signal.SIGKILL, True, tmp_path / "out_tmp"
    )
    message = assert_clean_error(proc, "a slicing worker died", "out-of-memory", str(dest))
    assert re.search(r"while slicing patient \d+( or \d+)?;", message), message
    assert contents(dest) == before and beside.read_text() == "mine"
    assert not (tmp_path / "out_tmp").exists()
    assert not any(alive(pid) for pid in workers)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_cli_ctrl_c_removes_only_tmp(slow_wmh_src, tmp_path):
    dest = tmp_path / "out"
    before = earlier_output(dest)
    command = slicer("wmh", slow_wmh_src, dest, "--retain", 1, "--shape", 64, 64)
    proc, workers = start_and_signal(
        [*command, "--workers", "2"], signal.SIGINT, False, tmp_path / "out_tmp"
    )
    assert proc.returncode == 130, proc.stderr
    assert f"interrupted: nothing written at {dest}" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert contents(dest) == before and not (tmp_path / "out_tmp").exists()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)  # no worker slicing on


def test_cli_two_slicers_on_one_dest(slow_wmh_src, tmp_path):
    """Two `make` calls in one folder: the second slicer stops at once with a message, the
    first one's work is left alone and completes."""
    dest = tmp_path / "out"
    command = slicer("wmh", slow_wmh_src, dest, "--retain", 1, "--shape", 64, 64, "--workers", 1)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "out_tmp" / "out").is_dir():
            assert first.poll() is None, f"ended before the second started: {first.communicate()}"
            assert time.monotonic() < deadline, "the first slicer did not start"
            time.sleep(0.01)
        second = run_script(*command[1:])
        assert_clean_error(second, f"--dest_dir {dest}: another process is writing it")
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr
    finally:
        if first.poll() is None:
            first.kill()
    assert len(json.loads((dest / "split.json").read_text())["val"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_refuses_a_users_folder_named_like_its_tmp(isles_src, tmp_path):
    dest, stage = tmp_path / "out", tmp_path / "out_tmp"
    stage.mkdir()
    (stage / "draft.txt").write_text("draft")
    proc = run_script("preprocess/slice_isles.py", "--source_dir", isles_src, "--dest_dir", dest)
    assert_clean_error(proc, f"--dest_dir {dest}:", f"{stage} is a folder without", "not removed")
    assert contents(stage) == {"draft.txt": "draft"} and not dest.exists()


@pytest.mark.skipif(not small_disk_available(), reason="cannot mount a small tmpfs here")
@pytest.mark.parametrize("workers", [1, 2])
def test_cli_full_disk_names_the_file(workers, wmh_src, tmp_path):
    """A disk that fills up mid-way: one message naming the file, nothing left on the disk."""
    disk = tmp_path / "disk"
    dest = disk / "out"
    command = slicer("wmh", wmh_src, dest, "--retain", 2, "--shape", 64, 64, "--workers", workers)
    proc, left = on_small_disk(command, disk, size_kb=384)
    message = assert_clean_error(proc, "cannot be written, the disk is full", "No space left")
    assert re.search(rf"error: {re.escape(str(disk / 'out_tmp'))}/\S+: ", message), message
    assert left == []  # neither out nor out_tmp


# ------------------------------------------------------------------------------ stand-in zips

DROP = ["__MACOSX", "*CT_4DPWI*", "orig", "3DT1.nii.gz", "*_4d.nii.gz"]
SYNTHETIC = {  # dataset -> (png folders, K, label files, folder levels from a label to its patient)
    "isles": (["ct", "cbf", "cbv", "mtt", "tmax"], 2, "TRAINING/*/*.OT.*/*.nii", 2),
    "wmh": (["flair", "t1"], 2, "*/*/wmh.nii.gz", 1),
    "acdc": (["img"], 4, "training/*/*_gt.nii.gz", 1),
}


@pytest.mark.parametrize("dataset", list(SYNTHETIC))
def test_synthetic_quick_cohort_slices(dataset, tmp_path, quick_zips):
    """The generator's quick cohort (seed 0), unpacked as the recipes do, slices completely."""
    modalities, K, label_glob, up = SYNTHETIC[dataset]
    zips = sorted(quick_zips(dataset).rglob("*.zip"))
    assert zips and all(zipfile.is_zipfile(z) for z in zips)
    source = unpack(zips, tmp_path / "src", drop=DROP)
    dest = slice_dataset(
        DATASETS[dataset],
        source,
        tmp_path / "out",
        retain=1,
        shape=SMALL,
        workers=2,
        progress=False,
    )
    split = read_json(dest / "split.json")
    assert len(split["val"]) == 1 and split["train"]
    depths = {"train": 0, "val": 0}
    for label in source.glob(label_glob):
        patient = label.parents[up - 1].name
        depths["train" if patient in split["train"] else "val"] += depth_of(label)
    for name in ("train", "val"):
        classes = set(range(K))
        assert len(check_split_outputs(dest / name, modalities, K, SMALL, classes)) == depths[name]
