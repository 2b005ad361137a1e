"""Predictions written back in the source geometry (predict.py), for both dataset layouts.

The round trip: the slicer's own ground-truth slices of a case, stacked and written back by the
prediction path, must reproduce the source label file exactly (same voxels, same affine, same
header geometry), on the stand-in's anisotropic spacing (sliced along its coarse middle axis)
and non-square slices. The command line is run on a network whose weights are saved as a
training saves them; its metrics.csv is checked against medpy on the written files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from boundary_loss.inference.steps import to_source_grid, write_labels
from boundary_loss.io.atomic import MARKER
from boundary_loss.networks.registry import get_network
from boundary_loss.preprocessing.nnunet_format import read_dataset
from boundary_loss.preprocessing.slice_nnunet import nnunet_dataset
from boundary_loss.preprocessing.slicing import slice_dataset
from boundary_loss.preprocessing.synthetic_nnunet import write_msd, write_nnunet
from tests.cli import assert_clean_error, run_module, run_script

PREDICT = "boundary_loss.inference.predict"

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
        slice_dataset(
            nnunet_dataset(dataset, 0, "auto"),
            dataset,
            dest,
            retain=3,
            shape=(64, 64),
            workers=1,
            progress=False,
        )
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


def save_best(run: Path, network: str, n_in: int, n_class: int, data: Path) -> None:
    """A best.pt as main.py writes it, for a freshly initialised network, and the record of
    the sliced data `data` it was trained on (provenance.json: the md5 of its split.json)."""
    torch.manual_seed(0)
    net = get_network(network, n_in, n_class)
    run.mkdir(parents=True)
    args = {"network": network, "net_params": "{}", "modalities": n_in, "n_class": n_class}
    best = {
        "model": net.state_dict(),
        "epoch": 0,
        "metric": 0.0,
        "network": network,
        "n_in": n_in,
        "n_class": n_class,
        "args": args,
    }
    torch.save(best, run / "best.pt")
    md5 = hashlib.md5((data / "split.json").read_bytes()).hexdigest()
    provenance = {"data": {"path": str(data), "split_md5": md5}}
    (run / "provenance.json").write_text(json.dumps(provenance))


def test_predict_writes_every_case_in_the_source_geometry_with_medpy_metrics(sliced, tmp_path):
    medpy = pytest.importorskip("medpy.metric.binary")
    dataset, dest = sliced["msd"]
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4, dest)
    out = tmp_path / "predictions"
    proc = run_module(PREDICT, "--run", run, "--sliced", dest, "--dest", out, "--cpu")
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
    no_run = run_module(PREDICT, "--run", tmp_path / "none", "--sliced", dest, "--dest", out)
    assert_clean_error(no_run, f"{tmp_path / 'none' / 'best.pt'}: file not found")
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4, dest)
    not_sliced = run_module(PREDICT, "--run", run, "--sliced", tmp_path, "--dest", out)
    assert_clean_error(not_sliced, f"{tmp_path / 'source.json'}: file not found")
    wrong = tmp_path / "wrong"
    save_best(wrong, "Dimwit", 3, 4, dest)  # three input channels, the data has two
    mismatch = run_module(PREDICT, "--run", wrong, "--sliced", dest, "--dest", out)
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
    save_best(run, "Dimwit", 2, 4, moved)
    out = tmp_path / "out"
    lost = run_module(PREDICT, "--run", run, "--sliced", moved, "--dest", out)
    assert_clean_error(lost, f"{tmp_path / 'gone' / dataset.name}: folder not found")
    found = run_module(
        PREDICT,
        "--run",
        run,
        "--sliced",
        moved,
        "--dest",
        out,
        "--source",
        dataset,
        "--cpu",
    )
    assert found.returncode == 0, found.stderr
    assert len(list(out.glob("*.nii.gz"))) == 7  # 3 validation and 4 test cases


# ------------------------------------------------------------------ what predict.py refuses
# Every refusal is one `error:` line, before anything is written: no DEST, no DEST_tmp, and the
# folders named are left exactly as they were.


def listing(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def predict_cli(run: Path, sliced: Path, dest: Path, *extra: object):
    return run_module(PREDICT, "--run", run, "--sliced", sliced, "--dest", dest, "--cpu", *extra)


def test_predict_never_replaces_the_dataset_or_the_run(sliced, tmp_path):
    dataset, dest = sliced["nnunet"]
    source = Path(shutil.copytree(dataset, tmp_path / dataset.name))
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4, dest)
    before_source, before_run = listing(source), listing(run)
    into_source = predict_cli(run, dest, source, "--source", source)
    assert_clean_error(into_source, f"--dest {source}:", "predict.py did not write", "not replaced")
    into_run = predict_cli(run, dest, run, "--source", source)
    assert_clean_error(into_run, f"--dest {run}:", "predict.py did not write")
    assert listing(source) == before_source and listing(run) == before_run
    assert not (tmp_path / f"{dataset.name}_tmp").exists() and not (tmp_path / "run_tmp").exists()


def test_predict_leaves_the_users_folders_beside_dest_alone(sliced, tmp_path):
    """X_old is never touched; a user's X_tmp (not marked as predict.py's) is refused, kept."""
    dataset, dest = sliced["nnunet"]
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4, dest)
    out = tmp_path / "out"
    old = tmp_path / "out_old"
    old.mkdir()
    (old / "mine.txt").write_text("mine")
    first = predict_cli(run, dest, out)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / MARKER).read_text()) == {"tool": "predict.py"}
    again = predict_cli(run, dest, out)  # its own earlier output: replaced
    assert again.returncode == 0, again.stderr
    assert listing(old) == {"mine.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out_old", "run"]
    users = tmp_path / "out_tmp"
    users.mkdir()
    (users / "draft.txt").write_text("draft")
    before = listing(out)
    refused = predict_cli(run, dest, out)
    assert_clean_error(refused, f"--dest {out}:", f"{users} is a folder without", "not removed")
    assert listing(users) == {"draft.txt": b"draft"} and listing(out) == before


def test_predict_refuses_a_run_of_other_data(sliced, tmp_path):
    """The same channel and class counts, but other slices: their split.json md5 differs."""
    dataset, dest = sliced["nnunet"]
    other = Path(shutil.copytree(dest, tmp_path / "other"))
    split = json.loads((other / "split.json").read_text())
    split["seed"] = 1  # another split of the same dataset
    (other / "split.json").write_text(json.dumps(split))
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4, other)
    out = tmp_path / "out"
    proc = predict_cli(run, dest, out)
    assert_clean_error(proc, f"--run {run} was trained on {other}", f"--sliced {dest} is other")
    assert not out.exists() and not (tmp_path / "out_tmp").exists()
    (run / "provenance.json").unlink()  # a folder main.py did not write
    unknown = predict_cli(run, dest, out)
    assert_clean_error(unknown, f"{run / 'provenance.json'}: no record of the data")


def test_predict_checks_the_source_against_its_lineage(sliced, tmp_path):
    """A label edited after the dataset was pinned: no metric is computed against it."""
    dataset, dest = sliced["nnunet"]
    source = Path(shutil.copytree(dataset, tmp_path / dataset.name))
    lineage = tmp_path / "pinned.lineage"
    pinned = run_script("preprocess/dataset_lineage.py", source, lineage)
    assert pinned.returncode == 0, pinned.stderr
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4, dest)
    out = tmp_path / "out"
    ok = predict_cli(run, dest, out, "--source", source, "--lineage", lineage)
    assert ok.returncode == 0 and "warning" not in ok.stderr, ok.stderr
    val = json.loads((dest / "split.json").read_text())["val"][0]
    label = source / "labelsTr" / f"{val}.nii.gz"
    edited = nib.load(str(label))
    data = np.asarray(edited.dataobj).copy()
    data[0, 0, 0] = 1 - data[0, 0, 0]
    nib.save(nib.Nifti1Image(data, edited.affine, edited.header), str(label))
    before = listing(out)
    proc = predict_cli(run, dest, out, "--source", source, "--lineage", lineage)
    assert_clean_error(proc, f"{label}: changed since it was pinned in {lineage}")
    assert listing(out) == before and not (tmp_path / "out_tmp").exists()
    unchecked = predict_cli(run, dest, tmp_path / "unchecked", "--source", source)
    assert unchecked.returncode == 0, unchecked.stderr
    assert "is not checked against a lineage" in unchecked.stderr


def test_a_diverged_run_gets_a_predictions_folder_saying_so(sliced, tmp_path):
    """A run whose 3D metrics are all NaN saved no best.pt: predict.py writes its folder (no
    NIfTI, a metrics.csv without rows, predictions.json saying diverged) and the report's
    predictions table says so, so that the report and the archive are still made."""
    from boundary_loss.report.sections import prediction_blocks

    _, dest = sliced["nnunet"]
    run = tmp_path / "run"
    save_best(run, "Dimwit", 2, 4, dest)
    (run / "best.pt").unlink()  # main.py never saves one when no epoch has a finite metric
    for name in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        np.save(run / f"{name}.npy", np.full((2, 3, 4), np.nan, np.float32))
    out = tmp_path / "diverged"
    proc = predict_cli(run, dest, out)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"warning: run {run} diverged (all its 3D metrics are NaN): no predictions" in proc.stderr
    )
    assert json.loads((out / "predictions.json").read_text())["diverged"] is True
    assert not list(out.glob("*.nii*"))
    assert (out / "metrics.csv").read_text() == "case,class,value,dice,hd,hd95\n"
    fine = tmp_path / "fine"
    save_best(fine, "Dimwit", 2, 4, dest)
    assert predict_cli(fine, dest, tmp_path / "predictions").returncode == 0
    table = [b for b in prediction_blocks([tmp_path / "predictions", out]) if b.kind == "table"]
    rows = {row[0]: row[1:] for row in table[0].table.rows}
    assert set(rows) == {"predictions", "diverged"}
    assert rows["diverged"] == ["diverged: no predictions"] * len(rows["predictions"])
    assert len(rows["predictions"]) == 9  # Dice, HD, HD95 of the 3 foreground classes
