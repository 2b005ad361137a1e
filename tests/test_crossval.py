"""The cross-validation report: each case once, with the value from its own fold; the paired
statistics over every case; 2D against 3D case by case (boundary_loss/report/folds.py,
crossval.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from boundary_loss.report import crossval, folds
from boundary_loss.report.paired import compare

REGEX = r"(case_\d+)_\d+"


def make_run(
    results: Path,
    name: str,
    cases: dict[str, float],
    best: int,
    dimensions: int = 2,
    epochs: int = 3,
) -> Path:
    """A run folder as main.py writes it, for the cases of one fold: class 1's 3D Dice at epoch
    `best` (best_epoch.txt) is `cases[case]`, HD 10 - 10 x Dice and HD95 half of it; every other
    epoch holds 0.1 Dice and 50 mm, which a value read at the wrong epoch would show."""
    run = results / name
    (run / "best_epoch" / "val").mkdir(parents=True)
    names = sorted(cases)
    for case in names:
        (run / "best_epoch" / "val" / f"{case}_00_0000.png").write_bytes(b"png")
    args = {"grp_regex": REGEX, "n_epoch": epochs, "dimensions": dimensions}
    (run / "args.json").write_text(json.dumps(args))
    (run / "provenance.json").write_text(json.dumps({"commit": "abc1234"}))
    (run / "best_epoch.txt").write_text(f"{best}\n")
    dice = np.array([cases[c] for c in names])
    for metric, value in (
        ("val_3d_dsc", dice),
        ("val_3d_hausdorff", 10 - 10 * dice),
        ("val_3d_hd95", 5 - 5 * dice),
    ):
        data = np.zeros((epochs, len(names), 2))
        data[:, :, 0] = 1.0 if metric == "val_3d_dsc" else 0.0
        data[:, :, 1] = 0.1 if metric == "val_3d_dsc" else 50.0
        data[best, :, 1] = value
        np.save(run / f"{metric}.npy", data)
    return run


FOLD_CASES = [["case_001", "case_004"], ["case_002", "case_003", "case_005"]]


def dice_of(training: str, case: str, dimensions: int = 2) -> float:
    """A distinct Dice per training, case and dimension."""
    base = {"gdl": 0.5, "boundary": 0.6}[training] + (0.05 if dimensions == 3 else 0.0)
    return base + 0.01 * int(case[-3:])


@pytest.fixture
def two_folds(tmp_path: Path) -> list[Path]:
    """Two folds' results folders (results/data, results/data-fold1) of gdl and boundary, their
    best epochs different (1 in fold 0, 2 in fold 1)."""
    folders = [tmp_path / "results" / "data", tmp_path / "results" / "data-fold1"]
    for index, (folder, cases) in enumerate(zip(folders, FOLD_CASES, strict=True)):
        for training in ("gdl", "boundary"):
            make_run(folder, training, {c: dice_of(training, c) for c in cases}, best=1 + index)
    return folders


def test_each_case_appears_once_with_the_value_of_its_own_fold(two_folds):
    cohort = folds.gather(two_folds, [1])
    assert cohort.label == "2D"
    assert cohort.cases == ["case_001", "case_002", "case_003", "case_004", "case_005"]
    assert cohort.fold_of == {
        "case_001": 0,
        "case_004": 0,
        "case_002": 1,
        "case_003": 1,
        "case_005": 1,
    }
    assert cohort.epochs == {
        folder / training: 1 + index
        for index, folder in enumerate(two_folds)
        for training in ("gdl", "boundary")
    }
    for training in ("gdl", "boundary"):
        values = cohort.values[training][0]  # seed 0: main.py's default, from args.json
        expected = [dice_of(training, c) for c in cohort.cases]
        np.testing.assert_allclose(values["val_3d_dsc"], expected)
        np.testing.assert_allclose(values["val_3d_hausdorff"], 10 - 10 * np.array(expected))
        np.testing.assert_allclose(values["val_3d_hd95"], 5 - 5 * np.array(expected))


def test_folds_that_validate_a_case_twice_are_refused(two_folds, tmp_path):
    overlapping = tmp_path / "results" / "data-fold2"
    for training in ("gdl", "boundary"):
        make_run(overlapping, training, {"case_001": 0.5, "case_009": 0.5}, best=1)
    with pytest.raises(ValueError, match="case case_001 is validated in .*data and .*data-fold2"):
        folds.gather([two_folds[0], overlapping], [1])


def test_a_training_missing_from_a_fold_is_refused(two_folds):
    shutil.rmtree(two_folds[1] / "boundary")
    with pytest.raises(ValueError, match=r"data-fold1: no run of boundary; train it in this fold"):
        folds.gather(two_folds, [1])


def test_the_comparison_pairs_every_case_of_every_fold(two_folds):
    cohort = folds.gather(two_folds, [1])
    found = folds.against_baseline(cohort, "gdl")
    (dice, hd, hd95) = found["boundary"]
    gdl = np.array([dice_of("gdl", c) for c in cohort.cases])
    boundary = np.array([dice_of("boundary", c) for c in cohort.cases])
    expected = compare(
        boundary, gdl, run="boundary", baseline="gdl", metric="val_3d_dsc", higher_is_better=True
    )
    assert dice == expected
    assert dice.n_patients == 5 and dice.mean_difference == pytest.approx(0.1)
    assert hd.mean_difference == pytest.approx(-1.0) and hd.metric == "val_3d_hausdorff"
    assert hd95.mean_difference == pytest.approx(-0.5)


def cv_page(folds: list[Path], dest: Path, *options: str) -> str:
    """The page `crossval` writes at `dest` for `folds` with `options`, which it must accept."""
    assert crossval.main(["--folds", *map(str, folds), "--dest", str(dest), *options]) == 0
    return dest.read_text()


def test_the_page_and_the_csv_hold_every_case_once(two_folds, tmp_path):
    dest = tmp_path / "results" / "data-cv" / "report.md"
    page = cv_page(two_folds, dest, "--html", "--baseline", "gdl")
    assert "5 cases, each validated once, in 2 folds" in page
    assert "boundary against gdl, over 5 cases: no detectable difference on 3D Dice (+0.1" in page
    assert (dest.parent / "report.html").is_file()
    assert "- boundary: best epoch 2, commit abc1234\n" in page.split("data-fold1\n")[-1]
    assert (
        "| case | fold | boundary: Dice / HD / HD95 | gdl: Dice / HD / HD95 |\n|---|---|---|---|\n"
        "| case_001 | data | 0.6100 / 3.9000 / 1.9500 | 0.5100 / 4.9000 / 2.4500 |\n"
        "| case_002 | data-fold1 | 0.6200 / 3.8000 / 1.9000 | 0.5200 / 4.8000 / 2.4000 |\n"
    ) in page
    lines = (dest.parent / "per_case.csv").read_bytes().split(b"\n")
    assert lines[:3] == [
        b"case,fold,training,seed,val_3d_dsc,val_3d_hausdorff,val_3d_hd95",
        b"case_001,data,boundary,0,0.61,3.9,1.95",
        b"case_002,data-fold1,boundary,0,0.62,3.8,1.9",
    ]
    with open(dest.parent / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["fold"]) for r in rows if r["training"] == "boundary"] == [
        ("case_001", "data"),
        ("case_002", "data-fold1"),
        ("case_003", "data-fold1"),
        ("case_004", "data"),
        ("case_005", "data-fold1"),
    ]
    for row in rows:
        assert float(row["val_3d_dsc"]) == pytest.approx(dice_of(row["training"], row["case"]))


def three_d_folds(root: Path, trainings=("gdl", "boundary")) -> list[Path]:
    """The 3D runs of the same two folds, best epochs the other way round."""
    folders = [root / "data-3d", root / "data-fold1-3d"]
    for index, (folder, cases) in enumerate(zip(folders, FOLD_CASES, strict=True)):
        for training in trainings:
            make_run(
                folder,
                training,
                {c: dice_of(training, c, 3) for c in cases},
                best=2 - index,
                dimensions=3,
            )
    return folders


def test_2d_against_3d_pairs_each_training_case_by_case(two_folds, tmp_path):
    three_d = three_d_folds(tmp_path / "results")
    dest = tmp_path / "cv" / "report.md"
    page = cv_page(two_folds, dest, "--baseline", "gdl", "--pair", *map(str, three_d))
    assert "## 3D against 2D: did 3D help?" in page
    assert "boundary 3D against boundary 2D, over 5 cases" in page
    assert "gdl 3D against gdl 2D, over 5 cases" in page
    assert "| boundary | val_3d_dsc | 5 | 1 | +0.0500 |" in page
    assert "## In 3D, against gdl: did it help?" in page  # the 2D page answers it for 3D

    # The 3D page pairs the same way; its own section already compares with the baseline.
    dest_3d = tmp_path / "cv-3d" / "report.md"
    page_3d = cv_page(three_d, dest_3d, "--baseline", "gdl", "--pair", *map(str, two_folds))
    assert "boundary 3D against boundary 2D, over 5 cases" in page_3d
    assert "## In 3D" not in page_3d and page_3d.count("## Against gdl") == 1

    # The single-fold report pairs the same way (report.py --pair).
    from boundary_loss.report.summary import main as report_main

    out = tmp_path / "single" / "report.md"
    runs = [str(three_d[0] / "gdl"), str(three_d[0] / "boundary")]
    single_args = [
        "--folders",
        *runs,
        "--metrics",
        "val_3d_dsc",
        "--columns",
        "1",
        "--dest",
        str(out),
    ]
    code = report_main([*single_args, "--baseline", "gdl", "--pair", str(two_folds[0])])
    assert code == 0
    single = out.read_text()
    assert "boundary 3D against boundary 2D, over 2 patients" in single
    # a single fold: each patient's value at its run's best.pt, no fold of its own
    assert (
        "Each patient's value is the mean over classes \\[1\\] of its 3D metric at the epoch of "
        "its run's best.pt" in single
    )
    assert "own fold" not in single
    method = "Each training is compared with its baseline on the same validation patients"
    assert single.count(method) == 1

    # Without --baseline the pairing section states the method itself.
    code = report_main([*single_args, "--pair", str(two_folds[0])])
    assert code == 0
    assert out.read_text().count(method) == 1


def test_pairing_leaves_out_what_one_side_lacks_and_says_when_nothing_pairs(two_folds, tmp_path):
    """A training trained in one 3D fold only, and an unfinished one, are left out; seeded runs
    pair with runs trained with the same --seed; nothing in common is said, not raised."""
    three_d = three_d_folds(tmp_path / "results", trainings=("boundary",))
    make_run(three_d[0], "gdl", {c: 0.5 for c in FOLD_CASES[0]}, best=1, dimensions=3)
    (three_d[1] / "gdl_tmp").mkdir()
    (three_d[1] / "gdl_tmp" / "best_epoch.txt").write_text("1\n")
    for run in (two_folds[0] / "boundary", two_folds[1] / "boundary"):
        run.rename(run.with_name("boundary-seed0"))
    dest = tmp_path / "cv" / "report.md"
    page = cv_page(two_folds, dest, "--pair", *map(str, three_d))
    assert "boundary 3D against boundary 2D, over 5 cases" in page
    assert "gdl 3D against" not in page

    for run in (three_d[0] / "boundary", three_d[1] / "boundary"):
        shutil.rmtree(run)
    make_run(three_d[1], "gdl", {c: 0.5 for c in FOLD_CASES[1]}, best=1, dimensions=3)
    shutil.rmtree(three_d[0] / "gdl")
    make_run(three_d[0], "ce", {c: 0.5 for c in FOLD_CASES[0]}, best=1, dimensions=3)
    page = cv_page(two_folds, dest, "--pair", *map(str, three_d))
    assert "Not paired: no training of these runs is in every one of" in page


def test_runs_of_one_dimension_on_both_sides_are_refused(two_folds, tmp_path, capsys):
    code = crossval.main(
        [
            "--folds",
            str(two_folds[0]),
            "--dest",
            str(tmp_path / "r.md"),
            "--pair",
            str(two_folds[1]),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "error: --pair: 2D runs on both sides; give the other dimension's"
    )
    assert not (tmp_path / "r.md").exists()


def test_bad_columns_and_a_damaged_checkpoint_epoch_are_one_line(two_folds, tmp_path, capsys):
    dest = tmp_path / "r.md"
    assert (
        crossval.main(["--folds", *map(str, two_folds), "--dest", str(dest), "--columns", "9"]) == 1
    )
    assert capsys.readouterr().err.strip() == (
        f"error: {two_folds[0] / 'boundary'}/val_3d_dsc.npy: no class 9 (it holds classes 0 .. 1)"
    )
    (two_folds[1] / "boundary" / "best_epoch.txt").write_text("garbage\n")
    assert crossval.main(["--folds", *map(str, two_folds), "--dest", str(dest)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {two_folds[1] / 'boundary' / 'best_epoch.txt'}: 'garbage', expected the epoch "
        "of best.pt, 0 .. 2 (val_3d_dsc.npy holds 3 epochs)"
    )
    assert not dest.exists()


def test_a_metric_without_a_finite_pair_is_said_not_dropped():
    """HD has no finite pair (an empty class in every case, say): its sentence and row say so,
    as the single-fold comparisons do, while Dice is compared."""
    from boundary_loss.report.sections import comparison_section

    dice = compare(
        np.array([[0.9, 0.8, 0.85]]),
        np.array([[0.7, 0.6, 0.65]]),
        run="boundary",
        baseline="gdl",
        metric="val_3d_dsc",
        higher_is_better=True,
    )
    blocks = comparison_section("Against gdl", "text", {"boundary": [dice]}, unit="case")
    texts = [b.text for b in blocks if b.kind == "p"]
    assert "boundary on HD and HD95: no case has a finite value in both: not compared." in texts
    (table,) = [b.table for b in blocks if b.kind == "table"]
    assert [r[1] for r in table.rows] == ["val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"]
    assert [r[4] for r in table.rows[1:]] == ["no finite pair", "no finite pair"]
