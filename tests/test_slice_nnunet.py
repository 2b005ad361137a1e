"""Tests for the slicing of nnU-Net v2 and Decathlon datasets (preprocess/slice_nnunet.py).

The stand-in cohort (preprocess/synthetic_nnunet.py) is written once per module in both layouts
and sliced through the command line at 64 x 64; the small datasets of the bad-input, label,
fold and voxel-value tests (a few cases of 8 x 6 x 5 voxels) are written here with nibabel. The
expected outputs are worked out here from the source files with plain numpy: the foreground
statistics of the CT channel over the training cases of split.json, the per-volume z-score of
the T2 channel, the slice axis and the resized spacing. The bad-input runs call the command
line's entry in this process.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from boundary_loss.preprocessing import slice_nnunet
from boundary_loss.preprocessing.nnunet_format import MSD, NNUNET, DatasetError, read_dataset
from boundary_loss.preprocessing.slice_nnunet import default_retain, split_cases
from boundary_loss.preprocessing.slicing import seeded_folds, split_patients
from boundary_loss.preprocessing.synthetic_nnunet import write_msd, write_nnunet
from boundary_loss.preprocessing.volumes import SliceError, load_nifti
from tests.cli import assert_clean_error, run_script

SCRIPT = "preprocess/slice_nnunet.py"
SHAPE = (64, 64)
TINY = (8, 6, 5)  # voxels of the hand-made cases
TINY_ZOOMS = (1.0, 2.5, 1.5)  # mm: the coarsest axis is the middle one, as in the stand-in


# ------------------------------------------------------------------------------ helpers


def slice_cli(source: Path, dest: Path, *args: object) -> subprocess.CompletedProcess:
    """Run the slicer's command line on `source` into `dest`."""
    return run_script(SCRIPT, "--source_dir", source, "--dest_dir", dest, *args)


def sliced(source: Path, dest: Path, *args: object) -> Path:
    """Slice and check that the run succeeded; returns `dest`."""
    proc = slice_cli(source, dest, *args)
    assert proc.returncode == 0, proc.stderr
    return dest


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, content: object) -> None:
    path.write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")


def load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def zooms(path: Path) -> tuple[float, float, float]:
    return tuple(float(z) for z in nib.load(str(path)).header.get_zooms()[:3])


def save_nii(path: Path, data: np.ndarray, spacing=TINY_ZOOMS, affine=None) -> Path:
    """Write `data` with its dtype and a diagonal affine of `spacing` (mm), unless given one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if affine is None:
        affine = np.diag([*spacing[:3], 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def stored_header(path: Path) -> nib.Nifti1Header:
    """The header as the file stores it (nibabel's load replaces a pixdim of 0 by 1)."""
    with nib.openers.ImageOpener(str(path)) as handle:
        return nib.Nifti1Header.from_fileobj(handle, check=False)


def unset_pixdim(path: Path, sform: bool = True) -> Path:
    """Write `path` again with its voxel sizes unset (pixdim[1:4] = 0), as writers that fill
    only the sform leave them; with `sform` False, without an sform or a qform either."""
    image = nib.load(str(path))
    out = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine if sform else None)
    out.header["pixdim"][1:4] = 0
    nib.save(out, str(path))
    stored = stored_header(path)
    assert stored["pixdim"][1:4].tolist() == [0, 0, 0]
    assert (int(stored["sform_code"]) > 0) == sform and int(stored["qform_code"]) == 0
    return path


