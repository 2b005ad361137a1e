"""Every case's values across folds, and the pairing of two sets of results case by case.

A results folder (`results/<name>/`) holds one run folder per training (`<training>`, or
`<training>-seed<N>` with several seeds). A cross-validation is one results folder per fold
(`results/<name>/`, `results/<name>-fold1/`, ...), each fold validating other cases; a single
fold is a cross-validation of one folder.

`gather` reads a `Cohort` from such folders: for each training and seed, each case's 3D Dice,
HD and HD95 (the mean over the chosen classes) at the epoch of its own fold's `best.pt`
(`best_epoch.txt`), the out-of-fold value. It refuses folds that validate the same case twice,
runs of one fold that validated other cases, and a training or seed missing from a fold, so that
every case of the dataset appears once, with the value from its own fold.

`against_baseline` pairs every training of a cohort with its baseline over all the cases (seed by
seed, as the single-fold report does); `across` pairs the same training in two cohorts (3D against
2D) over the cases they share. Both return `report.paired.Comparison`s; the sections that show them
are in `report.sections`, the cross-validation page in `report.crossval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from boundary_loss.preprocessing.volumes import natural_key
from boundary_loss.report import patients
from boundary_loss.report.paired import Comparison, compare
from boundary_loss.runfolder.schema import (
    better,
    divergence,
    load_metric,
    metric_file,
    read_args,
    seed_of,
    training_of,
)

METRICS = patients.METRICS_3D


@dataclass
class Cohort:
    """The out-of-fold values of the trainings of one or more results folders (one per fold).

    Attributes:
        label: how the pages name it ("2D", "3D").
        folders: the results folders, one per fold, in the order given.
        cases: every validated case, in natural order.
        fold_of: case -> index of its fold in `folders`.
        runs: training -> seed (`trainings_in`) -> its run folder in each fold, in the order
            of `folders`.
        values: training -> seed -> metric -> one value per case of `cases` (NaN where the run
            diverged or the metric is undefined).
        diverged: the diverged run folders (every 3D value NaN), whose cases hold NaN.
        epochs: each run folder that did not diverge -> the epoch of its best.pt
            (best_epoch.txt), at which its values are read.
    """

    label: str
    folders: list[Path]
    cases: list[str]
    fold_of: dict[str, int]
    runs: dict[str, dict[int, list[Path]]]
    values: dict[str, dict[int, dict[str, np.ndarray]]]
    diverged: list[Path] = field(default_factory=list)
    epochs: dict[Path, int] = field(default_factory=dict)

    def array(self, training: str, metric: str, seeds: Sequence[int]) -> np.ndarray:
        """`seeds x cases` values of a training's metric, for the seeds given."""
        return np.stack([self.values[training][seed][metric] for seed in seeds])


def run_folders(folder: Path) -> list[Path]:
    """The run folders of a results folder: its sub-folders holding args.json, by name (a
    training's `_tmp` folder, the predictions and the pictures are not runs)."""
    return sorted(
        p for p in Path(folder).iterdir() if (p / "args.json").is_file() and p.name[-4:] != "_tmp"
    )


def dimensions_of(folders: Sequence[Path]) -> int:
    """2 or 3: the `--dimensions` the runs of `folders` were trained with (args.json; 2 when
    absent, as main.py's default).

    Raises:
        ValueError: runs of both.
    """
    found = set()
    for folder in folders:
        for run in run_folders(folder):
            found.add(int((read_args(run) or {}).get("dimensions", 2)))
    if len(found) > 1:
        raise ValueError(f"{', '.join(map(str, folders))}: runs of both 2D and 3D trainings")
    return found.pop() if found else 2


def trainings_in(folder: Path) -> dict[str, dict[int, Path]]:
    """Training -> seed -> run folder, for the runs of a results folder. The seed is the one of
    the name (`<training>-seed<N>`), else the `--seed` the run was trained with (args.json), so
    that `gdl` trained with seed 0 pairs with `gdl-seed0` elsewhere.

    Raises:
        ValueError: two runs of one training with the same seed.
    """
    found: dict[str, dict[int, Path]] = {}
    for run in run_folders(folder):
        seed = seed_of(run.name)
        if seed is None:
            seed = int((read_args(run) or {}).get("seed", 0))
        seeds = found.setdefault(training_of(run.name), {})
        if seed in seeds:
            raise ValueError(f"{seeds[seed]} and {run}: two runs of one training with seed {seed}")
        seeds[seed] = run
    return found


