"""The cross-validation report: every case of the dataset, each from its own fold.

Usage: python -m boundary_loss.report.crossval --folds DIR [DIR ...] --dest REPORT.md
       [--html] [--columns 1 2] [--baseline gdl] [--trainings ce gdl ...] [--pair DIR [DIR ...]]
       [--title TITLE]

`--folds`: one results folder per fold (`results/<name>/`, `results/<name>-fold1/`, ...; the 3D
chain's `results/<name>-3d/`, `results/<name>-fold1-3d/`, ...). The page (Markdown, and HTML with
`--html`) and `per_case.csv` beside it hold:

- each training's mean and standard deviation over every case of its out-of-fold 3D Dice, HD and
  HD95 (each case at the epoch of its own fold's best.pt; `report.folds`), and its mean 3D Dice
  in each fold;
- with `--baseline`: every other training against it, paired over every case (and seed by seed),
  with the bootstrap interval and the Wilcoxon test of `report.paired`, one sentence per training;
- with `--pair`: the other dimension's folds of the same cases (2D for a 3D report, 3D for a 2D
  one): each training in 3D against the same training in 2D, case by case ("did 3D help?"), and
  in 3D every training against the baseline ("did the boundary loss help in 3D?");
- each case's values (the mean over seeds) with its fold, and each run folder with its best
  epoch and commit.

Errors are one line: `error: <message>`, exit status 1; nothing is written then.
"""

from __future__ import annotations

import csv
import datetime
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from boundary_loss.io.console import ArgumentParser
from boundary_loss.report import patients
from boundary_loss.report.folds import METRICS, Cohort, against_baseline, gather
from boundary_loss.report.page import Block, write_pages
from boundary_loss.report.paired import method_text
from boundary_loss.report.sections import (
    comparison_section,
    pair_blocks,
    table_block,
    where_text,
)
from boundary_loss.runfolder.ranking import nan_mean_std
from boundary_loss.runfolder.schema import read_json


def _mean_sd(values: np.ndarray) -> str:
    """`mean +- sd` of the finite values (`nan` when none is)."""
    mean, sd = nan_mean_std(values, 0)
    return "nan" if np.isnan(mean) else f"{mean:.4f} +- {sd:.4f}"


def seed_mean(cohort: Cohort, training: str, metric: str) -> np.ndarray:
    """Each case's value averaged over the training's seeds (NaN where none is finite)."""
    return nan_mean_std(cohort.array(training, metric, list(cohort.values[training])), 0)[0]


def summary_blocks(cohort: Cohort) -> list[Block]:
    """The out-of-fold table: per training, mean +- sd over cases, and the mean Dice per fold."""
    folds = range(len(cohort.folders))
    header = ["training", "seeds", "cases", "3D Dice", "HD", "HD95", "3D Dice per fold"]
    rows = []
    for training in cohort.values:
        means = {m: seed_mean(cohort, training, m) for m in METRICS}
        per_fold = []
        for fold in folds:
            mask = np.array([cohort.fold_of[c] == fold for c in cohort.cases])
            per_fold.append(f"{nan_mean_std(means['val_3d_dsc'][mask], 0)[0]:.4f}")
        counted = int(np.isfinite(means["val_3d_dsc"]).sum())
        cells = [_mean_sd(means[m]) for m in METRICS]
        rows.append(
            [training, str(len(cohort.values[training])), str(counted), *cells, ", ".join(per_fold)]
        )
    return [Block("h2", f"Out of fold ({cohort.label})"), table_block(header, rows)]


def case_rows(cohort: Cohort) -> tuple[list[str], list[list[str]]]:
    """The per-case table: case, fold, then `Dice / HD / HD95` of each training (seed means)."""
    means = {t: {m: seed_mean(cohort, t, m) for m in METRICS} for t in cohort.values}
    fold = {case: cohort.folders[index].name for case, index in cohort.fold_of.items()}
    return patients.rows(cohort.cases, means, name="case", lead=("fold", fold))