def nan_pixdim(path: Path, axis: int) -> Path:
    """Write `path` again with a NaN voxel size along `axis`, its sform untouched."""
    image = nib.load(str(path))
    out = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine)
    out.header["pixdim"][1 + axis] = np.nan
    nib.save(out, str(path))
    assert np.isnan(stored_header(path)["pixdim"][1 + axis])
    return path


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`: relative POSIX path -> content."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def slice_stems(split_dir: Path, case: str) -> list[str]:
    """The in_npy stems of one case in a split folder, in slice order."""
    return sorted(p.stem for p in (split_dir / "in_npy").glob(f"{case}_00_*.npy"))


# ------------------------------------------------------------------------------ small datasets


def tiny_case(number: int, values=(1,)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CT int16, T2 int16, labels uint8) of one hand-made case: a box of each label value."""
    rng = np.random.default_rng(number)
    ct = rng.integers(-200, 300, TINY).astype(np.int16)
    t2 = rng.integers(0, 800, TINY).astype(np.int16)
    labels = np.zeros(TINY, np.uint8)
    labels[1:6, 1:5, 1:4] = values[0]
    for value in values[1:]:
        labels[2 + number % 3 : 7, 2:4, 2:5] = value
    return ct, t2, labels


def make_nnunet(
    root: Path,
    n_cases: int = 3,
    labels: dict | None = None,
    values=(1,),
    **extra: object,
) -> Path:
    """An nnU-Net v2 raw dataset of `n_cases` hand-made cases, channels CT and T2."""
    spec = {
        "channel_names": {"0": "CT", "1": "T2"},
        "labels": labels or {"background": 0, "a": 1},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        **extra,
    }
    root.mkdir(parents=True)
    write_json(root / "dataset.json", spec)
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    for number in range(1, n_cases + 1):
        ct, t2, label = tiny_case(number, values)
        save_nii(root / "imagesTr" / f"case_{number:03d}_0000.nii.gz", ct)
        save_nii(root / "imagesTr" / f"case_{number:03d}_0001.nii.gz", t2)
        save_nii(root / "labelsTr" / f"case_{number:03d}.nii.gz", label)
    return root


def make_msd(root: Path, n_cases: int = 3, **extra: object) -> Path:
    """A Decathlon task of `n_cases` hand-made cases, one 4D image (CT, T2) per case."""
    names = [f"case_{n:03d}" for n in range(1, n_cases + 1)]
    spec = {
        "modality": {"0": "CT", "1": "T2"},
        "labels": {"0": "background", "1": "a"},
        "numTraining": n_cases,
        "training": [
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
            for name in names
        ],
        "test": [],
        **extra,
    }
    root.mkdir(parents=True)
    write_json(root / "dataset.json", spec)
    for number, name in enumerate(names, 1):
        ct, t2, label = tiny_case(number)
        save_nii(root / "imagesTr" / f"{name}.nii.gz", np.stack([ct, t2], axis=-1))
        save_nii(root / "labelsTr" / f"{name}.nii.gz", label)
    return root


def edit_json(path: Path, **changes: object) -> None:
    """Change entries of a JSON object file in place."""
    content = read_json(path)
    content.update(changes)
    write_json(path, content)


FIVE_FOLDS = [
    {"train": ["case_002", "case_003"], "val": ["case_001"]},
    {"train": ["case_003", "case_001"], "val": ["case_002"]},
    {"train": ["case_001", "case_002"], "val": ["case_003"]},
    {"train": ["case_002", "case_001"], "val": ["case_003"]},
    {"train": ["case_003"], "val": ["case_001", "case_002"]},
]


# ------------------------------------------------------------------------------ bad input
#
# Each builder writes a bad dataset under `folder` and returns (source, extra arguments, what the
# error line must name).


def bad_missing_json(folder: Path):
    root = make_nnunet(folder / "ds")
    (root / "dataset.json").unlink()
    return root, [], [f"{root / 'dataset.json'}: file not found", "supported:"]


def bad_invalid_json(folder: Path):
    root = make_nnunet(folder / "ds")
    (root / "dataset.json").write_text('{"channel_names": {"0": "CT"},', encoding="utf-8")
    return root, [], [f"{root / 'dataset.json'}: not valid JSON", "line 1"]


def bad_json_not_object(folder: Path):
    root = make_nnunet(folder / "ds")
    write_json(root / "dataset.json", [{"channel_names": {"0": "CT"}}])
    return root, [], [f"{root / 'dataset.json'}: expected a JSON object"]


def bad_json_no_channels(folder: Path):
    root = make_nnunet(folder / "ds")
    spec = read_json(root / "dataset.json")
    del spec["channel_names"]
    write_json(root / "dataset.json", spec)
    return root, [], [f"{root / 'dataset.json'}: needs channel_names (nnU-Net v2) or modality"]


def bad_missing_channel(folder: Path):
    root = make_nnunet(folder / "ds")
    missing = root / "imagesTr" / "case_002_0001.nii.gz"
    missing.unlink()
    return root, [], [f"{missing}: file not found", "channel 1 of case case_002"]


def bad_label_shape(folder: Path):
    root = make_nnunet(folder / "ds")
    label = root / "labelsTr" / "case_003.nii.gz"
    save_nii(label, np.zeros((8, 6, 4), np.uint8))
    return root, [], [f"{label}: label shape (8, 6, 4) differs", "expected the label on the image"]


def bad_label_affine(folder: Path):
    root = make_nnunet(folder / "ds")
    label = root / "labelsTr" / "case_001.nii.gz"
    affine = np.diag([*TINY_ZOOMS, 1.0])
    affine[:3, 3] = (5.0, 0.0, 0.0)  # the same voxels, 5 mm away
    save_nii(label, tiny_case(1)[2], affine=affine)
    return root, [], [f"{label}: affine", "differs from", "on one grid"]


def bad_undeclared_label(folder: Path):
    root = make_nnunet(folder / "ds")
    label = root / "labelsTr" / "case_002.nii.gz"
    save_nii(label, tiny_case(2, values=(1, 7))[2])
    return root, [], [f"{label}: label values [7] outside the dataset's classes [0, 1]"]


def bad_msd_channel_count(folder: Path):
    root = make_msd(folder / "ds")
    image = root / "imagesTr" / "case_002.nii.gz"
    ct, t2, _ = tiny_case(2)
    save_nii(image, np.stack([ct, t2, t2], axis=-1))
    return root, [], [f"{image}: shape (8, 6, 5, 3) holds 3 channels", "expected 2"]


def bad_nan_ct_training(folder: Path):
    """NaN in the CT foreground of a training case: met by the CT statistics first."""
    root = make_nnunet(folder / "ds")
    write_json(root / "splits_final.json", FIVE_FOLDS)  # fold 0 trains on case_002, case_003
    image = root / "imagesTr" / "case_002_0000.nii.gz"
    ct = tiny_case(2)[0].astype(np.float32)
    ct[3, 3, 2] = np.nan  # inside the label box
    save_nii(image, ct)
    return root, [], [f"{image}: 1 NaN and 0 infinite voxels", "finite values only"]


def bad_nan_t2_validation(folder: Path):
    root = make_nnunet(folder / "ds")
    write_json(root / "splits_final.json", FIVE_FOLDS)  # fold 0 validates on case_001
    image = root / "imagesTr" / "case_001_0001.nii.gz"
    t2 = tiny_case(1)[1].astype(np.float32)
    t2[0, 0, 0] = t2[7, 5, 4] = np.nan
    save_nii(image, t2)
    return root, [], [f"{image}: 2 NaN and 0 infinite voxels"]


def bad_msd_empty_training(folder: Path):
    root = make_msd(folder / "ds")
    edit_json(root / "dataset.json", training=[], numTraining=0)
    return root, [], [f"{root / 'dataset.json'}: the training list is empty"]


def bad_nnunet_no_training(folder: Path):
    root = make_nnunet(folder / "ds", n_cases=0)
    return root, [], [f"{root / 'imagesTr'}: no training case", "_0000.nii.gz"]


def bad_msd_listed_twice(folder: Path):
    root = make_msd(folder / "ds")
    spec = read_json(root / "dataset.json")
    training = [*spec["training"], spec["training"][1]]
    edit_json(root / "dataset.json", training=training, numTraining=len(training))
    return root, [], [f"{root / 'dataset.json'}: case case_002 is listed twice", "entries 1 and 3"]


def bad_region_labels(folder: Path):
    root = make_nnunet(folder / "ds", labels={"background": 0, "whole": [1, 2]})
    return (
        root,
        [],
        [
            f"{root / 'dataset.json'}: label 'whole' is the region [1, 2]",
            "region-based labels are not supported",
            "one integer per label",
            "supported: nnU-Net v2 raw datasets",
        ],
    )


def bad_png_ending(folder: Path):
    root = make_nnunet(folder / "ds", file_ending=".png")
    return (
        root,
        [],
        [
            f"{root / 'dataset.json'}: file_ending '.png' is not supported",
            "only NIfTI (.nii.gz, .nii)",
        ],
    )


def bad_splits_unknown_case(folder: Path):
    root = make_nnunet(folder / "ds")
    path = root / "splits_final.json"
    write_json(path, [{"train": ["case_001", "case_002"], "val": ["case_009"]}])
    return root, [], [f"{path}: fold 0 names unknown cases ['case_009']"]


def bad_fold_out_of_range(folder: Path):
    root = make_nnunet(folder / "ds")
    path = root / "splits_final.json"
    write_json(path, FIVE_FOLDS)
    return root, ["--fold", "7"], [f"{path}: no fold 7", "folds 0 .. 4"]


def bad_axis(folder: Path):
    return make_nnunet(folder / "ds"), ["--axis", "3"], ["--axis 3: expected auto, 0, 1 or 2"]


def bad_ignore_label(folder: Path):
    root = make_nnunet(folder / "ds", labels={"background": 0, "a": 1, "ignore": 2})
    return root, [], [f"{root / 'dataset.json'}: label 'ignore' is nnU-Net's ignore label"]


def bad_fold_without_splits(folder: Path):
    root = make_nnunet(folder / "ds")
    needles = [f"--fold 5: {root} has no splits_final.json", "5 seeded ones", "expected 0 .. 4"]
    return root, ["--fold", "5"], needles


def bad_test_image_channels(folder: Path):
    """A test image with a channel too many is found when slicing, not after the trainings."""
    root = make_msd(folder / "ds", test=["./imagesTs/case_101.nii.gz"])
    ct, t2, _ = tiny_case(101)
    image = save_nii(root / "imagesTs" / "case_101.nii.gz", np.stack([ct, t2, t2], axis=-1))
    return root, [], [f"{image}: shape (8, 6, 5, 3) holds 3 channels", "expected 2"]


def bad_splits_case_twice(folder: Path):
    root = make_nnunet(folder / "ds")
    path = root / "splits_final.json"
    folds = [dict(fold) for fold in FIVE_FOLDS]
    folds[1] = {"train": ["case_003", "case_001", "case_003"], "val": ["case_002"]}
    write_json(path, folds)
    return root, [], [f"{path}: fold 1 lists case case_003 2 times in 'train'", "expected each"]


def bad_unset_pixdim_without_sform(folder: Path):
    """Every file's voxel sizes unset and no sform: nothing says the spacing."""
    root = make_nnunet(folder / "ds")
    for path in sorted(root.rglob("*.nii.gz")):
        unset_pixdim(path, sform=False)
    first = root / "imagesTr" / "case_001_0000.nii.gz"
    return root, [], [f"{first}: voxel sizes unset (pixdim[1:4] [0, 0, 0]", "no usable sform"]


def bad_nan_pixdim(folder: Path):
    """A NaN voxel size in the first channel of one training case (the one the axis is chosen
    from), its sform intact: a damaged header is refused, whatever the sform says."""
    root = make_nnunet(folder / "ds")
    image = nan_pixdim(root / "imagesTr" / "case_002_0000.nii.gz", axis=1)
    return root, [], [f"{image}: expected three finite positive voxel sizes", "nan"]


def bad_2d_file(folder: Path):
    """One 2D file among the 3D cases."""
    root = make_nnunet(folder / "ds")
    image = save_nii(root / "imagesTr" / "case_002_0000.nii.gz", tiny_case(2)[0][:, :, 0])
    return root, [], [f"{image}: expected a 3D volume, got shape (8, 6)"]


def bad_2d_label(folder: Path):
    """A 2D label file: its header is checked with the images', before the axis is chosen."""
    root = make_nnunet(folder / "ds")
    label = save_nii(root / "labelsTr" / "case_003.nii.gz", tiny_case(3)[2][:, :, 0])
    return root, ["--axis", "2"], [f"{label}: expected a 3D volume, got shape (8, 6)"]


def outside_image(folder: Path) -> Path:
    """A 4D image of case_002 outside the dataset folder."""
    ct, t2, _ = tiny_case(2)
    return save_nii(folder / "elsewhere" / "case_002.nii.gz", np.stack([ct, t2], axis=-1))


def bad_msd_absolute_path(folder: Path):
    """A training image named by its absolute path, a file outside the dataset folder."""
    root = make_msd(folder / "ds")
    outside = outside_image(folder)
    spec = read_json(root / "dataset.json")
    spec["training"][1]["image"] = str(outside)
    write_json(root / "dataset.json", spec)
    return (
        root,
        [],
        [
            f"{root / 'dataset.json'}: training entry 1's image '{outside}' is an absolute path",
            "expected a path inside the dataset folder",
        ],
    )


def bad_msd_path_leaving_the_folder(folder: Path):
    """A training image named by a path that leaves the dataset folder with `..`."""
    root = make_msd(folder / "ds")
    outside_image(folder)
    spec = read_json(root / "dataset.json")
    spec["training"][1]["image"] = "./../elsewhere/case_002.nii.gz"
    write_json(root / "dataset.json", spec)
    return (
        root,
        [],
        [
            f"{root / 'dataset.json'}: training entry 1's image './../elsewhere/case_002.nii.gz' "
            "holds '..'",
        ],
    )


def with_test_images(root: Path, cases: dict[str, int]) -> dict[str, list[Path]]:
    """Write nnU-Net test images (imagesTs/<name>_000X.nii.gz) of hand-made cases:
    name -> the number of the case whose voxels it holds. Returns name -> its channel files."""
    written = {}
    for name, number in cases.items():
        ct, t2, _ = tiny_case(number)
        written[name] = [
            save_nii(root / "imagesTs" / f"{name}_{c:04d}.nii.gz", image)
            for c, image in enumerate((ct, t2))
        ]
    return written


def bad_nan_test_image(folder: Path):
    """A NaN in one channel of a test image: found when slicing, not after every training."""
    root = make_nnunet(folder / "ds")
    written = with_test_images(root, {"test_101": 101, "test_102": 102})
    image = written["test_102"][1]
    t2 = tiny_case(102)[1].astype(np.float32)
    t2[4, 2, 3] = np.nan
    save_nii(image, t2)
    return root, [], [f"{image}: 1 NaN and 0 infinite voxels", "finite values only"]


def bad_test_case_named_like_training(folder: Path):
    root = make_nnunet(folder / "ds")
    with_test_images(root, {"test_101": 101, "case_002": 102})
    test = root / "imagesTs" / "case_002_0000.nii.gz"
    train = root / "imagesTr" / "case_002_0000.nii.gz"
    return (
        root,
        [],
        [f"{test}: test case case_002 has the name of the training case {train}", "distinct"],
    )


def bad_msd_test_case_named_like_training(folder: Path):
    root = make_msd(folder / "ds", test=["./imagesTs/case_003.nii.gz"])
    ct, t2, _ = tiny_case(103)
    test = save_nii(root / "imagesTs" / "case_003.nii.gz", np.stack([ct, t2], axis=-1))
    return (
        root,
        [],
        [
            f"{test}: test case case_003, listed in {root / 'dataset.json'}, has the name of the "
            f"training case {root / 'imagesTr' / 'case_003.nii.gz'}",
        ],
    )


BAD_INPUTS = {
    "missing dataset.json": bad_missing_json,
    "invalid JSON": bad_invalid_json,
    "JSON not an object": bad_json_not_object,
    "neither channel_names nor modality": bad_json_no_channels,
    "missing channel": bad_missing_channel,
    "label shape": bad_label_shape,
    "label affine": bad_label_affine,
    "undeclared label value": bad_undeclared_label,
    "MSD channel count": bad_msd_channel_count,
    "NaN in CT foreground of a training case": bad_nan_ct_training,
    "NaN in T2 of a validation case": bad_nan_t2_validation,
    "empty MSD training list": bad_msd_empty_training,
    "no nnU-Net training case": bad_nnunet_no_training,
    "MSD case listed twice": bad_msd_listed_twice,
    "region-based labels": bad_region_labels,
    "png file ending": bad_png_ending,
    "splits_final.json unknown case": bad_splits_unknown_case,
    "fold out of range": bad_fold_out_of_range,
    "unknown axis": bad_axis,
    "ignore label": bad_ignore_label,
    "fold 5 without splits_final.json": bad_fold_without_splits,
    "test image channel count": bad_test_image_channels,
    "splits_final.json case twice in a fold": bad_splits_case_twice,
    "pixdim unset without sform": bad_unset_pixdim_without_sform,
    "NaN pixdim": bad_nan_pixdim,
    "2D file among 3D cases": bad_2d_file,
    "2D label file": bad_2d_label,
    "MSD absolute path": bad_msd_absolute_path,
    "MSD path leaving the folder": bad_msd_path_leaving_the_folder,
    "NaN in a test image": bad_nan_test_image,
    "test case named like a training case": bad_test_case_named_like_training,
    "MSD test case named like a training case": bad_msd_test_case_named_like_training,
}


def slice_in_process(source: Path, dest: Path, *args: object) -> subprocess.CompletedProcess:
    """The slicer's command line (`slice_nnunet.main`) run in this process, its output captured
    as a finished process's would be; an exception escaping it shows as a traceback on stderr."""
    argv = [str(a) for a in ("--source_dir", source, "--dest_dir", dest, *args)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = slice_nnunet.main(argv)
        except Exception:  # reported as the script would show it
            err.write(traceback.format_exc())
            status = 1
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, tuple]:
    """Every bad dataset sliced through the command line's entry, in this process (the script
    itself is run by the other tests of this module).

    Returns:
        name -> (finished process, destination folder, what the error must name).
    """
    runs = {}
    for number, (name, build) in enumerate(BAD_INPUTS.items()):
        folder = tmp_path_factory.mktemp(f"bad{number:02d}")
        source, args, needles = build(folder)
        dest = folder / "out"
        proc = slice_in_process(source, dest, "--shape", *SHAPE, "--workers", 1, *args)
        runs[name] = (proc, dest, needles)
    return runs


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_cli_bad_input_one_error_line_nothing_written(name, bad_runs):
    proc, dest, needles = bad_runs[name]
    assert proc.returncode == 1, proc.stderr
    assert_clean_error(proc, *needles)
    assert not dest.exists() and not dest.with_name(dest.name + "_tmp").exists()
    assert not any(dest.parent.glob("out*"))


def test_read_dataset_refusals(tmp_path):
    """Forms refused by the reader itself, each naming the file and what is supported."""
    root = make_nnunet(tmp_path / "regions", labels={"background": 0, "whole": [1, 2]})
    with pytest.raises(DatasetError, match="region-based labels are not supported") as error:
        read_dataset(root)
    assert str(root / "dataset.json") in str(error.value)

    root = make_nnunet(tmp_path / "order", regions_class_order=[1, 2])
    with pytest.raises(DatasetError, match="region-based labels are not supported"):
        read_dataset(root)

    root = make_nnunet(tmp_path / "png", file_ending=".png")
    with pytest.raises(DatasetError, match=r"file_ending '\.png' is not supported: only NIfTI"):
        read_dataset(root)

    root = make_nnunet(tmp_path / "listed", dataset={"case_001": {}})
    with pytest.raises(DatasetError, match="explicit 'dataset' file list is not supported"):
        read_dataset(root)

    root = make_nnunet(tmp_path / "count", numTraining=4)
    with pytest.raises(DatasetError, match="numTraining is 4 but 3 training cases were found"):
        read_dataset(root)

    root = make_nnunet(tmp_path / "orphan")
    (root / "imagesTr" / "case_003_0000.nii.gz").unlink()
    (root / "imagesTr" / "case_003_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="labels without images") as error:
        read_dataset(root)
    assert str(root / "labelsTr" / "case_003.nii.gz") in str(error.value)

    root = make_nnunet(tmp_path / "extra")
    save_nii(root / "imagesTr" / "case_001_0002.nii.gz", tiny_case(1)[0])
    with pytest.raises(DatasetError, match="channel 2 of case case_001, but dataset.json"):
        read_dataset(root)

    root = make_msd(tmp_path / "msd_both")
    edit_json(root / "dataset.json", channel_names={"0": "CT", "1": "T2"})
    with pytest.raises(DatasetError, match="needs channel_names"):
        read_dataset(root)

    with pytest.raises(DatasetError, match="folder not found"):
        read_dataset(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "folds",
    [
        [{"train": 5, "val": ["case_001"]}],
        [{"train": ["case_002", ["case_003"]], "val": ["case_001"]}],
        [{"train": "case_002", "val": ["case_001"]}],
        {"train": ["case_002"], "val": ["case_001"]},
        [{"train": ["case_002", "case_001"], "val": ["case_001"]}],
        [{"train": [], "val": ["case_001"]}],
    ],
)
def test_read_dataset_refuses_malformed_splits(folds, tmp_path):
    root = make_nnunet(tmp_path / "ds")
    write_json(root / "splits_final.json", folds)
    with pytest.raises(DatasetError) as error:
        read_dataset(root)
    assert str(root / "splits_final.json") in str(error.value)


def test_msd_task_with_splits_final_uses_its_folds(tmp_path):
    root = make_msd(tmp_path / "ds")
    write_json(root / "splits_final.json", FIVE_FOLDS)
    description = read_dataset(root)
    assert description.folds[1] == (("case_001", "case_003"), ("case_002",))
    assert root / "splits_final.json" in description.files()


def test_read_dataset_refuses_malformed_msd_test_list(tmp_path):
    root = make_msd(tmp_path / "ds", test=5)
    with pytest.raises(DatasetError, match="test") as error:
        read_dataset(root)
    assert str(root / "dataset.json") in str(error.value)


@pytest.mark.parametrize("part", ["train", "val"])
def test_read_dataset_refuses_a_case_listed_twice_in_a_fold(part, tmp_path):
    root = make_nnunet(tmp_path / "ds", n_cases=4)
    folds = [
        {"train": ["case_001", "case_002"], "val": ["case_003", "case_004"]},
        {"train": ["case_003", "case_004"], "val": ["case_001", "case_002"]},
    ]
    folds[1][part] = [*folds[1][part], folds[1][part][0]]
    write_json(root / "splits_final.json", folds)
    twice = folds[1][part][0]
    with pytest.raises(DatasetError) as error:
        read_dataset(root)
    assert str(error.value).startswith(
        f"{root / 'splits_final.json'}: fold 1 lists case {twice} 2 times in '{part}'"
    )


@pytest.mark.parametrize("listing", ["training", "test"])
@pytest.mark.parametrize("entry", ["absolute", "..", "./imagesTr/../imagesTr/x.nii.gz"])
def test_read_dataset_refuses_msd_files_outside_the_folder(listing, entry, tmp_path):
    """Refused by the reader, before the file is looked for: it need not even exist."""
    root = make_msd(tmp_path / "ds")
    named = {"absolute": str(tmp_path / "x.nii.gz"), "..": "../x.nii.gz"}.get(entry, entry)
    spec = read_json(root / "dataset.json")
    if listing == "training":
        spec["training"][0]["label"] = named
        what = "training entry 0's label"
    else:
        spec["test"] = [named]
        what = "test image"
    write_json(root / "dataset.json", spec)
    reason = "is an absolute path" if entry == "absolute" else "holds '..'"
    with pytest.raises(DatasetError) as error:
        read_dataset(root)
    assert str(error.value).startswith(f"{root / 'dataset.json'}: {what} {named!r} {reason}")


def test_read_dataset_refuses_test_cases_named_like_training_cases(tmp_path):
    root = make_nnunet(tmp_path / "nnunet")
    with_test_images(root, {"case_001": 101})
    with pytest.raises(DatasetError) as error:
        read_dataset(root)
    assert str(error.value).startswith(
        f"{root / 'imagesTs' / 'case_001_0000.nii.gz'}: test case case_001 has the name of the "
        f"training case {root / 'imagesTr' / 'case_001_0000.nii.gz'}"
    )
    # distinct names are read as before
    root = make_nnunet(tmp_path / "distinct")
    with_test_images(root, {"test_101": 101})
    assert [c.cid for c in read_dataset(root).test] == ["test_101"]


# ------------------------------------------------------------------------------ voxel sizes
#
# A rotated sform: voxel axis 0 runs along world y (2.5 mm), axis 1 along z (0.9 mm), axis 2
# along -x (1.5 mm): the column norms of its 3 x 3 part.

ROTATED = np.array([[0, 0, -1.5, 10], [2.5, 0, 0, 0], [0, 0.9, 0, 5], [0, 0, 0, 1.0]])
ROTATED_SPACING = (2.5, 0.9, 1.5)


def test_load_nifti_takes_unset_voxel_sizes_from_the_sform(tmp_path):
    labels = tiny_case(1)[2]
    path = unset_pixdim(save_nii(tmp_path / "unset.nii.gz", labels, affine=ROTATED))
    data, spacing, affine = load_nifti(path)
    assert spacing == pytest.approx(ROTATED_SPACING, rel=1e-6)
    np.testing.assert_allclose(affine, ROTATED, atol=1e-6)
    np.testing.assert_array_equal(data, labels)
    # The labels predict.py writes on that grid carry the source's spacing in their pixdim (not
    # nibabel's 1 mm) with its sform: any tool reading them gets the spacing slices were made at.
    from boundary_loss.inference.steps import write_labels

    prediction = write_labels(labels, path, tmp_path / "prediction.nii.gz")
    pixdim = stored_header(prediction)["pixdim"][1:4].tolist()
    assert pixdim == pytest.approx(ROTATED_SPACING, rel=1e-6)
    assert load_nifti(prediction)[1] == pytest.approx(ROTATED_SPACING, rel=1e-6)
    np.testing.assert_allclose(load_nifti(prediction)[2], ROTATED, atol=1e-6)


def test_load_nifti_keeps_voxel_sizes_that_are_set(tmp_path):
    """Set pixdim are kept as nibabel's float32 zooms exactly, as the original reads them, even
    where the sform says otherwise."""
    spacing = (0.9, 2.5, 1.3)
    path = save_nii(tmp_path / "plain.nii.gz", tiny_case(1)[0], spacing=spacing)
    assert load_nifti(path)[1] == tuple(float(np.float32(s)) for s in spacing)
    without_sform = nib.Nifti1Image(tiny_case(1)[0], None)
    without_sform.header.set_zooms(spacing)
    nib.save(without_sform, str(tmp_path / "qform.nii.gz"))
    assert load_nifti(tmp_path / "qform.nii.gz")[1] == tuple(float(np.float32(s)) for s in spacing)
    contradicted = nib.Nifti1Image(tiny_case(1)[0], np.diag([2.0, 2.0, 2.0, 1.0]))
    contradicted.header.set_zooms(spacing)  # pixdim set, the sform left at 2 mm
    nib.save(contradicted, str(tmp_path / "contradicted.nii.gz"))
    assert load_nifti(tmp_path / "contradicted.nii.gz")[1] == pytest.approx(spacing, rel=1e-6)


def test_load_nifti_refuses_voxel_sizes_nothing_gives(tmp_path):
    unset = unset_pixdim(save_nii(tmp_path / "unset.nii.gz", tiny_case(1)[0]), sform=False)
    with pytest.raises(SliceError) as error:
        load_nifti(unset)
    assert str(error.value).startswith(f"{unset}: voxel sizes unset (pixdim[1:4] [0, 0, 0]")
    assert "no usable sform (sform_code 0)" in str(error.value)

    collinear = np.array([[1.0, 2.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.5, 0], [0, 0, 0, 1]])
    degenerate = unset_pixdim(save_nii(tmp_path / "flat.nii.gz", tiny_case(1)[0], affine=collinear))
    with pytest.raises(SliceError, match="no usable sform") as error:
        load_nifti(degenerate)
    assert str(error.value).startswith(f"{degenerate}: voxel sizes unset")

    broken = nan_pixdim(save_nii(tmp_path / "nan.nii.gz", tiny_case(1)[0]), axis=2)
    with pytest.raises(SliceError) as error:
        load_nifti(broken)
    assert str(error.value) == (
        f"{broken}: expected three finite positive voxel sizes (pixdim[1:4], mm), got "
        "(1.0, 2.5, nan)"
    )


def test_unset_voxel_sizes_slice_with_the_spacing_of_the_sform(tmp_path):
    """Every file's pixdim unset, the sform of TINY_ZOOMS kept: the axis and the spacings are
    the sform's (nibabel's 1 mm on every axis would slice along the last axis)."""
    root = make_nnunet(tmp_path / "ds")
    write_json(root / "splits_final.json", FIVE_FOLDS)
    for path in sorted(root.rglob("*.nii.gz")):
        unset_pixdim(path)
    X, _, Z = TINY
    dest = sliced(root, tmp_path / "out", "--shape", X, Z, "--workers", 1)
    assert read_json(dest / "source.json")["axis"] == 1
    dx, dy, dz = TINY_ZOOMS
    spacing_3d = read_json(dest / "spacing_3d.json")
    assert sorted(spacing_3d) == ["case_001", "case_002", "case_003"]
    for spacing in spacing_3d.values():
        assert spacing == pytest.approx([dx, dz, dy], rel=1e-6)


# ------------------------------------------------------------------------------ the stand-in


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict[str, Path]:
    """The stand-in cohort of seed 0 in both layouts."""
    dest = tmp_path_factory.mktemp("standin")
    return {"nnunet": write_nnunet(dest), "msd": write_msd(dest)}


@pytest.fixture(scope="module")
def nnunet_out(standin, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("nnunet_out") / "out"
    return sliced(standin["nnunet"], dest, "--shape", *SHAPE, "--workers", 2)


@pytest.fixture(scope="module")
def msd_out(standin, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("msd_out") / "out"
    return sliced(standin["msd"], dest, "--shape", *SHAPE, "--workers", 2)


def test_standin_description(standin):
    nnunet, msd = read_dataset(standin["nnunet"]), read_dataset(standin["msd"])
    assert (nnunet.layout, msd.layout) == (NNUNET, MSD)
    for description in (nnunet, msd):
        assert description.channels == ("CT", "T2")
        assert description.schemes == ("ct", "zscore")
        assert description.labels == (("background", 0), ("organ", 1), ("lesion", 2), ("vessel", 3))
        assert [c.cid for c in description.training] == [f"standin_{n:03d}" for n in range(1, 17)]
        assert [c.cid for c in description.test] == [f"standin_{n:03d}" for n in range(101, 105)]
        assert description.folds is None
    assert all(len(c.images) == 2 and not c.four_d for c in nnunet.training)
    assert all(len(c.images) == 1 and c.four_d for c in msd.training)


def test_msd_copy_slices_like_the_nnunet_copy(standin, nnunet_out, msd_out):
    nnunet, msd = files_of(nnunet_out), files_of(msd_out)
    assert sorted(nnunet) == sorted(msd)
    assert len(nnunet) > 100
    special = {"source.json", "split.json"}
    differing = [name for name in nnunet if name not in special and nnunet[name] != msd[name]]
    assert not differing, differing[:10]

    sources = [read_json(nnunet_out / "source.json"), read_json(msd_out / "source.json")]
    assert sources[0]["dataset"] == str(standin["nnunet"].resolve())
    assert sources[1]["dataset"] == str(standin["msd"].resolve())
    assert [s["name"] for s in sources] == ["Dataset990_StandIn", "Task990_StandIn"]
    assert [s["layout"] for s in sources] == [NNUNET, MSD]
    for source in sources:
        for key in ("dataset", "name", "layout"):
            del source[key]
    assert sources[0] == sources[1]

    splits = [read_json(nnunet_out / "split.json"), read_json(msd_out / "split.json")]
    assert [s.pop("dataset") for s in splits] == ["Dataset990_StandIn", "Task990_StandIn"]
    assert splits[0] == splits[1]


def test_standin_slices_along_its_coarsest_axis(standin, nnunet_out):
    source = read_json(nnunet_out / "source.json")
    split = read_json(nnunet_out / "split.json")
    assert source["axis"] == 1
    assert source["channels"] == ["CT", "T2"]
    assert source["labels"] == {"background": 0, "organ": 1, "lesion": 2, "vessel": 3}
    assert source["test"] == [f"standin_{n:03d}" for n in range(101, 105)]
    assert split["shape"] == list(SHAPE) and len(split["val"]) == 3 and "fold" not in split
    assert sorted(split["train"] + split["val"]) == [f"standin_{n:03d}" for n in range(1, 17)]

    spacing_3d = read_json(nnunet_out / "spacing_3d.json")
    assert sorted(spacing_3d) == sorted(split["train"] + split["val"])
    for case in split["train"] + split["val"]:
        image = standin["nnunet"] / "imagesTr" / f"{case}_0000.nii.gz"
        (X, Y, Z), (dx, dy, dz) = load(image).shape, zooms(image)
        assert spacing_3d[case] == pytest.approx([dx * X / 64, dz * Z / 64, dy], rel=1e-9)
    for case in split["val"]:
        Y = load(standin["nnunet"] / "labelsTr" / f"{case}.nii.gz").shape[1]
        assert slice_stems(nnunet_out / "val", case) == [f"{case}_00_{y:04d}" for y in range(Y)]
        spacing = read_json(nnunet_out / "val" / "spacing.json")
        assert all(spacing[f"{case}_00_{y:04d}"] == spacing_3d[case] for y in range(Y))
        gt = np.load(nnunet_out / "val" / "gt_npy" / f"{case}_00_0000.npy")
        assert gt.shape == SHAPE and gt.dtype == np.uint8
        image = np.load(nnunet_out / "val" / "in_npy" / f"{case}_00_0000.npy")
        assert image.shape == (2, *SHAPE) and image.dtype == np.float32
    # one png folder per channel, named after it in lower case
    assert sorted(p.name for p in (nnunet_out / "val").iterdir()) == [
        "3d_distmap",
        "ct",
        "gt",
        "gt_npy",
        "in_npy",
        "spacing.json",
        "t2",
    ]


def test_axis_2_slices_along_the_last_axis(standin, tmp_path):
    dest = sliced(
        standin["nnunet"], tmp_path / "out", "--shape", *SHAPE, "--workers", 2, "--axis", 2
    )
    assert read_json(dest / "source.json")["axis"] == 2
    split = read_json(dest / "split.json")
    spacing_3d = read_json(dest / "spacing_3d.json")
    for case in split["val"]:
        label = standin["nnunet"] / "labelsTr" / f"{case}.nii.gz"
        (X, Y, Z), (dx, dy, dz) = load(label).shape, zooms(label)
        assert slice_stems(dest / "val", case) == [f"{case}_00_{z:04d}" for z in range(Z)]
        assert spacing_3d[case] == pytest.approx([dx * X / 64, dy * Y / 64, dz], rel=1e-9)


# ------------------------------------------------------------------------------ normalisation


def foreground_statistics(root: Path, cases: list[str]) -> tuple[float, float, float, float]:
    """0.5 and 99.5 percentiles, mean and std of the CT foreground voxels (label != 0)."""
    voxels = []
    for case in cases:
        ct = load(root / "imagesTr" / f"{case}_0000.nii.gz").astype(np.float64)
        label = load(root / "labelsTr" / f"{case}.nii.gz")
        voxels.append(ct[label != 0])
    voxels = np.concatenate(voxels)
    low, high = np.percentile(voxels, [0.5, 99.5])
    return float(low), float(high), float(voxels.mean()), float(voxels.std())


def test_ct_statistics_are_the_training_foreground(standin, nnunet_out):
    split = read_json(nnunet_out / "split.json")
    low, high, mean, std = foreground_statistics(standin["nnunet"], split["train"])
    norms = read_json(nnunet_out / "source.json")["normalisation"]
    assert norms[0][0] == "ct"
    assert norms[0][1:] == pytest.approx([low, high, mean, std], rel=1e-12)
    assert norms[1] == ["zscore"]
    # the validation cases are left out: with them the figures differ
    everything = foreground_statistics(standin["nnunet"], split["train"] + split["val"])
    assert everything[2:] != pytest.approx([mean, std], rel=1e-6)


# ------------------------------------------------------------------------------ seeded folds


def test_seeded_folds_without_splits_final(standin):
    """Without splits_final.json, fold 0 is the seeded split and folds 1 .. 4 share the rest."""
    description = read_dataset(standin["nnunet"])
    ids = [case.cid for case in description.training]
    retain = default_retain(len(ids))
    assert (len(ids), retain) == (16, 3)
    train, val, entries = split_cases(description, 0, ids, retain, 0)
    assert (train, val) == split_patients(ids, retain, 0) and entries == {}
    validated = []
    for fold in range(5):
        train, val, entries = split_cases(description, fold, reversed(ids), retain, 0)
        assert val == seeded_folds(ids, retain, 0)[fold]
        assert sorted(train + val) == ids and not set(train) & set(val)
        assert entries == ({} if fold == 0 else {"fold": fold, "folds": 5})
        assert len(val) == (3, 4, 3, 3, 3)[fold]
        assert split_cases(description, fold, ids, retain, 0) == (train, val, entries)
        validated += val
    assert sorted(validated) == ids  # each case validated once
    seeded = {seed: split_cases(description, 2, ids, retain, seed)[1] for seed in range(3)}
    assert len({tuple(val) for val in seeded.values()}) > 1  # the seed changes the folds


@pytest.mark.parametrize("fold", [5, -1])
def test_seeded_fold_out_of_range_is_refused(standin, fold):
    description = read_dataset(standin["nnunet"])
    ids = [case.cid for case in description.training]
    root = standin["nnunet"]
    with pytest.raises(DatasetError) as error:
        split_cases(description, fold, ids, 3, 0)
    assert str(error.value) == (
        f"--fold {fold}: {root} has no splits_final.json, so its folds are the 5 seeded ones "
        "(--seed, --retain): expected 0 .. 4"
    )


def test_seeded_folds_need_a_validation_case_each(standin, tmp_path):
    description = read_dataset(standin["nnunet"])
    ids = [case.cid for case in description.training]
    with pytest.raises(SliceError, match="--retain 13: leaves 3 of the 16 patients"):
        split_cases(description, 1, ids, 13, 0)
    assert split_cases(description, 1, ids, 12, 0)[1] != []
    root = make_nnunet(tmp_path / "ds", n_cases=4)
    few = read_dataset(root)
    with pytest.raises(DatasetError, match=f"--fold 3: {root}: 4 patients cannot fill 5 folds"):
        split_cases(few, 3, ["case_001", "case_002", "case_003", "case_004"], 1, 0)
    assert split_cases(few, 0, ["case_001", "case_002", "case_003", "case_004"], 1, 0)[2] == {}


def test_seeded_fold_sliced_and_recorded(tmp_path):
    """The command line slices fold 2 of the seeded folds and records it in split.json; fold 0's
    split.json is the one every slicer writes, with no fold entry."""
    root = make_nnunet(tmp_path / "ds", n_cases=6)
    X, _, Z = TINY
    args = ("--shape", X, Z, "--workers", 1, "--seed", 4)
    fold2 = sliced(root, tmp_path / "fold2", "--fold", 2, *args)
    fold0 = sliced(root, tmp_path / "fold0", "--fold", 0, *args)
    ids = [f"case_{n:03d}" for n in range(1, 7)]
    folds = seeded_folds(ids, 1, 4)  # a fifth of 6 cases: 1
    split = read_json(fold2 / "split.json")
    assert split == {
        "dataset": "ds",
        "seed": 4,
        "retain": len(folds[2]),
        "n_augment": 0,
        "shape": [X, Z],
        "train": sorted(set(ids) - set(folds[2])),
        "val": folds[2],
        "fold": 2,
        "folds": 5,
    }
    for name in ("train", "val"):
        cases = {p.stem.split("_00_")[0] for p in (fold2 / name / "in_npy").iterdir()}
        assert cases == set(split[name])
    train, val = split_patients(ids, 1, 4)
    assert val == folds[0]
    expected = {"dataset": "ds", "seed": 4, "retain": 1, "n_augment": 0, "shape": [X, Z]}
    assert read_json(fold0 / "split.json") == {**expected, "train": train, "val": val}


# ------------------------------------------------------------------------------ a small dataset
#
# Three hand-made cases with non-consecutive labels {0, 1, 5} and a splits_final.json, sliced by
# fold 1 at their in-plane size (X, Z): nothing is resized, so the slices can be compared with
# the source voxels directly.

TINY_LABELS = {"background": 0, "a": 1, "b": 5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(the dataset, its slices)."""
    folder = tmp_path_factory.mktemp("tiny")
    root = make_nnunet(folder / "ds", n_cases=3, labels=TINY_LABELS, values=(1, 5))
    write_json(root / "splits_final.json", FIVE_FOLDS)
    X, _, Z = TINY
    return root, sliced(root, folder / "out", "--fold", 1, "--shape", X, Z, "--workers", 1)


def test_splits_final_fold_is_used_exactly(tiny):
    _, dest = tiny
    split = read_json(dest / "split.json")
    assert split["fold"] == 1
    assert split["train"] == sorted(FIVE_FOLDS[1]["train"]) == ["case_001", "case_003"]
    assert split["val"] == sorted(FIVE_FOLDS[1]["val"]) == ["case_002"]
    assert split["retain"] == 1
    for name in ("train", "val"):
        cases = {p.stem.split("_00_")[0] for p in (dest / name / "in_npy").iterdir()}
        assert cases == set(split[name])


def test_non_consecutive_label_values_become_class_indices(tiny):
    root, dest = tiny
    source = read_json(dest / "source.json")
    assert source["labels"] == TINY_LABELS and source["axis"] == 1
    X, Y, Z = TINY
    found = set()
    for split in ("train", "val"):
        for stem in sorted(p.stem for p in (dest / split / "gt_npy").iterdir()):
            case, y = re.fullmatch(r"(case_\d+)_00_(\d+)", stem).groups()
            label = load(root / "labelsTr" / f"{case}.nii.gz")[:, int(y), :]
            gt = np.load(dest / split / "gt_npy" / f"{stem}.npy")
            assert gt.dtype == np.uint8
            np.testing.assert_array_equal(gt, np.select([label == 1, label == 5], [1, 2], 0))
            found |= set(np.unique(gt).tolist())
            assert np.load(dest / split / "3d_distmap" / f"{stem}.npy").shape == (3, X, Z)
    assert found == {0, 1, 2}


def test_unresized_slices_are_normalised_as_nnunet_does(tiny):
    root, dest = tiny
    split = read_json(dest / "split.json")
    low, high, mean, std = foreground_statistics(root, split["train"])
    norms = read_json(dest / "source.json")["normalisation"]
    assert norms == [["ct", *norms[0][1:]], ["zscore"]]
    assert norms[0][1:] == pytest.approx([low, high, mean, std], rel=1e-12)

    (case,) = split["val"]
    ct = load(root / "imagesTr" / f"{case}_0000.nii.gz").astype(np.float64)
    t2 = load(root / "imagesTr" / f"{case}_0001.nii.gz").astype(np.float64)
    ct_norm = (np.clip(ct, low, high) - mean) / std
    t2_norm = (t2 - t2.mean()) / t2.std()
    X, Y, Z = TINY
    assert slice_stems(dest / "val", case) == [f"{case}_00_{y:04d}" for y in range(Y)]
    for y in range(Y):  # slices along axis 1: the source's [:, y, :]
        image = np.load(dest / "val" / "in_npy" / f"{case}_00_{y:04d}.npy")
        assert image.shape == (2, X, Z) and image.dtype == np.float32
        np.testing.assert_allclose(image[0], ct_norm[:, y, :], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(image[1], t2_norm[:, y, :], rtol=1e-6, atol=1e-5)
    dx, dy, dz = zooms(root / "labelsTr" / f"{case}.nii.gz")
    assert read_json(dest / "spacing_3d.json")[case] == pytest.approx([dx, dz, dy], rel=1e-9)
