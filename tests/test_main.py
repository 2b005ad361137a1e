"""main.py end to end on a small sliced dataset: outputs, learning, resume, bad configuration."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from boundary_loss.training import main
from boundary_loss.training.config import get_args
from tests.cli import ROOT, assert_clean_error, on_small_disk, run_script, small_disk_available
from tests.sliced_data import FOLDERS, LOSSES, STEAL, make_sliced_dataset, training_argv

N_TRAIN, N_VAL, SLICES, BATCH = 3, 2, 4, 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "toy"
    return make_sliced_dataset(root, n_train=N_TRAIN, n_val=N_VAL, slices=SLICES)


def argv(dataset: Path, workdir: Path, *extra: str, n_epoch: int = 2) -> list[str]:
    return training_argv(dataset, workdir, *STEAL, *extra, batch_size=BATCH, n_epoch=n_epoch)


def test_two_epoch_run_writes_every_output(dataset, tmp_path):
    workdir = tmp_path / "run"
    assert main.main(argv(dataset, workdir)) == 0
    n_tra, n_val = N_TRAIN * SLICES, N_VAL * SLICES
    expected = {
        "tra_loss.npy": (2, math.ceil(n_tra / BATCH), 2),
        "val_loss.npy": (2, math.ceil(n_val / BATCH), 2),
        "tra_dice.npy": (2, n_tra, 2),
        "val_dice.npy": (2, n_val, 2),
        "val_3d_dsc.npy": (2, N_VAL, 2),
        "val_3d_hausdorff.npy": (2, N_VAL, 2),
        "val_3d_hd95.npy": (2, N_VAL, 2),
    }
    for name, shape in expected.items():
        assert np.load(workdir / name).shape == shape, name
    for epoch in (0, 1):
        assert len(list((workdir / f"iter{epoch:03d}" / "val").glob("*.png"))) == n_val
    best = int((workdir / "best_epoch.txt").read_text())
    # the first epoch of the highest mean 2D Dice of class 1 (--metric_axis 1, no 3D Dice flag)
    per_epoch = np.load(workdir / "val_dice.npy")[:, :, 1].mean(axis=1)
    assert best == int(np.argmax(per_epoch))
    assert len(list((workdir / "best_epoch" / "val").glob("*.png"))) == n_val
    state = torch.load(workdir / "best.pt", weights_only=True)
    assert state["epoch"] == best and state["network"] == "Dimwit"
    assert set(state["model"]) == {"down.weight", "down.bias", "up.weight", "up.bias"}
    last = torch.load(workdir / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    # StealWeight after epochs 0 and 1: [1, 0.01] -> [0.99, 0.02] -> [0.98, 0.03]
    assert last["weights"] == [[pytest.approx(0.98), pytest.approx(0.03)]]
    rows = (workdir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_3d_hd95_class1" in rows[0]
    assert "tra_loss_SurfaceLoss" in rows[0]
    prov = json.loads((workdir / "provenance.json").read_text())
    assert {"commit", "dirty", "command", "packages", "device", "seed"} <= set(prov)
    assert "--losses" in prov["command"] and prov["packages"]["torch"].startswith("2.13")
    assert json.loads((workdir / "args.json").read_text())["n_epoch"] == 2
    # Every argument as given, as the command line parses it (a resume compares them).
    given = vars(get_args(argv(dataset, workdir)))
    assert json.loads((workdir / "args.json").read_text()) == given
    assert last["args"] == given and state["args"] == given
    assert (workdir / "git.diff").exists()


def test_3d_metrics_equal_an_independent_computation_from_the_saved_predictions(dataset, tmp_path):
    medpy = pytest.importorskip("medpy.metric.binary")
    workdir = tmp_path / "run"
    assert main.main(argv(dataset, workdir, n_epoch=1)) == 0
    dsc = np.load(workdir / "val_3d_dsc.npy")[0]
    hd = np.load(workdir / "val_3d_hausdorff.npy")[0]
    patients = sorted({p.stem.rsplit("_", 1)[0] for p in (dataset / "val" / "gt_npy").iterdir()})
    for i, patient in enumerate(patients):
        stems = sorted(p.stem for p in (dataset / "val" / "gt_npy").glob(f"{patient}_*.npy"))
        gt = np.stack([np.load(dataset / "val" / "gt_npy" / f"{s}.npy") for s in stems], -1)
        pred = np.stack(
            [np.asarray(Image.open(workdir / "iter000" / "val" / f"{s}.png")) for s in stems], -1
        )
        p, t = pred == 1, gt == 1
        assert dsc[i, 1] == pytest.approx((2 * (p & t).sum() + 1e-8) / (p.sum() + t.sum() + 1e-8))
        if p.any() and t.any():
            assert hd[i, 1] == pytest.approx(medpy.hd(p, t, voxelspacing=(0.9, 0.9, 3.0)), 1e-4)
        elif p.any() or t.any():  # one empty: the volume diagonal in mm
            assert hd[i, 1] == pytest.approx(np.linalg.norm(np.array(gt.shape) * (0.9, 0.9, 3.0)))


def test_unet_learns_a_handful_of_slices(tmp_path):
    # The loop, the losses and the metrics together: a narrow UNet fits 8 slices on the CPU.
    data = make_sliced_dataset(tmp_path / "few", n_train=2, n_val=1, slices=4, size=32, seed=3)
    workdir = tmp_path / "learn"
    # lr 2e-3 for 30 epochs: 5e-3 oscillated between 0.2 and 0.83 on a 2-core x86 CPU.
    args = argv(
        data,
        workdir,
        "--validation_folder",
        "train",
        "--net_params",
        "{'nG': 8}",
        "--l_rate",
        "2e-3",
        n_epoch=30,
    )
    args[args.index("Dimwit")] = "UNet"
    assert main.main(args) == 0
    val_dice = np.load(workdir / "val_dice.npy")  # epoch x slice x class, on the train slices
    nonempty = np.array(
        [np.load(p).any() for p in sorted((data / "train" / "gt_npy").glob("*.npy"))]
    )
    best = val_dice[:, nonempty, 1].mean(axis=1).max()
    assert best > 0.9, f"best foreground Dice {best:.3f} after 30 epochs"


def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(dataset, tmp_path):
    extra = ("--net_params", "{'nG': 4}", "--schedule")
    full, split = tmp_path / "full", tmp_path / "split"
    unet = argv(dataset, full, *extra, n_epoch=3)
    unet[unet.index("Dimwit")] = "UNet"
    assert main.main(unet) == 0
    first = argv(dataset, split, *extra, n_epoch=1)
    first[first.index("Dimwit")] = "UNet"
    assert main.main(first) == 0  # "interrupted" after epoch 0
    second = argv(dataset, split, *extra, "--resume", n_epoch=3)
    second[second.index("Dimwit")] = "UNet"
    assert main.main(second) == 0
    for name in main.TRAINING_ARRAYS:
        np.testing.assert_array_equal(np.load(full / f"{name}.npy"), np.load(split / f"{name}.npy"))
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(split / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def replace(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag not in args:
        return [*args, flag, value]
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize(
    "flag, value, message",
    [
        (
            "--losses",
            "[('Nope', {'idc': [1]}, 1), ('SurfaceLoss', {'idc': [1]}, 1)]",
            "unknown loss 'Nope'",
        ),
        (
            "--folders",
            FOLDERS.replace("dist_map_transform", "distance_transform"),
            "unknown name 'distance_transform'",
        ),
        ("--losses", LOSSES[:-1], "--losses: not a valid literal"),
        ("--losses", "[('GeneralizedDice', {'idc': [0, 1]}, 1, 2)]", "--losses: malformed"),
        (
            "--losses",
            "[('GeneralizedDice', {'idc': [0, 1]}, 1)]",
            "GeneralizedDice takes a one-hot target, but its folder "
            "\\('gt_npy', dist_map_transform",
        ),
        (
            "--folders",
            FOLDERS[:-1] + ", ('gt_npy', gt_transform, True)" * 2 + "]",
            "2 loss\\(es\\) but --folders gives 5 folder\\(s\\).*input, the ground truth and one",
        ),
        (
            "--losses",
            "[('FocalLoss', {'idc': [1]}, 1), ('SurfaceLoss', {'idc': [1]}, 1)]",
            "FocalLoss",
        ),
        ("--scheduler_params", "{'to_add': 1}", "do not fit StealWeight"),
        ("--net_params", "{'width': 3}", "--net_params.*do not fit Dimwit"),
    ],
)
def test_bad_configuration_gives_one_clear_message(dataset, tmp_path, capsys, flag, value, message):
    assert main.main(replace(argv(dataset, tmp_path / "run"), flag, value)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_code_in_losses_is_refused_not_run(dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    assert main.main(replace(argv(dataset, tmp_path / "run"), "--losses", code)) == 1
    assert "nothing is executed" in capsys.readouterr().err
    assert not marker.exists()


def test_missing_data_folder_and_mismatched_files(dataset, tmp_path, capsys):
    assert main.main(replace(argv(dataset, tmp_path / "a"), "--dataset", str(tmp_path))) == 1
    assert "data folder not found" in capsys.readouterr().err

    broken = make_sliced_dataset(tmp_path / "broken", n_train=1, n_val=1, slices=3)
    (broken / "train" / "gt_npy" / "case_1_00_0001.npy").unlink()
    assert main.main(argv(broken, tmp_path / "b")) == 1
    err = capsys.readouterr().err
    assert "images and labels do not match" in err and "case_1_00_0001" in err


def test_labels_saved_as_0_255_are_refused_with_the_fix(tmp_path, capsys):
    data = make_sliced_dataset(tmp_path / "d", n_train=1, n_val=1, slices=2)
    path = data / "train" / "gt_npy" / "case_1_00_0000.npy"
    np.save(path, np.load(path) * 255)
    assert main.main(argv(data, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "case_1_00_0000.npy" in err and "divide the mask by 255" in err


def test_nan_input_stops_with_epoch_batch_and_slice_named(tmp_path, capsys):
    data = make_sliced_dataset(tmp_path / "d", n_train=1, n_val=1, slices=2)
    path = data / "train" / "in_npy" / "case_1_00_0000.npy"
    image = np.load(path)
    image[0, 0, 0] = np.nan
    np.save(path, image)
    assert main.main(argv(data, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "epoch 0, train batch 0" in err and "NaN" in err


def test_resume_without_a_run_is_an_error(dataset, tmp_path, capsys):
    assert main.main(argv(dataset, tmp_path / "none", "--resume")) == 1
    assert "nothing to resume" in capsys.readouterr().err


def brute_force_violations(pred: np.ndarray, forbidden: np.ndarray) -> tuple[int, int]:
    """Forbidden (pixel, 8-neighbour) pairs of a 2D label map and the connected components
    (8-connected, per class) holding a pixel with a forbidden neighbour, by plain loops."""
    H, W = pred.shape
    bad = np.zeros(pred.shape, bool)
    pairs = 0
    for y in range(H):
        for x in range(W):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if (dy or dx) and 0 <= ny < H and 0 <= nx < W:
                        if forbidden[pred[y, x], pred[ny, nx]]:
                            pairs += 1
                            bad[y, x] = True
    seen = np.zeros(pred.shape, bool)
    components = 0
    for y in range(H):
        for x in range(W):
            if seen[y, x]:
                continue
            stack, members = [(y, x)], []
            seen[y, x] = True
            while stack:  # flood fill of the component of (y, x)
                cy, cx = stack.pop()
                members.append((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < H and 0 <= nx < W and not seen[ny, nx]:
                            if pred[ny, nx] == pred[y, x]:
                                seen[ny, nx] = True
                                stack.append((ny, nx))
            components += any(bad[m] for m in members)
    return pairs, components


def test_adjacency_constraint_and_its_metric(tmp_path):
    # Three classes: discs of class 1 and 2 on a background, never touching each other.
    from boundary_loss.maps.adjacency import count_adjacency

    data = make_sliced_dataset(tmp_path / "d", n_train=2, n_val=2, slices=3, K=3, size=32)
    gts = [np.load(p) for p in sorted((data / "train" / "gt_npy").glob("*.npy"))]
    graph = sum(count_adjacency(g, 3) for g in gts)
    graph_path = tmp_path / "graph.csv"
    np.savetxt(graph_path, graph, fmt="%d", delimiter=";")
    losses = (
        "[('CrossEntropy', {'idc': [0, 1, 2]}, 1), "
        f"('NonAdjacencyLoss', {{'idc': [0, 1, 2], 'graph': '{graph_path}'}}, 1)]"
    )
    folders = (
        "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True), "
        "('gt_npy', gt_transform, True)]"
    )
    args = argv(data, tmp_path / "run", n_epoch=2)
    args = replace(args, "--losses", losses)
    args = replace(args, "--folders", folders)
    args = replace(args, "--scheduler", "LambdaController")
    args = replace(args, "--scheduler_params", "{'fraction': 0.1}")
    args = replace(args, "--n_class", "3")
    args += ["--adjacency_graph", str(graph_path)]
    assert main.main(args) == 0
    violations = np.load(tmp_path / "run" / "val_adjacency.npy")
    assert violations.shape == (2, 2, 2)  # epoch x patient x (pairs, components)
    forbidden = graph == 0
    for epoch in range(2):
        predictions = sorted((tmp_path / "run" / f"iter{epoch:03d}" / "val").glob("*.png"))
        for p, patient in enumerate(sorted({f.stem.rsplit("_", 1)[0] for f in predictions})):
            slices = [np.asarray(Image.open(f)) for f in predictions if f.stem.startswith(patient)]
            expected = np.sum([brute_force_violations(s, forbidden) for s in slices], axis=0)
            np.testing.assert_array_equal(violations[epoch, p], expected)
    # The controller set the penalty's weight from the epoch-0 losses, then kept it positive.
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["weights"][0][0] == 1.0 and last["weights"][0][1] > 0
    assert "val_adjacency_pairs" in (tmp_path / "run" / "metrics.csv").read_text()


def test_semi_supervised_unlabelled_folder(tmp_path):
    # The penalty also runs on slices without ground truth: an 'unlabelled' split of images only.
    from boundary_loss.maps.adjacency import count_adjacency

    data = make_sliced_dataset(tmp_path / "d", n_train=2, n_val=1, slices=3, K=3)
    shutil.copytree(data / "train" / "in_npy", data / "unlabelled" / "in_npy")
    shutil.copy(data / "train" / "spacing.json", data / "unlabelled" / "spacing.json")
    graph = sum(count_adjacency(np.load(p), 3) for p in (data / "train" / "gt_npy").iterdir())
    graph_path = tmp_path / "graph.csv"
    np.savetxt(graph_path, graph, fmt="%d", delimiter=";")
    adj = f"('NonAdjacencyLoss', {{'idc': [0, 1, 2], 'graph': '{graph_path}'}}, 0.5)"
    losses = f"[[('GeneralizedDice', {{'idc': [0, 1, 2]}}, 1), {adj}], [{adj}]]"
    folders = (
        "[[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True), "
        "('gt_npy', gt_transform, True)], "
        "[('in_npy', tensor_transform, False), ('in_npy', tensor_transform, False)]]"
    )
    args = argv(
        data,
        tmp_path / "run",
        "--training_folders",
        "train",
        "unlabelled",
        "--val_loader_id",
        "0",
        n_epoch=1,
    )
    args = replace(replace(args, "--losses", losses), "--folders", folders)
    args = replace(args, "--scheduler", "DummyScheduler")
    args = replace(replace(args, "--scheduler_params", "{}"), "--n_class", "3")
    assert main.main(args) == 0
    tra_dice = np.load(tmp_path / "run" / "tra_dice.npy")[0]  # slice x class
    assert tra_dice.shape == (12, 3)  # 6 labelled slices, then 6 unlabelled ones
    assert np.isfinite(tra_dice[:6]).all() and np.isnan(tra_dice[6:]).all()


def test_threads_option_sets_torch_threads(dataset, tmp_path):
    before = torch.get_num_threads()
    try:
        assert main.main(argv(dataset, tmp_path / "run", "--threads", "1", n_epoch=1)) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Bad input from the command line, as a user types it: one `error:` line, no traceback
# ---------------------------------------------------------------------------------------------

GDL = "('GeneralizedDice', {'idc': [0, 1]}, 1)"


def surface_with(idc: str = "[1]", weight: str = "0.01") -> str:
    return f"[{GDL}, ('SurfaceLoss', {{'idc': {idc}}}, {weight})]"


@pytest.mark.parametrize(
    "flag, value, needles",
    [
        ("--temperature", "0", ["--temperature must be a positive number, got 0.0"]),
        ("--temperature", "-2", ["--temperature must be a positive number, got -2.0"]),
        ("--l_rate", "nan", ["--l_rate must be a positive number, got nan"]),
        ("--csv", "../../x.csv", ["--csv '../../x.csv': expected a file name"]),
        ("--csv", "/tmp/x.csv", ["--csv '/tmp/x.csv': expected a file name"]),
        ("--losses", surface_with(weight="-0.01"), ["weight of SurfaceLoss must be a number >= 0"]),
        ("--losses", surface_with(weight="1e999"), ["weight of SurfaceLoss", "inf"]),
        ("--losses", surface_with(idc="[1] * 3"), ["--losses: only literals"]),
        (
            "--losses",
            surface_with(idc=str([1] * 30_000)),
            ["idc of SurfaceLoss", "[1] more than once"],
        ),
        (
            "--losses",
            surface_with(idc=str(list(range(2, 10_000)))),
            ["idc of SurfaceLoss", "[2, 3, 4, 5, 6] outside the 2 classes"],
        ),
        ("--losses", surface_with(idc="[1, -1]"), ["[1] more than once"]),
        ("--losses", surface_with(idc="[1.0]"), ["must be a list of class indices"]),
        ("--losses", surface_with(weight="-" * 1000 + "1"), ["--losses: nested too deeply"]),
        ("--losses", "[" * 10_000 + "]" * 10_000, ["--losses: not a valid literal", "20000 char"]),
    ],
)
def test_bad_flags_are_one_line_errors_in_a_subprocess(dataset, tmp_path, flag, value, needles):
    workdir = tmp_path / "run"
    proc = run_script("main.py", *replace(argv(dataset, workdir), flag, value), timeout=120)
    assert_clean_error(proc, *needles)
    assert not (workdir / "metrics.csv").exists() and not (tmp_path / "x.csv").exists()


def test_non_integer_labels_are_refused_with_the_file_named(tmp_path):
    data = make_sliced_dataset(tmp_path / "d", n_train=1, n_val=1, slices=2)
    path = data / "train" / "gt_npy" / "case_1_00_0001.npy"
    np.save(path, np.load(path).astype(np.float32) * 0.5)
    proc = run_script("main.py", *argv(data, tmp_path / "run"), timeout=120)
    assert_clean_error(proc, str(path), "must be class indices", "0.5")


def test_bad_labels_read_by_a_loader_worker_are_one_line_too(tmp_path):
    """A DataLoader worker's error reaches the user as its own message, not torch's wrapper
    with the worker's traceback."""
    data = make_sliced_dataset(tmp_path / "d", n_train=1, n_val=1, slices=2)
    path = data / "train" / "gt_npy" / "case_1_00_0001.npy"
    np.save(path, np.load(path).astype(np.float32) * 0.5)
    proc = run_script("main.py", *argv(data, tmp_path / "run", "--workers", "1"), timeout=120)
    line = assert_clean_error(proc, str(path), "must be class indices")
    assert "DataLoader worker" not in line