def gather(
    folders: Sequence[str | Path],
    columns: Sequence[int],
    trainings: Sequence[str] | None = None,
    label: str | None = None,
    per_fold: Sequence[dict[str, dict[int, Path]]] | None = None,
) -> Cohort:
    """The out-of-fold values of the trainings of `folders` (one results folder per fold).

    Args:
        folders: results folders, one per fold (a single one: one fold).
        columns: the classes averaged.
        trainings: the trainings to read, each needed in every fold (None: those of the first
            folder).
        label: the cohort's name on the pages (None: "2D" or "3D", from the runs' arguments).
        per_fold: each folder's `trainings_in`, when the caller has read it (None: read here).

    Returns:
        The Cohort.

    Raises:
        FileNotFoundError: a missing folder.
        ValueError: a folder without runs, a training or seed missing from a fold, runs of one
            fold that validated other cases, a case validated in two folds, a fold whose every
            run diverged, or a malformed run folder.
    """
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no results folder given")
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder not found (a results folder of a fold)")
    by_fold = list(per_fold) if per_fold is not None else [trainings_in(f) for f in folders]
    for folder, found in zip(folders, by_fold, strict=True):
        if not found:
            raise ValueError(f"{folder}: no run folder (args.json) in it; train this fold first")
    wanted = list(trainings) if trainings is not None else list(by_fold[0])
    runs: dict[str, dict[int, list[Path]]] = {}
    for training in wanted:
        seeds = by_fold[0].get(training, {})
        for folder, found in zip(folders, by_fold, strict=True):
            if training not in found:
                raise ValueError(f"{folder}: no run of {training}; train it in this fold first")
            if set(found[training]) != set(seeds):
                raise ValueError(
                    f"{folder}: the seeds of {training} differ from those of {folders[0]} "
                    f"({sorted(map(str, found[training]))} against {sorted(map(str, seeds))})"
                )
        runs[training] = {s: [found[training][s] for found in by_fold] for s in seeds}

    # Each run's 3D arrays are read once: to tell whether it diverged, then for its values.
    loaded: dict[Path, dict[str, np.ndarray]] = {}
    diverged = []
    for seeds in runs.values():
        for fold in seeds.values():
            for run in fold:
                loaded[run] = {
                    m: load_metric(run, m) for m in METRICS if metric_file(run, m).is_file()
                }
                if divergence(run, loaded[run]).diverged:
                    diverged.append(run)
    fold_cases: list[list[str]] = []
    for index, folder in enumerate(folders):
        in_fold = [fold[index] for seeds in runs.values() for fold in seeds.values()]
        readable = [run for run in in_fold if run not in diverged]
        if not readable:
            raise ValueError(f"{folder}: every run diverged; its cases have no value")
        names = patients.patient_names(readable[0])
        for run in readable[1:]:
            if patients.patient_names(run) != names:
                raise ValueError(f"{run}: other validation cases than {readable[0]}")
        fold_cases.append(names)

    fold_of: dict[str, int] = {}
    for index, names in enumerate(fold_cases):
        for case in names:
            if case in fold_of:
                raise ValueError(
                    f"case {case} is validated in {folders[fold_of[case]]} and {folders[index]}: "
                    "the folds overlap (give each fold's results folder once)"
                )
            fold_of[case] = index
    cases = sorted(fold_of, key=natural_key)
    order = {case: i for i, case in enumerate(cases)}

    values: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    epochs: dict[Path, int] = {}
    for training, seeds in runs.items():
        values[training] = {}
        for seed, fold_runs in seeds.items():
            per_metric = {m: np.full(len(cases), np.nan) for m in METRICS}
            for index, run in enumerate(fold_runs):
                if run in diverged:
                    continue
                where = [order[case] for case in fold_cases[index]]
                epoch = patients.checkpoint_epoch(run)
                arrays = loaded[run]
                for metric in METRICS:
                    # a missing array (not read above): load_metric says so
                    data = arrays[metric] if metric in arrays else load_metric(run, metric)
                    per_metric[metric][where] = patients.at_epoch(run, metric, data, epoch, columns)
                epochs[run] = epoch  # at_epoch refused a missing one
            values[training][seed] = per_metric
    name = label or f"{dimensions_of(folders)}D"
    return Cohort(name, folders, cases, fold_of, runs, values, diverged, epochs)


def against_baseline(cohort: Cohort, baseline: str) -> dict[str, list[Comparison]]:
    """Every other training of `cohort` against `baseline`, paired over every case, seed by seed
    (the seeds both trainings have), one Comparison per metric with a finite pair.

    Returns:
        training -> its comparisons (an empty list: no case with a finite pair).

    Raises:
        ValueError: `baseline` is not a training of the cohort, or a training shares no seed with
            it.
    """
    if baseline not in cohort.values:
        raise ValueError(
            f"--baseline {baseline}: no such training among {', '.join(cohort.values)}"
        )
    found = {}
    for training in cohort.values:
        if training != baseline:
            found[training] = _pair(cohort, training, cohort, baseline, training, baseline)
    return found


def across(first: Cohort, second: Cohort) -> tuple[dict[str, list[Comparison]], list[str]]:
    """Each training of both cohorts, `second` against `first`, paired over the cases both
    validated (seed by seed, the seeds both have).

    Returns:
        training -> its comparisons (run named "<training> <second label>", baseline
        "<training> <first label>"; none when they share no training), and the cases only one
        of them validated.

    Raises:
        ValueError: no case in common, or a training without a common seed.
    """
    common = [t for t in second.values if t in first.values]
    shared = set(first.cases) & set(second.cases)
    if not shared:
        raise ValueError(f"{first.label} and {second.label} validated no case in common")
    alone = sorted(set(first.cases) ^ set(second.cases), key=natural_key)
    found = {
        training: _pair(
            second,
            training,
            first,
            training,
            f"{training} {second.label}",
            f"{training} {first.label}",
        )
        for training in common
    }
    return found, alone


def _pair(
    ours: Cohort,
    training: str,
    theirs: Cohort,
    baseline: str,
    run_name: str,
    baseline_name: str,
) -> list[Comparison]:
    """`training` of `ours` against `baseline` of `theirs` over their common cases and seeds."""
    seeds = [s for s in ours.values[training] if s in theirs.values[baseline]]
    if not seeds:
        raise ValueError(f"{run_name} and {baseline_name} share no seed to pair")
    cases = [c for c in ours.cases if c in theirs.fold_of]
    mine = [ours.cases.index(c) for c in cases]
    other = [theirs.cases.index(c) for c in cases]
    results = []
    for metric in METRICS:
        a = ours.array(training, metric, seeds)[:, mine]
        b = theirs.array(baseline, metric, seeds)[:, other]
        if not (np.isfinite(a) & np.isfinite(b)).any():
            continue
        results.append(
            compare(
                a,
                b,
                run=run_name,
                baseline=baseline_name,
                metric=metric,
                higher_is_better=better(metric) == "max",
            )
        )
    return results
