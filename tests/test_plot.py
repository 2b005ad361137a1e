"""Tests for plot.py: curves and box plots of run folders, and their errors.

The run folders are built here with arrays whose best epochs and values are chosen by
construction; the images are opened with PIL to check their size and that something was drawn.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boundary_loss.report.plot import (
    CURVE_SIZE,
    DPI,
    box_size,
    curve_values,
    main,
    plot_box,
    plot_curves,
)
from tests.cli import assert_clean_error, run_script

ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, name: str, arrays: dict[str, np.ndarray]) -> Path:
    """A run folder holding the given metric arrays."""
    folder = root / name
    folder.mkdir(parents=True)
    for metric, array in arrays.items():
        np.save(folder / f"{metric}.npy", array)
    return folder


def dice_a() -> np.ndarray:
    """E=5 x N=4 x K=2. Class 1 epoch means 0.1, 0.4, 0.8, 0.6, 0.7 (best: epoch 2, where the
    values are 0.7, 0.8, 0.8, 0.9). Class 0 is constant 0.95."""
    data = np.full((5, 4, 2), 0.95)
    data[:, :, 1] = np.array([0.1, 0.4, 0.8, 0.6, 0.7])[:, None]
    data[2, :, 1] = [0.7, 0.8, 0.8, 0.9]
    return data


def dice_b() -> np.ndarray:
    """E=3 x N=6 x K=2 (another run: fewer epochs, more images). Class 1 epoch means 0.3, 0.2,
    0.5 (best: epoch 2); one NaN at epoch 1."""
    data = np.full((3, 6, 2), 0.9)
    data[:, :, 1] = np.array([0.3, 0.2, 0.5])[:, None]
    data[1, 0, 1] = np.nan
    return data


def loss_a() -> np.ndarray:
    """E=4 x I=3 x L=2 losses. Loss 0 epoch means 1.0, 0.5, 0.7, 0.6 (best: epoch 1); loss 1
    epoch means 0.9, 0.8, 0.4, 0.45 (best: epoch 2)."""
    data = np.zeros((4, 3, 2))
    data[:, :, 0] = np.array([1.0, 0.5, 0.7, 0.6])[:, None]
    data[:, :, 1] = np.array([0.9, 0.8, 0.4, 0.45])[:, None]
    return data


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        make_run(tmp_path / "results", "gdl", {"val_dice": dice_a(), "tra_loss": loss_a()}),
        make_run(tmp_path / "results", "surface", {"val_dice": dice_b(), "tra_loss": loss_a()}),
    ]


def check_image(path: Path, size: tuple[float, float]) -> None:
    """The image has the figure's size in pixels and more than one colour."""
    with Image.open(path) as image:
        assert image.size == (round(size[0] * DPI), round(size[1] * DPI))
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 1  # None: more colours than the bound


