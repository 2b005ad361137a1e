"""Summary of training runs: each metric at its best epoch, as a table, a Markdown and an HTML page.

The run folders are those main.py writes; `runfolder.schema` describes their per-epoch arrays (E x N
x K: epoch, sample, class; E x I x L for losses; E x P x 2 for adjacency counts) and reads them.

For every run and metric the report gives the best epoch (0-based, as the `iter<NNN>` folders):
the epoch whose mean over samples of the per-sample mean over the chosen classes is the highest
for Dice and the lowest for everything else (`runfolder.schema.better`); the first such epoch on
ties (`runfolder.ranking`). Forbidden adjacencies are given at the epoch of the checkpoint
(best_epoch.txt) instead, since their own minimum would reward empty predictions. At that epoch it
gives the mean and the standard deviation (ddof=0) over samples of the per-sample value (the mean
over the chosen classes, or each class on its own with `per_class`). NaN values (a metric undefined
for an empty class) are left out of every mean and standard deviation, and their number is reported.

A diverged run, every value of its 3D metrics NaN (`runfolder.schema.divergence`: every epoch,
patient and class of val_3d_dsc, val_3d_hausdorff and val_3d_hd95), does not stop the report: a
`warning: ...` line on stderr and a "Diverged runs" section name its folder, its table row says
`diverged` in every metric cell, and it is left out of the best values, the seeds' aggregation
and the comparisons with the baseline (a diverged baseline: the section says so and compares
nothing); the per-patient table says diverged, per_patient.csv holds nan for it. A run whose 3D
metrics are NaN only from some epoch on is not diverged as a whole: it is ranked on its finite
epochs (NaN epochs are never best), and the warning and the section say from which epoch.

Command line:

    python report.py --folders results/isles/gdl results/isles/gdl_surface_steal \\
        --metrics val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95 --columns 1 \\
        --dest results/isles/report.md --html --plots results/isles/val_dice.png

prints the table and, with `--dest`, writes the Markdown page (and with `--html` the same page as
`report.html` next to it; the page itself is laid out by `report.page`). `--columns` chooses the
classes of Dice and distances; loss arrays use every loss term and adjacency arrays the forbidden
pair count. Every file is written to a temporary name in its folder and renamed when complete.
Bad input stops with one `error: ...` line naming the folder, file or argument.

Numbers that cannot be ranked are refused, before anything is written (plot.py shares these
checks, `runfolder.schema.load_metric` and `runfolder.schema.check_comparable`):

- impossible values: a Dice score outside [0, 1] or infinite, a distance negative or infinite, an
  adjacency count negative or infinite; the message names the file, the epoch, sample and class
  of the first bad value, and the value. NaN (undefined) is allowed everywhere; losses are not
  range-checked (the boundary loss is negative by design).
- runs that are not comparable: runs trained on different data (the `dataset` recorded in
  args.json, compared as a whole path made absolute, so that `data/isles` and
  `data/isles-synthetic/isles` differ), with a different class count (`n_class` in args.json),
  or whose class-indexed arrays (Dice, distances) have different class counts (last axis). One
  error names the two run folders and what differs: one report per dataset, never a ranking
  across datasets. A run without args.json (or without these keys) is checked on its arrays
  only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from boundary_loss.io.console import ArgumentParser
from boundary_loss.report.folds import gather
from boundary_loss.report.page import Block, Table, build_page, write_pages
from boundary_loss.report.paired import method_text
from boundary_loss.report.runs import RunSummary, summarise
from boundary_loss.report.sections import (
    comparison_blocks,
    pair_blocks,
    patient_blocks,
    picture_blocks,
    prediction_blocks,
    seed_blocks,
)
from boundary_loss.runfolder.schema import (
    better,
    column_name,
    training_of,
)


def _fmt(value: float) -> str:
    """A table number: four decimals, or `nan`."""
    return "nan" if np.isnan(value) else f"{value:.4f}"


def _cell(mean: float, std: float, epoch: int | None, n_nan: int) -> str:
    """`mean +- std (epoch e)`, with the NaN count when there are NaN values."""
    if epoch is None:
        return f"all NaN ({n_nan} values)"
    if np.isnan(mean):  # a class with no finite value at the best epoch of the mean
        return f"all NaN (epoch {epoch}, {n_nan} values)"
    nan = f", {n_nan} NaN" if n_nan else ""
    return f"{_fmt(mean)} +- {_fmt(std)} (epoch {epoch}{nan})"


DIVERGED_CELL = "diverged (3D metrics all NaN)"
"""What the table shows in each metric cell of a diverged run, instead of its numbers."""


def build_table(runs: Sequence[RunSummary], per_class: bool = False) -> Table:
    """Table with one row per run and one column per metric (per metric and class with
    `per_class`); in each metric column the best mean over runs (max or min per `better`) is
    marked bold, every run that reaches it on ties. A diverged run (`RunSummary.diverged`) keeps
    its row, each metric cell saying `DIVERGED_CELL`, and is left out of the best values.

    Args:
        runs: output of `summarise`.
        per_class: one column per class instead of the mean over the chosen classes.

    Returns:
        The Table; its first two columns are the run and its epochs done/planned.
    """
    if per_class and any(
        not s.class_mean and s.columns for run in runs for s in run.metrics.values()
    ):
        raise ValueError("per-class table asked for summaries made without per_class=True")
    header = ["run", "epochs"]
    keys: list[tuple[str, int | None]] = []
    for name, summary in runs[0].metrics.items():
        arrow = "higher is better" if summary.mode == "max" else "lower is better"
        if per_class:
            classes = sorted({c for run in runs for c in run.metrics[name].columns})
            for c in classes:
                keys.append((name, c))
                header.append(f"{name}[{c}] ({arrow})")
        else:
            keys.append((name, None))
            header.append(f"{name} ({arrow})")
    rows, means = [], []
    for run in runs:
        row, row_means = [run.label, run.epochs_text], []
        for name, c in keys:
            s = run.metrics[name]
            if run.diverged:
                row.append(DIVERGED_CELL)
                row_means.append(float("nan"))
            elif c is None:
                row.append(_cell(s.mean, s.std, s.best_epoch, s.n_nan))
                row_means.append(s.mean)
            elif c not in s.class_mean:  # this run has no such class
                row.append("-")
                row_means.append(float("nan"))
            else:
                row.append(_cell(s.class_mean[c], s.class_std[c], s.best_epoch, s.class_nan[c]))
                row_means.append(s.class_mean[c])
        rows.append(row)
        means.append(row_means)
    values = np.array(means, dtype=np.float64).reshape(len(runs), len(keys))  # R x M
    bold = [[False, False] + [False] * len(keys) for _ in runs]
    for j, (name, _) in enumerate(keys):
        column = values[:, j]
        if np.all(np.isnan(column)):
            continue
        target = np.nanmax(column) if better(name) == "max" else np.nanmin(column)
        for i in range(len(runs)):
            bold[i][2 + j] = bool(column[i] == target)
    return Table(header, rows, bold)


def format_text_table(table: Table) -> str:
    """Aligned plain-text table, the best cells marked with a `*`."""
    rows = [
        [cell + (" *" if b else "") for cell, b in zip(row, bold, strict=True)]
        for row, bold in zip(table.rows, table.bold, strict=True)
    ]
    widths = [max(len(r[j]) for r in [table.header, *rows]) for j in range(len(table.header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(table.header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def describe(runs: Sequence[RunSummary], per_class: bool) -> str:
    """One paragraph saying what the table cells are, with the columns used for each metric.

    Args:
        runs: output of `summarise`.
        per_class: the table has one column per class.

    Returns:
        The paragraph, printed above the table and shown on the page.
    """
    used = []
    for name in runs[0].metrics:
        columns = sorted({c for run in runs for c in run.metrics[name].columns})
        used.append(f"{name}: {', '.join(column_name(name, c) for c in columns)}")
    how = "each class on its own" if per_class else "the per-sample mean over the chosen classes"
    return (
        f"Each cell: mean +- standard deviation over samples (2D images, patients for the 3D "
        f"metrics, iterations for losses) of {how}, at the run's best epoch for that metric "
        f"(0-based; the highest mean for Dice, the lowest for losses and distances in mm; "
        f"forbidden adjacencies at the epoch of the checkpoint, best_epoch.txt, since their "
        f"minimum would reward empty predictions). "
        f"Columns used: {'; '.join(used)}. NaN values are left out of the means and counted. "
        f"Epochs: done/planned (n_epoch of args.json)."
    ) + (
        " A diverged run (every value of its 3D metrics NaN) keeps its row, marked diverged, and "
        "is left out of the best values, the seeds' aggregation and the comparisons."
        if any(run.diverged for run in runs)
        else ""
    )


def divergence_warnings(runs: Sequence[RunSummary]) -> list[str]:
    """One `warning: ...` line per run whose 3D metrics are NaN for good, naming its folder.

    Args:
        runs: output of `summarise`.

    Returns:
        The lines: a diverged run (left out of the ranking and the comparisons), and a run whose
        3D metrics are NaN from some epoch on (ranked on its earlier epochs).
    """
    lines = []
    for run in runs:
        found = run.divergence
        if found is None or found.nan_from is None:
            continue
        what = (
            "left out of the ranking and the comparisons, shown as diverged"
            if found.diverged
            else "still ranked"
        )
        lines.append(f"warning: {found.describe()}: {what}")
    return lines


# ---------------------------------------------------------------------------------------------
# Files


def write_report(
    runs: Sequence[RunSummary],
    dest: str | Path,
    title: str = "Report",
    plots: Sequence[str | Path] = (),
    html_page: bool = False,
    per_class: bool = False,
    predictions: Sequence[str | Path] = (),
    patient_columns: Sequence[int] | None = None,
    baseline: str | None = None,
    pictures: str | Path | None = None,
    pair: str | Path | None = None,
) -> list[Path]:
    """Write the Markdown page (and its HTML twin, same base name, `.html`).

    Args:
        runs: output of `summarise`.
        dest: the Markdown file.
        title: page title.
        plots: image files to embed; each must exist.
        html_page: also write the HTML page.
        per_class: one table column per class.
        predictions: boundary_loss_predict output folders, one per run, summarised after the table.
        patient_columns: classes of the per-patient table (3D metrics at each checkpoint, also
            written as `per_patient.csv` beside `dest`), and of the paired comparisons; None:
            neither.
        baseline: a training to compare every other one with, patient by patient (and seed by
            seed): bootstrap confidence interval and Wilcoxon test (report.paired); None: none.
        pictures: a report.pictures output folder to show; None: none.
        pair: the other dimension's results folder of the same cases (3D for a 2D report, 2D
            for a 3D one): each training paired with itself there, case by case
            (`report.sections.pair_blocks`); None: none.

    Returns:
        The files written.

    Raises:
        FileNotFoundError: a plot file does not exist.
        ValueError: `dest` does not end in `.md`.
    """
    dest = Path(dest)
    if dest.suffix != ".md":
        raise ValueError(f"--dest {dest} must end in .md (the HTML page is written next to it)")
    for plot in plots:
        if not Path(plot).is_file():
            raise FileNotFoundError(f"plot file {plot} does not exist (--plots)")
    description, table = describe(runs, per_class), build_table(runs, per_class)
    dest.parent.mkdir(parents=True, exist_ok=True)
    folders = [run.folder for run in runs]
    metrics = list(runs[0].metrics) if runs else []
    diverged = [run.label for run in runs if run.diverged]
    extra = seed_blocks(runs, metrics)
    if baseline is not None:
        extra += comparison_blocks(folders, baseline, patient_columns or [1], metrics, diverged)
    if pair is not None:
        extra += pair_section(folders, Path(pair), baseline, patient_columns or [1])
        method = Block("p", method_text("patient"))
        if method not in extra:  # the comparison with the baseline states it otherwise
            extra.append(method)
    if patient_columns is not None:
        extra += patient_blocks(folders, patient_columns, dest.parent / "per_patient.csv", diverged)
    if pictures is not None:
        extra += picture_blocks(Path(pictures), dest.parent)
    extra += prediction_blocks(predictions)
    blocks = build_page(runs, title, plots, dest.parent, description, table, extra)
    return write_pages(dest, blocks, html_page)  # the page first, then its HTML twin


def pair_section(
    folders: Sequence[Path], other: Path, baseline: str | None, columns: Sequence[int]
) -> list[Block]:
    """2D against 3D for the runs of one results folder and `other`, the other dimension's
    (`report.sections.pair_blocks`).

    Raises:
        ValueError: runs of several results folders, or `other` of the same dimension.
    """
    parents = {Path(f).parent for f in folders}
    if len(parents) != 1:
        raise ValueError("--pair needs the runs of one results folder")
    trainings = list(dict.fromkeys(training_of(Path(f).name) for f in folders))
    own = gather([parents.pop()], columns, trainings)
    return pair_blocks(own, [other], baseline, columns, unit="patient")


# ---------------------------------------------------------------------------------------------
# Command line


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser of report.py."""
    parser = ArgumentParser(
        description="Each metric of each run at its best epoch (max for Dice, min for losses and "
        "distances): printed, and written as a Markdown/HTML page with plots and provenance."
    )
    parser.add_argument("--folders", nargs="+", required=True, help="run folders")
    parser.add_argument(
        "--metrics", nargs="+", required=True, help="metric files, e.g. val_dice val_3d_hd95"
    )
    parser.add_argument(
        "--columns",
        nargs="+",
        type=int,
        default=None,
        help="classes to average for Dice and distances (default: all but 0 when there are "
        "several); loss files use every loss term, adjacency files the forbidden pair count",
    )
    parser.add_argument("--per-class", action="store_true", help="one column per class")
    parser.add_argument("--dest", type=Path, default=None, help="Markdown page to write (.md)")
    parser.add_argument("--html", action="store_true", help="also write the page as .html")
    parser.add_argument("--plots", nargs="*", default=[], help="images to embed in the page")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument(
        "--predictions",
        nargs="*",
        default=[],
        help="predict.py output folders (NIfTI predictions and their metrics.csv), summarised",
    )
    parser.add_argument(
        "--patients",
        action="store_true",
        help="a per-patient table of the 3D metrics (also per_patient.csv beside --dest)",
    )
    parser.add_argument(
        "--baseline", default=None, help="compare every training with this one, per patient"
    )
    parser.add_argument("--pictures", type=Path, default=None, help="a report.pictures folder")
    parser.add_argument(
        "--pair",
        type=Path,
        default=None,
        help="the other dimension's results folder of the same cases (2D against 3D)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (1 on bad input, with `error: ...`)."""
    args = get_parser().parse_args(argv)
    try:
        if args.html and args.dest is None:
            raise ValueError("--html needs --dest (the HTML page is written next to the .md)")
        if args.dest is not None and args.dest.suffix != ".md":
            raise ValueError(f"--dest {args.dest} must end in .md")
        for plot in args.plots:
            if not Path(plot).is_file():
                raise FileNotFoundError(f"plot file {plot} does not exist (--plots)")
        runs = summarise(args.folders, args.metrics, args.columns, args.per_class)
        title = args.title or f"Report: {', '.join(r.label for r in runs)}"
        table = build_table(runs, args.per_class)
        print(describe(runs, args.per_class))
        print(format_text_table(table))
        print("* best value of the column")
        for line in divergence_warnings(runs):
            print(line, file=sys.stderr)
        for run in runs:
            for note in run.notes:
                print(f"note: {run.label}: {note}")
        if args.dest is not None:
            columns = args.columns or [1]
            written = write_report(
                runs,
                args.dest,
                title,
                args.plots,
                args.html,
                args.per_class,
                args.predictions,
                columns if args.patients or args.baseline else None,
                args.baseline,
                args.pictures,
                args.pair,
            )
            print("wrote " + ", ".join(map(str, written)))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
