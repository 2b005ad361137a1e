"""boundary_loss.inference.predict_new: label files for new scans, from one run or an ensemble.

The stand-in is the tiny nnU-Net dataset of tests/volume_data.py (two channels, CT and T2, labels
0, 1 and 3, cases at two spacings), prepared twice for each chain with two seeds, so that the two
runs of each chain have other training cases, hence other CT statistics, on one grid (the slice
axis and shape, or the target spacing): the folds of a cross-validation in small. Each is
trained for one epoch. The scans given to predict-new are copies of validation images, without
their labels:

- one run: the label files are those of the run's own-data predictions (predict.py in 2D,
  predict3d.py in 3D), voxel for voxel, with the same affine;
- two runs: the labels are the argmax of the two runs' averaged probabilities, computed here from
  the networks and the preprocessing functions, and differ from either run's own;
- every refusal is one `error:` line, and leaves the output folder as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from boundary_loss.inference import predict, predict3d, predict_new, steps
from boundary_loss.io.atomic import MARKER
from boundary_loss.networks.registry import get_network
from boundary_loss.preprocessing.plan3d import plan_norms
from boundary_loss.preprocessing.prepare_3d import prepare_3d, prepare_images
from boundary_loss.preprocessing.resample import resample_probabilities
from boundary_loss.preprocessing.slice_nnunet import nnunet_dataset
from boundary_loss.preprocessing.slicing import slice_dataset
from boundary_loss.preprocessing.volumes import Geometry, Volume, load_images, load_volume
from boundary_loss.training import main as training
from boundary_loss.training.validate3d import predict_case
from tests.cli import error_lines, run_module
from tests.volume_data import make_dataset, save_nii

CPU = torch.device("cpu")
SHAPE_2D = (24, 24)  # slices: at least the in-plane sizes (20 x 18), so undone exactly
SEEDS = (3, 4)  # of the two splits, hence of the two runs' CT statistics
LOSSES = "[('GeneralizedDice', {'idc': [0, 1, 2]}, 1)]"
FOLDERS = "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]"


def train(data: Path, run: Path, seed: int, dimensions: int) -> Path:
    """One epoch of main.py on `data`: Dimwit on slices, or a PlainUNet3D of width 2."""
    if dimensions == 2:
        network = ("--network", "Dimwit", "--batch_size", "8", "--grp_regex", r"(case_\d+)_\d+_\d+")
    else:
        network = (
            *("--network", "PlainUNet3D", "--net_params", "{'features': 2}", "--dimensions", "3"),
            *("--batch_size", "2", "--iterations", "1", "--grp_regex", r"(.+_\d+)_\d+"),
        )
    argv = [
        *("--dataset", str(data), "--workdir", str(run), "--cpu", "--seed", str(seed)),
        *network,
        *("--n_class", "3", "--modalities", "2", "--n_epoch", "1", "--compute_3d_dice"),
        *("--losses", LOSSES, "--folders", FOLDERS),
    ]
    assert training.main(argv) == 0
    return run


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> dict:
    """The stand-in, and per chain (2, 3) two (prepared data, trained run) pairs."""
    root = tmp_path_factory.mktemp("predict_new")
    source = make_dataset(root / "Dataset001_Tiny")
    found: dict = {"source": source, 2: [], 3: []}
    for seed in SEEDS:
        sliced = root / f"sliced-{seed}"
        dataset = nnunet_dataset(source, 0, "auto")
        slice_dataset(
            dataset, source, sliced, retain=2, seed=seed, shape=SHAPE_2D, workers=1, progress=False
        )
        found[2].append((sliced, train(sliced, root / f"run2d-{seed}", seed, 2)))
        prepared = prepare_3d(
            source, root / f"prepared-{seed}", retain=2, seed=seed, progress=False
        )
        found[3].append((prepared, train(prepared, root / f"run3d-{seed}", seed, 3)))
    return found


@pytest.fixture(scope="module")
def scans(chains, tmp_path_factory) -> Path:
    """The images of the first split's validation cases, copied without their labels (the same
    split in both chains: the same seed)."""
    folder = tmp_path_factory.mktemp("scans")
    val = json.loads((chains[2][0][0] / "split.json").read_text())["val"]
    assert val == json.loads((chains[3][0][0] / "split.json").read_text())["val"]
    for cid in val:
        for path in sorted((chains["source"] / "imagesTr").glob(f"{cid}_*.nii.gz")):
            shutil.copy(path, folder / path.name)
    return folder


def voxels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def case_ids(folder: Path) -> list[str]:
    return sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*_0000.nii.gz")})


def network_of(run: Path, plan: dict) -> torch.nn.Module:
    """The run's network rebuilt by hand from best.pt, as main.py built it."""
    best = torch.load(run / "best.pt", weights_only=True)
    params = {"features": 2, **plan["grid"]["network"]} if plan["dimensions"] == 3 else {}
    net = get_network(best["network"], best["n_in"], best["n_class"], **params)
    net.load_state_dict(best["model"])
    return net.eval()