def test_corrupt_spacing_3d_json_is_named(tmp_path):
    data = make_sliced_dataset(tmp_path / "d", n_train=1, n_val=1, slices=2)
    (data / "spacing_3d.json").write_text('{"case_1": [0.9, 0.9')
    proc = run_script("main.py", *argv(data, tmp_path / "run"), timeout=120)
    assert_clean_error(proc, str(data / "spacing_3d.json"), "not a readable JSON file")
    (data / "spacing_3d.json").write_text('{"case_1": [0.9, 0.9, -3]}')
    proc = run_script("main.py", *argv(data, tmp_path / "run"), timeout=120)
    assert_clean_error(proc, str(data / "spacing_3d.json"), "three positive voxel sizes")


@pytest.mark.skipif(not small_disk_available(), reason="needs a tmpfs mount (unshare -rm)")
@pytest.mark.parametrize("size_kb", [40, 160, 240])  # full in epoch 0, or later on a checkpoint
def test_full_disk_during_training_names_the_file_and_leaves_no_partial_product(
    dataset, tmp_path, size_kb
):
    disk = tmp_path / "disk"
    command = [sys.executable, ROOT / "main.py", *argv(dataset, disk / "run", n_epoch=6)]
    proc, left = on_small_disk(command, disk, size_kb=size_kb)
    line = assert_clean_error(proc, "no space left on device while writing", str(disk / "run"))
    assert "free some space" in line
    assert not [name for name in left if name.endswith(".tmp")], left  # atomic writes cleaned up
