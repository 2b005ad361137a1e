"""Summary of training runs: each metric at its best epoch, as a table, a Markdown and an HTML page.

A run folder (written by main.py) holds per-epoch metric arrays, all of rank 3:

- `tra_loss.npy`, `val_loss.npy`: E x I x L (epoch, iteration, loss term);
- `tra_dice.npy`, `val_dice.npy`: E x N x K (epoch, 2D image, class), Dice in [0, 1];
- `val_3d_dsc.npy`, `val_3d_hausdorff.npy`, `val_3d_hd95.npy`: E x P x K (epoch, patient, class),
  Dice in [0, 1], distances in mm;
- `val_adjacency.npy`: E x P x 2 (forbidden adjacencies, connected components involved);

plus `args.json` (the training arguments), `provenance.json` (commit, command line, packages...),
`git.diff` and `best_epoch.txt`. Arrays are written after each epoch, so a run in progress has
fewer epochs than `n_epoch`.

For every run and metric the report gives the best epoch (0-based, as the `iter<NNN>` folders):
the epoch whose mean over samples of the per-sample mean over the chosen classes is the highest
for Dice (`dice` or `dsc` in the name) and the lowest for everything else (`better`); the first
such epoch on ties. At that epoch it gives the mean and the standard deviation (ddof=0) over
samples of the per-sample value (the mean over the chosen classes, or each class on its own with
`per_class`). NaN values (a metric undefined for an empty class) are left out of every mean and
standard deviation, and their number is reported.

Command line:

    python report.py --folders results/isles/gdl results/isles/gdl_surface_steal \\
        --metrics val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95 --columns 1 \\
        --dest results/isles/report.md --html --plots results/isles/val_dice.png

prints the table and, with `--dest`, writes the Markdown page (and with `--html` the same page as
`report.html` next to it). Every file is written to a temporary name in its folder and renamed
when complete. Bad input stops with one `error: ...` line naming the folder, file or argument.

Numbers that cannot be ranked are refused, before anything is written (plot.py shares these
checks):

- impossible values: a Dice score (`dice` or `dsc` in the file name) outside [0, 1] or infinite,
  a distance (`hausdorff`, `hd95`) negative or infinite, an adjacency count negative or infinite;
  the message names the file, the epoch, sample and class of the first bad value, and the value.
  NaN (undefined) is allowed everywhere; losses are not range-checked (the boundary loss is
  negative by design).
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
import datetime
import html
import json
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from atomic import write_text_atomic
from console import ArgumentParser

Mode = Literal["max", "min"]


def better(name: str) -> Mode:
    """Direction in which a metric improves, from its file name.

    Args:
        name: metric file name or path (`val_dice.npy`, `results/isles/gdl/val_3d_hd95.npy`...).

    Returns:
        "max" when the name contains `dice` or `dsc` (Dice scores), "min" otherwise (losses,
        Hausdorff distances, HD95, adjacency counts).
    """
    stem = Path(name).name.lower()
    return "max" if ("dice" in stem or "dsc" in stem) else "min"


def column_kind(name: str) -> Literal["class", "loss", "adjacency"]:
    """What the last axis of a metric file holds, from its name.

    Returns:
        "loss" for `tra_loss.npy` / `val_loss.npy` (E x I x L: loss terms), "adjacency" for
        `val_adjacency.npy` (E x P x 2: forbidden adjacent pairs, connected components involved),
        "class" for everything else (E x N x K).
    """
    stem = Path(name).name.lower()
    if "loss" in stem:
        return "loss"
    return "adjacency" if "adjacency" in stem else "class"


def column_name(name: str, column: int) -> str:
    """Readable name of one column of a metric file (`class 1`, `loss 0`, `components`)."""
    kind = column_kind(name)
    if kind == "adjacency" and column in (0, 1):
        return ("forbidden pairs", "components")[column]
    return f"{'loss' if kind == 'loss' else kind} {column}"


def metric_file(folder: str | Path, metric: str) -> Path:
    """Path of a metric array in a run folder; `metric` may be given with or without `.npy`."""
    name = metric if metric.endswith(".npy") else f"{metric}.npy"
    return Path(folder) / name


def check_folder(folder: str | Path) -> Path:
    """Return `folder` as a Path.

    Raises:
        FileNotFoundError: the run folder does not exist or is not a directory.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} does not exist (or is not a folder)")
    return path