def plan_of(run: Path) -> dict:
    return json.loads((run / "plan.json").read_text())


# ---------------------------------------------------------------------------------------------
# One run: the same labels as the own-data predictions
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dimensions", [2, 3])
def test_one_run_gives_the_labels_of_its_own_data_predictions(chains, scans, dimensions, tmp_path):
    data, run = chains[dimensions][0]
    if dimensions == 2:
        own = predict.predict(run, data, tmp_path / "own", CPU, 32)
    else:
        own = predict3d.predict_3d(run, data, tmp_path / "own", CPU, 2)
    timings: dict = {}
    new = predict_new.predict_new([run], scans, tmp_path / "new", CPU, timings=timings)
    cases = case_ids(scans)
    assert sorted(p.name for p in new.iterdir()) == sorted(
        [MARKER, "predictions.json", *(f"{cid}.nii.gz" for cid in cases)]
    )  # no metrics.csv: the scans have no labels
    for cid in cases:
        mine, theirs = voxels(new / f"{cid}.nii.gz"), voxels(own / f"{cid}.nii.gz")
        assert mine[0].dtype == np.uint8 and set(np.unique(mine[0])) <= {0, 1, 3}
        assert np.array_equal(mine[0], theirs[0]), cid
        assert np.array_equal(mine[1], theirs[1]), cid
        assert np.array_equal(mine[1], nib.load(str(scans / f"{cid}_0000.nii.gz")).affine)
    record = json.loads((new / "predictions.json").read_text())
    assert record["runs"] == [{"run": str(run), "best_epoch": 0}]
    assert record["cases"] == cases and record["dimensions"] == dimensions
    assert set(timings) == {*predict_new.PHASES, "cases"} and timings["cases"] == len(cases)
    assert not (tmp_path / "new_tmp").exists()


# ---------------------------------------------------------------------------------------------
# Two runs: the argmax of the averaged probabilities
# ---------------------------------------------------------------------------------------------


def ensemble_2d(runs: list[Path], files: tuple[Path, ...]) -> np.ndarray:
    """The ensemble's labels of one scan, computed here: each run's normalisation, slicing and
    network, softmax, the mean, argmax, back to the source grid."""
    probabilities = []
    for run in runs:
        plan = plan_of(run)
        values = list(plan["labels"].values())
        label_map = tuple((v, i) for i, v in enumerate(values) if v != i)
        geometry = Geometry(plan["grid"]["axis"], plan_norms(plan))
        volume = Volume("scan", files, None)
        images = load_volume(volume, values, label_map, tuple(plan["grid"]["shape"]), geometry)[0]
        with torch.no_grad():
            logits = network_of(run, plan)(torch.from_numpy(images.transpose(3, 0, 1, 2).copy()))
        probabilities.append(torch.softmax(logits.float(), dim=1).numpy())  # Z K H W
    classes = ((probabilities[0] + probabilities[1]) / 2).argmax(axis=1).transpose(1, 2, 0)
    shape = nib.load(str(files[0])).shape
    return steps.to_source_grid(classes.astype(np.uint8), shape, plan["grid"]["axis"], values)


