"""The report's sections beyond the table of means: seeds, per-patient values, paired comparisons
against a baseline training, 3D against 2D (`pair_blocks`, shared with the cross-validation page,
on the cohorts of `report.folds`), pictures, and the predictions written back by
boundary_loss_predict.

Each function returns blocks of `report.page` (the same blocks give the Markdown and the HTML
page). Runs of one training repeated with several seeds are folders named `<training>-seed<N>`
(`SEEDS` in the makefiles); `training_of` and `seed_of` read those names.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from boundary_loss.report import folds, patients
from boundary_loss.report.folds import (
    Cohort,
    across,
    against_baseline,
    dimensions_of,
    gather,
    trainings_in,
)
from boundary_loss.report.page import Block, Table
from boundary_loss.report.paired import METHOD, Comparison, compare, grouped_sentence
from boundary_loss.runfolder.schema import better, seed_of, training_of

# The metrics' names in the sentences of the paired comparisons (distances in mm).
SENTENCE_NAMES = {"val_3d_dsc": "3D Dice", "val_3d_hausdorff": "HD", "val_3d_hd95": "HD95"}


def _fmt(value: float) -> str:
    return "nan" if np.isnan(value) else f"{value:.4f}"


def table_block(header: list[str], rows: list[list[str]]) -> Block:
    """A table block without bold cells."""
    return Block("table", table=Table(header, rows, [[False] * len(header) for _ in rows]))


def groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Training -> its run names, in the order given."""
    found: dict[str, list[str]] = {}
    for name in names:
        found.setdefault(training_of(name), []).append(name)
    return found


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def seed_blocks(runs: Sequence, metrics: Sequence[str]) -> list[Block]:
    """Mean and spread over seeds of each training's per-run means (when runs have seeds).

    A diverged seed (`report.RunSummary.diverged`) is left out and counted in the seeds column;
    a training whose every seed diverged says so in each cell.
    """
    if not any(seed_of(run.label) is not None for run in runs):
        return []
    by_name = {run.label: run for run in runs}
    header = ["training", "seeds", *metrics]
    rows = []
    for training, names in groups([run.label for run in runs]).items():
        kept = [n for n in names if not by_name[n].diverged]
        seeds = str(len(kept))
        if len(kept) < len(names):
            seeds += f" ({len(names) - len(kept)} diverged, left out)"
        cells = []
        for metric in metrics:
            if not kept:
                cells.append("diverged (every seed)")
                continue
            means = np.array([by_name[n].metrics[metric].mean for n in kept], dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all NaN: nan, said as such
                spread = f" (min {_fmt(np.nanmin(means))}, max {_fmt(np.nanmax(means))})"
                cells.append(f"{_fmt(np.nanmean(means))} +- {_fmt(np.nanstd(means))}{spread}")
        rows.append([training, seeds, *cells])
    text = (
        "Over seeds: for each training, the mean and standard deviation over its seeds of the "
        "per-run means of the table above (each at that run's best epoch), with the smallest and "
        "largest of them; a diverged seed is left out."
    )
    return [Block("h2", "Over seeds"), Block("p", text), table_block(header, rows)]


# ---------------------------------------------------------------------------------------------
# Per patient
# ---------------------------------------------------------------------------------------------


def patient_blocks(
    folders: Sequence[Path], columns: Sequence[int], csv_dest: Path, diverged: Collection[str] = ()
) -> list[Block]:
    """Each validation patient's 3D Dice / HD / HD95 per run, at the epoch of best.pt; written to
    `csv_dest` too. A diverged run (its name in `diverged`) is not read: its column says
    diverged, its CSV rows hold nan."""
    names, values = patients.table(list(folders), columns, diverged)
    patients.write_csv(names, values, csv_dest)
    header, rows = patients.rows(names, values, diverged)
    text = (
        f"Each validation patient's 3D Dice, HD and HD95 (mm), the mean over classes "
        f"{list(columns)}, at the epoch of each run's best.pt (best_epoch.txt); also in "
        f"{csv_dest.name}. Click a column title to sort the HTML table."
    )
    if diverged:
        text += (
            f" Diverged runs ({', '.join(diverged)}) have no value: their column says so, "
            f"their rows of {csv_dest.name} hold nan."
        )
    return [Block("h2", "Per patient"), Block("p", text), table_block(header, rows)]


# ---------------------------------------------------------------------------------------------
# Paired comparisons
# ---------------------------------------------------------------------------------------------


def comparison_header(unit: str = "patient") -> list[str]:
    """The header of the comparisons' table, counting `unit`s ("case" in a cross-validation)."""
    return ["training", "metric", f"{unit}s", "seeds", "mean difference", "95% CI", "Wilcoxon p"]


def comparison_row(training: str, result: Comparison) -> list[str]:
    """A row of the comparisons' table (`comparison_header`)."""
    p = "-" if result.p_value is None else f"{result.p_value:.3g}"
    return [
        training,
        result.metric,
        str(result.n_patients),
        str(result.n_seeds),
        f"{result.mean_difference:+.4f}",
        f"{result.ci_low:+.4f} to {result.ci_high:+.4f}",
        p,
    ]


def comparison_blocks(
    folders: Sequence[Path],
    baseline: str,
    columns: Sequence[int],
    metrics: Sequence[str],
    diverged: Collection[str] = (),
) -> list[Block]:
    """Every training against `baseline`, per 3D metric: paired over patients (and seeds).

    Diverged runs (their names in `diverged`: every 3D value NaN) are left out: a training is
    paired with the baseline over the seeds where neither diverged, and one with no such seed is
    named as not compared (a row per metric says why); when every run of the baseline diverged,
    the section says so and compares nothing. A metric with no patient finite in both trainings
    at their checkpoints is named as not compared too.

    Raises:
        ValueError: `baseline` is not a training of `folders`, or a training shares no seed with
            it (diverged or not).
    """
    by_name = {Path(f).name: Path(f) for f in folders}
    trainings = groups(list(by_name))
    if baseline not in trainings:
        raise ValueError(f"--baseline {baseline}: no such training among {', '.join(trainings)}")
    metrics = [m for m in metrics if m in patients.METRICS_3D]
    heading = Block("h2", f"Against {baseline}: did it help?")
    base_all = {seed_of(n): n for n in trainings[baseline]}
    base = {s: n for s, n in base_all.items() if n not in diverged}
    if not base:
        return [
            heading,
            Block(
                "p",
                f"The baseline {baseline} diverged ({', '.join(trainings[baseline])}: every value "
                "of its 3D metrics is NaN): nothing is compared with it. Give another --baseline "
                "(BASELINE in the makefiles) to compare the trainings.",
            ),
        ]
    sentences, rows = [], []
    for training, names in trainings.items():
        if training == baseline:
            continue
        seeds_all = {seed_of(n): n for n in names}
        if not any(s in base_all for s in seeds_all):
            raise ValueError(f"{training} and {baseline} share no seed to pair")
        seeds = {s: n for s, n in seeds_all.items() if n not in diverged}
        common = [s for s in seeds if s in base]
        paired = [s for s in seeds_all if s in base_all]
        left_out = [n for s in paired for n in (seeds_all[s], base_all[s]) if n in diverged]
        if not common:
            if not seeds:
                runs = "" if names == [training] else f" ({', '.join(names)})"
                why = f"{training} diverged{runs}"
            else:
                why = (
                    f"{training} and {baseline} share no seed where neither diverged "
                    f"(diverged: {', '.join(left_out)})"
                )
            sentences.append(f"{why}: not compared with {baseline}.")
            rows += [[training, m, "-", "-", "diverged: not compared", "-", "-"] for m in metrics]
            continue
        if left_out:
            dropped = ", ".join(str(s) for s in paired if s not in common)
            sentences.append(
                f"{training} against {baseline}: seed(s) {dropped} left out, "
                f"{', '.join(left_out)} diverged."
            )
        results = []
        for metric in metrics:
            ours = np.stack(
                [patients.at_checkpoint(by_name[seeds[s]], metric, columns) for s in common]
            )
            theirs = np.stack(
                [patients.at_checkpoint(by_name[base[s]], metric, columns) for s in common]
            )
            if not (np.isfinite(ours) & np.isfinite(theirs)).any():
                runs = ", ".join(n for s in common for n in (seeds[s], base[s]))
                sentences.append(
                    f"{training} and {baseline} on {metric}: no patient has a finite value in "
                    f"both at the epoch of their best.pt ({runs}): not compared."
                )
                rows.append([training, metric, "0", str(len(common)), "no finite pair", "-", "-"])
                continue
            result = compare(
                ours,
                theirs,
                run=training,
                baseline=baseline,
                metric=metric,
                higher_is_better=better(metric) == "max",
            )
            results.append(result)
            rows.append(comparison_row(training, result))
        if results:  # one sentence per training, its metrics grouped by decision
            sentences.append(grouped_sentence(results, SENTENCE_NAMES))
    header = comparison_header()
    where = (
        f"Each run's per-patient values at the epoch of its best.pt (best_epoch.txt, chosen by "
        f"3D Dice), classes {list(columns)}; the table above shows each metric at its own best "
        "epoch. One sentence per training; HD and HD95 differences in mm."
    )
    return [
        heading,
        Block("p", where),
        *(Block("p", s) for s in sentences),
        table_block(header, rows),
        Block("p", METHOD),
    ]


# ---------------------------------------------------------------------------------------------
# 3D against 2D, and the cross-validation's comparisons (report.folds)
# ---------------------------------------------------------------------------------------------


def where_text(columns: Sequence[int], unit: str = "case") -> str:
    """Where each value comes from: in a cross-validation (`unit` "case"), the epoch of the case's
    own fold's best.pt; in a single fold ("patient"), that of its run's best.pt."""
    checkpoint = "its own fold's best.pt" if unit == "case" else "its run's best.pt"
    return (
        f"Each {unit}'s value is the mean over classes {list(columns)} of its 3D metric at the "
        f"epoch of {checkpoint} (best_epoch.txt, chosen by 3D Dice); HD and HD95 in mm."
    )


def comparison_section(
    heading: str, text: str, found: dict[str, list[Comparison]], unit: str = "case"
) -> list[Block]:
    """A heading, a paragraph, one sentence per training and the table of its comparisons; a
    metric without a finite pair (`folds.against_baseline` and `folds.across` leave it out) is
    said, in a sentence and a row, as the single-fold comparisons say it."""
    sentences, rows = [], []
    for training, results in found.items():
        if not results:
            sentences.append(f"{training}: no {unit} has a finite value in both: not compared.")
            continue
        sentences.append(grouped_sentence(results, SENTENCE_NAMES, unit))
        rows += [comparison_row(training, r) for r in results]
        missing = [m for m in folds.METRICS if m not in {r.metric for r in results}]
        if missing:
            names = " and ".join(SENTENCE_NAMES.get(m, m) for m in missing)
            sentences.append(
                f"{training} on {names}: no {unit} has a finite value in both: not compared."
            )
            rows += [[training, m, "0", "-", "no finite pair", "-", "-"] for m in missing]
    return [
        Block("h2", heading),
        Block("p", text),
        *(Block("p", s) for s in sentences),
        table_block(comparison_header(unit), rows),
    ]


def pair_blocks(
    own: Cohort,
    other_folders: Sequence[Path],
    baseline: str | None,
    columns: Sequence[int],
    unit: str = "case",
) -> list[Block]:
    """3D against 2D: each training of `own` against itself in the other dimension's results
    (`other_folders`, one per fold as `own`'s), over the cases both validated; and, when `own` is
    the 2D one, each 3D training against the baseline there (a 3D page has that section already).

    Trainings missing from one side, or from a fold of the other side, are left out; when nothing
    can be paired (no training, case or seed in common), the section says why.

    Raises:
        ValueError: the other results are of the same dimension as `own`'s.
    """
    other_label = f"{dimensions_of(other_folders)}D"
    if other_label == own.label:
        raise ValueError(f"--pair: {own.label} runs on both sides; give the other dimension's")
    first_label, second_label = sorted((own.label, other_label))
    heading = f"{second_label} against {first_label}: did {second_label} help?"
    try:
        per_fold = [trainings_in(Path(folder)) for folder in other_folders]
        common = [t for t in own.values if all(t in found for found in per_fold)]
        if not common:
            raise ValueError(
                f"no training of these runs is in every one of {', '.join(map(str, other_folders))}"
            )
        # the dimension and the trainings of each fold read above
        other = gather(other_folders, columns, common, label=other_label, per_fold=per_fold)
        first, second = (own, other) if own.label == first_label else (other, own)
        found, alone = across(first, second)
    except (OSError, ValueError) as error:
        return [Block("h2", heading), Block("p", f"Not paired: {error}.")]
    text = (
        f"Each training in {second.label} against the same training in {first.label}, paired "
        f"{unit} by {unit} (and seed by seed). " + where_text(columns, unit)
    )
    if alone:
        text += f" Validated in only one of them, left out: {', '.join(alone)}."
    blocks = comparison_section(heading, text, found, unit)
    if own is first and baseline is not None and baseline in second.values:
        blocks += comparison_section(
            f"In {second.label}, against {baseline}: did it help?",
            f"Every training of the {second.label} runs against {baseline}, over every {unit}.",
            against_baseline(second, baseline),
            unit,
        )
    return blocks


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------


def picture_blocks(folder: Path, page_dir: Path) -> list[Block]:
    """The pictures and GIFs of report.pictures, by their pictures.json."""
    record = json.loads((Path(folder) / "pictures.json").read_text())

    def rel(name: str) -> str:
        return Path(os.path.relpath(Path(folder).resolve() / name, page_dir.resolve())).as_posix()

    blocks = [
        Block("h2", "Pictures"),
        Block(
            "p",
            "Validation patients chosen by 3D Dice at each run's best epoch (best, median, "
            "worst): the slice with the largest ground truth and the slice with the most errors, "
            "ground truth solid, predictions dashed, one column per run.",
        ),
    ]
    if record.get("diverged"):
        names = ", ".join(record["diverged"])
        blocks.append(Block("p", f"Not drawn, diverged (all 3D metrics NaN): {names}."))
    for picture in record["pictures"]:
        text = f"{picture['patient']} ({'; '.join(picture['roles'])})"
        blocks.append(Block("img", text=text, path=rel(picture["file"])))
    blocks.append(
        Block("p", "The prediction of the largest slice over the epochs, one frame per epoch.")
    )
    for gif in record["gifs"]:
        text = f"{gif['run']}, {gif['slice']} ({gif['role']}), {gif['epochs']} epochs"
        blocks.append(Block("img", text=text, path=rel(gif["file"])))
    return blocks


# ---------------------------------------------------------------------------------------------
# Predictions written back in the source geometry (boundary_loss_predict)
# ---------------------------------------------------------------------------------------------


def read_prediction_metrics(folder: Path) -> list[dict]:
    """A boundary_loss_predict folder's metrics.csv: one row per case and class, numbers as floats.

    Raises:
        OSError: no metrics.csv. ValueError: a row that is not a number where one is expected.
    """
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: file not found (--predictions expects boundary_loss_predict output)"
        )
    rows = []
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                numbers = {key: float(row[key]) for key in ("value", "dice", "hd", "hd95")}
                rows.append({"case": row["case"], "class": row["class"], **numbers})
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{path}:{number}: not a boundary_loss_predict metrics row ({error!r})"
                ) from None
    return rows


