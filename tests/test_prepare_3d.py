"""Tests of the 3D preprocessing (preprocess/prepare_3d.py, boundary_loss.preprocessing.prepare_3d).

A tiny nnU-Net v2 dataset is written here with nibabel: five cases of 20 x 8 x 18 voxels at two
spacings (so that every case is resampled to the median one), channels CT and T2, labels 0, 1
and 3 (class indices 0, 1, 2), one test image. It is prepared once per module in-process; the
expected outputs are recomputed here from the source files: the median spacing and shapes by
hand, the split by the 2D slicer's own code, the CT statistics with np.percentile over the
training foreground, the T2 z-score, the maps with one_hot2dist. The stand-in cohort
(synthetic_nnunet) is prepared once too, and the error paths each on a copy of the tiny dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from boundary_loss.io.atomic import MARKER
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.preprocessing import slice_nnunet
from boundary_loss.preprocessing.plan3d import plan_network, read_plan
from boundary_loss.preprocessing.prepare_3d import TOOL, main
from boundary_loss.preprocessing.resample import resample_image, resample_labels
from boundary_loss.preprocessing.slice_nnunet import nnunet_dataset
from boundary_loss.preprocessing.slicing import seeded_folds
from boundary_loss.preprocessing.synthetic_nnunet import write_nnunet
from tests.cli import assert_clean_error, error_lines, run_script
from tests.volume_data import SHAPE, SPACINGS, make_dataset, save_nii

TARGET = (1.1, 2.0, 1.1)
TARGET_SHAPES = {1: (18, 8, 20), 2: (22, 8, 16), 3: (18, 8, 20), 4: (22, 8, 16), 5: (20, 8, 18)}
CLASS_OF = {0: 0, 1: 1, 3: 2}
RETAIN, SEED = 2, 3


# ------------------------------------------------------------------------------ the dataset


def prepare(source: Path, dest: Path, *args: object) -> int:
    argv = ["--source_dir", source, "--dest_dir", dest, "--retain", RETAIN, "--seed", SEED, *args]
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "Dataset001_Tiny")


@pytest.fixture(scope="module")
def prepared(tiny, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("prepared") / "Dataset001_Tiny"
    assert prepare(tiny, dest) == 0
    return dest


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


def source_arrays(source: Path, cid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def load(name: str) -> np.ndarray:
        return np.asanyarray(nib.load(str(source / name)).dataobj).astype(np.float64)

    labels = load(f"labelsTr/{cid}.nii.gz").astype(int)
    return load(f"imagesTr/{cid}_0000.nii.gz"), load(f"imagesTr/{cid}_0001.nii.gz"), labels


# ------------------------------------------------------------------------------ the tiny dataset


def test_layout_dtypes_and_shapes(prepared):
    split = read_json(prepared / "split.json")
    assert read_json(prepared / MARKER) == {"tool": TOOL}
    assert not prepared.with_name(prepared.name + "_tmp").exists()
    top = {p.name for p in prepared.iterdir()}
    assert top == {
        MARKER,
        "plan.json",
        "split.json",
        "spacing_3d.json",
        "cases.json",
        "train",
        "val",
    }
    for part in ("train", "val"):
        for folder in ("in_npy", "gt_npy", "3d_distmap"):
            names = sorted(p.name for p in (prepared / part / folder).iterdir())
            assert names == [f"{cid}.npy" for cid in split[part]]
        for cid in split[part]:
            shape = TARGET_SHAPES[int(cid[-3:])]
            image = np.load(prepared / part / "in_npy" / f"{cid}.npy", mmap_mode="r")
            labels = np.load(prepared / part / "gt_npy" / f"{cid}.npy")
            maps = np.load(prepared / part / "3d_distmap" / f"{cid}.npy")
            assert (image.dtype, image.shape) == (np.float32, (2, *shape))
            assert (labels.dtype, labels.shape) == (np.uint8, shape)
            assert (maps.dtype, maps.shape) == (np.float32, (3, *shape))
            assert set(np.unique(labels)) == {0, 1, 2}


def test_plan_by_hand(prepared, tiny):
    plan = read_plan(prepared / "plan.json")
    np.testing.assert_allclose(plan["target_spacing"], TARGET, rtol=1e-6)
    # Target shapes (18|22|20, 8, 20|16|18): medians 20, 8, 18.
    assert plan["median_shape"] == [20, 8, 18]
    assert {k: plan[k] for k in ("dimensions", "name", "n_class", "batch_size")} == {
        "dimensions": 3,
        "name": "Dataset001_Tiny",
        "n_class": 3,
        "batch_size": 2,
    }
    assert plan["labels"] == [["background", 0], ["organ", 1], ["lesion", 3]]
    assert plan["channels"] == ["CT", "T2"]
    assert plan["dataset"] == str(tiny.resolve()) and plan["test"] == ["case_101"]
    assert plan["slice_axis"] == 1 and plan["oversample_foreground"] == 0.33
    network = plan_network(TARGET, (20, 8, 18))
    assert plan["patch_size"] == network["patch_size"]
    assert plan["network"] == {"pools": network["pools"], "kernels": network["kernels"]}


def test_split_is_the_2d_slicers(prepared, tiny):
    dataset = nnunet_dataset(tiny, 0, "auto")
    train, val, _ = dataset.split(dataset.find_patients(tiny), RETAIN, SEED)
    split = read_json(prepared / "split.json")
    assert split == {
        "dataset": "Dataset001_Tiny",
        "retain": 2,
        "seed": 3,
        "train": train,
        "val": val,
    }
    lines = (prepared / "split.json").read_text().splitlines()
    assert lines[0] == "{" and lines[1] == ' "dataset": "Dataset001_Tiny",' and len(lines) == 7


def test_fold_of_splits_final(tiny, tmp_path):
    source = tmp_path / "Dataset001_Tiny"
    shutil.copytree(tiny, source)
    folds = [
        {"train": ["case_001", "case_002", "case_003"], "val": ["case_004", "case_005"]},
        {"train": ["case_005", "case_004", "case_002"], "val": ["case_003", "case_001"]},
    ]
    (source / "splits_final.json").write_text(json.dumps(folds))
    assert prepare(source, tmp_path / "out", "--fold", 1) == 0
    split = read_json(tmp_path / "out" / "split.json")
    dataset = nnunet_dataset(source, 1, "auto")
    train, val, entries = dataset.split(dataset.find_patients(source), RETAIN, SEED)
    assert entries == {"fold": 1} and split["fold"] == 1
    assert (
        (split["train"], split["val"])
        == (train, val)
        == (
            ["case_002", "case_004", "case_005"],
            ["case_001", "case_003"],
        )
    )


def test_seeded_fold_is_the_2d_slicers(tiny, tmp_path):
    """Without splits_final.json, fold 2 of the five seeded folds: the split the 2D slicer's
    command line writes for the same arguments, recorded with its fold."""
    assert prepare(tiny, tmp_path / "out", "--fold", 2, "--retain", 1) == 0
    split = read_json(tmp_path / "out" / "split.json")
    argv = ["--source_dir", tiny, "--dest_dir", tmp_path / "2d", "--fold", 2, "--retain", 1]
    argv += ["--seed", SEED, "--shape", 20, 18, "--workers", 1]
    assert slice_nnunet.main([str(a) for a in argv]) == 0
    sliced = read_json(tmp_path / "2d" / "split.json")
    assert {k: split[k] for k in ("train", "val", "seed", "fold", "folds")} == {
        k: sliced[k] for k in ("train", "val", "seed", "fold", "folds")
    }
    ids = [f"case_{n:03d}" for n in range(1, 6)]
    val = seeded_folds(ids, 1, SEED)[2]
    assert split == {
        "dataset": "Dataset001_Tiny",
        "seed": SEED,
        "retain": 1,
        "train": sorted(set(ids) - set(val)),
        "val": val,
        "fold": 2,
        "folds": 5,
    }
    assert sorted(p.stem for p in (tmp_path / "out" / "val" / "in_npy").iterdir()) == val


def test_maps_are_one_hot2dist_of_the_stored_labels(prepared):
    cases = read_json(prepared / "cases.json")
    for cid, case in cases.items():
        labels = np.load(prepared / case["split"] / "gt_npy" / f"{cid}.npy")
        one_hot = (labels[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.uint8)
        expected = one_hot2dist(one_hot, resolution=TARGET, dtype=np.float32)
        maps = np.load(prepared / case["split"] / "3d_distmap" / f"{cid}.npy")
        np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-5)


def test_labels_are_class_indices_resampled(prepared, tiny):
    plan = read_json(prepared / "plan.json")
    for cid, case in read_json(prepared / "cases.json").items():
        _, _, labels = source_arrays(tiny, cid)
        classes = np.vectorize(CLASS_OF.get)(labels)
        kwargs = {"spacing": SPACINGS[int(cid[-3:])], "target_spacing": plan["target_spacing"]}
        expected = resample_labels(classes, case["target_shape"], 3, **kwargs)
        stored = np.load(prepared / case["split"] / "gt_npy" / f"{cid}.npy")
        np.testing.assert_array_equal(stored, expected)


def test_normalisation(prepared, tiny):
    plan = read_json(prepared / "plan.json")
    split = read_json(prepared / "split.json")
    foreground = []
    for cid in split["train"]:
        ct, _, labels = source_arrays(tiny, cid)
        foreground.append(ct[labels != 0])
    voxels = np.concatenate(foreground)
    ct_norm, t2_norm = plan["normalisation"]
    assert t2_norm == {"channel": "T2", "scheme": "zscore"}
    assert ct_norm["scheme"] == "ct" and ct_norm["channel"] == "CT"
    np.testing.assert_allclose(ct_norm["clip"], np.percentile(voxels, [0.5, 99.5]))
    np.testing.assert_allclose([ct_norm["mean"], ct_norm["std"]], [voxels.mean(), voxels.std()])
    low, high = ct_norm["clip"]
    for cid, case in read_json(prepared / "cases.json").items():
        ct, t2, _ = source_arrays(tiny, cid)
        spacing = SPACINGS[int(cid[-3:])]
        normalised = np.stack(
            [(np.clip(ct, low, high) - voxels.mean()) / voxels.std(), (t2 - t2.mean()) / t2.std()]
        )
        kwargs = {"spacing": spacing, "target_spacing": plan["target_spacing"]}
        expected = resample_image(normalised, case["target_shape"], **kwargs)
        image = np.load(prepared / case["split"] / "in_npy" / f"{cid}.npy")
        np.testing.assert_allclose(image, expected, atol=1e-5)
        # The T2 z-score survives the resampling of these smooth volumes.
        assert abs(image[1].mean()) < 0.05 and abs(image[1].std() - 1) < 0.05


def test_cases_json_geometry_is_the_source_headers(prepared, tiny):
    cases = read_json(prepared / "cases.json")
    split = read_json(prepared / "split.json")
    assert sorted(cases) == sorted(split["train"] + split["val"])
    assert read_json(prepared / "spacing_3d.json") == {
        cid: read_json(prepared / "plan.json")["target_spacing"] for cid in cases
    }
    for cid, case in cases.items():
        image = nib.load(str(tiny / "imagesTr" / f"{cid}_0000.nii.gz"))
        assert case["split"] == ("train" if cid in split["train"] else "val")
        assert case["images"] == [
            str((tiny / "imagesTr" / f"{cid}_{c:04d}.nii.gz").resolve()) for c in (0, 1)
        ]
        assert case["label"] == str((tiny / "labelsTr" / f"{cid}.nii.gz").resolve())
        assert case["shape"] == list(image.shape) == list(SHAPE)
        np.testing.assert_allclose(case["affine"], image.affine)
        np.testing.assert_allclose(case["spacing"], image.header.get_zooms())
        assert case["target_shape"] == list(TARGET_SHAPES[int(cid[-3:])])


def test_patch_given_by_hand(tiny, tmp_path):
    # 16 x 8 x 16 at (1.1, 2.0, 1.1) mm. Stage 0: all sizes >= 8, ratios to 1.1 are 1, 1.82, 1
    # (under 2): pool (2, 2, 2), kernel (3, 3, 3); sizes (8, 4, 8) at (2.2, 4.0, 2.2). Stage 1:
    # axes 0, 2 (8 >= 8): pool (2, 1, 2), kernel 3; sizes (4, 4, 4): stop. 16, 8, 16 are
    # divisible by 4, 2, 4.
    assert prepare(tiny, tmp_path / "out", "--patch", 16, 8, 16, "--batch_size", 4) == 0
    plan = read_json(tmp_path / "out" / "plan.json")
    assert plan["patch_size"] == [16, 8, 16] and plan["batch_size"] == 4
    assert plan["network"] == {
        "pools": [[2, 2, 2], [2, 1, 2]],
        "kernels": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
    }


def test_an_earlier_output_is_replaced_and_a_users_folder_refused(tiny, tmp_path, capsys):
    dest = tmp_path / "out"
    assert prepare(tiny, dest) == 0
    (dest / "stale.txt").write_text("from the earlier run")
    assert prepare(tiny, dest, "--seed", 4) == 0
    assert not (dest / "stale.txt").exists() and read_json(dest / "split.json")["seed"] == 4
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert prepare(tiny, user) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert f"--dest_dir {user}: a non-empty folder that {TOOL} did not write" in line
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "mine_tmp").exists()


def break_label(source: Path) -> str:
    path = source / "labelsTr" / "case_002.nii.gz"
    labels = np.asanyarray(nib.load(str(path)).dataobj).copy()
    labels[0, 0, 0] = 2
    save_nii(path, labels, SPACINGS[2])
    return f"{path}: label values [2] outside the dataset's classes [0, 1, 3]"


def nan_voxel(source: Path) -> str:
    path = source / "imagesTr" / "case_004_0001.nii.gz"
    t2 = np.asanyarray(nib.load(str(path)).dataobj).copy()
    t2[3, 3, 3] = np.nan
    save_nii(path, t2, SPACINGS[4])
    return f"{path}: 1 NaN and 0 infinite voxels"


def nan_test_image(source: Path) -> str:
    path = source / "imagesTs" / "case_101_0001.nii.gz"
    t2 = np.asanyarray(nib.load(str(path)).dataobj).copy()
    t2[0, 0, 0] = np.nan
    save_nii(path, t2, (1.0, 2.0, 1.0))
    return f"{path}: 1 NaN"


def no_dataset_json(source: Path) -> str:
    (source / "dataset.json").unlink()
    return f"{source / 'dataset.json'}: file not found"


def unreadable(source: Path) -> str:
    path = source / "imagesTr" / "case_003_0000.nii.gz"
    path.write_bytes(b"not a NIfTI file")
    return f"{path}: not a readable NIfTI file"


def other_grid(source: Path) -> str:
    path = source / "imagesTr" / "case_001_0001.nii.gz"
    save_nii(path, np.asanyarray(nib.load(str(path)).dataobj), (1.0, 2.0, 1.3))
    return f"{path}: voxel spacing [1, 2, 1.3] mm differs from"


BAD = {
    "label value": (break_label, ()),
    "NaN voxel": (nan_voxel, ()),
    "NaN in a test image": (nan_test_image, ()),
    "no dataset.json": (no_dataset_json, ()),
    "unreadable file": (unreadable, ()),
    "channels on two grids": (other_grid, ()),
    "patch of two sizes": (None, ("--patch", 16, 8)),
    "patch not divisible": (None, ("--patch", 20, 8, 18)),
    "bad fold": (None, ("--fold", 5)),
    "negative fold": (None, ("--fold", -1)),
    "retain leaving too few to the folds": (None, ("--fold", 2)),
}
NAMED = {
    "patch of two sizes": "--patch [16, 8]: expected three positive sizes",
    "patch not divisible": "--patch 20 8 18: not divisible along each axis by 2^(its poolings)",
    "bad fold": "has no splits_final.json, so its folds are the 5 seeded ones",
    "negative fold": "--fold -1: ",
    "retain leaving too few to the folds": "--retain 2: leaves 3 of the 5 patients to folds 1 .. 4",
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_error_line_and_no_folder(name, tiny, tmp_path, capsys):
    source = tmp_path / "Dataset001_Tiny"
    shutil.copytree(tiny, source)
    breaker, args = BAD[name]
    needle = breaker(source) if breaker else NAMED[name]
    capsys.readouterr()
    assert prepare(source, tmp_path / "out", *args) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert needle in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_Tiny"]


def test_the_entry_script(tmp_path):
    proc = run_script(
        "preprocess/prepare_3d.py", "--source_dir", tmp_path / "none", "--dest_dir", tmp_path / "o"
    )
    assert_clean_error(proc, f"{tmp_path / 'none'}: folder not found")
    assert proc.returncode == 1 and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ the stand-in


def test_standin(tmp_path):
    source = write_nnunet(tmp_path)
    dest = tmp_path / "prepared"
    assert main(["--source_dir", str(source), "--dest_dir", str(dest)]) == 0
    plan = read_plan(dest / "plan.json")
    # Every case at (0.9, 3.0, 1.1) mm: nothing is resampled; the plan is test_plan3d's.
    np.testing.assert_allclose(plan["target_spacing"], (0.9, 3.0, 1.1), rtol=1e-6)
    assert plan["patch_size"] == [56, 12, 40] and plan["slice_axis"] == 1
    assert plan["network"]["pools"] == [[2, 1, 2], [2, 2, 2], [2, 1, 2]]
    assert plan["network"]["kernels"][0] == [3, 1, 3]
    dataset = nnunet_dataset(source, 0, "auto")
    train, val, _ = dataset.split(dataset.find_patients(source), dataset.default_retain, 0)
    split = read_json(dest / "split.json")
    assert (split["train"], split["val"]) == (train, val) and len(val) == 3
    for cid in (train[0], val[0]):
        part = "train" if cid in train else "val"
        _, t2, labels = source_arrays(source, cid)
        stored = np.load(dest / part / "gt_npy" / f"{cid}.npy")
        np.testing.assert_array_equal(stored, labels)
        image = np.load(dest / part / "in_npy" / f"{cid}.npy")
        np.testing.assert_allclose(image[1], (t2 - t2.mean()) / t2.std(), atol=1e-5)
        one_hot = (labels[None] == np.arange(4).reshape(4, 1, 1, 1)).astype(np.uint8)
        maps = np.load(dest / part / "3d_distmap" / f"{cid}.npy")
        expected = one_hot2dist(one_hot, resolution=plan["target_spacing"], dtype=np.float32)
        np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-5)