def ensemble_3d(runs: list[Path], files: tuple[Path, ...]) -> np.ndarray:
    """The same in 3D: each run's normalisation and resampling, sliding windows, the mean at
    the target spacing, resampled back, argmax."""
    raw, spacing, _, paths = load_images(Volume("scan", files, None), 2)
    probabilities = []
    for run in runs:
        plan = plan_of(run)
        image = torch.from_numpy(prepare_images(raw, spacing, paths, plan["grid"]))[None]
        net = network_of(run, plan)
        patch = tuple(plan["grid"]["patch_size"])
        probabilities.append(predict_case(net, image, patch, 2)[0].numpy())
    target = plan["grid"]["target_spacing"]
    mean = (probabilities[0] + probabilities[1]) / 2
    back = resample_probabilities(mean, raw[0].shape, spacing=target, target_spacing=spacing)
    return np.asarray(list(plan["labels"].values()), dtype=np.uint8)[back.argmax(axis=0)]


@pytest.mark.slow
@pytest.mark.parametrize("dimensions", [2, 3])
def test_an_ensemble_is_the_argmax_of_the_mean_probabilities(chains, scans, dimensions, tmp_path):
    runs = [run for _, run in chains[dimensions]]
    first, second = plan_of(runs[0]), plan_of(runs[1])
    assert first["normalisation"] != second["normalisation"]  # each fold's CT statistics
    both = predict_new.predict_new(runs, scans, tmp_path / "both", CPU)
    alone = [
        predict_new.predict_new([r], scans, tmp_path / f"alone{i}", CPU) for i, r in enumerate(runs)
    ]
    reference = ensemble_2d if dimensions == 2 else ensemble_3d
    differs = {"runs": 0, "first": 0, "second": 0}
    for cid in case_ids(scans):
        files = tuple(sorted(scans.glob(f"{cid}_*.nii.gz")))
        labels, affine = voxels(both / f"{cid}.nii.gz")
        assert np.array_equal(labels, reference(runs, files)), cid
        assert np.array_equal(affine, nib.load(str(files[0])).affine)
        singles = [voxels(folder / f"{cid}.nii.gz")[0] for folder in alone]
        differs["runs"] += int((singles[0] != singles[1]).sum())
        differs["first"] += int((labels != singles[0]).sum())
        differs["second"] += int((labels != singles[1]).sum())
    assert min(differs.values()) > 0, differs  # compared meaningfully: no copy of either run
    record = json.loads((both / "predictions.json").read_text())
    assert [r["run"] for r in record["runs"]] == [str(r) for r in runs]


# ---------------------------------------------------------------------------------------------
# The command lines
# ---------------------------------------------------------------------------------------------