def case_csv(cohort: Cohort) -> str:
    """per_case.csv: one row per case, training and seed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["case", "fold", "training", "seed", *METRICS])
    for training, seeds in cohort.values.items():
        for seed, values in seeds.items():
            for i, case in enumerate(cohort.cases):
                fold = cohort.folders[cohort.fold_of[case]].name
                row = [f"{values[m][i]:.6g}" for m in METRICS]
                writer.writerow([case, fold, training, "" if seed is None else seed, *row])
    return out.getvalue()


def run_items(cohort: Cohort) -> list[Block]:
    """Each fold's run folders with the epoch of their best.pt and their commit."""
    blocks = [Block("h2", "Runs")]
    for index, folder in enumerate(cohort.folders):
        items = []
        for seeds in cohort.runs.values():
            for fold_runs in seeds.values():
                run = fold_runs[index]
                provenance = read_json(run / "provenance.json")[0] or {}
                state = "diverged" if run in cohort.diverged else f"best epoch {cohort.epochs[run]}"
                items.append((run.name, f"{state}, commit {provenance.get('commit', '?')}", False))
        blocks += [Block("h3", str(folder)), Block("items", items=tuple(items))]
    return blocks


def build_blocks(
    cohort: Cohort,
    title: str,
    columns: Sequence[int],
    baseline: str | None,
    pair: Sequence[Path] = (),
) -> list[Block]:
    """The page: description, out-of-fold table, comparisons, pairing (with the other
    dimension's results folders `pair`), cases, runs."""
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    n_folds = len(cohort.folders)
    text = (
        f"{len(cohort.cases)} cases, each validated once, in {n_folds} fold"
        f"{'s' if n_folds > 1 else ''} ({', '.join(str(f) for f in cohort.folders)}). "
        + where_text(columns)
    )
    blocks = [Block("h1", title), Block("p", f"Generated {date}."), Block("p", text)]
    if cohort.diverged:
        names = ", ".join(str(r) for r in cohort.diverged)
        blocks.append(Block("p", f"Diverged runs (no value for their cases): {names}."))
    blocks += summary_blocks(cohort)
    if baseline is not None:
        blocks += comparison_section(
            f"Against {baseline}: did it help?",
            f"Every training against {baseline}, paired over every case of the dataset. "
            + where_text(columns),
            against_baseline(cohort, baseline),
        )
    if pair:
        blocks += pair_blocks(cohort, pair, baseline, columns)
    if baseline is not None or pair:
        blocks.append(Block("p", method_text("case")))
    header, rows = case_rows(cohort)
    blocks += [
        Block("h2", "Per case"),
        Block(
            "p",
            "Each case's 3D Dice / HD / HD95 in its own fold (the mean over seeds); "
            "also in per_case.csv, one row per seed.",
        ),
        table_block(header, rows),
    ]
    return blocks + run_items(cohort)


def write_crossval(
    folds: Sequence[str | Path],
    dest: str | Path,
    columns: Sequence[int],
    baseline: str | None = None,
    trainings: Sequence[str] | None = None,
    pair: Sequence[str | Path] = (),
    title: str | None = None,
    html_page: bool = False,
) -> list[Path]:
    """Write the cross-validation page (and per_case.csv beside it); returns the files.

    Raises:
        ValueError, FileNotFoundError: see `report.folds.gather`; `dest` not ending in .md; a
            `baseline` that is not a training of `folds` (`report.folds.against_baseline`).
    """
    dest = Path(dest)
    if dest.suffix != ".md":
        raise ValueError(f"--dest {dest} must end in .md (the HTML page is written next to it)")
    cohort = gather(folds, columns, trainings)
    title = title or f"Cross-validation: {len(cohort.cases)} cases, {len(cohort.folders)} folds"
    blocks = build_blocks(cohort, title, columns, baseline, [Path(p) for p in pair])
    return write_pages(dest, blocks, html_page, {dest.parent / "per_case.csv": case_csv(cohort)})


def get_parser() -> ArgumentParser:
    """The command line."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folds", nargs="+", required=True, type=Path, help="one results folder per fold"
    )
    parser.add_argument("--dest", required=True, type=Path, help="the page to write (.md)")
    parser.add_argument("--html", action="store_true", help="also write the page as .html")
    parser.add_argument(
        "--columns", nargs="+", type=int, default=[1], help="classes averaged (default: 1)"
    )
    parser.add_argument("--baseline", default=None, help="compare every training with this one")
    parser.add_argument(
        "--trainings",
        nargs="+",
        default=None,
        help="the trainings (default: those of the first fold)",
    )
    parser.add_argument(
        "--pair",
        nargs="+",
        type=Path,
        default=[],
        help="the other dimension's results folders of the same folds",
    )
    parser.add_argument("--title", default=None, help="page title")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, or 1 with one `error:` line)."""
    args = get_parser().parse_args(argv)
    try:
        written = write_crossval(
            args.folds,
            args.dest,
            args.columns,
            args.baseline,
            args.trainings,
            args.pair,
            args.title,
            args.html,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