def test_curves_two_runs(runs: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "results" / "val_dice.png"
    curves = plot_curves(runs, "val_dice.npy", dest)
    check_image(dest, CURVE_SIZE)
    assert [(c.label, c.column, c.best_epoch) for c in curves] == [
        ("gdl", 1, 2),
        ("surface", 1, 2),
    ]
    assert curves[0].best_value == pytest.approx(0.8)
    assert curves[0].legend == "gdl: best 0.8000 at epoch 2"
    assert curves[1].legend == "surface: best 0.5000 at epoch 2"
    np.testing.assert_allclose(curves[0].mean, [0.1, 0.4, 0.8, 0.6, 0.7])
    np.testing.assert_allclose(curves[0].std, [0, 0, np.sqrt(0.005), 0, 0], atol=1e-12)
    np.testing.assert_allclose(curves[1].mean, [0.3, 0.2, 0.5])  # NaN left out at epoch 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["gdl", "surface", "val_dice.png"]


def test_curves_columns_labels_and_best_so_far(runs: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "curves.png"
    curves = plot_curves(
        runs, "val_dice", dest, columns=[0, 1], labels=["A", "B"], ylim=(0, 1), best_so_far=True
    )
    check_image(dest, CURVE_SIZE)
    assert [c.label for c in curves] == ["A (class 0)", "A (class 1)", "B (class 0)", "B (class 1)"]
    # Running max of class 1 of run A: 0.1, 0.4, 0.8, 0.8, 0.8; its std is that of epoch 2.
    np.testing.assert_allclose(curves[1].mean, [0.1, 0.4, 0.8, 0.8, 0.8])
    np.testing.assert_allclose(curves[1].std[2:], np.sqrt(0.005))
    np.testing.assert_allclose(curves[3].mean, [0.3, 0.3, 0.5])
    assert curves[1].best_epoch == 2 and curves[0].best_epoch == 0  # constant: first epoch


def test_loss_curves_use_every_loss_and_the_minimum(runs: list[Path], tmp_path: Path) -> None:
    curves = plot_curves(runs[:1], "tra_loss.npy", tmp_path / "loss.png")
    assert [(c.label, c.best_epoch) for c in curves] == [("gdl (loss 0)", 1), ("gdl (loss 1)", 2)]
    assert curves[1].legend == "gdl (loss 1): best 0.4000 at epoch 2"
    running = [curve_values(loss_a(), 1, "min", best_so_far=True)[0]]
    np.testing.assert_allclose(running[0], [0.9, 0.8, 0.4, 0.4])


def test_curve_values_all_nan_column() -> None:
    data = np.full((3, 2, 2), np.nan)
    mean, std, best = curve_values(data, 1, "max", best_so_far=True)
    assert best is None and np.all(np.isnan(mean)) and np.all(np.isnan(std))


def test_box_two_runs_at_best_epoch(runs: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "results" / "val_dice_boxplot.png"
    boxes = plot_box(runs, "val_dice.npy", dest)
    check_image(dest, box_size(2))
    assert [(b.run, b.column, b.epoch) for b in boxes] == [(0, 1, 2), (1, 1, 2)]
    np.testing.assert_allclose(boxes[0].values, [0.7, 0.8, 0.8, 0.9])
    np.testing.assert_allclose(boxes[1].values, [0.5] * 6)
    assert boxes[0].label == "gdl\nepoch 2, best"


def test_box_at_given_epoch_counts_nan(runs: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "box.png"
    boxes = plot_box(runs, "val_dice", dest, columns=[0, 1], epoch=1, labels=["A", "B"])
    check_image(dest, box_size(4))
    assert [(b.label.split("\n")[0], b.column, b.epoch) for b in boxes] == [
        ("A", 0, 1),
        ("A", 1, 1),
        ("B", 0, 1),
        ("B", 1, 1),
    ]
    assert boxes[3].n_nan == 1 and boxes[3].values.size == 5
    assert boxes[3].label == "B\nclass 1\nepoch 1\n1 NaN"


def test_box_best_epoch_is_the_minimum_for_distances(tmp_path: Path) -> None:
    # Class 1 epoch means 4, 1, 2: the best (lowest) epoch is 1.
    data = np.zeros((3, 2, 2))
    data[:, :, 1] = [[3.0, 5.0], [0.5, 1.5], [2.0, 2.0]]
    run = make_run(tmp_path, "gdl", {"val_3d_hd95": data})
    (box,) = plot_box([run], "val_3d_hd95.npy", tmp_path / "hd95.png")
    assert box.epoch == 1
    np.testing.assert_allclose(box.values, [0.5, 1.5])


def test_command_line_writes_both_plots(runs: list[Path], tmp_path: Path) -> None:
    folders = [str(r) for r in runs]
    curves, box = tmp_path / "c.png", tmp_path / "b.png"
    assert (
        main(
            [
                "curves",
                "--folders",
                *folders,
                "--filename",
                "val_dice.npy",
                "--dest",
                str(curves),
                "--best-so-far",
                "--title",
                "Dice",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "box",
                "--folders",
                *folders,
                "--filename",
                "val_dice.npy",
                "--dest",
                str(box),
                "--ylim",
                "0",
                "1",
                "--epoch",
                "0",
            ]
        )
        == 0
    )
    check_image(curves, CURVE_SIZE)
    check_image(box, box_size(2))


@pytest.mark.parametrize("command", ["curves", "box"])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--folders": ["{root}/gdl", "{root}/gone"]}, r"run folder .*gone does not exist"),
        ({"--filename": ["val_3d_hd95.npy"]}, r"metric file .*gdl/val_3d_hd95\.npy does not"),
        ({"--filename": ["flat.npy"]}, r"flat\.npy has shape \(4, 2\) \(rank 2\)"),
        ({"--filename": ["empty.npy"]}, r"empty\.npy has zero epochs"),
        ({"--columns": ["2"]}, r"column\(s\) \[2\] out of range for .*val_dice\.npy"),
        ({"--labels": ["only-one"]}, r"--labels has 1 name\(s\) .* --folders has 2 run"),
        ({"--ylim": ["1", "0"]}, r"--ylim must be two finite numbers LOW < HIGH"),
        ({"--dest": ["{out}/plot.txt"]}, r"unsupported image extension '\.txt'"),
    ],
)
def test_command_line_errors_leave_no_file(
    runs: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    command: str,
    change: dict[str, list[str]],
    message: str,
) -> None:
    root, out = runs[0].parent, tmp_path / "out"
    np.save(runs[0] / "flat.npy", np.zeros((4, 2)))
    np.save(runs[0] / "empty.npy", np.zeros((0, 4, 2)))
    options = {
        "--folders": [str(r) for r in runs],
        "--filename": ["val_dice.npy"],
        "--dest": [str(out / "plot.png")],
    }
    options.update({k: [v.format(root=root, out=out) for v in vs] for k, vs in change.items()})
    argv = [command] + [part for key, values in options.items() for part in [key, *values]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_box_epoch_out_of_range(runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--epoch 3 is out of range for .*surface.*3 epoch"):
        plot_box(runs, "val_dice.npy", tmp_path / "box.png", epoch=3)
    with pytest.raises(ValueError, match=r"--epoch must be .* >= 0, got -1"):
        plot_box(runs, "val_dice.npy", tmp_path / "box.png", epoch=-1)
    assert list(tmp_path.iterdir()) == [tmp_path / "results"]


def test_failed_save_leaves_previous_image(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while the image is written leaves the old image and no temporary file."""
    dest = tmp_path / "val_dice.png"
    dest.write_bytes(b"old")

    def failing(*args, **kwargs) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("matplotlib.backends.backend_agg.FigureCanvasAgg.print_png", failing)
    with pytest.raises(OSError, match="disk full"):
        plot_curves(runs, "val_dice.npy", dest)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "val_dice.png"]


def test_script_entry_point(runs: list[Path], tmp_path: Path) -> None:
    """`python plot.py` as Make calls it: exit 0 and the image, exit 1 and `error:`."""
    dest = tmp_path / "val_dice.png"
    base = [sys.executable, str(ROOT / "plot.py"), "curves", "--filename", "val_dice.npy"]
    ok = subprocess.run(
        [*base, "--folders", *map(str, runs), "--dest", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    check_image(dest, CURVE_SIZE)
    bad = subprocess.run(
        [*base, "--folders", str(tmp_path / "none"), "--dest", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: run folder") and not (tmp_path / "x.png").exists()


def test_adjacency_box_uses_the_forbidden_pair_count(tmp_path: Path) -> None:
    # Forbidden pairs per patient: epoch means 3, 0.5, 1; the best (lowest) epoch is 1.
    data = np.full((3, 2, 2), 9.0)
    data[:, :, 0] = [[2.0, 4.0], [0.0, 1.0], [1.0, 1.0]]
    run = make_run(tmp_path, "acdc", {"val_adjacency": data})
    (box,) = plot_box([run], "val_adjacency.npy", tmp_path / "adjacency.png")
    assert (box.column, box.epoch) == (0, 1)
    curves = plot_curves([run], "val_adjacency.npy", tmp_path / "c.png", columns=[0, 1])
    assert [c.label for c in curves] == ["acdc (forbidden pairs)", "acdc (components)"]


@pytest.mark.parametrize("command", ["curves", "box"])
@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("dice 7.5", ["gdl/val_dice.npy holds 7.5 at epoch 3, sample 1, class 1", "[0, 1]"]),
        ("other data", ["different data", "'data/isles' and 'data/isles-synthetic/isles'"]),
        ("more classes", ["different class counts", "val_dice.npy has 2 and 4 classes"]),
    ],
)
def test_impossible_values_and_runs_of_different_data_are_refused(
    runs: list[Path], tmp_path: Path, command: str, case: str, needles: list[str]
) -> None:
    """The checks of report.py: one error, no image, the run folders as they were."""
    gdl, surface = runs
    if case == "dice 7.5":
        data = dice_a()
        data[3, 1, 1] = 7.5
        np.save(gdl / "val_dice.npy", data)
    elif case == "other data":
        (gdl / "args.json").write_text(json.dumps({"dataset": "data/isles", "n_class": 2}))
        (surface / "args.json").write_text(
            json.dumps({"dataset": "data/isles-synthetic/isles", "n_class": 2})
        )
    else:
        np.save(surface / "val_dice.npy", np.full((3, 6, 4), 0.5))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    dest = tmp_path / "out" / "val_dice.png"
    proc = run_script(
        "plot.py", command, "--folders", gdl, surface, "--filename", "val_dice.npy", "--dest", dest
    )
    assert_clean_error(proc, *needles)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not dest.parent.exists()


def test_classes_choose_classes_and_leave_loss_and_adjacency_columns(
    runs: list[Path], tmp_path: Path
) -> None:
    """`--classes` can be given for every array: it picks the classes of Dice and distances,
    while loss arrays keep every loss term and adjacency arrays the forbidden pair count."""
    adjacency = np.zeros((3, 2, 2))
    adjacency[:, :, 0] = [[2.0, 4.0], [0.0, 1.0], [1.0, 1.0]]
    np.save(runs[0] / "val_adjacency.npy", adjacency)
    chosen = {
        name: [
            (c.label, c.column)
            for c in plot_curves(runs[:1], name, tmp_path / f"{name}.png", classes=[0, 1])
        ]
        for name in ("val_dice.npy", "tra_loss.npy", "val_adjacency.npy")
    }
    assert chosen == {
        "val_dice.npy": [("gdl (class 0)", 0), ("gdl (class 1)", 1)],
        "tra_loss.npy": [("gdl (loss 0)", 0), ("gdl (loss 1)", 1)],
        "val_adjacency.npy": [("gdl", 0)],
    }
    (box,) = plot_box(runs[:1], "val_adjacency", tmp_path / "box.png", classes=[1])
    assert (box.column, box.epoch) == (0, 1)
    boxes = plot_box(runs, "val_dice", tmp_path / "dice_box.png", classes=[0])
    assert [(b.column, b.epoch) for b in boxes] == [(0, 0), (0, 0)]


def test_classes_draw_the_same_image_as_columns(runs: list[Path], tmp_path: Path) -> None:
    """For a Dice array `--classes 1` and `--columns 1` are the same plot, byte for byte; for a
    loss array `--classes 1` is the plot without a choice."""
    base = ["curves", "--folders", *map(str, runs), "--title", "t"]
    images = {}
    for key, filename, choice in [
        ("dice classes", "val_dice.npy", ["--classes", "1"]),
        ("dice columns", "val_dice.npy", ["--columns", "1"]),
        ("loss classes", "tra_loss.npy", ["--classes", "1"]),
        ("loss default", "tra_loss.npy", []),
    ]:
        dest = tmp_path / f"{key.replace(' ', '_')}.png"
        assert main([*base, "--filename", filename, "--dest", str(dest), *choice]) == 0
        images[key] = dest.read_bytes()
    assert images["dice classes"] == images["dice columns"]
    assert images["loss classes"] == images["loss default"]
    assert images["dice classes"] != images["loss classes"]


@pytest.mark.parametrize("command", ["curves", "box"])
def test_classes_and_columns_together_are_refused(
    runs: list[Path], tmp_path: Path, command: str
) -> None:
    dest = tmp_path / "out" / "plot.png"
    proc = run_script(
        "plot.py",
        command,
        "--folders",
        *runs,
        "--filename",
        "val_dice.npy",
        "--dest",
        dest,
        "--columns",
        "1",
        "--classes",
        "1",
    )
    assert_clean_error(proc, "--columns [1] and --classes [1] both given", "give one")
    assert not dest.parent.exists()


def nan_run(root: Path, name: str, epochs: int = 3) -> Path:
    """A diverged run: every value of its 3D metrics and of val_dice NaN."""
    arrays = {
        m: np.full((epochs, 2, 2), np.nan)
        for m in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95")
    }
    arrays["val_dice"] = np.full((epochs, 4, 2), np.nan)
    return make_run(root, name, arrays)


def dsc_run(root: Path, name: str, dice: list[float]) -> Path:
    """A run of 3 epochs and 2 patients: class 1 of val_3d_dsc has epoch means `dice` (both
    patients alike), distances 1 mm, val_dice 0.5."""
    data = np.ones((3, 2, 2))
    data[:, :, 1] = np.array(dice)[:, None]
    arrays = {
        "val_3d_dsc": data,
        "val_3d_hausdorff": np.ones((3, 2, 2)),
        "val_3d_hd95": np.ones((3, 2, 2)),
        "val_dice": np.full((3, 4, 2), 0.5),
    }
    return make_run(root, name, arrays)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures plot.py saves, to read their titles and legends."""
    from boundary_loss.report import plot

    figures: list = []
    save = plot._save

    def keep(fig, dest) -> None:
        figures.append(fig)
        save(fig, dest)

    monkeypatch.setattr(plot, "_save", keep)
    return figures


def test_diverged_run_does_not_stop_the_plots(tmp_path: Path, drawn: list) -> None:
    """Curves: the diverged run's legend entry says so, nothing is drawn for it, the other
    curves are those of a plot without it. Box plot: no box for it, the title names it."""
    gdl = dsc_run(tmp_path, "gdl", [0.2, 0.6, 0.4])  # best epoch 1
    boundary = nan_run(tmp_path, "boundary")
    curves = plot_curves([gdl, boundary], "val_3d_dsc.npy", tmp_path / "c.png", classes=[1])
    alone = plot_curves([gdl], "val_3d_dsc.npy", tmp_path / "alone.png", classes=[1])
    assert [c.legend for c in curves] == [
        "gdl: best 0.6000 at epoch 1",
        "boundary: diverged (3D metrics all NaN)",
    ]
    assert [c.diverged for c in curves] == [False, True]
    np.testing.assert_array_equal(curves[0].mean, alone[0].mean)
    assert curves[1].best_epoch is None and np.all(np.isnan(curves[1].mean))
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert legend == [c.legend for c in curves]

    boxes = plot_box([boundary, gdl], "val_3d_dsc.npy", tmp_path / "b.png", classes=[1])
    assert [(b.run, b.epoch, b.label) for b in boxes] == [(1, 1, "gdl\nepoch 1, best")]
    np.testing.assert_allclose(boxes[0].values, [0.6, 0.6])
    assert drawn[-1].axes[0].get_title() == (
        "val_3d_dsc at the best epoch (max of the mean)\n"
        "left out, diverged (3D metrics all NaN): boundary"
    )
    check_image(tmp_path / "b.png", box_size(1))
    # val_dice of a diverged run: left out too (the 3D arrays decide)
    (box,) = plot_box([gdl, boundary], "val_dice.npy", tmp_path / "d.png")
    assert box.run == 0
    # from the command line, as Make runs it: exit 0 and an image
    for command in ("curves", "box"):
        dest = tmp_path / f"cli_{command}.png"
        proc = run_script(
            "plot.py",
            command,
            "--folders",
            gdl,
            boundary,
            "--filename",
            "val_3d_hd95.npy",
            "--dest",
            dest,
            "--classes",
            "1",
        )
        assert proc.returncode == 0, proc.stderr
        assert dest.is_file() and "Traceback" not in proc.stderr


def test_every_run_diverged_box_plot(tmp_path: Path, drawn: list) -> None:
    runs = [nan_run(tmp_path, "a"), nan_run(tmp_path, "b")]
    assert plot_box(runs, "val_3d_hd95.npy", tmp_path / "b.png") == []
    assert drawn[0].axes[0].get_title().endswith("diverged (3D metrics all NaN): a, b")
    check_image(tmp_path / "b.png", box_size(0))


def test_diverged_seed_is_left_out_of_its_training_curve(tmp_path: Path) -> None:
    """gdl-seed1 diverged: gdl's curve is seed 0's, its label counts the diverged seed."""
    runs = [
        dsc_run(tmp_path, "gdl-seed0", [0.2, 0.6, 0.4]),
        nan_run(tmp_path, "gdl-seed1"),
        nan_run(tmp_path, "surface-seed0"),
    ]
    curves = plot_curves(runs, "val_3d_dsc.npy", tmp_path / "c.png", classes=[1])
    assert [c.label for c in curves] == [
        "gdl (1 seeds, 1 diverged)",
        "surface (0 seeds, 1 diverged)",
    ]
    np.testing.assert_allclose(curves[0].mean, [0.2, 0.6, 0.4])
    assert curves[0].best_epoch == 1 and not curves[0].diverged
    assert (
        curves[1].diverged
        and curves[1].legend == "surface: diverged (3D metrics all NaN), every seed"
    )
