"""Per-patient figures of trainings: who the validation patients are, and each one's 3D metrics.

The 3D arrays of a run folder (`val_3d_dsc.npy`, `val_3d_hausdorff.npy`, `val_3d_hd95.npy`:
epoch x patient x class) hold the patients sorted by name, the name being the first group of the
training's `--grp_regex` on a validation slice stem (docs/run-folder.md). `patient_names` rebuilds
those names from the predictions the run saved; `at_checkpoint` reads every patient's value at the
epoch of `best.pt` (`best_epoch.txt`), the mean over the chosen classes. The report shows them as
one table (patients x runs) and writes them as CSV; the pictures and the paired comparisons use
them too.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from boundary_loss.runfolder.ranking import per_sample
from boundary_loss.runfolder.schema import VOLUME_METRICS, load_metric, read_int, read_json

METRICS_3D = VOLUME_METRICS
SHOWN = {"val_3d_dsc": "Dice", "val_3d_hausdorff": "HD", "val_3d_hd95": "HD95"}


def validation_stems(run: Path) -> list[str]:
    """The validation slice stems of a run, from the predictions of its best epoch."""
    folder = Path(run) / "best_epoch" / "val"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found (the run's saved predictions)")
    return sorted(p.stem for p in folder.glob("*.png"))


def patient_names(run: Path) -> list[str]:
    """The patients of the run's 3D arrays, in their order (sorted names).

    Raises:
        FileNotFoundError: no saved predictions. ValueError: no grp_regex in args.json, or a
            stem it does not match.
    """
    args, note = read_json(Path(run) / "args.json")
    if args is None or "grp_regex" not in args:
        raise ValueError(f"{run}: {note or 'args.json has no grp_regex'}: patients unknown")
    names = set()
    for stem in validation_stems(run):
        match = re.match(args["grp_regex"], stem)
        if match is None:
            raise ValueError(f"{run}: --grp_regex {args['grp_regex']!r} does not match {stem!r}")
        names.add(match.group(1))
    return sorted(names)


def at_checkpoint(run: Path, metric: str, columns: Sequence[int]) -> np.ndarray:
    """Each patient's value of a 3D metric at the epoch of best.pt, the mean over `columns`.

    Raises:
        FileNotFoundError, ValueError: a missing or malformed array, or no best_epoch.txt.
    """
    data = load_metric(Path(run), metric)
    return at_epoch(run, metric, data, checkpoint_epoch(run), columns)


def checkpoint_epoch(run: Path) -> int | None:
    """The epoch of the run's best.pt (best_epoch.txt), None when absent or not an integer."""
    return read_int(Path(run) / "best_epoch.txt")


def at_epoch(
    run: Path, metric: str, data: np.ndarray, epoch: int | None, columns: Sequence[int]
) -> np.ndarray:
    """Each patient's value of a 3D metric at the epoch of best.pt, the mean over `columns`, from
    the array already loaded (`data`, the run's `metric`) and the epoch already read (`epoch`,
    `checkpoint_epoch`).

    Raises:
        ValueError: `epoch` missing or outside the array, or a class the array lacks.
    """
    if epoch is None or not 0 <= epoch < len(data):
        path = Path(run) / "best_epoch.txt"
        found = "missing" if not path.is_file() else repr(path.read_text().strip()[:20])
        raise ValueError(
            f"{path}: {found}, expected the epoch of best.pt, 0 .. {len(data) - 1} "
            f"({metric}.npy holds {len(data)} epochs)"
        )
    wrong = [c for c in columns if not 0 <= c < data.shape[2]]
    if wrong:
        raise ValueError(
            f"{run}/{metric}.npy: no class {wrong[0]} (it holds classes 0 .. {data.shape[2] - 1})"
        )
    return per_sample(data[epoch][None], columns)[0]  # NaN for a patient with no finite value


def table(
    runs: Sequence[Path], columns: Sequence[int], diverged: Collection[str] = ()
) -> tuple[list[str], dict[str, dict]]:
    """Patients, and run name -> metric -> per-patient values at the checkpoint.

    Args:
        runs: run folders.
        columns: classes averaged.
        diverged: names of diverged runs (every 3D value NaN): neither their patients nor their
            values are read (a run that never had a finite metric saved no best.pt, best_epoch/
            or best_epoch.txt); their values are NaN.

    Raises:
        ValueError: runs whose validation patients differ.
    """
    read = [run for run in runs if Path(run).name not in diverged]
    patients = patient_names(read[0]) if read else []
    values: dict[str, dict] = {}
    for run in runs:
        if Path(run).name in diverged:
            values[Path(run).name] = {m: np.full(len(patients), np.nan) for m in METRICS_3D}
            continue
        if patient_names(run) != patients:
            raise ValueError(f"{run}: other validation patients than {read[0]}")
        values[Path(run).name] = {m: at_checkpoint(run, m, columns) for m in METRICS_3D}
    return patients, values


def write_csv(patients: list[str], values: dict[str, dict], dest: Path) -> Path:
    """One row per patient and run: patient, run, then each metric (mm for the distances)."""
    with open(dest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient", "run", *METRICS_3D])
        for run, metrics in values.items():
            for i, patient in enumerate(patients):
                writer.writerow([patient, run, *(f"{metrics[m][i]:.6g}" for m in METRICS_3D)])
    return dest


def rows(
    patients: list[str],
    values: dict[str, dict],
    diverged: Collection[str] = (),
    name: str = "patient",
    lead: tuple[str, dict[str, str]] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """The report's table: one row per patient, `Dice / HD / HD95` per run; `diverged` for the
    runs named in `diverged`. `name` titles the first column; `lead`, a column title and each
    patient's cell, adds a column after it (the cross-validation's fold)."""
    header = [name] if lead is None else [name, lead[0]]
    header += [f"{run}: Dice / HD / HD95" for run in values]
    body = []
    for i, patient in enumerate(patients):
        cells = [
            "diverged"
            if run in diverged
            else " / ".join(f"{metrics[m][i]:.4f}" for m in METRICS_3D)
            for run, metrics in values.items()
        ]
        first = [patient] if lead is None else [patient, lead[1][patient]]
        body.append([*first, *cells])
    return header, body
