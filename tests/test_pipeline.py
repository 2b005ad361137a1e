"""The dataset makefiles end to end, in a temporary copy of the repository, on synthetic data.

`make -f <dataset>.make DATA=synthetic NET=Dimwit EPC=1 DEBUG=--debug` builds every product;
a second `make` builds nothing; a corrupted real zip stops at the md5 check with nothing unpacked,
while a cut stand-in zip is generated again; a training killed midway is rebuilt by the next
`make` while finished ones are kept (that `make` launching it with NPROC=2). Each makefile's
chain is built once and shared by the tests of that dataset; the rules common.make holds alike
for every dataset (killed trainings, the launcher, SEEDS) are tested on ISLES.
The interpreter running the tests is passed as CC, so no virtual environment is created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import assert_clean_error

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU Make")

DATASETS = {
    "isles": {
        "zips": ["ISLES2018_Training.zip", "ISLES2018_Testing.zip"],
        "raw": "ISLES",
        "runs": ["gdl", "gdl_surface_steal", "gdl_3d_surface_steal", "gdl_hausdorff_w"],
        "plots": [
            "tra_loss",
            "val_loss",
            "val_dice",
            "tra_dice",
            "val_3d_hausdorff",
            "val_3d_hd95",
            "val_dice_boxplot",
        ],
    },
    # WMH's trainings are twoclass.make's, ISLES' four: its chain trains two of them, the
    # baseline and the one reading the 3D distance maps its slicer writes.
    "wmh": {
        "zips": ["Amsterdam_GE3T.zip", "Singapore.zip", "Utrecht.zip"],
        "raw": "WMH",
        "runs": ["gdl", "gdl_3d_surface_steal"],
        "make": ["TRN=gdl gdl_3d_surface_steal"],
        "plots": [
            "tra_loss",
            "val_loss",
            "val_dice",
            "tra_dice",
            "val_3d_hausdorff",
            "val_3d_hd95",
            "val_dice_boxplot",
        ],
    },
    "acdc": {
        "zips": ["acdc.zip"],
        "raw": "ACDC",
        "runs": ["ce", "diceloss", "boundary", "ce_adj", "boundary_adj"],
        "plots": [
            "val_dice",
            "tra_dice",
            "tra_loss",
            "val_3d_dsc",
            "val_adjacency",
            "val_3d_dsc_boxplot",
        ],
    },
}

FAST = ["DATA=synthetic", "NET=Dimwit", "EPC=1", "DEBUG=--debug", f"CC={sys.executable}"]


def copy_repository(dest: Path) -> Path:
    """The project's files (tracked, and untracked but not ignored) without data or results."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "copy"],
        cwd=dest,
        check=True,
    )
    return dest


