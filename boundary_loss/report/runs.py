"""What the report knows of each run: every metric at its best epoch (`summarise`).

`RunSummary` and `MetricSummary` are read by the tables (`report.summary`), the page
(`report.page`) and its sections; the ranking rules are described in `report.summary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from boundary_loss.runfolder.ranking import best_index, epoch_scores, nan_mean_std, per_sample
from boundary_loss.runfolder.schema import (
    Divergence,
    Mode,
    better,
    check_comparable,
    check_folder,
    class_columns,
    divergence,
    load_metric,
    metric_file,
    read_int,
    read_json,
    resolve_columns,
    run_data,
    spec_of,
)


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
        divergence: whether its 3D metrics are NaN for good (`runfolder.divergence`); a diverged
            run is shown as such and left out of the ranking and the comparisons.
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
    divergence: Divergence | None = None

    @property
    def diverged(self) -> bool:
        """True when not one of its 3D values is finite (`runfolder.Divergence.diverged`)."""
        return self.divergence is not None and self.divergence.diverged

    @property
    def unfinished(self) -> bool:
        """True when fewer epochs were written than planned."""
        return self.epochs_planned is not None and self.epochs_done < self.epochs_planned

    @property
    def epochs_text(self) -> str:
        """Epochs done/planned as the table shows them (`4/4`, `2/4 unfinished`, `3/?`)."""
        if self.epochs_planned is None:
            return f"{self.epochs_done}/?"
        unfinished = " unfinished" if self.unfinished else ""
        return f"{self.epochs_done}/{self.epochs_planned}{unfinished}"


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


def _planned_epochs(args: dict[str, Any] | None) -> int | None:
    """`n_epoch` of args.json as an int, None when absent or not a number."""
    value = None if args is None else args.get("n_epoch")
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def summarise(
    folders: Sequence[str | Path],
    metrics: Sequence[str],
    columns: Sequence[int] | None = None,
    per_class: bool = False,
) -> list[RunSummary]:
    """Summarise runs: each metric at its best epoch, plus what the report needs to show.

    Every metric file of every run is read and checked before anything is returned, so a bad
    input fails before any output is written. Each run's 3D arrays (those of its folder, asked or
    not) also tell whether it diverged (`RunSummary.divergence`).

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
                metric_file(path, name), data.shape[2], class_columns(name, columns)
            )
            # Forbidden adjacencies are counted at the checkpoint's epoch: their own minimum
            # would reward the empty predictions of the first epochs.
            at_checkpoint = spec_of(name).at_checkpoint
            epoch = read_int(path / "best_epoch.txt") if at_checkpoint else None
            summaries[name] = summarise_metric(data, name, chosen, per_class, epoch)
        found = divergence(path, arrays)
        notes: list[str] = []
        provenance, note = read_json(path / "provenance.json")
        if note is not None:
            notes.append(f"{note}: provenance unknown (commit, command line, packages)")
        args, note = read_json(path / "args.json")
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
                checkpoint_epoch=read_int(path / "best_epoch.txt"),
                diff_lines=diff_lines,
                divergence=found,
            )
        )
        identities.append(run_data(path, args, arrays))
    check_comparable(identities)
    return runs


# ---------------------------------------------------------------------------------------------
# Table
