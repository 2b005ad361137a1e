"""What a training run writes per epoch, and reading it back: the one schema of the run folder.

A run folder (written by main.py) holds per-epoch arrays, all of rank 3, listed in `ARRAYS`:

- `tra_loss.npy`, `val_loss.npy`: E x I x L (epoch, iteration, loss term), each term unweighted;
- `tra_dice.npy`, `val_dice.npy`: E x N x K (epoch, 2D image, class), Dice in [0, 1];
- `val_3d_dsc.npy`, `val_3d_hausdorff.npy`, `val_3d_hd95.npy`: E x P x K (epoch, patient, class),
  Dice in [0, 1], distances in mm;
- `val_adjacency.npy`: E x P x 2 (epoch, patient; forbidden adjacent pairs, connected components
  involved), written with `--adjacency_graph` only;

plus `metrics.csv` (one row per epoch: the mean over samples of each column, headed by
`csv_columns`), `args.json` (the training arguments), `provenance.json` (commit, command line,
packages...), `git.diff`, `best_epoch.txt` (the epoch of best.pt), `resumes.json` and
`timing.json`. Arrays are written after each epoch, so a run in progress has fewer epochs than
`n_epoch`.

For each array the schema (`ArraySpec`) says what its axes are, what its columns are (classes,
loss terms, adjacency counts) and how they are named, which direction is better, and which values
are possible. `spec_of` resolves a file name or path to its spec; an array not in `ARRAYS` is
described from its name: `dice` or `dsc` in it is a Dice score (higher is better, in [0, 1]),
`loss` a loss (lower is better, any value, columns are loss terms), `hausdorff` or `hd95` a
distance (>= 0, finite), `maps.adjacency` adjacency counts; anything else is lower-is-better,
class-indexed and not range-checked.

The reading side refuses what cannot be ranked (report.py and plot.py share it): a malformed
array, an impossible value (`check_values`; NaN, an undefined value, is always allowed, losses are
never range-checked since the boundary loss is negative by design), and runs that are not
comparable (`check_comparable`: other data, other class counts). A run whose 3D metrics are all
NaN (`divergence`: the network's output was NaN) is readable, but has nothing to rank: report.py
and plot.py show it as diverged and leave it out.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Mode = Literal["max", "min"]
ColumnKind = Literal["class", "loss", "adjacency"]

ADJACENCY = "val_adjacency"


@dataclass(frozen=True)
class ValueRange:
    """The values an array may hold; NaN (undefined) is always allowed.

    Attributes:
        kind: "dice", "distance" or "count".
        low: smallest allowed value.
        high: largest allowed value (inf: no upper bound).
        finite: refuse +-inf.
        expected: the rule in words, for error messages.
    """

    kind: Literal["dice", "distance", "count"]
    low: float
    high: float
    finite: bool
    expected: str

    def outside(self, data: np.ndarray) -> np.ndarray:
        """Mask of the values this range refuses.

        Args:
            data: array of any shape (E x N x K for a metric file).

        Returns:
            Boolean array of the same shape; False at NaN.
        """
        with np.errstate(invalid="ignore"):
            bad = (data < self.low) | (data > self.high)
            if self.finite:
                bad |= np.isinf(data)
        return bad


DICE = ValueRange("dice", 0.0, 1.0, True, "a Dice score lies in [0, 1] (NaN when undefined)")
DISTANCE = ValueRange(
    "distance", 0.0, np.inf, True, "a distance is a finite number of mm >= 0 (NaN when undefined)"
)
COUNT = ValueRange("count", 0.0, np.inf, True, "an adjacency count is a finite number >= 0")


@dataclass(frozen=True)
class ArraySpec:
    """What one per-epoch array of a run folder holds.

    Attributes:
        name: file name without `.npy` (`val_dice`); for an array outside `ARRAYS`, the name given.
        axes: meaning of the three axes, e.g. ("epoch", "patient", "class").
        columns: what the last axis holds: "class" (K classes), "loss" (L loss terms, in the order
            of `--losses`) or "adjacency" (forbidden pairs, components).
        better: "max" when a higher value is better (Dice), "min" otherwise.
        values: the possible values, None when not checked (losses may be negative).
        unit: unit of the values: "" (a ratio or a loss), "mm" or "count".
        column_names: metrics.csv suffixes of the first columns when they have names
            (adjacency: "pairs", "components"); the other columns are numbered.
        column_labels: readable names of the same columns ("forbidden pairs", "components").
        at_checkpoint: ranked at the epoch of the checkpoint (best_epoch.txt) rather than at its
            own best: the fewest forbidden adjacencies would reward the empty predictions of the
            first epochs.
        description: one line for the reader.
    """

    name: str
    axes: tuple[str, str, str]
    columns: ColumnKind
    better: Mode
    values: ValueRange | None
    unit: str
    column_names: tuple[str, ...] = ()
    column_labels: tuple[str, ...] = ()
    at_checkpoint: bool = False
    description: str = ""

    def default_columns(self, n_columns: int) -> list[int]:
        """Columns used when none are chosen.

        Args:
            n_columns: size of the last axis.

        Returns:
            Every loss term; the forbidden pair count (0) of adjacency counts; every class but the
            background 0 when there is more than one class, as the original plots.
        """
        if self.columns == "adjacency":
            return [0]
        if self.columns == "loss" or n_columns == 1:
            return list(range(n_columns))
        return list(range(1, n_columns))

    def label(self, column: int, loss_names: Sequence[str] | None = None) -> str:
        """Readable name of one column, as plots and report show it.

        Args:
            column: index on the last axis.
            loss_names: names of the loss terms (`--losses` order); None: loss terms numbered.

        Returns:
            `class 1`, `loss 0` (or the loss's name when `loss_names` has it), `forbidden pairs`,
            `components`.
        """
        if column < len(self.column_labels):
            return self.column_labels[column]
        if self.columns == "loss" and loss_names is not None and column < len(loss_names):
            return str(loss_names[column])
        return f"{self.columns} {column}"

    def csv_suffix(self, column: int, loss_names: Sequence[str] = ()) -> str:
        """metrics.csv suffix of one column (`class1`, the loss's name, `pairs`, `components`).

        Args:
            column: index on the last axis.
            loss_names: names of the loss terms; a loss column without a name is `loss<j>`.

        Returns:
            The suffix, appended to the array name with `_`.
        """
        if column < len(self.column_names):
            return self.column_names[column]
        if self.columns == "loss" and column < len(loss_names):
            return str(loss_names[column])
        return f"{self.columns}{column}"


_LOSS_AXES = ("epoch", "iteration", "loss term")
_IMAGE_AXES = ("epoch", "2D image", "class")
_PATIENT_AXES = ("epoch", "patient", "class")
_UNITS = {"dice": "", "distance": "mm", "count": "count"}

ARRAYS: dict[str, ArraySpec] = {
    spec.name: spec
    for spec in (
        ArraySpec(
            "tra_loss",
            _LOSS_AXES,
            "loss",
            "min",
            None,
            "",
            description="training loss of each iteration, each loss term unweighted",
        ),
        ArraySpec(
            "val_loss",
            _LOSS_AXES,
            "loss",
            "min",
            None,
            "",
            description="validation loss of each iteration, each loss term unweighted",
        ),
        ArraySpec(
            "tra_dice",
            _IMAGE_AXES,
            "class",
            "max",
            DICE,
            "",
            description="2D Dice of each training slice",
        ),
        ArraySpec(
            "val_dice",
            _IMAGE_AXES,
            "class",
            "max",
            DICE,
            "",
            description="2D Dice of each validation slice",
        ),
        ArraySpec(
            "val_3d_dsc",
            _PATIENT_AXES,
            "class",
            "max",
            DICE,
            "",
            description="3D Dice of each validation patient's predicted volume",
        ),
        ArraySpec(
            "val_3d_hausdorff",
            _PATIENT_AXES,
            "class",
            "min",
            DISTANCE,
            "mm",
            description="Hausdorff distance of each validation patient's predicted volume",
        ),
        ArraySpec(
            "val_3d_hd95",
            _PATIENT_AXES,
            "class",
            "min",
            DISTANCE,
            "mm",
            description="95th percentile Hausdorff distance of each validation patient's volume",
        ),
        ArraySpec(
            ADJACENCY,
            ("epoch", "patient", "count"),
            "adjacency",
            "min",
            COUNT,
            "count",
            column_names=("pairs", "components"),
            column_labels=("forbidden pairs", "components"),
            at_checkpoint=True,
            description="forbidden adjacencies in each validation patient's prediction",
        ),
    )
}
"""Every per-epoch array main.py writes, by name (without `.npy`)."""


def stem(name: str | Path) -> str:
    """Array name of a file name or path: `results/isles/gdl/val_dice.npy` -> `val_dice`."""
    return Path(name).name.removesuffix(".npy")


def _from_name(name: str) -> ArraySpec:
    """Spec of an array outside `ARRAYS`, from the words in its name (see the module docstring).

    Each attribute follows its own word, so that a name mixing words (`dice_loss`) keeps the
    direction of `dice` and the columns of `loss`.
    """
    low = name.lower()
    dice = "dice" in low or "dsc" in low
    columns: ColumnKind = (
        "loss" if "loss" in low else "adjacency" if "adjacency" in low else "class"
    )
    values = None
    if columns != "loss":
        if dice:
            values = DICE
        elif "hausdorff" in low or "hd95" in low:
            values = DISTANCE
        elif columns == "adjacency":
            values = COUNT
    template = ARRAYS[{"loss": "tra_loss", "adjacency": ADJACENCY, "class": "val_dice"}[columns]]
    return ArraySpec(
        name=name,
        axes=("epoch", "sample", "class") if columns == "class" else template.axes,
        columns=columns,
        better="max" if dice else "min",
        values=values,
        unit="" if values is None else _UNITS[values.kind],
        column_names=template.column_names,
        column_labels=template.column_labels,
        at_checkpoint="adjacency" in low,
    )


def spec_of(name: str | Path) -> ArraySpec:
    """The spec of a per-epoch array.

    Args:
        name: array name, file name or path (`val_dice`, `results/isles/gdl/val_3d_hd95.npy`).

    Returns:
        Its entry of `ARRAYS` (the name compared without case), or, for another array, the spec
        its name implies (see the module docstring).
    """
    key = stem(name)
    return ARRAYS.get(key.lower()) or _from_name(key)


def better(name: str | Path) -> Mode:
    """Direction in which an array improves: "max" for Dice, "min" otherwise (`spec_of`)."""
    return spec_of(name).better


def column_name(name: str | Path, column: int, loss_names: Sequence[str] | None = None) -> str:
    """Readable name of one column of an array, as plots and report show it.

    Args:
        name: array name, file name or path.
        column: index on the last axis.
        loss_names: names of the loss terms for loss arrays; None: `loss <j>`.

    Returns:
        `class 1`, `loss 0`, `forbidden pairs`, `components` (see `ArraySpec.label`).
    """
    return spec_of(name).label(column, loss_names)


def csv_columns(name: str, n_columns: int, loss_names: Sequence[str] = ()) -> list[str]:
    """metrics.csv headers of the columns of one array.

    Args:
        name: array name as main.py keys it (`val_dice`, `tra_loss`, `val_adjacency`).
        n_columns: size of its last axis (K classes, L loss terms, 2 counts).
        loss_names: names of the loss terms, in `--losses` order (used for loss arrays).

    Returns:
        `n_columns` headers: `<name>_class<j>` for classes, `<name>_<loss name>` for loss terms
        (`<name>_loss<j>` past the names given), `<name>_pairs` and `<name>_components` for
        adjacency counts.
    """
    spec = spec_of(name)
    return [f"{name}_{spec.csv_suffix(j, loss_names)}" for j in range(n_columns)]


def class_columns(name: str | Path, classes: Sequence[int] | None) -> Sequence[int] | None:
    """The classes chosen for an array whose columns are classes, None for the others.

    A choice of classes (`--metric_axis`) applies to Dice and distances; loss terms and
    adjacency counts keep their default columns (`ArraySpec.default_columns`).

    Args:
        name: array name, file name or path.
        classes: chosen class indices, or None.

    Returns:
        `classes` for a class-indexed array, else None.
    """
    return classes if spec_of(name).columns == "class" else None


def resolve_columns(path: str | Path, n_columns: int, columns: Sequence[int] | None) -> list[int]:
    """Columns (classes, loss terms, adjacency counts) to use for one array.

    Args:
        path: the metric file, named in errors; its name gives the spec (`spec_of`).
        n_columns: size of the last axis of the array.
        columns: chosen columns, or None for the default of the spec
            (`ArraySpec.default_columns`).

    Returns:
        The column indices, in the order given.

    Raises:
        ValueError: an empty choice, or a column outside 0..n_columns-1.
    """
    if columns is None:
        return spec_of(path).default_columns(n_columns)
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


# ---------------------------------------------------------------------------------------------
# Reading a run folder


def check_folder(folder: str | Path) -> Path:
    """Return `folder` as a Path.

    Raises:
        FileNotFoundError: the run folder does not exist or is not a directory.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} does not exist (or is not a folder)")
    return path


def metric_file(folder: str | Path, metric: str) -> Path:
    """Path of a metric array in a run folder; `metric` may be given with or without `.npy`."""
    name = metric if metric.endswith(".npy") else f"{metric}.npy"
    return Path(folder) / name


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


def check_values(path: str | Path, data: np.ndarray) -> None:
    """Refuse values a metric cannot take (NaN, an undefined value, is always allowed).

    Args:
        path: the metric file, named in the error; its name gives the spec (`spec_of`) and so
            the allowed values (`ArraySpec.values`; None: not checked).
        data: its E x N x K array.

    Raises:
        ValueError: a Dice score outside [0, 1] or infinite, a distance or an adjacency count
            negative or infinite; the message gives the epoch, sample and class (column) of the
            first bad value and the value.
    """
    spec = spec_of(path)
    if spec.values is None:
        return
    bad = spec.values.outside(data)
    if not bad.any():
        return
    epoch, sample, column = (int(i) for i in np.argwhere(bad)[0])
    value = float(data[epoch, sample, column])
    raise ValueError(
        f"metric file {path} holds {value!r} at epoch {epoch}, sample {sample}, "
        f"{spec.label(column)} ({int(bad.sum())} such value(s)): {spec.values.expected}. The "
        "file is damaged or holds another metric; its run cannot be ranked"
    )


def read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Content of an optional JSON object file, or None and a note saying why it is not there.

    A missing or unreadable side file does not stop a report: the numbers come from the arrays.

    Args:
        path: the file (`args.json`, `provenance.json`).

    Returns:
        (content, None), or (None, note) when the file is missing, unreadable or not an object.
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


def read_int(path: Path) -> int | None:
    """Integer in a small text file (best_epoch.txt), None when absent or not an integer."""
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def read_args(folder: str | Path) -> dict[str, Any] | None:
    """args.json of a run folder, None when absent or unreadable (see `read_json`)."""
    return read_json(Path(folder) / "args.json")[0]


@dataclass(frozen=True)
class RunData:
    """What a run was trained on, to refuse ranking runs of different data together.

    Attributes:
        folder: the run folder.
        dataset: `dataset` of args.json as recorded (the sliced data folder), None when unknown.
        n_class: `n_class` of args.json, None when unknown.
        classes: class-indexed metric name (Dice, distances) -> size of its last axis.
        data_md5: md5 of the data's `split.json` (provenance.json), None for runs that predate it.
    """

    folder: Path
    dataset: str | None
    n_class: int | None
    classes: dict[str, int]
    data_md5: str | None = None


def run_data(
    folder: str | Path, args: dict[str, Any] | None, arrays: dict[str, np.ndarray]
) -> RunData:
    """The data a run was trained on, from its args.json and its metric arrays.

    Args:
        folder: the run folder.
        args: its args.json content, or None.
        arrays: metric name or file name -> E x N x K array; only the class-indexed ones are kept.

    Returns:
        The RunData.
    """
    args = args or {}
    dataset = args.get("dataset")
    n_class = args.get("n_class")
    provenance, _ = read_json(Path(folder) / "provenance.json")
    data = (provenance or {}).get("data")
    data_md5 = data.get("split_md5") if isinstance(data, dict) else None
    return RunData(
        folder=Path(folder),
        dataset=None if dataset is None else str(dataset),
        n_class=n_class if isinstance(n_class, int) and not isinstance(n_class, bool) else None,
        classes={
            stem(name): int(data.shape[2])
            for name, data in arrays.items()
            if spec_of(name).columns == "class"
        },
        data_md5=data_md5 if isinstance(data_md5, str) else None,
    )


def _dataset_key(recorded: str) -> str:
    """The last two components of a recorded dataset path, normalised: `data/isles/`,
    `./data/isles` and `/home/u/repo/data/isles` are one dataset, `data/isles-synthetic/isles`
    another. Used for runs whose provenance predates the data's md5."""
    parts = Path(os.path.normpath(recorded.strip())).parts
    return "/".join(parts[-2:])


def _same_data(a: RunData, b: RunData) -> bool:
    """The data's md5 (`split.json`, every patient of each split) when both runs record it,
    else the last components of their dataset paths (`_dataset_key`)."""
    if a.data_md5 is not None and b.data_md5 is not None:
        return a.data_md5 == b.data_md5
    return _dataset_key(a.dataset or "") == _dataset_key(b.dataset or "")


def check_comparable(runs: Sequence[RunData]) -> None:
    """Refuse runs trained on different data or with different class counts.

    Each run is compared with the first run that records the same thing: the data (`_same_data`:
    the md5 of its split.json, recorded in provenance.json, else the dataset path's last
    components), the class count of args.json, and the class count of each class-indexed array.

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
            if not _same_data(run, ref):
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


# ---------------------------------------------------------------------------------------------
# Diverged runs

VOLUME_METRICS: tuple[str, ...] = tuple(
    name for name, spec in ARRAYS.items() if spec.axes == _PATIENT_AXES
)
"""The 3D metric arrays (`val_3d_dsc`, `val_3d_hausdorff`, `val_3d_hd95`): one value per
validation patient and class, never NaN for every patient and class of an epoch, background
included, unless the network's output was NaN."""


def nan_from(arrays: Sequence[np.ndarray]) -> int | None:
    """First epoch from which every value of every array is NaN, up to the last epoch.

    Args:
        arrays: E x N x K arrays (the 3D metrics of one run).

    Returns:
        The 0-based epoch (0: not one finite value at all), or None when an array has a finite
        value at its last epoch, or when no array is given.
    """
    if not arrays:
        return None
    start = 0
    for data in arrays:
        finite = np.flatnonzero(np.isfinite(data).any(axis=(1, 2)))  # epochs with a finite value
        last = int(finite[-1]) if finite.size else -1
        if last == data.shape[0] - 1:
            return None
        start = max(start, last + 1)
    return start


@dataclass(frozen=True)
class Divergence:
    """Whether a run's 3D metrics turned NaN for good (`divergence`).

    A run is diverged when every value of its 3D metric arrays (`VOLUME_METRICS`: every epoch,
    patient and class) is NaN: there is nothing to rank or compare. A run whose 3D metrics are
    finite up to some epoch and NaN for every patient and class from epoch `nan_from` to the last
    is not diverged as a whole: its best epochs are chosen among the finite ones, and the report
    says from which epoch its metrics are NaN.

    Attributes:
        folder: the run folder.
        nan_from: the first epoch from which every 3D value is NaN up to the last epoch (0:
            diverged), None when its last epoch has a finite value or it has no 3D array.
        n_epochs: epochs in its 3D arrays (the largest count among them), 0 without any.
        metrics: the 3D arrays read, by name.
    """

    folder: Path
    nan_from: int | None
    n_epochs: int
    metrics: tuple[str, ...]

    @property
    def diverged(self) -> bool:
        """True when not one 3D value is finite: the run is left out of rankings."""
        return self.nan_from == 0

    @property
    def late(self) -> bool:
        """True when the 3D metrics are finite up to an epoch and NaN from it to the last."""
        return self.nan_from is not None and self.nan_from > 0

    def describe(self) -> str:
        """The finding in words, naming the folder (empty when there is nothing to say)."""
        names = ", ".join(self.metrics)
        if self.diverged:
            return (
                f"run {self.folder} diverged: all its 3D metrics ({names}) are NaN from epoch 0 "
                f"to its last epoch {self.n_epochs - 1}, every patient and class"
            )
        if self.late:
            assert self.nan_from is not None  # late
            finite = "epoch 0" if self.nan_from == 1 else f"epochs 0-{self.nan_from - 1}"
            return (
                f"run {self.folder}: all its 3D metrics ({names}) are NaN from epoch "
                f"{self.nan_from} to its last epoch {self.n_epochs - 1}, every patient and class "
                f"(diverged at epoch {self.nan_from}); its best epochs are chosen among "
                f"{finite}"
            )
        return ""


def divergence(folder: str | Path, loaded: dict[str, np.ndarray] | None = None) -> Divergence:
    """Whether a run diverged, from the 3D metric arrays its folder holds (`Divergence`).

    Args:
        folder: the run folder.
        loaded: arrays already read, by metric name (without `.npy`); the other 3D arrays present
            in the folder are read and checked (`load_metric`).

    Returns:
        The Divergence; a run without any 3D array is never called diverged.

    Raises:
        ValueError: a 3D array that is malformed or holds an impossible value (`load_metric`).
    """
    path = Path(folder)
    loaded = {stem(name): data for name, data in (loaded or {}).items()}
    arrays = {}
    for name in VOLUME_METRICS:
        if name in loaded:
            arrays[name] = loaded[name]
        elif metric_file(path, name).is_file():
            arrays[name] = load_metric(path, name)
    return Divergence(
        folder=path,
        nan_from=nan_from(list(arrays.values())),
        n_epochs=max((data.shape[0] for data in arrays.values()), default=0),
        metrics=tuple(arrays),
    )


# Runs of one training repeated with several seeds (SEEDS in the makefiles) are named
# `<training>-seed<N>`.
SEED_SUFFIX = re.compile(r"^(?P<training>.+)-seed(?P<seed>\d+)$")


def training_of(name: str) -> str:
    """`gdl-seed2` -> `gdl`; a name without a seed is its own training."""
    match = SEED_SUFFIX.match(name)
    return match["training"] if match else name


def seed_of(name: str) -> int | None:
    """`gdl-seed2` -> 2; None without a seed."""
    match = SEED_SUFFIX.match(name)
    return int(match["seed"]) if match else None