def one_error(capsys) -> str:
    """The one `error:` line of a refused command (and no traceback); returns it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_the_command_lines_predict_new_scans(chains, scans, tmp_path, capsys):
    """predict.py with --input, predict_new.py, and the installed command's module, in a
    process of its own."""
    runs = [str(run) for _, run in chains[2]]
    out = tmp_path / "a"
    assert predict.main(["--run", *runs, "--input", str(scans), "--output", str(out), "--cpu"]) == 0
    assert "written to" in capsys.readouterr().out
    again = tmp_path / "b"
    argv = ["--run", *runs, "--input", str(scans), "--output", str(again), "--batch_size", "3"]
    assert predict_new.main([*argv, "--cpu"]) == 0
    for cid in case_ids(scans):
        assert np.array_equal(voxels(out / f"{cid}.nii.gz")[0], voxels(again / f"{cid}.nii.gz")[0])
    run3d = str(chains[3][0][1])
    proc = run_module(
        "boundary_loss.inference.predict",
        *("--run", run3d, "--input", scans, "--output", out, "--cpu", "--mirror"),
    )  # an earlier output of the command: replaced
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "predictions.json").read_text())["mirror"] is True


def test_the_installed_commands_are_declared():
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert 'boundary_loss_predict = "boundary_loss.inference.predict:main"' in text
    assert 'boundary_loss_predict_new = "boundary_loss.inference.predict_new:main"' in text


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--run", "r", "--input", "i", "--output", "o", "--sliced", "s"], "do not go together"),
        (["--run", "r", "--sliced", "s", "--dest", "d", "--mirror"], "do not go together"),
        (["--run", "r", "--input", "i"], "missing: --output"),
        (["--run", "a", "b", "--sliced", "s", "--dest", "d"], "an ensemble predicts new scans"),
        (["--run", "r", "--dest", "d"], "--sliced"),
    ],
)
def test_the_two_modes_flags_are_not_mixed(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        predict.main(argv)
    assert exit_.value.code == 2
    assert needle in one_error(capsys)


# ---------------------------------------------------------------------------------------------
# Refusals: one line, nothing written
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory) -> dict[str, Path]:
    """Runs for the refusals, not trained: a fresh Dimwit saved as main.py saves best.pt, with
    the plan main.py records for slices of the stand-in; and a 3D one likewise."""
    from boundary_loss.runfolder.writer import run_plan

    root = tmp_path_factory.mktemp("fake_runs")
    source = make_dataset(root / "Dataset001_Tiny")
    sliced = root / "sliced"
    dataset = nnunet_dataset(source, 0, "auto")
    slice_dataset(dataset, source, sliced, retain=2, shape=SHAPE_2D, workers=1, progress=False)
    prepared = prepare_3d(source, root / "prepared", retain=2, progress=False)
    runs = {}
    for name, data, network, params in (
        ("2d", sliced, "Dimwit", {}),
        ("3d", prepared, "PlainUNet3D", {"features": 2}),
    ):
        plan = run_plan(data)
        full = {**plan["grid"]["network"], **params} if plan["dimensions"] == 3 else params
        torch.manual_seed(0)
        net = get_network(network, 2, 3, **full)
        run = root / name
        run.mkdir()
        args = {"network": network, "net_params": repr(params), "patch_size": None}
        best = {"model": net.state_dict(), "epoch": 0, "metric": 0.0, "network": network}
        torch.save(best | {"n_in": 2, "n_class": 3, "args": args}, run / "best.pt")
        (run / "plan.json").write_text(json.dumps(plan))
        (run / "args.json").write_text(json.dumps(args))
        runs[name] = run
    runs["source"] = source
    return runs


@pytest.fixture
def scan(fake_runs, tmp_path) -> Path:
    """A folder holding one scan, case_002's two channels."""
    folder = tmp_path / "scan"
    folder.mkdir()
    for path in (fake_runs["source"] / "imagesTr").glob("case_002_*.nii.gz"):
        shutil.copy(path, folder / path.name)
    return folder


def refused(capsys, runs: list[Path], scans: Path, out: Path, *needles: str, mirror=False) -> str:
    """Run the command, check it failed with one line holding `needles` and wrote nothing."""
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    argv = ["--run", *map(str, runs), "--input", str(scans), "--output", str(out), "--cpu"]
    assert predict_new.main([*argv, *(["--mirror"] if mirror else [])]) == 1
    line = one_error(capsys)
    for needle in needles:
        assert needle in line, line
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before
    assert not out.with_name(out.name + "_tmp").exists()
    return line


def edited_copy(run: Path, where: Path, **changes) -> Path:
    """A copy of a run whose plan.json has `changes` (a key `grid_<k>` changes grid[k])."""
    copy = Path(shutil.copytree(run, where))
    plan = plan_of(copy)
    for key, value in changes.items():
        if key.startswith("grid_"):
            plan["grid"][key.removeprefix("grid_")] = value
        else:
            plan[key] = value
    (copy / "plan.json").write_text(json.dumps(plan))
    return copy


