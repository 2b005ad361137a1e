"""The original boundary-loss makefiles' command lines, pasted unchanged, on the stand-in data.

The lines below are those of the original project's isles.make, wmh.make and acdc.make (LIVIAETS
boundary-loss): its unpacking (unzip, then the deletions and, for WMH, the flattening of the three
sites), its slicer calls and its `main.py` calls, run through bash as Make would run them. Only
the variables take other values: EPC=1, NET=Dimwit and DEBUG=--debug as the original's own
debugging advice, and a smaller `--retain` where the stand-in cohort has fewer patients than the
original kept for validation. Each training must finish and write its per-epoch arrays; the
trainings of a dataset run two at a time, each in its own run folder, as `make -j2` runs them.
The stand-in zips are the session's (tests/conftest.py `quick_zips`), copied.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = f"{sys.executable} {ROOT}"  # `$(CC) $(CFLAGS) ` then the script, as the makefiles write it
EPC, NET, DEBUG = 1, "Dimwit", "--debug"

ISLES_B_DATA = "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]"
ISLES_TRAINING = (
    f"{PY}/main.py --dataset=data/ISLES/ --batch_size=8 --in_memory --l_rate=0.001 --schedule "
    f"--use_spacing --n_epoch={EPC} --workdir=results/isles/{{run}}_tmp --csv=metrics.csv "
    f'--n_class=2 --modalities=5 --metric_axis 1 --grp_regex="(case_\\d+_\\d+)_\\d+" '
    f"--network={NET} {{opt}} {{data}} {DEBUG}"
)
ISLES_RUNS = {
    "gdl": (
        "--losses=\"[('GeneralizedDice', {'idc': [0, 1]}, 1)]\"",
        f"--folders=\"{ISLES_B_DATA}+[('gt_npy', gt_transform, True)]\"",
    ),
    "gdl_hausdorff_w": (
        "--losses=\"[('GeneralizedDice', {'idc': [0, 1]}, 1), ('HausdorffLoss', {'idc': [1]}, 0.1)]\"",
        f"--folders=\"{ISLES_B_DATA}+[('gt_npy', gt_transform, True), ('gt_npy', gt_transform, True)]\"",
    ),
    "hausdorff": (
        "--losses=\"[('HausdorffLoss', {'idc': [1]}, 0.1)]\"",
        f"--folders=\"{ISLES_B_DATA}+[('gt_npy', gt_transform, True)]\"",
    ),
    "gdl_surface_steal": (
        "--losses=\"[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]\"",
        f"--folders=\"{ISLES_B_DATA}+[('gt_npy', gt_transform, True), ('gt_npy', dist_map_transform, False)]\" "
        "--scheduler=StealWeight --scheduler_params=\"{'to_steal': 0.01}\"",
    ),
    "gdl_3d_surface_steal": (
        "--losses=\"[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]\"",
        f"--folders=\"{ISLES_B_DATA}+[('gt_npy', gt_transform, True), ('3d_distmap', raw_npy_transform, False)]\" "
        "--scheduler=StealWeight --scheduler_params=\"{'to_steal': 0.01}\"",
    ),
    "surface": (
        "--losses=\"[('SurfaceLoss', {'idc': [1]}, 0.1)]\"",
        f"--folders=\"{ISLES_B_DATA}+[('gt_npy', dist_map_transform, False)]\"",
    ),
}

WMH_TRAINING = (
    f"{PY}/main.py --dataset=data/WMH/ --batch_size=8 --in_memory --l_rate=0.001 --schedule "
    f"--use_spacing --n_epoch={EPC} --workdir=results/wmh/{{run}}_tmp --csv=metrics.csv "
    f'--n_class=2 --modalities=2 --metric_axis 1 --grp_regex="(\\d+_\\d+)_\\d+" '
    f"--network={NET} {{opt}} {{data}} {DEBUG}"
)
ACDC_B_DATA = "[('img', png_transform, False), ('gt', gt_transform, True)]"
ACDC_TRAINING = (
    f"{PY}/main.py --dataset=data/ACDC-2D/ --batch_size=8 --group --schedule "
    f"--n_epoch={EPC} --workdir=results/acdc/{{run}}_tmp --csv=metrics.csv --n_class=4 "
    f'--metric_axis 1 2 3 --compute_3d_dice --grp_regex="(patient\\d+_\\d+_\\d+)_\\d+" '
    f"--network={NET} {{opt}} {{data}} {DEBUG}"
)
ACDC_RUNS = {
    "ce": (
        "--losses=\"[('CrossEntropy', {'idc': [0, 1, 2, 3]}, 1)]\"",
        f"--folders=\"{ACDC_B_DATA}+[('gt', gt_transform, True)]\"",
    ),
    "boundary": (
        "--losses=\"[('BoundaryLoss', {'idc': [0, 1, 2, 3]}, 1)]\"",
        f"--folders=\"{ACDC_B_DATA}+[('gt', dist_map_transform, False)]\"",
    ),
}


def bash(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """One makefile recipe line, through bash as Make runs it."""
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def bash_each(lines: dict[str, str], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Each training's recipe line through bash, two at a time (as `make -j2` would run them:
    each writes its own run folder), finished processes in the order given."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = {run: pool.submit(bash, line, cwd) for run, line in lines.items()}
        return {run: future.result() for run, future in done.items()}


def unzip(zips: list[Path], dest: Path) -> None:
    """`unzip -q ZIP -d DEST` for each zip (Python's zipfile: unzip need not be installed)."""
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(dest)


def check_run(workdir: Path) -> None:
    """A finished one-epoch training: its arrays hold one epoch of finite Dice values."""
    assert workdir.is_dir(), f"{workdir} missing"
    for name in ("tra_loss", "val_loss", "tra_dice", "val_dice", "val_3d_dsc"):
        array = np.load(workdir / f"{name}.npy")
        assert array.shape[0] == 1, (name, array.shape)
    dice = np.load(workdir / "val_dice.npy")
    assert np.isfinite(dice).all() and (0 <= dice).all() and (dice <= 1).all()
    assert (workdir / "metrics.csv").read_text().startswith("epoch,lr,weights")


def train_each(root: Path, dataset: str, training: str, runs: dict, mkdir: bool = False) -> None:
    """Each run's recipe line, as the original makefile writes it (`rm -rf` its `_tmp` folder,
    for ACDC `mkdir -p` it, train into it, `mv` it to the run's folder), through `bash_each`;
    every one must succeed and leave a finished training (`check_run`)."""
    lines = {}
    for run, (opt, folders) in runs.items():
        tmp = f"results/{dataset}/{run}_tmp"
        make = f"mkdir -p {tmp} && " if mkdir else ""
        lines[run] = (
            f"rm -rf {tmp} && {make}{training.format(run=run, opt=opt, data=folders)} && "
            f"mv {tmp} results/{dataset}/{run}"
        )
    for run, trained in bash_each(lines, root).items():
        assert trained.returncode == 0, (run, trained.stderr[-2000:])
        check_run(root / "results" / dataset / run)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory, quick_zips) -> Path:
    """The generated zips of the three datasets (seed 0, quick), copied into the original's
    data/ folder."""
    root = tmp_path_factory.mktemp("original")
    (root / "data").mkdir()
    for dataset in ("isles", "wmh", "acdc"):
        for path in sorted(quick_zips(dataset).glob("*.zip")):
            shutil.copyfile(path, root / "data" / path.name)
    return root


