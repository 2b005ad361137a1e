"""boundary_loss.inference.predict3d: NIfTI predictions of a 3D training in each case's own
geometry.

The tiny dataset of tests/volume_data.py has cases at two spacings, so every case is resampled
to the median spacing for the network and its prediction resampled back: each written file must
have its source image's shape and affine, its metrics.csv one row per validation case and class,
and the refusals must leave nothing behind.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from boundary_loss.inference import predict, predict3d
from boundary_loss.preprocessing.prepare_3d import prepare_3d
from boundary_loss.training import main
from tests.volume_data import make_dataset

FOLDERS = (
    "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]"
    "+[('gt_npy', gt_transform, True), ('3d_distmap', raw_npy_transform, False)]"
)
LOSSES = "[('GeneralizedDice', {'idc': [0, 1, 2]}, 1), ('SurfaceLoss', {'idc': [1, 2]}, 0.01)]"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(source dataset, prepared data, run): one epoch of one batch, enough to predict."""
    root = tmp_path_factory.mktemp("predict3d")
    source = make_dataset(root / "Dataset001_Tiny")
    prepared = prepare_3d(source, root / "prepared", retain=2, seed=3, progress=False)
    run = root / "run"
    argv = [
        *("--dataset", str(prepared), "--workdir", str(run), "--cpu"),
        *("--network", "PlainUNet3D", "--net_params", "{'features': 2}"),
        *("--n_class", "3", "--modalities", "2", "--dimensions", "3", "--compute_3d_dice"),
        *("--grp_regex", r"(.+_\d+)_\d+", "--batch_size", "2", "--iterations", "1"),
        *("--n_epoch", "1", "--losses", LOSSES, "--folders", FOLDERS),
    ]
    assert main.main(argv) == 0
    return source, prepared, run


def test_predictions_sit_in_each_cases_source_geometry(trained, tmp_path):
    source, prepared, run = trained
    dest = predict3d.predict_3d(run, prepared, tmp_path / "out", predict.torch.device("cpu"), 2)
    record = json.loads((dest / "predictions.json").read_text())
    assert record["validation"] and record["test"] == ["case_101"]
    for case in [*record["validation"], *record["test"]]:
        folder = "imagesTs" if case == "case_101" else "imagesTr"
        image = nib.load(str(source / folder / f"{case}_0000.nii.gz"))
        written = nib.load(str(dest / record["files"][case]))
        assert written.shape == image.shape, case
        np.testing.assert_allclose(written.affine, image.affine)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 3}  # label values
    with open(dest / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * len(record["validation"])


def test_the_2d_command_refuses_a_3d_run(trained, tmp_path, capsys):
    source, prepared, run = trained
    argv = ["--run", str(run), "--sliced", str(prepared), "--dest", str(tmp_path / "out")]
    assert predict.main([*argv, "--source", str(source)]) == 1
    assert "boundary_loss.inference.predict3d" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_users_folder_is_never_replaced(trained, tmp_path, capsys):
    source, prepared, run = trained
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    argv = ["--run", str(run), "--sliced", str(prepared), "--dest", str(dest), "--cpu"]
    assert predict3d.main(argv) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert (dest / "notes.txt").read_text() == "mine"


def test_a_2d_run_or_other_data_is_refused(trained, tmp_path, capsys):
    source, prepared, run = trained
    argv = ["--run", str(tmp_path), "--sliced", str(prepared), "--dest", str(tmp_path / "o")]
    assert predict3d.main([*argv, "--cpu"]) == 1
    assert "error: " in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_data_prepared_again_with_another_plan_is_refused(trained, tmp_path, capsys):
    """Same split, another plan (here another patch): the network would not be rebuilt as
    trained, so the predictions are refused, naming the plan."""
    source, prepared, run = trained
    again = tmp_path / "prepared"
    shutil.copytree(prepared, again)
    plan = json.loads((again / "plan.json").read_text())
    plan["patch_size"] = [2 * n for n in plan["patch_size"]]
    (again / "plan.json").write_text(json.dumps(plan))
    argv = ["--run", str(run), "--sliced", str(again), "--dest", str(tmp_path / "o"), "--cpu"]
    assert predict3d.main([*argv, "--source", str(source)]) == 1
    assert "trained with another plan than" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
