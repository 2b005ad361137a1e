"""Plots of per-epoch metrics of training runs: curves over epochs and box plots at the best epoch.

The arrays are those main.py writes in a run folder (see `runfolder.schema.ARRAYS`): E x N x K
(epoch, sample, class) for Dice and distances, E x I x L (epoch, iteration, loss term) for
`tra_loss.npy` and `val_loss.npy`, E x P x 2 for `val_adjacency.npy`. Which direction is better
comes from `runfolder.schema.better` (max for Dice, min for the rest) and the best epoch from
`runfolder.ranking`, as in report.py, so plots and report always agree on the best epoch.

    python plot.py curves --folders results/isles/gdl results/isles/gdl_surface_steal \\
        --filename val_dice.npy --dest results/isles/val_dice.png
    python plot.py box --folders results/isles/gdl results/isles/gdl_surface_steal \\
        --filename val_dice.npy --dest results/isles/val_dice_boxplot.png --classes 1

`--columns` chooses the columns of the array whatever they are (classes, loss terms, adjacency
counts); `--classes` chooses classes, and applies to class-indexed arrays only (Dice, distances):
loss arrays keep every loss term and adjacency arrays the forbidden pair count, so one option
serves every array. Without either, the array's default columns are drawn
(`runfolder.ArraySpec.default_columns`: every class but 0, every loss term, forbidden pairs).

Curves: one per run and chosen column, the NaN-aware mean over samples (axis 1) per epoch with a
band of +- one standard deviation (ddof=0); `--best-so-far` draws the running best instead. The
best epoch of each curve is marked and given in the legend.

Box plots: one box per run and chosen column, of the per-sample values at the run's best epoch for
the metric (the epoch whose mean over samples of the per-sample mean over the chosen columns is
best), or at `--epoch`. NaN values are left out and counted in the box label.

A diverged run (`runfolder.schema.divergence`: every value of its 3D metrics NaN, as report.py shows
it) does not stop a plot: its curve is not drawn, its legend entry says it diverged, and the box
plot leaves it out and names it in the title. A run of seeds that diverged is left out of its
training's mean over seeds, the legend counting it.

The image is drawn with matplotlib's Agg canvas (no display), written to a temporary file in the
destination folder and renamed when complete. Bad input stops with one `error: ...` line naming
the folder, file or argument, and writes nothing: as in report.py, an impossible value (a Dice
outside [0, 1], a negative or infinite distance or adjacency count) and runs of different data
or class counts are refused (`runfolder.schema.check_values`, `runfolder.schema.check_comparable`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from boundary_loss.io.atomic import atomic_write
from boundary_loss.io.console import ArgumentParser
from boundary_loss.runfolder.ranking import best_index, epoch_scores, nan_mean_std, running_best
from boundary_loss.runfolder.schema import (
    Divergence,
    better,
    check_comparable,
    check_folder,
    class_columns,
    column_name,
    divergence,
    load_metric,
    metric_file,
    read_args,
    resolve_columns,
    run_data,
    seed_of,
    training_of,
)

CURVE_SIZE = (8.0, 5.0)  # inches; at DPI, an 800 x 500 image
BOX_HEIGHT = 5.0  # inches; the width grows with the number of boxes (box_size)
DPI = 100
DIVERGED = "diverged (3D metrics all NaN)"
"""What a diverged run's legend entry says."""


@dataclass(frozen=True)
class Curve:
    """One drawn curve.

    Attributes:
        label: run name, and column when several are drawn.
        legend: the legend entry, with the best value and epoch.
        column: the class (or loss term) index.
        mean: E vector, NaN-aware mean over samples per epoch (the running best with best_so_far).
        std: E vector, standard deviation over samples at the same epochs.
        best_epoch: 0-based epoch of the best mean, None when every value is NaN.
        best_value: the mean at best_epoch (NaN when None).
        diverged: the run diverged (every seed of the training): not drawn, mean and std NaN.
    """

    label: str
    legend: str
    column: int
    mean: np.ndarray
    std: np.ndarray
    best_epoch: int | None
    best_value: float
    diverged: bool = False


