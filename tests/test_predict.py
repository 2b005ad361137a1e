"""Predictions written back in the source geometry (predict.py), for both dataset layouts.

The round trip: the slicer's own ground-truth slices of a case, stacked and written back by the
prediction path, must reproduce the source label file exactly (same voxels, same affine, same
header geometry), on the stand-in's anisotropic spacing (sliced along its coarse middle axis)
and non-square slices. The command line is run on a network whose weights are saved as a
training saves them; its metrics.csv is checked against medpy on the written files.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from networks import get_network
from predict import to_source_grid, write_labels
from preprocess.nnunet_format import read_dataset
from preprocess.slice_nnunet import nnunet_dataset
from preprocess.slicing import slice_dataset
from preprocess.synthetic_nnunet import write_msd, write_nnunet
from tests.cli import assert_clean_error, run_script

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = {"nnunet": write_nnunet, "msd": write_msd}


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each layout of the stand-in and its slices at 64 x 64: layout -> (dataset, sliced)."""
    folder = tmp_path_factory.mktemp("standin")
    found = {}
    for layout, write in LAYOUTS.items():
        dataset = write(folder / layout)
        dest = folder / f"{layout}-sliced"
        slice_dataset(nnunet_dataset(dataset, 0, "auto"), dataset, dest, retain=3, shape=(64, 64),
                      workers=1, progress=False)  # fmt: skip
        found[layout] = (dataset, dest)
    return found


def stacked_gt(sliced: Path, split: str, cid: str) -> np.ndarray:
    """The gt_npy slices of a case, in slice order: `H W Z`."""
    files = sorted((sliced / split / "gt_npy").glob(f"{cid}_00_*.npy"))
    return np.stack([np.load(f) for f in files], axis=-1)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_ground_truth_through_the_prediction_path_gives_the_source_back(sliced, layout, tmp_path):
    dataset, dest = sliced[layout]
    source = json.loads((dest / "source.json").read_text())
    split = json.loads((dest / "split.json").read_text())
    assert source["axis"] == 1  # the coarse axis: slices are X x Z, non-square
    cases = {c.cid: c for c in read_dataset(dataset).training}
    values = list(source["labels"].values())
    for part in ("train", "val"):
        for cid in split[part]:
            case = cases[cid]
            reference = nib.load(str(case.label))
            assert reference.shape[0] != reference.shape[2]  # non-square slices
            volume = to_source_grid(stacked_gt(dest, part, cid), reference.shape, 1, values)
            written = nib.load(
                str(write_labels(volume, case.images[0], tmp_path / f"{cid}.nii.gz"))
            )
            assert np.array_equal(np.asarray(written.dataobj), np.asarray(reference.dataobj)), cid
            assert np.array_equal(written.affine, reference.affine), cid
            assert written.header.get_zooms()[:3] == reference.header.get_zooms()[:3]
            assert written.shape == reference.shape  # 3D, also from a 4D Decathlon image


def test_label_values_and_axis_are_undone():
    """Class indices become dataset.json's values; the sliced axis goes back in its place."""
    rng = np.random.default_rng(0)
    source = rng.integers(0, 3, size=(5, 4, 6)).astype(np.uint8)  # X Y Z, values 0 1 2
    values = [0, 3, 7]
    for axis in range(3):
        order = [a for a in range(3) if a != axis] + [axis]
        classes = source.transpose(order)  # as sliced, at the source size
        back = to_source_grid(classes, source.shape, axis, values)
        assert np.array_equal(back, np.asarray(values, dtype=np.uint8)[source])


def save_best(run: Path, network: str, n_in: int, n_class: int) -> None:
    """A best.pt as main.py writes it, for a freshly initialised network."""
    torch.manual_seed(0)
    net = get_network(network, n_in, n_class)
    run.mkdir(parents=True)
    args = {"network": network, "net_params": "{}", "modalities": n_in, "n_class": n_class}
    best = {"model": net.state_dict(), "epoch": 0, "metric": 0.0, "network": network,
            "n_in": n_in, "n_class": n_class, "args": args}  # fmt: skip
    torch.save(best, run / "best.pt")