def test_isles_lines(stand_in):
    root = stand_in
    data = root / "data"
    # data/isles: unzip both zips, drop __MACOSX and the perfusion series
    unzip([data / "ISLES2018_Training.zip", data / "ISLES2018_Testing.zip"], data / "isles_tmp")
    assert (
        bash(
            "rm -r data/isles_tmp/__MACOSX && rm -r data/isles_tmp/*/*/*CT_4DPWI* && "
            "mv data/isles_tmp data/isles",
            root,
        ).returncode
        == 0
    )
    # data/ISLES: the slicer on TRAINING/ (16 stand-in cases: --retain=4 instead of 20)
    sliced = bash(
        "rm -rf data/ISLES_tmp data/ISLES && "
        f"{PY}/preprocess/slice_isles.py --source_dir data/isles/TRAINING --dest_dir data/ISLES_tmp "
        "--n_augment=0 --retain=4 && mv data/ISLES_tmp data/ISLES",
        root,
    )
    assert sliced.returncode == 0, sliced.stderr[-2000:]
    train_each(root, "isles", ISLES_TRAINING, ISLES_RUNS)


def test_wmh_lines(stand_in):
    root = stand_in
    data = root / "data"
    zips = [data / name for name in ("Amsterdam_GE3T.zip", "Singapore.zip", "Utrecht.zip")]
    unzip(zips, data / "wmh_tmp")
    flattened = bash(
        "mv data/wmh_tmp/*/* data/wmh_tmp && rmdir data/wmh_tmp/GE3T data/wmh_tmp/Singapore "
        "data/wmh_tmp/Utrecht && rm -r data/wmh_tmp/*/orig && rm -r data/wmh_tmp/*/pre/3DT1.nii.gz "
        "&& mv data/wmh_tmp data/wmh",
        root,
    )
    assert flattened.returncode == 0, flattened.stderr
    sliced = bash(
        "rm -rf data/WMH_tmp && "
        f"{PY}/preprocess/slice_wmh.py --source_dir data/wmh --dest_dir data/WMH_tmp "
        "--n_augment=0 --retain=10 && mv data/WMH_tmp data/WMH",
        root,
    )
    assert sliced.returncode == 0, sliced.stderr[-2000:]
    opt, folders = ISLES_RUNS["gdl_surface_steal"]  # the same line in the original wmh.make
    line = WMH_TRAINING.format(run="gdl_surface_steal", opt=opt, data=folders)
    trained = bash(
        f"{line} && mv results/wmh/gdl_surface_steal_tmp results/wmh/gdl_surface_steal", root
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    check_run(root / "results" / "wmh" / "gdl_surface_steal")


def test_acdc_lines(stand_in):
    root = stand_in
    unzip([root / "data" / "acdc.zip"], root / "data" / "acdc_tmp")
    assert (
        bash(
            "rm data/acdc_tmp/training/*/*_4d.nii.gz && mv data/acdc_tmp data/acdc", root
        ).returncode
        == 0
    )
    # 12 stand-in patients: --retain 3 instead of 25
    sliced = bash(
        "rm -rf data/ACDC-2D_tmp data/ACDC-2D && "
        f'{PY}/preprocess/slice_acdc.py --source_dir="data/acdc/training" '
        "--dest_dir=data/ACDC-2D_tmp --seed=0 --retain 3 && mv data/ACDC-2D_tmp data/ACDC-2D",
        root,
    )
    assert sliced.returncode == 0, sliced.stderr[-2000:]
    train_each(root, "acdc", ACDC_TRAINING, ACDC_RUNS, mkdir=True)
    shutil.rmtree(root / "data" / "acdc")  # keep the temporary folder small
