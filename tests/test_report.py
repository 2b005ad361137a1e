"""Tests for report.py and report_page.py: best epochs, mean and std, pages and errors.

The run folders are built here with arrays whose best epochs, means and standard deviations are
chosen by construction and worked out by hand in each test.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from boundary_loss.io.atomic import atomic_write
from boundary_loss.report.summary import build_table, main, summarise, write_report
from tests.cli import assert_clean_error, run_script

ROOT = Path(__file__).resolve().parents[1]


def make_run(
    root: Path,
    name: str,
    arrays: dict[str, np.ndarray],
    args: dict | None = None,
    provenance: dict | None = None,
    diff: str | None = None,
) -> Path:
    """A run folder as main.py writes it: metric arrays and, optionally, the side files."""
    folder = root / name
    folder.mkdir(parents=True)
    for metric, array in arrays.items():
        np.save(folder / f"{metric}.npy", array)
    if args is not None:
        (folder / "args.json").write_text(json.dumps(args))
    if provenance is not None:
        (folder / "provenance.json").write_text(json.dumps(provenance))
    if diff is not None:
        (folder / "git.diff").write_text(diff)
    return folder


def dice_array() -> np.ndarray:
    """E=4 x N=3 x K=2. Class 1: epoch means 0.2, 0.5, 0.9, 0.7, so the best epoch is 2, where
    the values are 0.8, 0.9, 1.0: mean 0.9, std sqrt(0.02 / 3). Class 0 is best at epoch 0, so a
    wrong default column would show."""
    data = np.zeros((4, 3, 2))
    data[:, :, 0] = [[1.0, 1.0, 1.0], [0.1, 0.1, 0.1], [0.0, 0.0, 0.0], [0.2, 0.2, 0.2]]
    data[:, :, 1] = [[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.8, 0.9, 1.0], [0.7, 0.7, 0.7]]
    return data


def hausdorff_array() -> np.ndarray:
    """E=3 x P=2 x K=2. Class 1: epoch means 5, 2, 3, so the best (lowest) epoch is 1, where the
    values are 1 and 3: mean 2, std 1."""
    data = np.full((3, 2, 2), 50.0)
    data[:, :, 1] = [[4.0, 6.0], [1.0, 3.0], [3.0, 3.0]]
    return data


PROVENANCE = {
    "commit": "0123abcd",
    "dirty": True,
    "command": "python main.py --losses \"[('GeneralizedDice', {'idc': [0, 1]}, 1)]\" <in> & out",
    "python": "3.11.9",
    "packages": {"torch": "2.13.0", "numpy": "2.2.6"},
    "device": "cpu",
    "date": "2025-01-02T03:04:05",
    "seed": 1234,
}


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """`gdl` (4 epochs of 4, with provenance) and `surface` (2 epochs of 4, no provenance)."""
    gdl = make_run(
        tmp_path / "results",
        "gdl",
        {"val_dice": dice_array(), "val_3d_hausdorff": hausdorff_array()},
        args={"n_epoch": 4, "network": "UNet", "losses": "[('GeneralizedDice', {}, 1)]"},
        provenance=PROVENANCE,
        diff="diff --git a/losses.py b/losses.py\n+x\n",
    )
    # Class 1 of surface: epoch means 0.6 and 0.4; best epoch 0, mean 0.6, std 0.2.
    dice = np.zeros((2, 2, 2))
    dice[:, :, 1] = [[0.4, 0.8], [0.4, 0.4]]
    # Class 1 distances: epoch means 7 and 1.5; best epoch 1, mean 1.5, std 0.5.
    hd = np.zeros((2, 2, 2))
    hd[:, :, 1] = [[7.0, 7.0], [1.0, 2.0]]
    surface = make_run(
        tmp_path / "results",
        "surface",
        {"val_dice": dice, "val_3d_hausdorff": hd},
        args={"n_epoch": 4},
    )
    return gdl, surface


def test_best_epoch_max_for_dice_min_for_distances(two_runs: tuple[Path, Path]) -> None:
    gdl, surface = two_runs
    runs = summarise([gdl, surface], ["val_dice", "val_3d_hausdorff"])
    dice, hd = runs[0].metrics["val_dice"], runs[0].metrics["val_3d_hausdorff"]
    assert (dice.mode, dice.columns, dice.best_epoch) == ("max", (1,), 2)
    assert dice.mean == pytest.approx(0.9)
    assert dice.std == pytest.approx(math.sqrt(0.02 / 3))
    assert (hd.mode, hd.columns, hd.best_epoch) == ("min", (1,), 1)
    assert (hd.mean, hd.std) == pytest.approx((2.0, 1.0))
    dice, hd = runs[1].metrics["val_dice"], runs[1].metrics["val_3d_hausdorff"]
    assert (dice.best_epoch, dice.mean, dice.std) == (0, pytest.approx(0.6), pytest.approx(0.2))
    assert (hd.best_epoch, hd.mean, hd.std) == (1, pytest.approx(1.5), pytest.approx(0.5))
    assert dice.n_nan == hd.n_nan == 0


def test_explicit_columns_average_classes_per_sample(tmp_path: Path) -> None:
    # Columns 0 and 1 of dice_array: per-sample means at epoch 0 are 0.55, 0.6, 0.65 (epoch
    # mean 0.6); the next epochs have means 0.3, 0.45 and 0.45: the best epoch is 0.
    run = make_run(tmp_path, "run", {"val_dice": dice_array()})
    (s,) = [r.metrics["val_dice"] for r in summarise([run], ["val_dice.npy"], columns=[0, 1])]
    assert (s.best_epoch, s.columns) == (0, (0, 1))
    assert s.mean == pytest.approx(0.6)
    assert s.std == pytest.approx(math.sqrt((0.05**2 * 2) / 3))


def test_per_class(tmp_path: Path) -> None:
    # E=2 x N=2 x K=3, columns 1 and 2. Epoch 0: class 1 = [0.2, 0.4], class 2 = [0.6, 0.6],
    # mean 0.45; epoch 1: class 1 = [0.9, 0.5], class 2 = [0.2, 0.4], mean 0.5, the best.
    data = np.zeros((2, 2, 3))
    data[0, :, 1], data[0, :, 2] = [0.2, 0.4], [0.6, 0.6]
    data[1, :, 1], data[1, :, 2] = [0.9, 0.5], [0.2, 0.4]
    run = make_run(tmp_path, "run", {"val_3d_dsc": data})
    (summary,) = summarise([run], ["val_3d_dsc"], per_class=True)
    s = summary.metrics["val_3d_dsc"]
    assert s.best_epoch == 1
    assert s.mean == pytest.approx(0.5)  # per sample: 0.55 and 0.45
    assert s.std == pytest.approx(0.05)
    assert s.class_mean == pytest.approx({1: 0.7, 2: 0.3})
    assert s.class_std == pytest.approx({1: 0.2, 2: 0.1})
    assert s.class_nan == {1: 0, 2: 0}
    table = build_table([summary], per_class=True)
    assert table.header[2:] == [
        "val_3d_dsc[1] (higher is better)",
        "val_3d_dsc[2] (higher is better)",
    ]
    assert table.rows[0][2:] == ["0.7000 +- 0.2000 (epoch 1)", "0.3000 +- 0.1000 (epoch 1)"]
    # Without per_class the summary holds no per-class values, and a per-class table says so.
    (plain,) = summarise([run], ["val_3d_dsc"])
    assert plain.metrics["val_3d_dsc"].class_mean == {}
    with pytest.raises(ValueError, match="per_class"):
        build_table([plain], per_class=True)


def test_nan_values_are_left_out_and_counted(tmp_path: Path) -> None:
    # Columns 1 and 2. Epoch 0 is all NaN and must not be chosen. Epoch 1: sample 0 has
    # [0.6, NaN] -> 0.6, sample 1 has [0.8, 1.0] -> 0.9, sample 2 is all NaN: mean 0.75,
    # std 0.15, 3 NaN values. Epoch 2: every sample 0.5.
    data = np.full((3, 3, 3), np.nan)
    data[1, 0, 1:] = [0.6, np.nan]
    data[1, 1, 1:] = [0.8, 1.0]
    data[2, :, 1:] = 0.5
    # val_3d_hd95: class 1 never predicted (NaN), the background's distance 0: not a diverged run
    hd95 = np.full((2, 2, 2), np.nan)
    hd95[:, :, 0] = 0.0
    run = make_run(tmp_path, "run", {"val_dice": data, "val_3d_hd95": hd95})
    (summary,) = summarise([run], ["val_dice", "val_3d_hd95"], per_class=True)
    s = summary.metrics["val_dice"]
    assert (s.best_epoch, s.n_nan) == (1, 3)
    assert (s.mean, s.std) == pytest.approx((0.75, 0.15))
    assert s.class_mean == pytest.approx({1: 0.7, 2: 1.0})
    assert s.class_nan == {1: 1, 2: 2}
    empty = summary.metrics["val_3d_hd95"]  # every value of class 1 NaN: no best epoch
    assert empty.best_epoch is None and math.isnan(empty.mean) and empty.n_nan == 2
    assert not summary.diverged
    row = build_table([summary]).rows[0]
    assert row[2] == "0.7500 +- 0.1500 (epoch 1, 3 NaN)"
    assert row[3] == "all NaN (2 values)"
    # Per class: class 1 of the distances has no finite value at all.
    assert build_table([summary], per_class=True).rows[0][2:] == [
        "0.7000 +- 0.1000 (epoch 1, 1 NaN)",
        "1.0000 +- 0.0000 (epoch 1, 2 NaN)",
        "all NaN (2 values)",
    ]


def test_different_epoch_counts_and_unfinished_runs(two_runs: tuple[Path, Path]) -> None:
    gdl, surface = two_runs
    runs = summarise([gdl, surface], ["val_dice"])
    assert [(r.epochs_done, r.epochs_planned, r.unfinished) for r in runs] == [
        (4, 4, False),
        (2, 4, True),
    ]
    table = build_table(runs)
    assert [row[1] for row in table.rows] == ["4/4", "2/4 unfinished"]


def test_table_bold_marks_the_best_run_per_metric(two_runs: tuple[Path, Path]) -> None:
    # val_dice: gdl 0.9 > surface 0.6; val_3d_hausdorff: surface 1.5 < gdl 2.
    table = build_table(summarise(two_runs, ["val_dice", "val_3d_hausdorff"]))
    assert table.header == [
        "run",
        "epochs",
        "val_dice (higher is better)",
        "val_3d_hausdorff (lower is better)",
    ]
    assert [row[0] for row in table.rows] == ["gdl", "surface"]
    assert table.bold == [[False, False, True, False], [False, False, False, True]]


def test_printed_table(two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    gdl, surface = two_runs
    assert main(["--folders", str(gdl), str(surface), "--metrics", "val_dice"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run "))
    rows = lines[header + 2 : header + 4]
    assert rows[0].startswith("gdl ") and "0.9000 +- 0.0816 (epoch 2) *" in rows[0]
    assert rows[1].startswith("surface ") and "0.6000 +- 0.2000 (epoch 0)" in rows[1]
    # Aligned: every column starts at the same offset in the header and in every row.
    start = lines[header].index("val_dice")
    assert rows[0].index("0.9000") == rows[1].index("0.6000") == start
    assert rows[0].index("4/4") == rows[1].index("2/4") == lines[header].index("epochs")
    assert any("surface: provenance.json is missing" in line for line in lines)


def test_markdown_and_html_pages(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    gdl, surface = two_runs
    plots = tmp_path / "results" / "plots"
    plots.mkdir()
    for name in ("val_dice.png", "val dice box.png"):
        (plots / name).write_bytes(b"image")
    dest = tmp_path / "results" / "report" / "report.md"
    code = main(
        [
            "--folders",
            str(gdl),
            str(surface),
            "--metrics",
            "val_dice",
            "val_3d_hausdorff",
            "--dest",
            str(dest),
            "--html",
            "--title",
            "ISLES <test> & co",
            "--plots",
            str(plots / "val_dice.png"),
            str(plots / "val dice box.png"),
        ]
    )
    assert code == 0
    page = dest.read_text()
    assert page.startswith("# ISLES \\<test\\> & co\n")
    assert "| run | epochs | val_dice (higher is better) |" in page
    assert "| gdl | 4/4 | **0.9000 +- 0.0816 (epoch 2)** | 2.0000 +- 1.0000 (epoch 1) |" in page
    assert "| surface | 2/4 unfinished | 0.6000 +- 0.2000 (epoch 0) | **1.5000 +-" in page
    assert "Unfinished runs (fewer epochs than planned): surface." in page
    assert "![val_dice](../plots/val_dice.png)" in page
    assert "![val dice box](../plots/val%20dice%20box.png)" in page
    for text in (
        "commit: `0123abcd`",
        "dirty (uncommitted changes)",
        "seed: 1234",
        "device: cpu",
        "torch==2.13.0",
        "numpy==2.2.6",
        "git.diff: 2 lines",
        '"network": "UNet"',
        "main.py --losses",
    ):
        assert text in page, text
    surface_part = page.split("### surface")[1]
    assert "provenance.json is missing: provenance unknown" in surface_part
    assert '"n_epoch": 4' in surface_part

    html_page = dest.with_suffix(".html").read_text()
    assert html_page.startswith("<!DOCTYPE html>")
    assert "<title>ISLES &lt;test&gt; &amp; co</title>" in html_page
    assert "<td><b>0.9000 +- 0.0816 (epoch 2)</b></td>" in html_page
    assert '<img src="../plots/val_dice.png" alt="val_dice">' in html_page
    assert "&lt;in&gt; &amp; out" in html_page  # the command line, escaped
    assert "<in>" not in html_page and "& out" not in html_page
    assert sorted(p.name for p in dest.parent.iterdir()) == ["report.html", "report.md"]


def test_command_given_as_a_list(tmp_path: Path) -> None:
    provenance = dict(PROVENANCE, command=["main.py", "--n_epoch", "3", "--workdir", "a b"])
    run = make_run(tmp_path, "run", {"val_dice": dice_array()}, provenance=provenance)
    dest = tmp_path / "out" / "r.md"
    write_report(summarise([run], ["val_dice"]), dest)
    assert "command: `main.py --n_epoch 3 --workdir 'a b'`" in dest.read_text()


def test_error_missing_folder(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    missing = tmp_path / "results" / "nope"
    with pytest.raises(FileNotFoundError, match=r"run folder .*nope does not exist"):
        summarise([two_runs[0], missing], ["val_dice"])


def test_error_missing_metric_file(two_runs: tuple[Path, Path]) -> None:
    with pytest.raises(FileNotFoundError, match=r"metric file .*gdl/val_3d_hd95\.npy does not"):
        summarise(two_runs, ["val_dice", "val_3d_hd95"])


def test_error_column_out_of_range(two_runs: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match=r"column\(s\) \[2\] out of range for .*val_dice\.npy"):
        summarise(two_runs, ["val_dice"], columns=[1, 2])
    with pytest.raises(ValueError, match=r"column\(s\) \[-1\] out of range"):
        summarise(two_runs, ["val_dice"], columns=[-1])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 4)), r"shape \(3, 4\) \(rank 2\), expected rank 3"),
        (np.zeros((0, 4, 2)), "zero epochs"),
        (np.zeros((3, 0, 2)), r"shape \(3, 0, 2\): expected at least one sample"),
        (np.zeros((3, 4, 2), dtype=complex), "expected a numeric array"),
        (np.array([["a"]]), "expected a numeric array"),
    ],
)
def test_error_malformed_array(tmp_path: Path, array: np.ndarray, message: str) -> None:
    run = make_run(tmp_path, "run", {"val_dice": array})
    with pytest.raises(ValueError, match=message):
        summarise([run], ["val_dice"])


def test_error_unreadable_array(tmp_path: Path) -> None:
    run = make_run(tmp_path, "run", {})
    (run / "val_dice.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"val_dice\.npy is not a readable \.npy array"):
        summarise([run], ["val_dice"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--folders", "{tmp}/results/gone"], "gone does not exist"),
        (["--metrics", "val_dice", "val_3d_hd95"], r"val_3d_hd95\.npy does not exist"),
        (["--columns", "5"], r"column\(s\) \[5\] out of range"),
        (["--plots", "{tmp}/missing.png"], r"plot file .*missing\.png does not exist"),
        (["--dest", "{tmp}/out/report.txt"], r"report\.txt must end in \.md"),
    ],
)
def test_command_line_errors_leave_no_file(
    two_runs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    extra: list[str],
    message: str,
) -> None:
    gdl, surface = two_runs
    options = {
        "--folders": [str(gdl), str(surface)],
        "--metrics": ["val_dice"],
        "--dest": [str(tmp_path / "out" / "report.md")],
    }
    options[extra[0]] = [e.format(tmp=tmp_path) for e in extra[1:]]
    argv = [part for key, values in options.items() for part in [key, *values]] + ["--html"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "page.md"
    dest.write_text("old")

    def failing(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(dest, failing)
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]
    assert dest.read_text() == "old"


def test_script_entry_point(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """`python report.py` as Make calls it: exit 0 with the table, exit 1 with `error:`."""
    gdl, surface = two_runs
    ok = subprocess.run(
        [
            sys.executable,
            str(ROOT / "report.py"),
            "--folders",
            str(gdl),
            str(surface),
            "--metrics",
            "val_dice",
            "--dest",
            str(tmp_path / "r.md"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "0.9000 +- 0.0816 (epoch 2)" in ok.stdout
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "report.py"),
            "--folders",
            str(tmp_path / "none"),
            "--metrics",
            "val_dice",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: run folder") and "none" in bad.stderr


def test_loss_and_adjacency_keep_their_own_columns(tmp_path: Path) -> None:
    # val_adjacency (E=3 x P=2 x 2): forbidden pair counts with epoch means 4, 1, 2, so the best
    # (lowest) epoch is 1 (values 0 and 2: mean 1, std 1); column 1 (components) is not used.
    adjacency = np.full((3, 2, 2), 100.0)
    adjacency[:, :, 0] = [[3.0, 5.0], [0.0, 2.0], [2.0, 2.0]]
    # tra_loss (E=2 x I=2 x L=2): every loss term is used; per-iteration means 2, 2 at epoch 0
    # and 1, 1.5 at epoch 1, the best: mean 1.25, std 0.25.
    loss = np.array([[[1.0, 3.0], [1.0, 3.0]], [[0.5, 1.5], [1.5, 1.5]]])
    run = make_run(tmp_path, "run", {"val_adjacency": adjacency, "tra_loss": loss})
    (summary,) = summarise([run], ["val_adjacency", "tra_loss"], columns=[3])  # classes only
    adj, tra = summary.metrics["val_adjacency"], summary.metrics["tra_loss"]
    assert (adj.mode, adj.columns, adj.best_epoch) == ("min", (0,), 1)
    assert (adj.mean, adj.std) == pytest.approx((1.0, 1.0))
    assert (tra.mode, tra.columns, tra.best_epoch) == ("min", (0, 1), 1)
    assert (tra.mean, tra.std) == pytest.approx((1.25, 0.25))
    page = tmp_path / "r.md"
    write_report([summary], page)
    assert "val_adjacency: forbidden pairs; tra_loss: loss 0, loss 1" in page.read_text()


def test_class_without_any_finite_value_at_the_best_epoch(tmp_path: Path) -> None:
    # Columns 1 and 2; class 2 is all NaN, class 1 has epoch means 0.2 and 0.6 (best: epoch 1).
    data = np.full((2, 2, 3), np.nan)
    data[:, :, 1] = [[0.2, 0.2], [0.5, 0.7]]
    run = make_run(tmp_path, "run", {"val_3d_dsc": data})
    (summary,) = summarise([run], ["val_3d_dsc"], per_class=True)
    assert build_table([summary], per_class=True).rows[0][2:] == [
        "0.6000 +- 0.1000 (epoch 1)",
        "all NaN (epoch 1, 2 values)",
    ]
    assert build_table([summary]).rows[0][2] == "0.6000 +- 0.1000 (epoch 1, 2 NaN)"


def test_adjacency_is_reported_at_the_checkpoint_epoch(tmp_path: Path) -> None:
    # Empty predictions of epoch 0 have no forbidden adjacency; the checkpoint (epoch 2) has 7.
    run = tmp_path / "run"
    run.mkdir()
    adjacency = np.zeros((3, 2, 2), dtype=np.float32)
    adjacency[1] = 9
    adjacency[2] = [[7, 1], [7, 1]]
    np.save(run / "val_adjacency.npy", adjacency)
    (run / "best_epoch.txt").write_text("2\n")
    (summary,) = summarise([run], ["val_adjacency"])
    assert summary.metrics["val_adjacency"].best_epoch == 2
    assert summary.metrics["val_adjacency"].mean == 7.0


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content, to show that a failed run touched nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def with_value(array: np.ndarray, index: tuple[int, int, int], value: float) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


@pytest.mark.parametrize(
    ("metric", "array", "needles"),
    [
        (
            "val_dice",
            with_value(dice_array(), (1, 2, 1), 7.5),
            ["7.5 at epoch 1, sample 2, class 1", "a Dice score lies in [0, 1]"],
        ),
        (
            "val_dice",
            with_value(dice_array(), (3, 0, 0), np.inf),
            ["inf at epoch 3, sample 0, class 0", "a Dice score lies in [0, 1]"],
        ),
        (
            "val_3d_dsc",
            with_value(dice_array(), (0, 1, 1), -0.25),
            ["-0.25 at epoch 0, sample 1, class 1", "a Dice score"],
        ),
        (
            "val_3d_hd95",
            with_value(hausdorff_array(), (2, 1, 1), -1.0),
            ["-1.0 at epoch 2, sample 1, class 1", "a distance is a finite number of mm >= 0"],
        ),
        (
            "val_3d_hausdorff",
            with_value(hausdorff_array(), (0, 0, 0), np.inf),
            ["inf at epoch 0, sample 0, class 0", "a distance"],
        ),
        (
            "val_adjacency",
            with_value(np.zeros((2, 2, 2)), (1, 0, 0), -3.0),
            ["-3.0 at epoch 1, sample 0, forbidden pairs", "an adjacency count"],
        ),
    ],
)
def test_impossible_values_are_refused(
    tmp_path: Path, metric: str, array: np.ndarray, needles: list[str]
) -> None:
    """A Dice of 7.5 or inf would be bolded as the best: one error names the file, where the
    first bad value is, and the value; no page is written, the run is left as it was."""
    run = make_run(tmp_path / "results", "gdl", {metric: array}, args={"n_epoch": 4})
    before = tree(tmp_path)
    proc = run_script(
        "report.py", "--folders", run, "--metrics", metric, "--dest", tmp_path / "out" / "r.md"
    )
    assert_clean_error(proc, f"metric file {run / metric}.npy holds", *needles)
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


def test_nan_and_negative_losses_are_accepted(tmp_path: Path) -> None:
    """NaN is an undefined value, not an impossible one; the boundary loss is negative."""
    loss = np.array([[[-0.5, 0.2]], [[-1.5, 0.1]]])  # E=2 x I=1 x L=2: epoch 1 is the lowest
    dice = with_value(dice_array(), (0, 0, 1), np.nan)
    run = make_run(tmp_path, "run", {"tra_loss": loss, "val_dice": dice})
    (summary,) = summarise([run], ["tra_loss", "val_dice"])
    assert summary.metrics["tra_loss"].best_epoch == 1
    assert summary.metrics["tra_loss"].mean == pytest.approx(-0.7)
    assert summary.metrics["val_dice"].best_epoch == 2


@pytest.mark.parametrize(
    ("first", "second", "needles"),
    [
        # ISLES and ACDC runs
        (
            {"dataset": "data/isles", "n_class": 2},
            {"dataset": "data/acdc", "n_class": 4},
            ["trained on different data", "'data/isles' and 'data/acdc' in their args.json"],
        ),
        # a stand-in run and a real one: the same last component, other data
        (
            {"dataset": "data/isles-synthetic/isles"},
            {"dataset": "data/isles"},
            ["different data", "'data/isles-synthetic/isles' and 'data/isles'"],
        ),
        (
            {"dataset": "data/isles", "n_class": 2},
            {"dataset": "data/isles", "n_class": 3},
            ["different class counts", "n_class 2 and 3 in their args.json"],
        ),
        # no args.json: the class axis of the arrays tells
        (None, None, ["different class counts", "val_dice.npy has 2 and 4 classes"]),
    ],
)
def test_runs_of_different_data_are_refused(
    tmp_path: Path, first: dict | None, second: dict | None, needles: list[str]
) -> None:
    """One error naming both run folders and what differs; no page is written."""
    a = make_run(tmp_path / "results", "isles_gdl", {"val_dice": dice_array()}, args=first)
    other = dice_array() if second is not None else np.zeros((4, 3, 4))
    b = make_run(tmp_path / "results", "acdc_ce", {"val_dice": other}, args=second)
    before = tree(tmp_path)
    proc = run_script(
        "report.py",
        "--folders",
        a,
        b,
        "--metrics",
        "val_dice",
        "--dest",
        tmp_path / "out" / "report.md",
        "--html",
    )
    assert_clean_error(proc, f"runs {a} and {b}", *needles, "the runs of one dataset")
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


def test_runs_of_the_same_data_written_differently_are_ranked(tmp_path: Path) -> None:
    """`data/isles/` and `./data/isles` are the same folder; a run without args.json is
    checked on its arrays only."""
    runs = [
        make_run(tmp_path, "a", {"val_dice": dice_array()}, args={"dataset": "data/isles/"}),
        make_run(tmp_path, "b", {"val_dice": dice_array()}, args={"dataset": "./data/isles"}),
        make_run(tmp_path, "c", {"val_dice": dice_array()}),
    ]
    table = build_table(summarise(runs, ["val_dice"]))
    assert [row[0] for row in table.rows] == ["a", "b", "c"]
    assert table.bold == [[False, False, True]] * 3  # the same numbers: a tie


def _metrics_csv(folder: Path, rows: list[tuple]) -> Path:
    folder.mkdir(parents=True)
    lines = ["case,class,value,dice,hd,hd95"] + [",".join(map(str, row)) for row in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_predictions_section_summarises_and_lists_every_case(tmp_path: Path) -> None:
    """predict.py's metrics.csv: mean +- std per run and foreground class (value not 0, whatever
    its name), then Dice / HD95 per case; written into both pages."""
    from boundary_loss.report.sections import prediction_blocks

    a = _metrics_csv(
        tmp_path / "predictions" / "a",
        [
            ("c1", "bg", 0, 0.99, 1.0, 1.0),
            ("c1", "organ", 1, 0.8, 4.0, 2.0),
            ("c2", "bg", 0, 0.98, 1.0, 1.0),
            ("c2", "organ", 1, 0.6, 8.0, 6.0),
        ],
    )
    b = _metrics_csv(
        tmp_path / "predictions" / "b",
        [
            ("c1", "bg", 0, 0.99, 1.0, 1.0),
            ("c1", "organ", 1, 0.9, 2.0, 1.0),
            ("c2", "bg", 0, 0.99, 1.0, 1.0),
            ("c2", "organ", 1, 0.7, 3.0, 2.5),
        ],
    )
    blocks = prediction_blocks([a, b])
    summary = next(b.table for b in blocks if b.kind == "table")
    assert summary.header == ["run", "Dice organ", "HD organ", "HD95 organ"]  # no "bg"
    assert summary.rows[0] == ["a", "0.7000 +- 0.1000", "6.0000 +- 2.0000", "4.0000 +- 2.0000"]
    per_case = [b.table for b in blocks if b.kind == "table"][1]
    assert per_case.header == ["case", "a", "b"]
    assert per_case.rows == [
        ["c1", "0.8000 / 2.0000", "0.9000 / 1.0000"],
        ["c2", "0.6000 / 6.0000", "0.7000 / 2.5000"],
    ]
    run = make_run(tmp_path, "run", {"val_dice": dice_array()})
    pages = write_report(
        summarise([run], ["val_dice"]), tmp_path / "r.md", html_page=True, predictions=[a, b]
    )
    for page in pages:
        assert "Predictions in the source geometry" in page.read_text()
        assert "organ: Dice / HD95 (mm) per case" in page.read_text()


def test_predictions_section_refuses_a_foreign_csv(tmp_path: Path) -> None:
    from boundary_loss.report.sections import prediction_blocks

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "metrics.csv").write_text("case,class,value,dice,hd,hd95\nc1,organ,1,high,1,1\n")
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'metrics.csv'}:2")):
        prediction_blocks([folder])


# ---------------------------------------------------------------------------------------------
# Diverged runs: every value of the 3D metrics NaN


PATIENTS = ("p1", "p2", "p3")


def make_3d_run(
    root: Path, name: str, dice: list[float] | None, checkpoint: int | None = 1, epochs: int = 3
) -> Path:
    """A run of 3 epochs and 3 patients as main.py writes it, with what the per-patient table
    and the comparisons read: args.json (grp_regex), best_epoch/val/*.png (their stems name the
    patients), best_epoch.txt (`checkpoint`).

    Class 1 at epoch 1 (the best, and the checkpoint): 3D Dice `dice` per patient, Hausdorff
    10 - 10 * Dice and HD95 half of it; epochs 0 and 2 hold 0.5 Dice, 5 and 2.5 mm for every
    patient (worse than `dice` when its mean is above 0.5). Class 0 is 1.0 Dice and 0 mm.
    val_dice: 0.9 at epoch 1, 0.4 elsewhere. `dice` None: a diverged run, every value NaN, and
    neither best_epoch/ nor best_epoch.txt (the metric never improved on -inf).
    """
    arrays = {}
    if dice is None:
        for metric in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
            arrays[metric] = np.full((epochs, 3, 2), np.nan)
        arrays["val_dice"] = np.full((epochs, 6, 2), np.nan)
    else:
        per_patient = np.array(dice)
        for metric, scale in (
            ("val_3d_dsc", None),
            ("val_3d_hausdorff", 1.0),
            ("val_3d_hd95", 0.5),
        ):
            data = np.zeros((epochs, 3, 2)) if scale else np.ones((epochs, 3, 2))
            data[:, :, 1] = 0.5 if scale is None else 5.0 * scale
            data[1, :, 1] = per_patient if scale is None else (10 - 10 * per_patient) * scale
            arrays[metric] = data
        arrays["val_dice"] = np.full((epochs, 6, 2), 0.4)
        arrays["val_dice"][1] = 0.9
    folder = make_run(root, name, arrays, args={"n_epoch": epochs, "grp_regex": r"(p\d+)_\d+"})
    if dice is not None:
        (folder / "best_epoch" / "val").mkdir(parents=True)
        for patient in PATIENTS:
            (folder / "best_epoch" / "val" / f"{patient}_0000.png").write_bytes(b"png")
        if checkpoint is not None:
            (folder / "best_epoch.txt").write_text(f"{checkpoint}\n")
    return folder


REPORT_METRICS = ["val_dice", "val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"]


def run_report(folders: list[Path], dest: Path, baseline: str = "gdl"):
    """report.py as the makefiles call it (--patients --baseline --html)."""
    return run_script(
        "report.py",
        "--folders",
        *folders,
        "--metrics",
        *REPORT_METRICS,
        "--columns",
        "1",
        "--dest",
        dest,
        "--html",
        "--patients",
        "--baseline",
        baseline,
    )


def table_rows(page: str, first: str) -> dict[str, str]:
    """The Markdown table whose header starts with `| first |`: run (first cell) -> row."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows[line.split(" | ")[0].removeprefix("| ")] = line
    return rows


@pytest.mark.parametrize("saved", [False, True], ids=["no-checkpoint", "checkpoint"])
def test_diverged_run_is_named_shown_and_left_out(tmp_path: Path, saved: bool) -> None:
    """A run whose 3D metrics are all NaN: exit 0, a warning naming its folder, a section and a
    table row saying it diverged, no comparison with it, and every other number exactly as in
    the report without it; whether it saved predictions and a best_epoch.txt or not."""
    results = tmp_path / "results"
    gdl = make_3d_run(results, "gdl", [0.6, 0.7, 0.8])
    surface = make_3d_run(results, "surface", [0.7, 0.8, 0.9])
    boundary = make_3d_run(results, "boundary", None)
    if saved:  # as a scheduler that handles NaN would leave it: predictions of epoch 1 kept
        shutil.copytree(gdl / "best_epoch", boundary / "best_epoch")
        (boundary / "best_epoch.txt").write_text("1\n")
    ref = run_report([gdl, surface], tmp_path / "ref" / "report.md")
    assert ref.returncode == 0, ref.stderr
    proc = run_report([gdl, boundary, surface], tmp_path / "out" / "report.md")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: run {boundary} diverged: all its 3D metrics (val_3d_dsc, val_3d_hausdorff, "
        "val_3d_hd95) are NaN from epoch 0 to its last epoch 2, every patient and class: left "
        "out of the ranking and the comparisons, shown as diverged"
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "per_patient.csv",
        "report.html",
        "report.md",
    ]
    page = (tmp_path / "out" / "report.md").read_text()
    reference = (tmp_path / "ref" / "report.md").read_text()
    assert "## Diverged runs" in page
    assert f"boundary: run {boundary} diverged: all its 3D metrics" in page
    html_page = (tmp_path / "out" / "report.html").read_text()
    assert f"boundary: run {boundary} diverged: all its 3D metrics" in html_page
    assert "<td>diverged (3D metrics all NaN)</td>" in html_page

    # The ranking: gdl has Dice 0.7 +- sqrt(0.02 / 3) at epoch 1 (HD 3, HD95 1.5), surface 0.8
    # (HD 2, HD95 1), both val_dice 0.9 at epoch 1; surface is best on the 3D metrics, both on
    # val_dice; the diverged run says so in every cell and is bold nowhere.
    rows = table_rows(page, "run")
    assert list(rows) == ["gdl", "boundary", "surface"]
    assert rows["boundary"] == "| boundary | 3/3 |" + " diverged (3D metrics all NaN) |" * 4
    assert rows["gdl"] == (
        "| gdl | 3/3 | **0.9000 +- 0.0000 (epoch 1)** | 0.7000 +- 0.0816 (epoch 1) | "
        "3.0000 +- 0.8165 (epoch 1) | 1.5000 +- 0.4082 (epoch 1) |"
    )
    assert rows["surface"] == (
        "| surface | 3/3 | **0.9000 +- 0.0000 (epoch 1)** | **0.8000 +- 0.0816 (epoch 1)** | "
        "**2.0000 +- 0.8165 (epoch 1)** | **1.0000 +- 0.4082 (epoch 1)** |"
    )
    assert {k: v for k, v in rows.items() if k != "boundary"} == table_rows(reference, "run")

    # The comparison: surface - gdl = +0.1 Dice, -1 mm HD, -0.5 mm HD95 for every patient;
    # three equal positive differences give the exact two-sided Wilcoxon p = 2 / 2**3 = 0.25.
    lines = [line for line in page.splitlines() if line.startswith("| surface | val_3d")]
    assert lines == [
        "| surface | val_3d_dsc | 3 | 1 | +0.1000 | +0.1000 to +0.1000 | 0.25 |",
        "| surface | val_3d_hausdorff | 3 | 1 | -1.0000 | -1.0000 to -1.0000 | 0.25 |",
        "| surface | val_3d_hd95 | 3 | 1 | -0.5000 | -0.5000 to -0.5000 | 0.25 |",
    ]
    for metric in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        assert f"| boundary | {metric} | - | - | diverged: not compared | - | - |" in page
    assert "boundary diverged: not compared with gdl." in page
    assert "between boundary" not in page and "boundary is" not in page
    comparison = page.split("## Against gdl")[1].split("## Per patient")[0]
    kept = [line for line in comparison.splitlines() if line and "boundary" not in line]
    ref_comparison = reference.split("## Against gdl")[1].split("## Per patient")[0]
    assert kept == [line for line in ref_comparison.splitlines() if line]

    # Per patient: the diverged run's column says so; the CSV holds every run, nan for it.
    patients_rows = table_rows(page, "patient")
    assert patients_rows["p1"] == (
        "| p1 | 0.6000 / 4.0000 / 2.0000 | diverged | 0.7000 / 3.0000 / 1.5000 |"
    )
    with open(tmp_path / "out" / "per_patient.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    with open(tmp_path / "ref" / "per_patient.csv", newline="") as handle:
        ref_rows = list(csv.DictReader(handle))
    assert [r for r in csv_rows if r["run"] != "boundary"] == ref_rows
    diverged_rows = [r for r in csv_rows if r["run"] == "boundary"]
    assert [r["patient"] for r in diverged_rows] == list(PATIENTS)
    for row in diverged_rows:
        assert [row[m] for m in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95")] == ["nan"] * 3


def test_diverged_baseline_compares_nothing(tmp_path: Path) -> None:
    """--baseline naming a diverged run: the section says so, the rest is written."""
    results = tmp_path / "results"
    gdl = make_3d_run(results, "gdl", None)
    surface = make_3d_run(results, "surface", [0.7, 0.8, 0.9])
    proc = run_report([gdl, surface], tmp_path / "out" / "report.md")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: run {gdl} diverged" in proc.stderr
    page = (tmp_path / "out" / "report.md").read_text()
    section = page.split("## Against gdl: did it help?\n\n")[1].split("\n\n## ")[0]
    assert section == (
        "The baseline gdl diverged (gdl: every value of its 3D metrics is NaN): nothing is "
        "compared with it. Give another --baseline (BASELINE in the makefiles) to compare the "
        "trainings."
    )
    assert "| training |" not in page and "Wilcoxon p" not in page
    assert table_rows(page, "patient")["p3"] == "| p3 | diverged | 0.9000 / 1.0000 / 0.5000 |"
    assert (tmp_path / "out" / "per_patient.csv").is_file()
    assert (tmp_path / "out" / "report.html").is_file()


def test_run_nan_from_an_epoch_on_is_ranked_on_its_finite_epochs(tmp_path: Path) -> None:
    """NaN for every patient and class from epoch 2 on (of 4): not diverged as a whole; its best
    epoch is chosen among epochs 0-1, and the page and a warning say from which epoch."""
    late = make_3d_run(tmp_path, "late", [0.7, 0.8, 0.9], epochs=4)
    for metric in REPORT_METRICS:
        data = np.load(late / f"{metric}.npy")
        data[2:] = np.nan
        np.save(late / f"{metric}.npy", data)
    gdl = make_3d_run(tmp_path, "gdl", [0.6, 0.7, 0.8], epochs=4)
    (summary, _) = runs = summarise([late, gdl], REPORT_METRICS, [1])
    assert not summary.diverged and summary.divergence.nan_from == 2
    dsc = summary.metrics["val_3d_dsc"]
    assert (dsc.best_epoch, dsc.mean) == (1, pytest.approx(0.8))
    assert summary.metrics["val_3d_hd95"].best_epoch == 1
    rows = build_table(runs).rows
    assert rows[0][3] == "0.8000 +- 0.0816 (epoch 1)"
    assert build_table(runs).bold[0][3]  # 0.8 > 0.7: still ranked
    proc = run_report([late, gdl], tmp_path / "out" / "report.md")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: run {late}: all its 3D metrics" in proc.stderr
    assert "are NaN from epoch 2 to its last epoch 3" in proc.stderr
    page = (tmp_path / "out" / "report.md").read_text()
    assert "(diverged at epoch 2); its best epochs are chosen among epochs 0-1" in page
    assert "| late | val_3d_dsc | 3 | 1 | +0.1000 | +0.1000 to +0.1000 | 0.25 |" in page


def test_checkpoint_at_a_nan_epoch_is_named_not_compared(tmp_path: Path) -> None:
    """best_epoch.txt at an epoch where a run's 3D metrics are NaN: no finite pair, said so."""
    gdl = make_3d_run(tmp_path, "gdl", [0.6, 0.7, 0.8])
    late = make_3d_run(tmp_path, "late", [0.7, 0.8, 0.9], checkpoint=2)
    data = np.load(late / "val_3d_hd95.npy")
    data[2] = np.nan
    np.save(late / "val_3d_hd95.npy", data)
    proc = run_report([gdl, late], tmp_path / "out" / "report.md")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "out" / "report.md").read_text()
    assert (
        "late and gdl on val_3d_hd95: no patient has a finite value in both at the epoch of "
        "their best.pt (late, gdl): not compared." in page
    )
    assert "| late | val_3d_hd95 | 0 | 1 | no finite pair | - | - |" in page
    # at epoch 2 the others are 0.5 Dice for every patient: 0.5 - 0.6, 0.5 - 0.7, 0.5 - 0.8
    assert "| late | val_3d_dsc | 3 | 1 | -0.1000 |" not in page
    assert "| late | val_3d_dsc | 3 | 1 | -0.2000 |" in page


def test_diverged_seed_is_left_out_of_the_seeds_and_the_pairs(tmp_path: Path) -> None:
    """surface-seed1 diverged: the seeds' table and the comparison use seed 0 only."""
    runs = [
        make_3d_run(tmp_path, "gdl-seed0", [0.6, 0.7, 0.8]),
        make_3d_run(tmp_path, "gdl-seed1", [0.4, 0.5, 0.6]),
        make_3d_run(tmp_path, "surface-seed0", [0.7, 0.8, 0.9]),
        make_3d_run(tmp_path, "surface-seed1", None),
    ]
    proc = run_report(runs, tmp_path / "out" / "report.md")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "out" / "report.md").read_text()
    seeds = table_rows(page, "training")
    # gdl: per-run val_3d_dsc means 0.7 and 0.5 (0.6 +- 0.1); surface: 0.8 from seed 0 alone.
    assert (
        "| gdl | 2 | 0.9000 +- 0.0000 (min 0.9000, max 0.9000) | 0.6000 +- 0.1000 " in seeds["gdl"]
    )
    assert seeds["surface"].startswith(
        "| surface | 1 (1 diverged, left out) | 0.9000 +- 0.0000 (min 0.9000, max 0.9000) | "
        "0.8000 +- 0.0000 (min 0.8000, max 0.8000) |"
    )
    assert "surface against gdl: seed(s) 1 left out, surface-seed1 diverged." in page
    # seed 0 only: +0.1 for every patient
    assert "| surface | val_3d_dsc | 3 | 1 | +0.1000 | +0.1000 to +0.1000 | 0.25 |" in page