def test_predict_writes_every_case_in_the_source_geometry_with_medpy_metrics(sliced, tmp_path):
    medpy = pytest.importorskip("medpy.metric.binary")
    dataset, dest = sliced["msd"]
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4)
    out = tmp_path / "predictions"
    proc = run_script(ROOT / "predict.py", "--run", run, "--sliced", dest, "--dest", out, "--cpu")
    assert proc.returncode == 0, proc.stderr
    split = json.loads((dest / "split.json").read_text())
    description = read_dataset(dataset)
    cases = {c.cid: c for c in (*description.training, *description.test)}
    expected = sorted([*split["val"], *(c.cid for c in description.test)])
    assert sorted(p.name.removesuffix(".nii.gz") for p in out.glob("*.nii.gz")) == expected
    for cid in expected:
        written = nib.load(str(out / f"{cid}.nii.gz"))
        image = nib.load(str(cases[cid].images[0]))
        assert written.shape == image.shape[:3]
        assert np.array_equal(written.affine, image.affine)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3}
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * len(split["val"])
    for row in rows:
        pred = np.asarray(nib.load(str(out / f"{row['case']}.nii.gz")).dataobj) == int(row["value"])
        label = nib.load(str(cases[row["case"]].label))
        truth = np.asarray(label.dataobj) == int(row["value"])
        spacing = label.header.get_zooms()[:3]
        if pred.any() and truth.any():
            assert float(row["dice"]) == pytest.approx(medpy.dc(pred, truth), abs=1e-6)
            assert float(row["hd"]) == pytest.approx(medpy.hd(pred, truth, spacing), abs=1e-4)
            assert float(row["hd95"]) == pytest.approx(medpy.hd95(pred, truth, spacing), abs=1e-4)
    record = json.loads((out / "predictions.json").read_text())
    assert record["validation"] == split["val"] and record["best_epoch"] == 0
    assert not (tmp_path / "predictions_tmp").exists()


def test_predict_names_what_is_missing(sliced, tmp_path):
    _, dest = sliced["nnunet"]
    out = tmp_path / "out"
    no_run = run_script(ROOT / "predict.py", "--run", tmp_path / "none", "--sliced", dest,
                        "--dest", out)  # fmt: skip
    assert_clean_error(no_run, f"{tmp_path / 'none' / 'best.pt'}: file not found")
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4)
    not_sliced = run_script(ROOT / "predict.py", "--run", run, "--sliced", tmp_path,
                            "--dest", out)  # fmt: skip
    assert_clean_error(not_sliced, f"{tmp_path / 'source.json'}: file not found")
    wrong = tmp_path / "wrong"
    save_best(wrong, "Dimwit", 3, 4)  # three input channels, the data has two
    mismatch = run_script(ROOT / "predict.py", "--run", wrong, "--sliced", dest, "--dest", out)
    assert_clean_error(mismatch, "a network for 3 channels", "has 2 channels")
    assert not out.exists() and not (tmp_path / "out_tmp").exists()


def test_predict_reads_a_moved_dataset_from_source(sliced, tmp_path):
    """source.json names the folder the data was sliced from; --source gives where it is now."""
    dataset, dest = sliced["nnunet"]
    moved = Path(shutil.copytree(dest, tmp_path / "sliced"))
    record = json.loads((moved / "source.json").read_text())
    record["dataset"] = str(tmp_path / "gone" / dataset.name)
    (moved / "source.json").write_text(json.dumps(record))
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4)
    out = tmp_path / "out"
    lost = run_script(ROOT / "predict.py", "--run", run, "--sliced", moved, "--dest", out)
    assert_clean_error(lost, f"{tmp_path / 'gone' / dataset.name}: folder not found")
    found = run_script(ROOT / "predict.py", "--run", run, "--sliced", moved, "--dest", out,
                       "--source", dataset, "--cpu")  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert len(list(out.glob("*.nii.gz"))) == 7  # 3 validation and 4 test cases