def make(repo: Path, dataset: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    own = DATASETS.get(dataset, {}).get("make", [])
    run = subprocess.run(
        ["make", "-f", f"{dataset}.make", *FAST, *own, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and run.returncode != 0:
        pytest.fail(f"make failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


def products(repo: Path) -> dict[str, float]:
    """Every file under data/ results/ archives/ with its modification time."""
    return {
        str(p.relative_to(repo)): p.stat().st_mtime
        for top in ("data", "results", "archives")
        for p in (repo / top).rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module", params=sorted(DATASETS))
def built(request, tmp_path_factory):
    dataset = request.param
    repo = copy_repository(tmp_path_factory.mktemp(f"repo-{dataset}"))
    first = make(repo, dataset)
    return dataset, repo, first


def test_chain_builds_every_product(built):
    dataset, repo, first = built
    spec = DATASETS[dataset]
    root = repo / "data" / f"{dataset}-synthetic"
    for name in spec["zips"]:
        assert (root / name).is_file()
    assert (root / spec["raw"]).is_dir()
    if dataset == "acdc":  # the adjacency graph of the training labels
        assert (root / "acdc_adjacency" / "graph.csv").is_file()
        assert (root / "acdc_adjacency" / "graph.png").is_file()
    sliced = root / dataset
    for split in ("train", "val"):
        assert any((sliced / split / "in_npy").iterdir())
    results = repo / "results" / f"{dataset}-synthetic"
    for run in spec["runs"]:
        for name in ("best.pt", "last.pt", "val_3d_hd95.npy", "metrics.csv", "provenance.json"):
            assert (results / run / name).is_file(), f"{run}/{name}"
    for plot in spec["plots"]:
        assert (results / f"{plot}.png").stat().st_size > 0
    report = (results / "report.md").read_text()
    assert all(run in report for run in spec["runs"])
    assert (results / "report.html").is_file()
    (archive,) = (repo / "archives").glob(f"*-{dataset}-synthetic.tar.gz")
    assert not archive.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    listing = subprocess.run(["tar", "tzf", archive], capture_output=True, text=True, check=True)
    assert f"results/{dataset}-synthetic/report.md" in listing.stdout
    assert "last.pt" not in listing.stdout
    # The pictures, the per-patient table and the comparison with the baseline training.
    assert f"results/{dataset}-synthetic/per_patient.csv" in listing.stdout
    assert f"results/{dataset}-synthetic/pictures/pictures.json" in listing.stdout
    baseline = spec["runs"][0]
    assert f"Against {baseline}: did it help?" in report and "Per patient" in report
    # The report was printed too.
    assert "best value of the column" in first.stdout
    assert not list(repo.rglob("*_tmp"))


def test_second_make_builds_nothing(built):
    dataset, repo, _ = built
    before = products(repo)
    second = make(repo, dataset)
    assert "Nothing to be done for 'all'" in second.stdout, second.stdout
    assert products(repo) == before


def test_corrupted_real_zip_stops_at_the_md5_check_with_nothing_unpacked(tmp_path):
    """A real zip that fails its md5 check stops `make unpack` with what to do; it is kept."""
    repo = copy_repository(tmp_path / "repo")
    zip_path = repo / "data" / "acdc.zip"
    zip_path.parent.mkdir()
    zip_path.write_bytes(b"a download cut short")
    run = subprocess.run(
        ["make", "-f", "acdc.make", f"CC={sys.executable}", "unpack"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_clean_error(
        run, "data/acdc.zip: FAILED md5 check", "Delete data/acdc.zip and download it again"
    )
    assert sorted(p.name for p in zip_path.parent.iterdir()) == ["acdc.zip"]  # no ACDC(_tmp)
    assert zip_path.read_bytes() == b"a download cut short"


def test_cut_generated_zip_is_generated_again_and_unpacked(tmp_path, quick_zips):
    """DATA=synthetic: a stand-in zip that fails its md5 check (here cut to half) is generated
    again by `make unpack`, then unpacked; a second `make unpack` has nothing to do."""
    repo = copy_repository(tmp_path / "repo")
    root = repo / "data" / "acdc-synthetic"
    root.mkdir(parents=True)
    zip_path = root / "acdc.zip"
    shutil.copyfile(quick_zips("acdc") / "acdc.zip", zip_path)  # the generator's, seed 0
    data = zip_path.read_bytes()
    zip_path.write_bytes(data[: len(data) // 2])
    first = make(repo, "acdc", "unpack")
    assert "fails its md5 check against lineage/acdc-synthetic.lineage" in first.stdout
    assert zip_path.read_bytes() == data  # the generator is deterministic
    assert (root / "ACDC" / "training").is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["ACDC", "acdc.zip"]
    second = make(repo, "acdc", "unpack")
    assert "Nothing to be done for 'unpack'" in second.stdout, second.stdout


@pytest.fixture(scope="module")
def killed_then_rebuilt(built) -> tuple[Path, str, str, dict, subprocess.CompletedProcess]:
    """ISLES: a training killed midway, then the next `make`, run with NPROC=2 THREADS=1
    TRAIN_FLAGS=--device_dist_maps, so that one rebuild serves both the rule of killed trainings
    (common.make's, the same for every dataset) and the launcher.

    Returns:
        (results folder, the finished training kept, the killed one, the kept one's files with
        their modification times, the rebuilding make).
    """
    dataset, repo, _ = built
    if dataset != "isles":
        pytest.skip("one dataset is enough for the training rule and the launcher")
    results = repo / "results" / f"{dataset}-synthetic"
    first_run, second_run = DATASETS[dataset]["runs"][:2]
    shutil.rmtree(results / second_run)
    kept = {p: p.stat().st_mtime for p in (results / first_run).rglob("*") if p.is_file()}
    proc = subprocess.Popen(
        ["make", "-f", f"{dataset}.make", *[a for a in FAST if not a.startswith("EPC=")], "EPC=30"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    partial = results / f"{second_run}_tmp" / "last.pt"
    deadline = time.time() + 300
    while not partial.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert partial.exists(), "the training never reached its first epoch"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (results / second_run).exists()  # killed midway: not taken as finished

    rerun = make(repo, dataset, "NPROC=2", "THREADS=1", "TRAIN_FLAGS=--device_dist_maps")
    return results, first_run, second_run, kept, rerun


def test_killed_training_is_rebuilt_and_finished_ones_are_kept(killed_then_rebuilt):
    results, first_run, second_run, kept, rerun = killed_then_rebuilt
    assert (results / second_run / "best.pt").is_file()
    assert not (results / f"{second_run}_tmp").exists()
    assert f"--workdir results/isles-synthetic/{second_run}_tmp" in rerun.stdout
    assert f"--workdir results/isles-synthetic/{first_run}_tmp" not in rerun.stdout
    assert {p: p.stat().st_mtime for p in kept} == kept


def test_nproc_trains_with_torchrun_and_train_flags(killed_then_rebuilt):
    """NPROC=2 rebuilds a training with 2 processes (gloo on the CPU); TRAIN_FLAGS reach it."""
    results, _, run, _, rerun = killed_then_rebuilt
    assert "torch.distributed.run --nproc_per_node=2" in rerun.stdout
    assert "--device_dist_maps" in rerun.stdout
    timing = json.loads((results / run / "timing.json").read_text())
    assert timing and all(t["processes"] == 2 for t in timing)
    assert (results / run / "best.pt").is_file() and not (results / f"{run}_tmp").exists()


def test_seeds_train_each_training_per_seed_and_the_report_aggregates(built):
    """SEEDS="0 1": <training>-seed<N> folders trained with that seed; the report has the
    aggregate over seeds and pairs the comparisons seed by seed. Two trainings (the baseline and
    one compared with it) are enough for both."""
    dataset, repo, _ = built
    if dataset != "isles":
        pytest.skip("one dataset is enough for the seeds")
    trainings = DATASETS[dataset]["runs"][:2]
    make(repo, dataset, "SEEDS=0 1", f"TRN={' '.join(trainings)}")
    results = repo / "results" / f"{dataset}-synthetic"
    for training in trainings:
        for seed in (0, 1):
            args = json.loads((results / f"{training}-seed{seed}" / "args.json").read_text())
            assert args["seed"] == seed
    report = (results / "report.md").read_text()
    assert "## Over seeds" in report and "| gdl | 2 |" in report
    assert re.search(r"over \d+ patients? and 2 seeds", report), report[:3000]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (make chromium)")
def test_report_of_the_archive_opens_in_a_browser(built, tmp_path):
    """The archive, extracted elsewhere, holds a report whose every image decodes in Chromium
    (the page records decoded/total images once loaded) and whose tables are there."""
    dataset, repo, _ = built
    (archive,) = (repo / "archives").glob(f"*-{dataset}-synthetic.tar.gz")
    subprocess.run(["tar", "xzf", archive, "-C", tmp_path], check=True)
    page = tmp_path / "results" / f"{dataset}-synthetic" / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    images = dom.count("<img ")
    assert images > 10  # plots, pictures and GIFs
    assert f'data-images="{images}/{images}"' in dom, dom[:500]
    assert dom.count("<table") >= 3  # the runs, the comparison, the patients