def _mean_std(values: list[float]) -> str:
    return f"{_fmt(float(np.mean(values)))} +- {_fmt(float(np.std(values)))}" if values else "-"


def _diverged_predictions(folder: Path) -> bool:
    """Whether boundary_loss_predict found the run diverged (its predictions.json says so)."""
    try:
        return json.loads((folder / "predictions.json").read_text()).get("diverged") is True
    except (OSError, ValueError, AttributeError):
        return False


def prediction_blocks(folders: Sequence[str | Path]) -> list[Block]:
    """The section on the NIfTI predictions (boundary_loss_predict): per run (the folder's name) and
    foreground class (label value not 0), 3D Dice, HD and HD95 as mean ± std over the validation
    cases; then, per foreground class, Dice and HD95 of every case and run."""
    if not folders:
        return []
    found = {Path(f).name: read_prediction_metrics(Path(f)) for f in folders}
    classes = list(dict.fromkeys(r["class"] for rows in found.values() for r in rows if r["value"]))
    cases = sorted({r["case"] for rows in found.values() for r in rows})

    def values(run: str, name: str, metric: str, case: str | None = None) -> list[float]:
        return [
            r[metric]
            for r in found[run]
            if r["class"] == name and (case is None or r["case"] == case)
        ]

    diverged = {Path(f).name for f in folders if _diverged_predictions(Path(f))}
    header = ["run"] + [f"{m} {c}" for c in classes for m in ("Dice", "HD", "HD95")]
    rows = [
        [run, *(_mean_std(values(run, c, m)) for c in classes for m in ("dice", "hd", "hd95"))]
        if run not in diverged
        else [run, *(["diverged: no predictions"] * (len(header) - 1))]
        for run in found
    ]
    text = (
        f"Each training's best.pt predicted the {len(cases)} validation cases again from the "
        "source images, and the predictions were written back in the source geometry (NIfTI "
        "files in predictions/<run>/, with the test cases'). 3D Dice, HD and HD95 (mm) of each "
        "foreground class, computed from these files in the source spacing: mean +- std over "
        "the cases, then each case (Dice / HD95), as in predictions/<run>/metrics.csv."
    )
    blocks = [Block("h2", "Predictions in the source geometry"), Block("p", text)]
    blocks.append(table_block(header, rows))
    for name in classes:
        per_case = []
        for case in cases:
            cells = []
            for run in found:
                dice, hd95 = values(run, name, "dice", case), values(run, name, "hd95", case)
                cells.append(f"{_fmt(dice[0])} / {_fmt(hd95[0])}" if dice else "-")
            per_case.append([case, *cells])
        blocks.append(Block("h3", f"{name}: Dice / HD95 (mm) per case"))
        blocks.append(table_block(["case", *found], per_case))
    return blocks