@dataclass(frozen=True)
class Box:
    """One drawn box.

    Attributes:
        label: tick label (run, column, epoch).
        run: index of the run in the folders given (boxes of a run share a colour).
        column: the class (or loss term) index.
        epoch: 0-based epoch the values come from.
        values: N vector of the finite per-sample values (NaN left out).
        n_nan: NaN values left out.
    """

    label: str
    run: int
    column: int
    epoch: int
    values: np.ndarray
    n_nan: int


def _check_dest(dest: str | Path) -> Path:
    """Return `dest` as a Path whose extension matplotlib's Agg canvas can write.

    Raises:
        ValueError: unsupported or missing extension.
    """
    dest = Path(dest)
    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if dest.suffix[1:].lower() not in formats:
        raise ValueError(
            f"--dest {dest}: unsupported image extension {dest.suffix!r}, expected one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    return dest


def _check_labels(folders: Sequence[str | Path], labels: Sequence[str] | None) -> list[str]:
    """Labels of the runs: the given ones, or the folder names (whole paths when names repeat).

    Raises:
        ValueError: no folder, or a number of labels different from the number of folders.
    """
    if not folders:
        raise ValueError("no run folder given (--folders)")
    if labels is not None:
        if len(labels) != len(folders):
            raise ValueError(
                f"--labels has {len(labels)} name(s) {list(labels)} but --folders has "
                f"{len(folders)} run(s) {[str(f) for f in folders]}"
            )
        return [str(label) for label in labels]
    names = [Path(f).name or str(f) for f in folders]
    if len(set(names)) < len(names):
        return [str(f) for f in folders]
    return names


def _check_ylim(ylim: Sequence[float] | None) -> tuple[float, float] | None:
    if ylim is None:
        return None
    if len(ylim) != 2 or not all(np.isfinite(ylim)) or not ylim[0] < ylim[1]:
        raise ValueError(f"--ylim must be two finite numbers LOW < HIGH, got {list(ylim)}")
    return float(ylim[0]), float(ylim[1])


def _load_all(
    folders: Sequence[str | Path],
    filename: str,
    columns: Sequence[int] | None,
    classes: Sequence[int] | None = None,
) -> list[tuple[np.ndarray, list[int], Divergence]]:
    """Read and check every run's array before drawing anything.

    Args:
        folders: run folders.
        filename: metric file in each folder.
        columns: chosen columns of any kind, or None.
        classes: chosen classes, used for class-indexed arrays only
            (`runfolder.schema.class_columns`), or None. Neither: the default of
            `runfolder.schema.resolve_columns`.

    Returns:
        One (E x N x K array, chosen columns, divergence) triple per folder; the divergence is
        judged on the run's 3D arrays (`runfolder.schema.divergence`), read and checked too.

    Raises:
        FileNotFoundError: a missing run folder or metric file.
        ValueError: both `columns` and `classes`, a malformed array, an impossible value, a
            column out of range, or runs of different data or class counts
            (`runfolder.schema.check_comparable`).
    """
    if columns is not None and classes is not None:
        raise ValueError(
            f"--columns {list(columns)} and --classes {list(classes)} both given: --columns "
            "chooses the columns of any array, --classes the classes of class-indexed ones; give "
            "one"
        )
    if columns is None:
        columns = class_columns(filename, classes)
    loaded, identities = [], []
    for folder in folders:
        path = check_folder(folder)
        data = load_metric(path, filename)
        chosen = resolve_columns(metric_file(path, filename), data.shape[2], columns)
        loaded.append((data, chosen, divergence(path, {filename: data})))
        identities.append(run_data(path, read_args(path), {filename: data}))
    check_comparable(identities)
    return loaded


def _save(fig: Figure, dest: Path) -> None:
    """Write the figure atomically in the format of dest's extension."""
    canvas = FigureCanvasAgg(fig)
    atomic_write(
        dest, lambda handle: canvas.print_figure(handle, format=dest.suffix[1:].lower(), dpi=DPI)
    )


def curve_values(
    data: np.ndarray, column: int, mode: str, best_so_far: bool = False
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Per-epoch mean and std over samples of one column, and the best epoch.

    Args:
        data: E x N x K array.
        column: column index.
        mode: "max" or "min".
        best_so_far: replace each epoch by the best epoch so far (its mean and its std).

    Returns:
        mean (E), std (E), and the 0-based best epoch (None when every mean is NaN).
    """
    mean, std = nan_mean_std(data[:, :, column], axis=1)  # E, E
    best = best_index(mean, mode)
    if best_so_far:
        index = running_best(mean, mode)  # E, -1 before the first finite value
        valid = index >= 0
        mean = np.where(valid, mean[np.maximum(index, 0)], np.nan)
        std = np.where(valid, std[np.maximum(index, 0)], np.nan)
    return mean, std, best


def plot_curves(
    folders: Sequence[str | Path],
    filename: str,
    dest: str | Path,
    columns: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    ylim: Sequence[float] | None = None,
    best_so_far: bool = False,
    title: str | None = None,
    classes: Sequence[int] | None = None,
) -> list[Curve]:
    """Draw one curve per run and column of a per-epoch metric, with the best epochs marked.

    Args:
        folders: run folders.
        filename: metric file in each folder (`val_dice.npy`; `.npy` may be left out).
        dest: image to write (its extension gives the format, e.g. `.png`).
        columns: columns of any kind (classes, loss terms, adjacency counts); None: `classes`,
            or the array's default (every class but 0 when there are several, every loss term,
            the forbidden pair count).
        labels: run names for the legend, one per folder; None: the folder names.
        ylim: (low, high) of the y axis; None: automatic.
        best_so_far: draw the running best (max or min per `runfolder.schema.better`) over epochs.
        title: figure title; None: the metric name.
        classes: classes to draw when the array's columns are classes; ignored for loss and
            adjacency arrays (their default columns are drawn). Not with `columns`.

    Returns:
        The curves drawn, in legend order.

    Raises:
        FileNotFoundError: a missing run folder or metric file.
        ValueError: bad labels, ylim, columns, extension, or a malformed or empty array.
    """
    dest = _check_dest(dest)
    names = _check_labels(folders, labels)
    limits = _check_ylim(ylim)
    loaded = _load_all(folders, filename, columns, classes)
    mode = better(filename)
    metric = Path(filename).name.removesuffix(".npy")

    fig = Figure(figsize=CURVE_SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    curves = []
    if any(seed_of(name) is not None for name in names):
        _seed_curves(ax, names, loaded, filename, mode, curves)
        loaded, names = [], []
    for name, (data, chosen, found) in zip(names, loaded, strict=True):
        epochs = np.arange(data.shape[0])  # E
        for column in chosen:
            label = name if len(chosen) == 1 else f"{name} ({column_name(filename, column)})"
            if found.diverged:  # a legend entry, nothing drawn
                nan = np.full(data.shape[0], np.nan)
                legend = f"{label}: {DIVERGED}"
                ax.plot(epochs, nan, label=legend, linewidth=1.5)
                curves.append(Curve(label, legend, column, nan, nan, None, np.nan, True))
                continue
            mean, std, best = curve_values(data, column, mode, best_so_far)
            if best is None:
                value = float("nan")
                legend = f"{label}: no finite value"
            else:
                value = float(np.nanmax(mean) if mode == "max" else np.nanmin(mean))
                legend = f"{label}: best {value:.4f} at epoch {best}"
            (line,) = ax.plot(epochs, mean, label=legend, linewidth=1.5)
            color = line.get_color()
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
            if best is not None:
                ax.plot(
                    [best],
                    [value],
                    marker="*",
                    markersize=12,
                    color=color,
                    markeredgecolor="black",
                    linestyle="none",
                )
                ax.axvline(best, color=color, linestyle=":", linewidth=1)
            curves.append(Curve(label, legend, column, mean, std, best, value))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (mean +- std over samples)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if limits is not None:
        ax.set_ylim(*limits)
    ax.grid(True, alpha=0.3)
    suffix = " (best so far)" if best_so_far else ""
    ax.set_title(title if title is not None else f"{metric}{suffix}, {mode} is best")
    ax.legend(fontsize="small")
    _save(fig, dest)
    return curves


def _seed_curves(ax, names, loaded, filename, mode, curves) -> None:
    """Runs repeated over seeds (`<training>-seed<N>`): per training, the mean over its seeds of
    the per-seed mean curves, with the band from the lowest to the highest seed."""
    trainings: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        trainings.setdefault(training_of(name), []).append(i)
    for training, runs in trainings.items():
        members = [i for i in runs if not loaded[i][2].diverged]
        gone = len(runs) - len(members)
        for column in loaded[runs[0]][1]:
            label = f"{training} ({len(members)} seeds{f', {gone} diverged' if gone else ''})"
            if len(loaded[runs[0]][1]) > 1:
                label += f" ({column_name(filename, column)})"
            if not members:  # every seed diverged: a legend entry, nothing drawn
                nan = np.full(loaded[runs[0]][0].shape[0], np.nan)
                legend = f"{training}: {DIVERGED}, every seed"
                ax.plot(np.arange(nan.size), nan, label=legend, linewidth=1.5)
                curves.append(Curve(label, legend, column, nan, nan, None, np.nan, True))
                continue
            per_seed = [nan_mean_std(loaded[i][0][:, :, column], axis=1)[0] for i in members]
            length = max(len(c) for c in per_seed)
            stack = np.full((len(per_seed), length), np.nan)
            for row, curve in zip(stack, per_seed, strict=True):
                row[: len(curve)] = curve
            with np.errstate(all="ignore"):
                mean = np.nanmean(stack, axis=0)
                low, high = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
            best = best_index(mean, mode)
            value = float("nan") if best is None else float(mean[best])
            legend = (
                f"{label}: no finite value"
                if best is None
                else (f"{label}: best {value:.4f} at epoch {best}")
            )
            epochs = np.arange(length)
            (line,) = ax.plot(epochs, mean, label=legend, linewidth=1.5)
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            if best is not None:
                ax.axvline(best, color=line.get_color(), linestyle=":", linewidth=1)
            curves.append(Curve(label, legend, column, mean, high - low, best, value))


def box_size(n_boxes: int) -> tuple[float, float]:
    """Figure size in inches of a box plot of `n_boxes` boxes."""
    return max(6.0, 1.5 * n_boxes + 1.0), BOX_HEIGHT


def plot_box(
    folders: Sequence[str | Path],
    filename: str,
    dest: str | Path,
    columns: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    ylim: Sequence[float] | None = None,
    epoch: int | None = None,
    title: str | None = None,
    classes: Sequence[int] | None = None,
) -> list[Box]:
    """Draw a box per run and column of the per-sample values at the run's best epoch.

    The best epoch of a run is that of the best NaN-aware mean over samples of the per-sample
    mean over the chosen columns (max or min per `runfolder.schema.better`, the first one on ties),
    the same rule as report.py. A diverged run (`runfolder.schema.divergence`) has no box: the title
    names it.

    Args:
        folders: run folders.
        filename: metric file in each folder (`val_dice.npy`; `.npy` may be left out).
        dest: image to write (its extension gives the format, e.g. `.png`).
        columns: columns of any kind (classes, loss terms, adjacency counts); None: `classes`,
            or the array's default (every class but 0 when there are several, every loss term,
            the forbidden pair count).
        labels: run names, one per folder; None: the folder names.
        ylim: (low, high) of the y axis; None: automatic.
        epoch: 0-based epoch to show for every run instead of each run's best.
        title: figure title; None: the metric name.
        classes: classes to show when the array's columns are classes; ignored for loss and
            adjacency arrays. Not with `columns`.

    Returns:
        The boxes drawn, left to right (none for a diverged run).

    Raises:
        FileNotFoundError: a missing run folder or metric file.
        ValueError: bad labels, ylim, columns, extension or epoch, or a malformed or empty array.
    """
    dest = _check_dest(dest)
    names = _check_labels(folders, labels)
    limits = _check_ylim(ylim)
    if epoch is not None and epoch < 0:
        raise ValueError(f"--epoch must be a 0-based epoch index >= 0, got {epoch}")
    loaded = _load_all(folders, filename, columns, classes)
    mode = better(filename)
    metric = Path(filename).name.removesuffix(".npy")

    boxes, diverged = [], []
    for run, (folder, name, (data, chosen, found)) in enumerate(
        zip(folders, names, loaded, strict=True)
    ):
        n_epochs = data.shape[0]
        if epoch is not None and epoch >= n_epochs:
            raise ValueError(
                f"--epoch {epoch} is out of range for {metric_file(folder, filename)}: "
                f"it has {n_epochs} epoch(s), 0..{n_epochs - 1}"
            )
        if found.diverged:
            diverged.append(name)
            continue
        best = best_index(epoch_scores(data, chosen), mode)
        shown = epoch if epoch is not None else (n_epochs - 1 if best is None else best)
        how = "" if epoch is not None else (", all NaN" if best is None else ", best")
        for column in chosen:
            values = data[shown, :, column]  # N
            finite = values[~np.isnan(values)]
            n_nan = int(values.size - finite.size)
            label = name if len(chosen) == 1 else f"{name}\n{column_name(filename, column)}"
            label += f"\nepoch {shown}{how}" + (f"\n{n_nan} NaN" if n_nan else "")
            boxes.append(Box(label, run, column, shown, finite, n_nan))

    fig = Figure(figsize=box_size(len(boxes)), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if boxes:
        drawn = ax.boxplot(
            [b.values for b in boxes],
            tick_labels=[b.label for b in boxes],
            showmeans=True,
            patch_artist=True,
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
            medianprops={"color": "black"},
        )
        for patch, b in zip(drawn["boxes"], boxes, strict=True):
            patch.set_facecolor(f"C{b.run % 10}")
            patch.set_alpha(0.5)
    else:
        ax.text(0.5, 0.5, "every run diverged: no box", ha="center", va="center")
    ax.set_ylabel(f"{metric} per sample (diamond: mean, line: median)")
    if limits is not None:
        ax.set_ylim(*limits)
    ax.grid(True, axis="y", alpha=0.3)
    where = f"epoch {epoch}" if epoch is not None else f"best epoch ({mode} of the mean)"
    shown_title = title if title is not None else f"{metric} at the {where}"
    if diverged:
        shown_title += f"\nleft out, {DIVERGED}: {', '.join(diverged)}"
    ax.set_title(shown_title)
    _save(fig, dest)
    return boxes


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser of plot.py (subcommands `curves` and `box`)."""
    parser = ArgumentParser(description="Plots of the per-epoch metrics of runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--folders", nargs="+", required=True, help="run folders")
    common.add_argument("--filename", required=True, help="metric file, e.g. val_dice.npy")
    common.add_argument("--dest", required=True, type=Path, help="image to write, e.g. x.png")
    common.add_argument(
        "--columns",
        nargs="+",
        type=int,
        default=None,
        help="columns to plot, whatever they hold: classes, loss terms, adjacency counts "
        "(default: all classes but 0 when there are several, every loss term, forbidden pairs)",
    )
    common.add_argument(
        "--classes",
        nargs="+",
        type=int,
        default=None,
        metavar="K",
        help="classes to plot for Dice and distances; loss and adjacency arrays keep their "
        "default columns (not with --columns)",
    )
    common.add_argument("--labels", nargs="+", default=None, help="one name per run folder")
    common.add_argument("--ylim", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"))
    common.add_argument("--title", default=None, help="figure title")
    curves = sub.add_parser("curves", parents=[common], help="mean +- std per epoch")
    curves.add_argument("--best-so-far", action="store_true", help="draw the running best")
    box = sub.add_parser("box", parents=[common], help="per-sample values at the best epoch")
    box.add_argument("--epoch", type=int, default=None, help="0-based epoch instead of the best")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (1 on bad input, with `error: ...`)."""
    args = get_parser().parse_args(argv)
    common = dict(
        folders=args.folders,
        filename=args.filename,
        dest=args.dest,
        columns=args.columns,
        labels=args.labels,
        ylim=args.ylim,
        title=args.title,
        classes=args.classes,
    )
    try:
        if args.command == "curves":
            plot_curves(**common, best_so_far=args.best_so_far)
        else:
            plot_box(**common, epoch=args.epoch)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
