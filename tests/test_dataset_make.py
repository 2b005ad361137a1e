"""dataset.make end to end, in a temporary copy of the repository, on the nnU-Net stand-in.

`make -f dataset.make DATA=synthetic` with two of its trainings, a tiny network and one epoch
builds every product: the lineage check, the slices, the adjacency graph (four classes), the
trainings, the plots, the NIfTI predictions in the source geometry, the report with their
metrics and the archive holding them; a second `make` builds nothing. On a user's dataset
(DATASET=...), the first run pins its files and a later change stops `make` with the file named
before anything is rebuilt. The interpreter running the tests is passed as CC.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from boundary_loss.preprocessing.synthetic_nnunet import write_nnunet
from tests.cli import assert_clean_error
from tests.test_pipeline import copy_repository, products

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU Make")

FAST = ["NET=Dimwit", "EPC=1", "DEBUG=--debug", f"CC={sys.executable}"]
RUNS = ["gdl", "boundary_adj"]
NAME = "Dataset990_StandIn"
ROOT = Path(__file__).resolve().parent.parent


def make(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(
        ["make", "-f", "dataset.make", *FAST, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and run.returncode != 0:
        pytest.fail(f"make failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    repo = copy_repository(tmp_path_factory.mktemp("repo-dataset"))
    return repo, make(repo, "DATA=synthetic", f"TRAININGS={' '.join(RUNS)}")


def test_chain_builds_every_product_with_nifti_predictions(built):
    repo, first = built
    dataset = repo / "data" / "nnunet-synthetic" / NAME
    sliced = repo / "data" / "sliced" / NAME
    assert (sliced / "source.json").is_file() and (sliced / "split.json").is_file()
    assert (repo / "data" / "sliced" / f"{NAME}_adjacency" / "graph.csv").is_file()
    results = repo / "results" / NAME
    for run in RUNS:
        assert (results / run / "best.pt").is_file()
        predictions = results / "predictions" / run
        for cid in ("standin_101", "standin_102", "standin_103", "standin_104"):
            written = nib.load(str(predictions / f"{cid}.nii.gz"))
            image = nib.load(str(dataset / "imagesTs" / f"{cid}_0000.nii.gz"))
            assert written.shape == image.shape and np.array_equal(written.affine, image.affine)
        assert (predictions / "metrics.csv").is_file()
    report = (results / "report.md").read_text()
    assert "Predictions in the source geometry" in report
    assert "Dice lesion" in report and "val_adjacency" in report
    (archive,) = (repo / "archives").glob(f"*-{NAME}.tar.gz")
    listing = subprocess.run(["tar", "tzf", archive], capture_output=True, text=True, check=True)
    assert f"results/{NAME}/predictions/gdl/standin_101.nii.gz" in listing.stdout
    assert f"results/{NAME}/report.html" in listing.stdout
    assert "pinned 57 files" not in first.stdout  # the stand-in's lineage is committed
    assert "57 files match lineage/nnunet-synthetic.lineage" in first.stdout
    assert not list(repo.rglob("*_tmp"))


def test_second_make_builds_nothing(built):
    repo, _ = built
    before = products(repo)
    second = make(repo, "DATA=synthetic", f"TRAININGS={' '.join(RUNS)}")
    assert "Nothing to be done for 'all'" in second.stdout, second.stdout
    assert "57 files match" in second.stdout  # the lineage is checked on every run
    assert products(repo) == before


def test_3d_chain_builds_every_product_in_its_own_folders(built):
    """DIM=3 on the same stand-in: prepared volumes, the 3D graph, patch trainings, NIfTI
    predictions in the source geometry, report and archive, all in folders of their own."""
    repo, _ = built
    runs = ["boundary_adj"]  # the whole-volume maps, the 3D graph and the adjacency metric
    three_d = ["DIM=3", "NET=PlainUNet3D", "NET_PARAMS={'features': 4}", "ITERS=2"]
    make(repo, "DATA=synthetic", *three_d, f"TRAININGS={' '.join(runs)}")
    prepared = repo / "data" / "prepared-3d" / NAME
    assert (prepared / "plan.json").is_file() and (prepared / "train" / "3d_distmap").is_dir()
    assert (repo / "data" / "prepared-3d" / f"{NAME}_adjacency" / "graph.csv").is_file()
    results = repo / "results" / f"{NAME}-3d"
    dataset = repo / "data" / "nnunet-synthetic" / NAME
    for run in runs:
        args = (results / run / "args.json").read_text()
        assert '"dimensions": 3' in args and "3d_distmap" in args
        written = nib.load(str(results / "predictions" / run / "standin_101.nii.gz"))
        image = nib.load(str(dataset / "imagesTs" / "standin_101_0000.nii.gz"))
        assert written.shape == image.shape and np.array_equal(written.affine, image.affine)
    report = (results / "report.md").read_text()
    assert "val_adjacency" in report
    (archive,) = (repo / "archives").glob(f"*-{NAME}-3d.tar.gz")
    listing = subprocess.run(["tar", "tzf", archive], capture_output=True, text=True, check=True)
    assert f"results/{NAME}-3d/predictions/boundary_adj/standin_101.nii.gz" in listing.stdout
    assert (results / "pictures").is_dir()
    assert not list(repo.rglob("*_tmp"))
    # 2D against 3D: the 2D results exist, so the 3D report pairs the common training.
    assert "boundary_adj 3D against boundary_adj 2D, over " in report  # --debug: a subset
    assert "## In 3D, against gdl" not in report  # gdl was not trained in 3D


def test_2d_report_is_made_again_with_the_pairing_once_3d_runs_exist(built):
    """The 3D runs are prerequisites of the 2D report: a later 2D make adds the pairing, and
    remakes only the report and what holds it."""
    repo, _ = built
    runs = repo / "results" / NAME
    before = {p: p.stat().st_mtime_ns for p in (runs / "gdl", runs / "boundary_adj")}
    make(repo, "DATA=synthetic", f"TRAININGS={' '.join(RUNS)}")
    report = (runs / "report.md").read_text()
    assert "## 3D against 2D: did 3D help?" in report
    assert "boundary_adj 3D against boundary_adj 2D, over " in report  # --debug: a subset
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_crossval_trains_each_fold_and_reports_every_case_once(built):
    """FOLDS="0 1": fold 0 is the chain already built, fold 1 is sliced and trained by its own
    make; the report holds each validated case once, from its own fold, and the archive packs
    it with both folds' runs."""
    repo, _ = built
    run = make(repo, "DATA=synthetic", "FOLDS=0 1", f"TRAININGS={' '.join(RUNS)}")
    assert "FOLD=1 FOLDS= train" in run.stdout
    folds = {
        0: json.loads((repo / "data" / "sliced" / NAME / "split.json").read_text())["val"],
        1: json.loads((repo / "data" / "sliced-fold1" / NAME / "split.json").read_text())["val"],
    }
    assert not set(folds[0]) & set(folds[1])
    cv = repo / "results" / f"{NAME}-cv"
    with open(cv / "per_case.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["training"] == "boundary_adj"]
    # Each case once, from the fold that validated it (--debug validates a few cases of each).
    fold_of = {f"{c}_00": name for f, name in ((0, NAME), (1, f"{NAME}-fold1")) for c in folds[f]}
    assert len(rows) == len({r["case"] for r in rows}) and {r["fold"] for r in rows} == {
        NAME,
        f"{NAME}-fold1",
    }
    assert all(fold_of[r["case"]] == r["fold"] for r in rows)
    page = (cv / "report.md").read_text()
    assert f"{len(rows)} cases, each validated once, in 2 folds" in page
    assert "boundary_adj against gdl, over " in page
    (archive,) = (repo / "archives").glob(f"*-{NAME}-cv.tar.gz")
    listing = subprocess.run(["tar", "tzf", archive], capture_output=True, text=True, check=True)
    assert f"results/{NAME}-fold1/boundary_adj/best.pt" in listing.stdout
    assert f"results/{NAME}-cv/per_case.csv" in listing.stdout
    assert not list(repo.rglob("*_tmp"))

    # predict-new: the test images copied alone, predicted by both folds' networks together.
    scans = repo / "new-scans"
    scans.mkdir()
    for image in (repo / "data" / "nnunet-synthetic" / NAME / "imagesTs").glob("standin_10[12]_*"):
        shutil.copy(image, scans / image.name)
    out = repo / "new-labels"
    make(
        repo,
        "DATA=synthetic",
        "predict-new",
        "TRAINING=boundary_adj",
        "INPUT=new-scans",
        "OUTPUT=new-labels",
    )
    record = json.loads((out / "predictions.json").read_text())
    assert [r["run"] for r in record["runs"]] == [
        f"results/{NAME}/boundary_adj",
        f"results/{NAME}-fold1/boundary_adj",
    ]
    for cid in ("standin_101", "standin_102"):
        written = nib.load(str(out / f"{cid}.nii.gz"))
        image = nib.load(str(scans / f"{cid}_0000.nii.gz"))
        assert written.shape == image.shape and np.array_equal(written.affine, image.affine)
    missing = make(
        repo, "DATA=synthetic", "predict-new", "INPUT=new-scans", "OUTPUT=x", check=False
    )
    assert missing.returncode != 0
    assert (
        "predict-new: TRAINING=<training> is needed, the one whose networks predict (trained "
        "here: boundary_adj gdl)" in missing.stderr
    )


def test_unknown_training_and_missing_dataset_are_refused(built):
    repo, _ = built
    unknown = make(repo, "DATA=synthetic", "TRAININGS=gdl ce_adjj", check=False)
    assert unknown.returncode != 0
    assert "TRAININGS: ce_adjj not defined for Dataset990_StandIn (K=4)" in unknown.stderr
    assert "boundary_adj" in unknown.stderr  # the defined ones are listed
    missing = make(repo, check=False)
    assert missing.returncode != 0 and "DATASET=path/to/dataset is needed" in missing.stderr


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("data/my set", "spaces"),
        ("data/a:b", "the character(s) :"),
        ("data/x$y", "the character(s) $"),
        ("data/a#b", "the character(s) #"),
        ("data/it's", "the character(s) '"),
        ("data/a;b", "the character(s) ;"),
    ],
)
def test_dataset_paths_make_would_misread_are_refused(path, named, tmp_path):
    """A ':' would be read as a rule, a '$' expanded away, a '#' or ';' by the shell: each stops
    Make before it reads anything, with the path shown as typed."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run = subprocess.run(
        ["make", "-n", "-f", str(ROOT / "dataset.make"), f"DATASET={path}", f"CC={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode != 0
    assert f'DATASET="{path}": a path with {named} cannot go through Make' in run.stderr
    assert "move or link the dataset to a path without them" in run.stderr
    assert run.stdout == ""  # no command printed, none run


def test_predict_new_takes_finished_runs_of_the_training_and_its_seeds(tmp_path):
    """predict-new's ensemble (make -n): the finished runs of TRAINING in every fold, its seeds'
    included, never one still training (<run>_tmp holds a best.pt too); with SEEDS, those seeds'
    runs only."""
    for name in ("dataset.make", "common.make"):
        shutil.copy(ROOT / name, tmp_path / name)
    results = tmp_path / "results"
    for run in ("gdl", "gdl-seed0", "gdl-seed1_tmp", "boundary_tmp", "gdl-seed2"):
        (results / NAME / run).mkdir(parents=True)
        (results / NAME / run / "best.pt").touch()
    (results / f"{NAME}-fold2" / "gdl").mkdir(parents=True)
    (results / f"{NAME}-fold2" / "gdl" / "best.pt").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def dry_run(*args: str) -> subprocess.CompletedProcess:
        line = ["make", "-n", "-f", "dataset.make", "DATA=synthetic", f"CC={sys.executable}"]
        line += ["predict-new", "INPUT=in", "OUTPUT=out", *args]
        return subprocess.run(line, cwd=tmp_path, capture_output=True, text=True, env=env)

    def runs(run: subprocess.CompletedProcess) -> list[str]:
        assert run.returncode == 0, run.stderr
        words = run.stdout.replace("\\\n", " ").split()
        return words[words.index("--run") + 1 : words.index("--input")]

    every = [f"results/{NAME}/{run}" for run in ("gdl", "gdl-seed0", "gdl-seed2")]
    assert runs(dry_run("TRAINING=gdl")) == [*every, f"results/{NAME}-fold2/gdl"]
    assert runs(dry_run("TRAINING=gdl", "SEEDS=0 1")) == [f"results/{NAME}/gdl-seed0"]
    unnamed = dry_run()
    assert unnamed.returncode != 0
    assert "(trained here: gdl gdl-seed0 gdl-seed2)" in unnamed.stderr  # no *_tmp


def test_own_dataset_is_pinned_then_a_change_stops_before_any_rebuild(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    dataset = write_nnunet(tmp_path / "mine")
    first = make(repo, f"DATASET={dataset}/", "lineage")  # a trailing slash, as tab completes
    assert f"pinned 57 files of {dataset} in lineage/{NAME}.lineage" in first.stdout
    assert (repo / "lineage" / f"{NAME}.lineage").is_file()
    planned = make(repo, f"DATASET={dataset}", "SLICE_OPT=--axis 2", "-n", "slice")
    assert "preprocess/slice_nnunet.py" in planned.stdout
    assert "--fold 0 --axis 2" in planned.stdout  # the user's SLICE_OPT keeps the fold
    label = dataset / "labelsTr" / "standin_005.nii.gz"
    label.write_bytes(label.read_bytes()[::-1])
    changed = make(repo, f"DATASET={dataset}", "slice", check=False)
    assert_clean_error(changed, f"{label}: changed since it was pinned", "REPIN=1")
    assert not (repo / "data" / "sliced" / NAME).exists()  # nothing was built from it