def test_the_fake_runs_predict(fake_runs, scan, tmp_path):
    """What the refusals below change is all that stops them."""
    for name in ("2d", "3d"):
        out = predict_new.predict_new([fake_runs[name]], scan, tmp_path / name, CPU)
        assert (
            voxels(out / "case_002.nii.gz")[0].shape
            == nib.load(str(scan / "case_002_0000.nii.gz")).shape
        )


def test_a_case_without_the_runs_channels_is_refused(fake_runs, scan, tmp_path, capsys):
    (scan / "case_002_0001.nii.gz").rename(scan / "case_002_0003.nii.gz")
    refused(
        capsys,
        [fake_runs["2d"]],
        scan,
        tmp_path / "out",
        "case case_002 has the channel files case_002_0000.nii.gz, case_002_0003.nii.gz",
        "expected case_002_0000.nii.gz, case_002_0001.nii.gz",
        "2 channels: CT, T2",
    )
    (scan / "case_002_0003.nii.gz").unlink()
    refused(
        capsys, [fake_runs["3d"]], scan, tmp_path / "out", "channel files case_002_0000.nii.gz;"
    )


def test_a_channel_on_another_grid_is_refused(fake_runs, scan, tmp_path, capsys):
    second = scan / "case_002_0001.nii.gz"
    data = np.asarray(nib.load(str(second)).dataobj)
    save_nii(second, data[:-1], (1.2, 2.0, 1.0))
    refused(capsys, [fake_runs["2d"]], scan, tmp_path / "out", f"{second}: shape", "differs from")
    moved = np.diag([1.2, 2.0, 1.0, 1.0])
    moved[0, 3] = 5.0  # the same voxels, five millimetres away
    nib.save(nib.Nifti1Image(data, moved), str(second))
    refused(capsys, [fake_runs["2d"]], scan, tmp_path / "out", f"{second}: affine", "differs from")


def test_a_run_without_a_plan_is_refused(fake_runs, scan, tmp_path, capsys):
    run = Path(shutil.copytree(fake_runs["2d"], tmp_path / "old"))
    (run / "plan.json").unlink()
    data = tmp_path / "data"
    data.mkdir()
    (data / "plan.json").write_text("{}")  # prepared data given as a run, say
    refused(capsys, [data], scan, tmp_path / "out", f"--run {data}: not a training's folder")
    refused(
        capsys,
        [fake_runs["2d"], run],
        scan,
        tmp_path / "out",
        f"--run {run}: no plan.json",
        "not trained on data of dataset.make",
        "trained before runs recorded their plan",
        "boundary_loss.inference.predict --sliced",
    )


def test_a_run_without_best_weights_is_refused(fake_runs, scan, tmp_path, capsys):
    run = Path(shutil.copytree(fake_runs["2d"], tmp_path / "diverged"))
    (run / "best.pt").unlink()
    for name in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        np.save(run / f"{name}.npy", np.full((2, 2, 3), np.nan))
    refused(capsys, [run], scan, tmp_path / "out", f"--run {run}: no best.pt", "diverged")


@pytest.mark.parametrize("dimensions", ["2d", "3d"])
def test_a_normalisation_without_its_statistics_is_refused(
    fake_runs, scan, tmp_path, capsys, dimensions
):
    """A CT entry of plan.json without its clip, mean and std: one line naming the file, before
    any network is loaded."""
    run = fake_runs[dimensions]
    norms = plan_of(run)["normalisation"]
    assert norms[0]["scheme"] == "ct"
    damaged = [{"channel": norms[0]["channel"], "scheme": "ct"}, *norms[1:]]
    other = edited_copy(run, tmp_path / "damaged", normalisation=damaged)
    refused(
        capsys, [other], scan, tmp_path / "out", f"{other / 'plan.json'}: normalisation", "'clip'"
    )