def load_metric(folder: str | Path, metric: str) -> np.ndarray:
    """Load one per-epoch metric array of a run.

    Args:
        folder: run folder.
        metric: metric name (`val_dice`) or file name (`val_dice.npy`).

    Returns:
        float64 array E x N x K (epoch, sample, class), or E x I x L for loss files.

    Raises:
        FileNotFoundError: missing run folder or metric file.
        ValueError: unreadable file, non-numeric array, rank other than 3, an empty axis
            (zero epochs, samples or columns), or a value the metric cannot take
            (`check_values`).
    """
    path = metric_file(check_folder(folder), metric)
    if not path.is_file():
        raise FileNotFoundError(f"metric file {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"metric file {path} is not a readable .npy array ({err})") from err
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ValueError(
            f"metric file {path} holds {getattr(array, 'dtype', type(array))}, "
            "expected a numeric array"
        )
    if array.ndim != 3:
        raise ValueError(
            f"metric file {path} has shape {array.shape} (rank {array.ndim}), expected rank 3: "
            "epoch x sample x class (epoch x iteration x loss for loss files)"
        )
    if array.shape[0] == 0:
        raise ValueError(f"metric file {path} has zero epochs (shape {array.shape})")
    if 0 in array.shape:
        raise ValueError(
            f"metric file {path} has shape {array.shape}: expected at least one sample and one "
            "column per epoch"
        )
    array = array.astype(np.float64)
    check_values(path, array)
    return array


def value_kind(name: str) -> Literal["dice", "distance", "count"] | None:
    """What the values of a metric file are, from its name, for `check_values`.

    Returns:
        "dice" (`dice` or `dsc` in the name, in [0, 1]), "distance" (`hausdorff` or `hd95`, in
        mm, >= 0), "count" (adjacency counts, >= 0), or None for losses (which may be negative)
        and any other metric (not checked).
    """
    stem = Path(name).name.lower()
    if "loss" in stem:
        return None
    if "dice" in stem or "dsc" in stem:
        return "dice"
    if "hausdorff" in stem or "hd95" in stem:
        return "distance"
    return "count" if "adjacency" in stem else None


def check_values(path: str | Path, data: np.ndarray) -> None:
    """Refuse values a metric cannot take (NaN, an undefined value, is always allowed).

    Args:
        path: the metric file, named in the error; its name gives the kind (`value_kind`).
        data: its E x N x K array.

    Raises:
        ValueError: a Dice score outside [0, 1] or infinite, a distance or an adjacency count
            negative or infinite; the message gives the epoch, sample and class (column) of the
            first bad value and the value.
    """
    kind = value_kind(str(path))
    if kind is None:
        return
    with np.errstate(invalid="ignore"):
        if kind == "dice":
            bad = (data < 0) | (data > 1)
            expected = "a Dice score lies in [0, 1] (NaN when undefined)"
        else:
            bad = (data < 0) | np.isinf(data)
            expected = (
                "a distance is a finite number of mm >= 0 (NaN when undefined)"
                if kind == "distance"
                else "an adjacency count is a finite number >= 0"
            )
    if not bad.any():
        return
    epoch, sample, column = (int(i) for i in np.argwhere(bad)[0])
    value = float(data[epoch, sample, column])
    raise ValueError(
        f"metric file {path} holds {value!r} at epoch {epoch}, sample {sample}, "
        f"{column_name(str(path), column)} ({int(bad.sum())} such value(s)): {expected}. The "
        "file is damaged or holds another metric; its run cannot be ranked"
    )


def resolve_columns(path: str | Path, n_columns: int, columns: Sequence[int] | None) -> list[int]:
    """Columns (classes, loss terms, adjacency counts) to use for one array.

    Args:
        path: the metric file, named in errors; its name gives the kind (`column_kind`).
        n_columns: size of the last axis of the array.
        columns: chosen columns, or None for the default: every loss term for loss files; the
            forbidden pair count (0) for adjacency files; every class but the background 0 when
            there is more than one class, as the original plots.

    Returns:
        The column indices, in the order given.

    Raises:
        ValueError: an empty choice, or a column outside 0..n_columns-1.
    """
    if columns is None:
        kind = column_kind(str(path))
        if kind == "adjacency":
            return [0]
        if kind == "loss" or n_columns == 1:
            return list(range(n_columns))
        return list(range(1, n_columns))
    columns = [int(c) for c in columns]
    if not columns:
        raise ValueError(f"no column chosen for {path}")
    bad = [c for c in columns if not 0 <= c < n_columns]
    if bad:
        raise ValueError(
            f"column(s) {bad} out of range for {path}: it has {n_columns} column(s), "
            f"valid indices are 0..{n_columns - 1}"
        )
    return columns


def nan_mean_std(values: np.ndarray, axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware mean and standard deviation (ddof=0); NaN where every value is NaN, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN on purpose
        return np.nanmean(values, axis=axis), np.nanstd(values, axis=axis)


def per_sample(data: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """Per-sample value: the NaN-aware mean over the chosen columns.

    Args:
        data: E x N x K array.
        columns: chosen column indices.

    Returns:
        E x N array.
    """
    mean, _ = nan_mean_std(data[:, :, list(columns)], axis=2)
    return mean


def epoch_scores(data: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """Score of each epoch: the NaN-aware mean over samples of the per-sample value.

    Args:
        data: E x N x K array.
        columns: chosen column indices.

    Returns:
        E vector (NaN for an epoch with no finite value).
    """
    mean, _ = nan_mean_std(per_sample(data, columns), axis=1)
    return mean


def best_index(scores: np.ndarray, mode: Mode) -> int | None:
    """Index of the best score (the first one on ties), NaN ignored; None when all are NaN.

    Args:
        scores: E vector.
        mode: "max" or "min".
    """
    if np.all(np.isnan(scores)):
        return None
    return int(np.nanargmax(scores) if mode == "max" else np.nanargmin(scores))


def running_best(scores: np.ndarray, mode: Mode) -> np.ndarray:
    """Index, for each epoch, of the best epoch so far (NaN ignored; -1 before the first value).

    Args:
        scores: E vector.
        mode: "max" or "min".

    Returns:
        E vector of int.
    """
    index = np.full(scores.shape, -1, dtype=np.int64)
    best = -1
    for e, value in enumerate(scores):
        if not np.isnan(value) and (
            best < 0 or (value > scores[best] if mode == "max" else value < scores[best])
        ):
            best = e
        index[e] = best
    return index


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one run at its best epoch.

    Attributes:
        metric: metric name, without `.npy`.
        mode: "max" or "min" (see `better`).
        columns: the classes (loss terms) averaged.
        n_epochs: epochs in the file.
        n_samples: samples (images, patients or iterations) per epoch.
        best_epoch: 0-based best epoch, None when every value is NaN.
        mean, std: over samples of the per-sample mean over `columns`, at `best_epoch`.
        n_nan: NaN values among the chosen columns at `best_epoch`.
        class_mean, class_std, class_nan: the same per class (filled with `per_class`).
    """

    metric: str
    mode: Mode
    columns: tuple[int, ...]
    n_epochs: int
    n_samples: int
    best_epoch: int | None
    mean: float
    std: float
    n_nan: int
    class_mean: dict[int, float] = field(default_factory=dict)
    class_std: dict[int, float] = field(default_factory=dict)
    class_nan: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """Everything the report shows about one run.

    Attributes:
        folder: the run folder.
        label: the name shown (the folder name).
        metrics: metric name -> summary, in the order asked.
        epochs_done: epochs in the metric files (the largest count among them).
        epochs_planned: `n_epoch` of args.json, None when absent.
        args: args.json content, None when absent or unreadable.
        provenance: provenance.json content, None when absent or unreadable.
        notes: what is missing or unreadable (provenance, arguments), for the reader.
        checkpoint_epoch: content of best_epoch.txt (the epoch of best.pt), None when absent.
        diff_lines: lines in git.diff, None when absent.
    """

    folder: Path
    label: str
    metrics: dict[str, MetricSummary]
    epochs_done: int
    epochs_planned: int | None
    args: dict[str, Any] | None
    provenance: dict[str, Any] | None
    notes: tuple[str, ...]
    checkpoint_epoch: int | None
    diff_lines: int | None

    @property
    def unfinished(self) -> bool:
        """True when fewer epochs were written than planned."""
        return self.epochs_planned is not None and self.epochs_done < self.epochs_planned


def summarise_metric(
    data: np.ndarray,
    metric: str,
    columns: list[int],
    per_class: bool = False,
    epoch: int | None = None,
) -> MetricSummary:
    """Best epoch, mean, std and NaN count of one metric array.

    Args:
        data: E x N x K array.
        metric: metric name (its direction comes from `better`).
        columns: chosen columns, already checked.
        per_class: also fill the per-class values (at the same best epoch).
        epoch: report this epoch instead of the metric's own best (when within the array).

    Returns:
        The summary.
    """
    mode = better(metric)
    best = best_index(epoch_scores(data, columns), mode)
    if epoch is not None and 0 <= epoch < data.shape[0]:
        best = epoch
    n_epochs, n_samples, _ = data.shape
    # Every value NaN: nothing to choose from; the counts are those of the last epoch.
    at_best = data[-1 if best is None else best][:, columns]  # N x C
    values = per_sample(at_best[None], list(range(len(columns))))[0]  # N
    mean, std = nan_mean_std(values, axis=0)
    class_mean, class_std = nan_mean_std(at_best, axis=0)  # C, C
    shown = list(enumerate(columns)) if per_class else []  # (index in at_best, class)
    return MetricSummary(
        metric=metric,
        mode=mode,
        columns=tuple(columns),
        n_epochs=n_epochs,
        n_samples=n_samples,
        best_epoch=best,
        mean=float(mean),
        std=float(std),
        n_nan=int(np.isnan(at_best).sum()),
        class_mean={c: float(class_mean[i]) for i, c in shown},
        class_std={c: float(class_std[i]) for i, c in shown},
        class_nan={c: int(np.isnan(at_best[:, i]).sum()) for i, c in shown},
    )


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Content of an optional JSON object file, or None and a note saying why it is not there.

    A missing or unreadable side file does not stop the report: the numbers come from the arrays.
    """
    if not path.is_file():
        return None, f"{path.name} is missing"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path.name} could not be read ({err})"
    if not isinstance(content, dict):
        return None, f"{path.name} holds a {type(content).__name__}, expected a JSON object"
    return content, None


def _read_int(path: Path) -> int | None:
    """Integer in a small text file (best_epoch.txt), None when absent or not an integer."""
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _planned_epochs(args: dict[str, Any] | None) -> int | None:
    value = None if args is None else args.get("n_epoch")
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RunData:
    """What a run was trained on, to refuse ranking runs of different data together.

    Attributes:
        folder: the run folder.
        dataset: `dataset` of args.json as recorded (the sliced data folder), None when unknown.
        n_class: `n_class` of args.json, None when unknown.
        classes: class-indexed metric name (Dice, distances) -> size of its last axis.
    """

    folder: Path
    dataset: str | None
    n_class: int | None
    classes: dict[str, int]


def read_args(folder: str | Path) -> dict[str, Any] | None:
    """args.json of a run folder, None when absent or unreadable (see `_read_json`)."""
    return _read_json(Path(folder) / "args.json")[0]


def run_data(
    folder: str | Path, args: dict[str, Any] | None, arrays: dict[str, np.ndarray]
) -> RunData:
    """The data a run was trained on, from its args.json and its metric arrays.

    Args:
        folder: the run folder.
        args: its args.json content, or None.
        arrays: metric name -> E x N x K array; only the class-indexed ones are kept.

    Returns:
        The RunData.
    """
    args = args or {}
    dataset = args.get("dataset")
    n_class = args.get("n_class")
    return RunData(
        folder=Path(folder),
        dataset=None if dataset is None else str(dataset),
        n_class=n_class if isinstance(n_class, int) and not isinstance(n_class, bool) else None,
        classes={
            Path(name).name.removesuffix(".npy"): int(data.shape[2])
            for name, data in arrays.items()
            if column_kind(name) == "class"
        },
    )


def _dataset_key(recorded: str) -> str:
    """A recorded dataset path made absolute and normal (`data/isles/` == `./data/isles`)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(recorded.strip())))


def check_comparable(runs: Sequence[RunData]) -> None:
    """Refuse runs trained on different data or with different class counts.

    Each run is compared with the first run that records the same thing: the dataset path, the
    class count of args.json, and the class count of each class-indexed metric array.

    Args:
        runs: one RunData per run folder, in the order given.

    Raises:
        ValueError: two runs differ; the message names both folders and what differs.
    """
    advice = (
        "their numbers cannot be ranked or compared: give --folders the runs of one dataset "
        "(one report, one plot per dataset)"
    )
    first_dataset = next((r for r in runs if r.dataset is not None), None)
    first_n_class = next((r for r in runs if r.n_class is not None), None)
    for run in runs:
        ref = first_dataset
        if ref is not None and run.dataset is not None:
            if _dataset_key(run.dataset) != _dataset_key(ref.dataset or ""):
                raise ValueError(
                    f"runs {ref.folder} and {run.folder} were trained on different data "
                    f"(dataset {ref.dataset!r} and {run.dataset!r} in their args.json): {advice}"
                )
        ref = first_n_class
        if ref is not None and run.n_class is not None and run.n_class != ref.n_class:
            raise ValueError(
                f"runs {ref.folder} and {run.folder} have different class counts (n_class "
                f"{ref.n_class} and {run.n_class} in their args.json): {advice}"
            )
    for run in runs:
        for name, size in run.classes.items():
            ref = next(r for r in runs if name in r.classes)
            if size != ref.classes[name]:
                raise ValueError(
                    f"runs {ref.folder} and {run.folder} have different class counts ({name}.npy "
                    f"has {ref.classes[name]} and {size} classes on its last axis): {advice}"
                )


def summarise(
    folders: Sequence[str | Path],
    metrics: Sequence[str],
    columns: Sequence[int] | None = None,
    per_class: bool = False,
) -> list[RunSummary]:
    """Summarise runs: each metric at its best epoch, plus what the report needs to show.

    Every metric file of every run is read and checked before anything is returned, so a bad
    input fails before any output is written.

    Args:
        folders: run folders.
        metrics: metric names (`val_dice`, `val_3d_hd95`...), with or without `.npy`.
        columns: classes to average, the same for every class-indexed metric (Dice, distances);
            loss and adjacency files, whose columns are not classes, keep the default of
            `resolve_columns`. None: the default for every metric.
        per_class: also give each class on its own (`MetricSummary.class_mean`, `class_std`,
            `class_nan`), at the same best epoch as the mean over the chosen classes.

    Returns:
        One RunSummary per folder, in the order given.

    Raises:
        FileNotFoundError: a missing run folder or metric file.
        ValueError: no folder or metric, a malformed array or an impossible value in it, a
            column out of range, or runs of different data or class counts (`check_comparable`).
    """
    if not folders:
        raise ValueError("no run folder given (--folders)")
    if not metrics:
        raise ValueError("no metric given (--metrics)")
    runs = []
    identities = []
    for folder in folders:
        path = check_folder(folder)
        summaries: dict[str, MetricSummary] = {}
        arrays: dict[str, np.ndarray] = {}
        for metric in metrics:
            name = metric.removesuffix(".npy")
            data = arrays[name] = load_metric(path, name)
            chosen = resolve_columns(
                metric_file(path, name),
                data.shape[2],
                columns if column_kind(name) == "class" else None,
            )
            # Forbidden adjacencies are counted at the checkpoint's epoch: their own minimum
            # would reward the empty predictions of the first epochs.
            epoch = _read_int(path / "best_epoch.txt") if "adjacency" in name else None
            summaries[name] = summarise_metric(data, name, chosen, per_class, epoch)
        notes: list[str] = []
        provenance, note = _read_json(path / "provenance.json")
        if note is not None:
            notes.append(f"{note}: provenance unknown (commit, command line, packages)")
        args, note = _read_json(path / "args.json")
        if note is not None:
            notes.append(f"{note}: training arguments and planned epochs unknown")
        diff = path / "git.diff"
        diff_lines = None
        if diff.is_file():
            diff_lines = len(diff.read_text(encoding="utf-8", errors="replace").splitlines())
        runs.append(
            RunSummary(
                folder=path,
                label=path.name or str(path),
                metrics=summaries,
                epochs_done=max(s.n_epochs for s in summaries.values()),
                epochs_planned=_planned_epochs(args),
                args=args,
                provenance=provenance,
                notes=tuple(notes),
                checkpoint_epoch=_read_int(path / "best_epoch.txt"),
                diff_lines=diff_lines,
            )
        )
        identities.append(run_data(path, args, arrays))
    check_comparable(identities)
    return runs


# ---------------------------------------------------------------------------------------------
# Table


def _fmt(value: float) -> str:
    return "nan" if np.isnan(value) else f"{value:.4f}"


def _cell(mean: float, std: float, epoch: int | None, n_nan: int) -> str:
    """`mean +- std (epoch e)`, with the NaN count when there are NaN values."""
    if epoch is None:
        return f"all NaN ({n_nan} values)"
    if np.isnan(mean):  # a class with no finite value at the best epoch of the mean
        return f"all NaN (epoch {epoch}, {n_nan} values)"
    nan = f", {n_nan} NaN" if n_nan else ""
    return f"{_fmt(mean)} +- {_fmt(std)} (epoch {epoch}{nan})"


def _epochs_cell(run: RunSummary) -> str:
    if run.epochs_planned is None:
        return f"{run.epochs_done}/?"
    return f"{run.epochs_done}/{run.epochs_planned}" + (" unfinished" if run.unfinished else "")


@dataclass(frozen=True)
class Table:
    """The report table: a header, one row of cells per run, and which cells are the best."""

    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]


def build_table(runs: Sequence[RunSummary], per_class: bool = False) -> Table:
    """Table with one row per run and one column per metric (per metric and class with
    `per_class`); in each metric column the best mean over runs (max or min per `better`) is
    marked bold, every run that reaches it on ties.

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
        row, row_means = [run.label, _epochs_cell(run)], []
        for name, c in keys:
            s = run.metrics[name]
            if c is None:
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


def _description(runs: Sequence[RunSummary], per_class: bool) -> str:
    """One paragraph saying what the table cells are, with the classes used for each metric."""
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
    )


# ---------------------------------------------------------------------------------------------
# Page: a list of blocks rendered both as Markdown and as HTML, so the two pages say the same.


@dataclass(frozen=True)
class Block:
    """One element of the page.

    kind: "h1" | "h2" | "h3" | "p" | "table" | "img" | "items" | "code";
    text: heading, paragraph or code text, or the image caption;
    path: image path relative to the page;
    items: (label, value, as_code) triples for "items";
    table: the Table for "table".
    """

    kind: str
    text: str = ""
    path: str = ""
    items: tuple[tuple[str, str, bool], ...] = ()
    table: Table | None = None


def _provenance_items(run: RunSummary) -> list[tuple[str, str, bool]]:
    items: list[tuple[str, str, bool]] = [("folder", str(run.folder), True)]
    items.append(("epochs done / planned", _epochs_cell(run), False))
    if run.checkpoint_epoch is not None:
        items.append(
            ("best epoch of the checkpoint (best_epoch.txt)", str(run.checkpoint_epoch), False)
        )
    prov = run.provenance
    if prov is not None:
        commit = str(prov.get("commit", "unknown"))
        dirty = prov.get("dirty")
        state = {True: "dirty (uncommitted changes)", False: "clean"}.get(dirty, "unknown")
        items.append(("commit", commit, True))
        items.append(("working tree", state, False))
        command = prov.get("command")
        if isinstance(command, list):
            command = shlex.join(str(c) for c in command)
        for key in ("seed", "device", "cuda", "python", "platform", "date"):
            if prov.get(key) is not None:
                items.append((key, str(prov[key]), False))
        if command is not None:
            items.append(("command", str(command), True))
        packages = prov.get("packages")
        if isinstance(packages, dict) and packages:
            text = ", ".join(f"{k}=={v}" for k, v in sorted(packages.items()))
            items.append(("packages", text, True))
    if run.diff_lines is not None:
        text = "empty" if run.diff_lines == 0 else f"{run.diff_lines} lines"
        items.append(("git.diff", text, False))
    for note in run.notes:
        items.append(("note", note, False))
    return items


def build_page(
    runs: Sequence[RunSummary],
    title: str,
    plots: Sequence[str | Path],
    page_dir: str | Path,
    per_class: bool = False,
) -> list[Block]:
    """The report page as blocks.

    Args:
        runs: output of `summarise`.
        title: page title.
        plots: image files to embed, shown by their path relative to `page_dir`.
        page_dir: the folder the page is written to.
        per_class: one table column per class.

    Returns:
        The blocks, in page order.
    """
    blocks = [Block("h1", title)]
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    blocks.append(Block("p", f"Generated {date}."))
    blocks.append(Block("p", _description(runs, per_class)))
    unfinished = [r.label for r in runs if r.unfinished]
    if unfinished:
        blocks.append(
            Block("p", f"Unfinished runs (fewer epochs than planned): {', '.join(unfinished)}.")
        )
    blocks.append(Block("table", table=build_table(runs, per_class)))
    if plots:
        blocks.append(Block("h2", "Plots"))
        for plot in plots:
            rel = Path(os.path.relpath(Path(plot).resolve(), Path(page_dir).resolve()))
            blocks.append(Block("img", text=Path(plot).stem, path=rel.as_posix()))
    blocks.append(Block("h2", "Provenance"))
    for run in runs:
        blocks.append(Block("h3", run.label))
        blocks.append(Block("items", items=tuple(_provenance_items(run))))
        if run.args is not None:
            blocks.append(Block("p", "Training arguments (args.json):"))
            blocks.append(Block("code", json.dumps(run.args, indent=2, sort_keys=True)))
    return blocks


def _md_text(text: str) -> str:
    """Markdown-safe inline text: characters that would start markup or break a table escaped."""
    for char in "\\`*[]<>|":
        text = text.replace(char, "\\" + char)
    return text


def _md_code(text: str) -> str:
    """Inline code span (used in lists, not in tables) that survives backticks in the text."""
    text = text.replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def render_markdown(blocks: Sequence[Block]) -> str:
    """The page as Markdown (GitHub flavour: pipe tables)."""
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(b.kind[1])} {_md_text(b.text)}")
        elif b.kind == "p":
            out.append(_md_text(b.text))
        elif b.kind == "img":
            out.append(f"![{_md_text(b.text)}]({b.path.replace(' ', '%20')})")
        elif b.kind == "items":
            out.append(
                "\n".join(
                    f"- {_md_text(k)}: {_md_code(v) if code else _md_text(v)}"
                    for k, v, code in b.items
                )
            )
        elif b.kind == "code":
            fence = "````" if "```" in b.text else "```"
            out.append(f"{fence}json\n{b.text}\n{fence}")
        elif b.kind == "table":
            table = b.table
            assert table is not None  # internal: every table block carries its table
            lines = ["| " + " | ".join(_md_text(h) for h in table.header) + " |"]
            lines.append("|" + "---|" * len(table.header))
            for row, bold in zip(table.rows, table.bold, strict=True):
                cells = [
                    f"**{_md_text(c)}**" if is_b else _md_text(c)
                    for c, is_b in zip(row, bold, strict=True)
                ]
                lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}th,td{border:1px solid #999;padding:.3em .6em;"
    "text-align:left}code,pre{background:#f4f4f4}pre{padding:.5em;overflow-x:auto}"
    "img{max-width:100%}"
)