def test_a_3d_plan_whose_grid_copies_differ_is_refused(fake_runs, scan, tmp_path, capsys):
    """A 3D plan.json holds the channels, labels and normalisation twice (at the top and in the
    grid, the plan that prepares the scans): copies that differ are refused in one line."""
    labels = [["background", 0], ["organ", 1], ["tumour", 3]]
    other = edited_copy(fake_runs["3d"], tmp_path / "other", grid_labels=labels)
    refused(
        capsys, [other], scan, tmp_path / "out", f"{other / 'plan.json'}: labels", "grid.labels"
    )


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"labels": {"background": 0, "organ": 1, "tumour": 3}}, ("different labels", "tumour")),
        ({"labels": {"background": 0, "organ": 1, "lesion": 2}}, ("different labels",)),
        (
            {
                "channels": ["CT", "FLAIR"],
                "normalisation": [
                    {"channel": "CT", "scheme": "zscore"},
                    {"channel": "FLAIR", "scheme": "zscore"},
                ],
            },
            ("different channels", "FLAIR"),
        ),
        ({"grid_shape": [32, 32]}, ("different grids", "[32, 32]")),
        ({"grid_axis": 2}, ("different grids",)),
    ],
)
def test_runs_of_other_labels_or_plans_are_refused(
    fake_runs, scan, tmp_path, capsys, changes, needles
):
    other = edited_copy(fake_runs["2d"], tmp_path / "other", **changes)
    first = fake_runs["2d"]
    refused(
        capsys, [first, other], scan, tmp_path / "out", f"--run {first} and --run {other}", *needles
    )


def test_2d_and_3d_runs_or_another_spacing_are_refused(fake_runs, scan, tmp_path, capsys):
    runs = [fake_runs["2d"], fake_runs["3d"]]
    refused(capsys, runs, scan, tmp_path / "out", "different dimensions (2 and 3)")
    spacing = plan_of(fake_runs["3d"])["grid"] | {"target_spacing": [1.0, 2.0, 1.0]}
    other = edited_copy(fake_runs["3d"], tmp_path / "other", grid=spacing)
    refused(
        capsys,
        [fake_runs["3d"], other],
        scan,
        tmp_path / "out",
        "different grids",
        "[1.0, 2.0, 1.0]",
    )
    refused(capsys, [fake_runs["2d"]], scan, tmp_path / "out", "--mirror", "2D", mirror=True)


def test_an_output_folder_of_anything_else_is_never_replaced(fake_runs, scan, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused(capsys, [fake_runs["2d"]], scan, mine, f"--output {mine}: a non-empty folder")
    assert (mine / "notes.txt").read_text() == "mine"
    own = tmp_path / "own"  # an output of the own-data predictions (predict.py)
    own.mkdir()
    (own / MARKER).write_text(json.dumps({"tool": predict.TOOL}))
    (own / "case_002.nii.gz").write_text("")
    refused(capsys, [fake_runs["2d"]], scan, own, "predict_new.py did not write")
    refused(capsys, [fake_runs["2d"]], scan, scan, f"--output {scan}: a non-empty folder")
    earlier = predict_new.predict_new([fake_runs["2d"]], scan, tmp_path / "earlier", CPU)
    (earlier / "stale.nii.gz").write_text("")
    assert predict_new.predict_new([fake_runs["3d"]], scan, earlier, CPU) == earlier  # replaced
    assert not (earlier / "stale.nii.gz").exists()
    assert json.loads((earlier / "predictions.json").read_text())["dimensions"] == 3


def test_an_input_without_scans_is_refused(fake_runs, scan, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no scans here")
    refused(capsys, [fake_runs["2d"]], empty, tmp_path / "out", f"--input {empty}: no image named")
    refused(capsys, [fake_runs["2d"]], tmp_path / "none", tmp_path / "out", "folder not found")
    shutil.copy(scan / "case_002_0000.nii.gz", scan / "case_002.nii.gz")  # a label file, say
    refused(capsys, [fake_runs["2d"]], scan, tmp_path / "out", "case_002.nii.gz: not named")