def render_html(blocks: Sequence[Block]) -> str:
    """The page as a standalone HTML file (inline style, no external resource but the plots)."""
    esc = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "report")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "img":
            out.append(f'<p><img src="{esc(b.path)}" alt="{esc(b.text)}"></p>')
        elif b.kind == "items":
            out.append("<ul>")
            for k, v, code in b.items:
                value = f"<code>{esc(v)}</code>" if code else esc(v)
                out.append(f"<li>{esc(k)}: {value}</li>")
            out.append("</ul>")
        elif b.kind == "code":
            out.append(f"<pre><code>{esc(b.text)}</code></pre>")
        elif b.kind == "table":
            table = b.table
            assert table is not None  # internal: every table block carries its table
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header) + "</tr>")
            for row, bold in zip(table.rows, table.bold, strict=True):
                cells = [
                    f"<td><b>{esc(c)}</b></td>" if is_b else f"<td>{esc(c)}</td>"
                    for c, is_b in zip(row, bold, strict=True)
                ]
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</table>")
    out.append("</body>\n</html>\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Files


def write_report(
    runs: Sequence[RunSummary],
    dest: str | Path,
    title: str = "Report",
    plots: Sequence[str | Path] = (),
    html_page: bool = False,
    per_class: bool = False,
) -> list[Path]:
    """Write the Markdown page (and its HTML twin, same base name, `.html`).

    Args:
        runs: output of `summarise`.
        dest: the Markdown file.
        title: page title.
        plots: image files to embed; each must exist.
        html_page: also write the HTML page.
        per_class: one table column per class.

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
    blocks = build_page(runs, title, plots, dest.parent, per_class)
    pages = {dest: render_markdown(blocks)}
    if html_page:
        pages[dest.with_suffix(".html")] = render_html(blocks)
    for path, text in pages.items():
        write_text_atomic(path, text)
    return list(pages)


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
        print(_description(runs, args.per_class))
        print(format_text_table(table))
        print("* best value of the column")
        for run in runs:
            for note in run.notes:
                print(f"note: {run.label}: {note}")
        if args.dest is not None:
            written = write_report(runs, args.dest, title, args.plots, args.html, args.per_class)
            print("wrote " + ", ".join(map(str, written)))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
