"""Predict label files for new scans with a trained run, or an ensemble of runs (its folds).

Usage: python -m boundary_loss.inference.predict_new --run RUN [RUN ...] --input DIR --output DIR
       [--mirror] [--cpu] [--batch_size N]
       (the same as `python -m boundary_loss.inference.predict` or `boundary_loss_predict` with
       --input)

`DIR` (--input) holds images named as nnU-Net names them, `<case>_<XXXX>.nii.gz` (or `.nii`),
XXXX the 4-digit channel index (0000 first), one 3D file per channel, no labels; other files
(notes, a dataset.json) are left alone. Each `RUN` is a training of main.py on data of
preprocess/slice_nnunet.py or preprocess/prepare_3d.py: its `plan.json` (written by main.py,
docs/run-folder.md) says how its training data was preprocessed, so that each scan is prepared
the same way without that data:

- 2D runs: each channel normalised as the slicer did (`volumes.load_volume`, the run's own
  normalisation: its fold's CT statistics), the volume sliced along the recorded axis and the
  slices resized to the recorded shape; the network's softmax probabilities slice by slice;
- 3D runs: each channel normalised and resampled to the plan's target spacing
  (`prepare_3d.prepare_images`); the softmax probabilities by sliding windows of the run's
  training patch (`steps.case_probabilities`; `--mirror`: test-time mirroring along the three axes).

Several runs are an ensemble: each prepares the scan with its own plan, their probabilities are
averaged on the common grid (2D: the slices; 3D: the target spacing), and then, as one run's are:
2D: the argmax, resized back to the image's in-plane size by nearest neighbour and its axes put
back in order (`steps.to_source_grid`); 3D: resampled back to the image's grid per class and the
argmax taken there (`steps.labels_on_source_grid`). The runs must agree on the dimensions,
the channels, the labels and the grid (2D: slice axis and shape; 3D: target spacing).

`DIR` (--output) receives one `<case>.nii.gz` per case (`.nii` for `.nii` scans): dataset.json's
label values, uint8, with the affine and header of the case's first channel file
(`steps.write_labels`); and `predictions.json`: the runs and their best epochs, the cases and
the files. No metrics (the scans have no labels). It is built in `DIR_tmp/DIR` and moved in when
complete (`io.atomic.staged_folder`), replacing only a missing or empty folder or an earlier output
of this command (its `.written_by.json` names predict_new.py).

Refused before anything is written, with one line `error: <message>` and exit status 1: a run
without plan.json or without best.pt; a plan.json not as main.py writes it (naming the file and
the key: a CT normalisation without its statistics, or a 3D plan whose channels, labels or
normalisation differ from its grid's, say); runs whose dimensions, channels,
labels or grids differ; `--mirror` with 2D runs; an input folder without any
`<case>_<XXXX>.nii(.gz)` image, a NIfTI file named otherwise, a case without exactly the runs'
channels, a channel whose shape or affine differs from its case's first channel; an output
folder that is not this command's to replace.

The steps it shares with the predictions of a dataset's own cases (the network from best.pt,
the probabilities, the way back to a scan's own grid, the written folder) are those of
boundary_loss.inference.steps.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from boundary_loss.inference.steps import (
    BATCH_SIZES,
    DEFAULT_BATCH_SIZES,
    PredictError,
    batch_size_flag,
    case_probabilities,
    check_counts,
    device_of,
    labels_on_source_grid,
    load_network,
    predict_probabilities,
    run_command,
    run_patch,
    source_shape,
    to_source_grid,
    write_cases,
)
from boundary_loss.io.atomic import (
    FolderError,
    check_replaceable,
)
from boundary_loss.io.console import ArgumentParser
from boundary_loss.preprocessing.nnunet_format import Case
from boundary_loss.preprocessing.plan3d import check_normalisation, check_plan, plan_norms
from boundary_loss.preprocessing.prepare_3d import prepare_images
from boundary_loss.preprocessing.volumes import (
    Geometry,
    Volume,
    check_same_grid,
    load_images,
    load_volume,
    natural_key,
    read_header,
)
from boundary_loss.runfolder.schema import divergence

# The name in the marker of an output folder: only a folder so marked (or a missing or empty one)
# is replaced. Not predict.py's: an output of the own-data predictions is never replaced here.
TOOL = "predict_new.py"
# An image of a new scan: `<case>_<XXXX>.nii.gz` or `.nii`, XXXX the channel.
IMAGE_NAME = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\.nii(?:\.gz)?)")
NIFTI_ENDINGS = (".nii", ".nii.gz")
# What `timings` receives, in seconds: once per call, the checks of the runs and the scans and
# the networks loaded; then summed over the cases, reading, normalising and slicing or
# resampling the scans; the networks (forward passes, softmax, average, argmax, the copy back to
# the host, which waits for the device); back to each scan's grid; the files written.
PHASES = ("setup", "preprocess", "network", "restore", "write")
ENSEMBLE = (
    "the runs of an ensemble must come from one dataset and one plan (the folds of one "
    "dataset.make chain)"
)


@dataclass(frozen=True)
class Member:
    """One run of the ensemble, ready to predict.

    Attributes:
        run: its folder.
        plan: its plan.json (checked).
        net: its network from best.pt, on the device, in eval mode.
        best_epoch: the epoch of best.pt.
        norms: each channel's normalisation (`volumes.normalise_channel`'s tuples).
        patch: the sliding window of a 3D run (its training patch); None in 2D.
    """

    run: Path
    plan: dict
    net: torch.nn.Module
    best_epoch: int | None
    norms: tuple[tuple, ...]
    patch: tuple[int, ...] | None


# ---------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------


def check_run_plan(plan: object, path: Path) -> dict:
    """Check a run's plan.json as main.py writes it (`runfolder.writer.run_plan`): in 3D, its
    name, channels, labels and normalisation are also the grid's (the whole 3D plan, which
    prepares the scans), so the two copies must agree.

    Raises:
        ValueError: naming the file and what is wrong.
    """

    def wrong(what: str) -> ValueError:
        return ValueError(f"{path}: {what}; expected a plan as main.py writes it")

    if not isinstance(plan, dict):
        raise wrong("not a JSON object")
    missing = [
        k for k in ("dimensions", "channels", "labels", "normalisation", "grid") if k not in plan
    ]
    if missing:
        raise wrong(f"key {missing[0]!r} missing")
    if plan["dimensions"] not in (2, 3):
        raise wrong(f"dimensions is {plan['dimensions']!r}, not 2 or 3")
    channels, labels = plan["channels"], plan["labels"]
    if not (isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)):
        raise wrong(f"channels is {channels!r}, not a list of names")
    if not (
        isinstance(labels, dict)
        and len(labels) >= 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in labels.values())
    ):
        raise wrong(f"labels is {labels!r}, not names -> values")
    check_normalisation(plan, path)
    norms, grid = plan["normalisation"], plan["grid"]
    if plan["dimensions"] == 3:
        check_plan(grid, path)
        copies = {
            "name": (plan.get("name", grid["name"]), grid["name"]),
            "channels": (channels, grid["channels"]),
            "labels": (list(labels.items()), [tuple(pair) for pair in grid["labels"]]),
            "normalisation": (norms, grid["normalisation"]),
        }
        for key, (top, inside) in copies.items():
            if top != inside:
                raise wrong(f"{key} is {plan[key]!r} but grid.{key} is {grid[key]!r}")
        return plan
    shape = grid.get("shape") if isinstance(grid, dict) else None
    if not (
        isinstance(grid, dict)
        and grid.get("axis") in (0, 1, 2)
        and isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise wrong(f"grid is {grid!r}, not {{'axis': 0|1|2, 'shape': [H, W]}}")
    return plan


def read_run_plan(run: Path) -> dict:
    """The checked plan.json of a run, once its folder and best.pt are found.

    Raises:
        PredictError: no such folder, no plan.json (a run on other data, or trained before plans
            were recorded), a damaged one, or no best.pt (a diverged run).
    """
    if not run.is_dir():
        raise PredictError(f"--run {run}: folder not found (expected a training's folder)")
    if not any((run / name).is_file() for name in ("best.pt", "args.json")):
        raise PredictError(
            f"--run {run}: not a training's folder (no best.pt, no args.json); expected the "
            "folder of a training of main.py"
        )
    path = run / "plan.json"
    if not path.is_file():
        raise PredictError(
            f"--run {run}: no plan.json, so nothing says how to prepare a new scan for it: the "
            "run was not trained on data of dataset.make (preprocess/slice_nnunet.py or "
            "preprocess/prepare_3d.py), or was trained before runs recorded their plan; "
            "`python -m boundary_loss.inference.predict --sliced` predicts its own data"
        )
    try:
        plan = check_run_plan(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PredictError(f"{path}: not a readable JSON file ({error})") from None
    except ValueError as error:
        raise PredictError(str(error)) from None
    if not (run / "best.pt").is_file():
        try:
            diverged = divergence(run).diverged
        except ValueError:  # a damaged metric array: the run is not usable either way
            diverged = False
        why = (
            "the run diverged (all its 3D metrics are NaN), so it kept no best weights"
            if diverged
            else "no best weights (a training that never finished an epoch, or moved files)"
        )
        raise PredictError(f"--run {run}: no best.pt: {why}; leave it out of --run")
    return plan


def grid_of(plan: dict) -> dict:
    """What the runs of an ensemble must share to average their probabilities: 2D the slice
    axis and shape, 3D the target spacing."""
    grid = plan["grid"]
    if plan["dimensions"] == 2:
        return {"axis": grid["axis"], "shape": grid["shape"]}
    return {"target_spacing": grid["target_spacing"]}


def check_agreement(plans: Sequence[tuple[Path, dict]]) -> None:
    """Refuse an ensemble whose runs differ in dimensions, channels, labels or grid.

    Raises:
        PredictError: naming the first two runs that differ, what differs and both values.
    """
    first_run, first = plans[0]
    aspects = (
        ("dimensions", lambda p: p["dimensions"]),
        ("channels", lambda p: p["channels"]),
        ("labels", lambda p: list(p["labels"].items())),
        ("grids", grid_of),
    )
    for run, plan in plans[1:]:
        for what, of in aspects:
            if of(plan) != of(first):
                if what == "labels":
                    mine, theirs = first["labels"], plan["labels"]
                else:
                    mine, theirs = of(first), of(plan)
                raise PredictError(
                    f"--run {first_run} and --run {run}: different {what} ({mine} and "
                    f"{theirs}); {ENSEMBLE}"
                )


def load_member(run: Path, plan: dict, device: torch.device) -> Member:
    """The network of a run (best.pt) with what its predictions need.

    Raises:
        PredictError: a network that does not rebuild, of other dimensions than the plan's, or
            for other channel or class counts.
    """
    dimensions = plan["dimensions"]
    net, best = load_network(run, device, dimensions, plan["grid"] if dimensions == 3 else None)
    check_counts(run, best, len(plan["channels"]), len(plan["labels"]), run / "plan.json")
    patch = run_patch(best, plan["grid"]) if dimensions == 3 else None
    return Member(run, plan, net, best.get("epoch"), plan_norms(plan), patch)


# ---------------------------------------------------------------------------------------------
# The scans
# ---------------------------------------------------------------------------------------------


def find_scans(folder: Path) -> dict[str, dict[int, Path]]:
    """The image files of `folder`, by case then channel index, cases in natural order.

    Raises:
        PredictError: no folder, a NIfTI file not named `<case>_<XXXX>.nii(.gz)`, one channel
            of a case twice, or no image at all.
    """
    if not folder.is_dir():
        raise PredictError(f"--input {folder}: folder not found (expected the new scans)")
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(NIFTI_ENDINGS):
            continue
        match = IMAGE_NAME.fullmatch(path.name)
        if match is None:
            raise PredictError(
                f"{path}: not named <case>_<XXXX>.nii.gz (XXXX the channel: 0000, 0001, ...); "
                "expected the images of the new scans only, named as nnU-Net names them"
            )
        channels = found.setdefault(match["case"], {})
        channel = int(match["channel"])
        if channel in channels:
            raise PredictError(
                f"{path}: channel {channel} of case {match['case']} again (also "
                f"{channels[channel].name}); expected one file per channel"
            )
        channels[channel] = path
    if not found:
        raise PredictError(
            f"--input {folder}: no image named <case>_<XXXX>.nii.gz or .nii (XXXX the channel, "
            "0000 first); expected the new scans as nnU-Net names them"
        )
    return dict(sorted(found.items(), key=lambda item: natural_key(item[0])))


def check_scans(
    folder: Path, found: dict[str, dict[int, Path]], channels: Sequence[str]
) -> dict[str, Case]:
    """The cases of the scans, each checked from its headers: the runs' channels, exactly, and
    every channel on the grid of the first (shape, spacing and affine).

    Raises:
        PredictError: a case with other channels, naming the files found and those expected.
        SliceError: an unreadable or non-3D file, a channel on another grid than the first.
    """
    expected = list(range(len(channels)))
    cases = {}
    for cid, files in found.items():
        if sorted(files) != expected:
            first = next(iter(files.values())).name  # a name find_scans matched
            ending = IMAGE_NAME.fullmatch(first)["ending"]
            have = ", ".join(files[c].name for c in sorted(files))
            want = ", ".join(f"{cid}_{c:04d}{ending}" for c in expected)
            raise PredictError(
                f"--input {folder}: case {cid} has the channel files {have}; expected {want} "
                f"(the runs' {len(channels)} channels: {', '.join(channels)})"
            )
        paths = tuple(files[c] for c in expected)
        shape, spacing = read_header(paths[0])
        affine = nib.load(str(paths[0])).affine
        for path in paths[1:]:
            other_shape, other_spacing = read_header(path)
            if other_shape != shape:
                raise PredictError(
                    f"{path}: shape {other_shape} differs from {paths[0]} {shape}; expected "
                    "every channel of a case on one grid"
                )
            other_affine = nib.load(str(path)).affine
            check_same_grid(path, other_spacing, other_affine, paths[0], spacing, affine)
        cases[cid] = Case(cid, paths, None, four_d=False)
    return cases


# ---------------------------------------------------------------------------------------------
# The predictions
# ---------------------------------------------------------------------------------------------


def _add(timings: dict[str, float] | None, phase: str, start: float) -> float:
    """Add the seconds since `start` to `timings[phase]` (when timed); returns the time now."""
    now = time.perf_counter()
    if timings is not None:
        timings[phase] = timings.get(phase, 0.0) + now - start
    return now


def average_labels(
    members: Sequence[Member],
    prepare: Callable[[Member], np.ndarray],
    predict: Callable[[Member, np.ndarray], torch.Tensor],
    to_host: Callable[[torch.Tensor], np.ndarray],
    restore: Callable[[np.ndarray], np.ndarray],
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """The label values of a scan on its own grid from runs of one dimension (one run: an
    ensemble of one), the steps of their dimension given (`labels_2d`, `labels_3d`).

    Args:
        members: the runs (one grid; each its own normalisation).
        prepare: the scan prepared for a run; called once per distinct normalisation, the runs
            that share one share the prepared scan (phase "preprocess").
        predict: a run's softmax probabilities of its prepared scan, on the device; they are
            summed over the runs and divided by their number (phase "network").
        to_host: the average brought to the host (phase "network": the copy waits for the
            device).
        restore: that, back to the scan's own grid as label values (phase "restore").
        timings: seconds added per phase (`PHASES`), when given.
    """
    start = time.perf_counter()
    prepared = {}
    for member in members:
        if member.norms not in prepared:
            prepared[member.norms] = prepare(member)
    start = _add(timings, "preprocess", start)
    total = None
    for member in members:
        probs = predict(member, prepared[member.norms])
        total = probs if total is None else total.add_(probs)
    mean = to_host(total / len(members))
    start = _add(timings, "network", start)
    labels = restore(mean)
    _add(timings, "restore", start)
    return labels


def labels_2d(
    members: Sequence[Member],
    case: Case,
    device: torch.device,
    batch_size: int,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """The label values of a scan on its own grid from 2D runs (`average_labels`): each run's
    slices (`load_volume`), the average of their softmax probabilities slice by slice, argmax,
    then back to the source grid (`to_source_grid`).

    Args:
        members: the runs (one plan grid; each its own normalisation).
        case: the scan.
        device: where the networks run.
        batch_size: slices per forward pass.
        timings: seconds added per phase (`PHASES`), when given.
    """
    plan = members[0].plan
    values = list(plan["labels"].values())
    label_map = tuple((v, i) for i, v in enumerate(values) if v != i)
    axis, shape = int(plan["grid"]["axis"]), tuple(plan["grid"]["shape"])
    volume = Volume(case.cid, case.images, None)

    def prepare(member: Member) -> np.ndarray:
        geometry = Geometry(axis, member.norms)
        return load_volume(volume, values, label_map, shape, geometry)[0]

    def predict(member: Member, image: np.ndarray) -> torch.Tensor:
        return predict_probabilities(member.net, image, device, batch_size)

    def to_host(mean: torch.Tensor) -> np.ndarray:
        return mean.argmax(dim=1).to(torch.uint8).cpu().numpy()  # Z H W class indices

    def restore(classes: np.ndarray) -> np.ndarray:
        return to_source_grid(classes.transpose(1, 2, 0), source_shape(case), axis, values)

    return average_labels(members, prepare, predict, to_host, restore, timings)


def labels_3d(
    members: Sequence[Member],
    case: Case,
    device: torch.device,
    batch_size: int,
    mirror: bool = False,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """The label values of a scan on its own grid from 3D runs (`average_labels`): the scan read
    once and resampled to the target spacing per run (`prepare_images`), the average of their
    softmax probabilities there (sliding windows), resampled back to the scan's grid and argmax
    there (`labels_on_source_grid`).

    Args:
        members: the runs (one target spacing; each its own normalisation and patch).
        case: the scan.
        device: where the networks run.
        batch_size: windows per forward pass.
        mirror: test-time mirroring along the three axes.
        timings: seconds added per phase (`PHASES`), when given.
    """
    plan = members[0].plan
    values = list(plan["labels"].values())
    start = time.perf_counter()
    volume = Volume(case.cid, case.images, None)
    raw, spacing, _, paths = load_images(volume, len(plan["channels"]))
    _add(timings, "preprocess", start)

    def prepare(member: Member) -> np.ndarray:
        return prepare_images(raw, spacing, paths, member.plan["grid"])

    def predict(member: Member, image: np.ndarray) -> torch.Tensor:
        return case_probabilities(member.net, image, device, member.patch, batch_size, mirror)

    def to_host(mean: torch.Tensor) -> np.ndarray:
        return mean.cpu().numpy()  # K X Y Z probabilities at the target spacing

    def restore(probs: np.ndarray) -> np.ndarray:
        target = plan["grid"]["target_spacing"]
        return labels_on_source_grid(probs, source_shape(case), target, spacing, values)

    return average_labels(members, prepare, predict, to_host, restore, timings)


def predict_new(
    runs: Sequence[Path],
    input_dir: Path,
    output: Path,
    device: torch.device,
    batch_size: int | None = None,
    mirror: bool = False,
    timings: dict[str, float] | None = None,
) -> Path:
    """Write the label files of the scans of `input_dir` predicted by `runs` into `output`.

    Args:
        runs: training folders (plan.json, best.pt); several: an ensemble.
        input_dir: the scans, `<case>_<XXXX>.nii.gz` (or `.nii`).
        output: the output folder, replaced when complete (only an earlier output of this
            command, or a missing or empty folder).
        device: where the networks run.
        batch_size: slices (2D) or windows (3D) per forward pass, at least 1 (None:
            `BATCH_SIZES`).
        mirror: test-time mirroring along the three axes (3D runs only).
        timings: when given, receives the seconds of each phase (`PHASES`: the setup once,
            the others summed over the cases) and `cases`, their number; nothing is
            synchronised for it (the network's time ends when its result is on the host).

    Returns:
        `output`.

    Raises:
        PredictError, SliceError: see the module docstring; nothing is written then.
    """
    start = time.perf_counter()
    runs, input_dir, output = [Path(r) for r in runs], Path(input_dir), Path(output)
    if not runs:
        raise PredictError("--run: no run given")
    if batch_size is not None and batch_size < 1:
        raise PredictError(f"--batch_size {batch_size}: expected at least 1 (None: the default)")
    try:
        check_replaceable(output, TOOL, "--output")
    except FolderError as error:
        raise PredictError(str(error)) from None
    inside = input_dir.resolve()
    if inside == output.resolve() or output.resolve() in inside.parents:
        raise PredictError(
            f"--output {output} holds --input {input_dir}: the output folder is replaced, "
            "which would remove the scans; choose another --output"
        )
    plans = [(run, read_run_plan(run)) for run in runs]
    check_agreement(plans)
    plan = plans[0][1]
    dimensions = plan["dimensions"]
    if mirror and dimensions == 2:
        raise PredictError(
            "--mirror: test-time mirroring is for 3D runs (sliding windows); these runs are 2D"
        )
    cases = check_scans(input_dir, find_scans(input_dir), plan["channels"])
    members = [load_member(run, run_plan, device) for run, run_plan in plans]
    batch_size = BATCH_SIZES[dimensions] if batch_size is None else batch_size
    _add(timings, "setup", start)

    def labels_of(cid: str, case: Case) -> np.ndarray:
        if dimensions == 2:
            return labels_2d(members, case, device, batch_size, timings)
        return labels_3d(members, case, device, batch_size, mirror, timings)

    record = {
        "runs": [{"run": str(m.run), "best_epoch": m.best_epoch} for m in members],
        "dimensions": dimensions,
        "mirror": mirror,
        "input": str(input_dir),
        "cases": list(cases),
    }
    dest = write_cases(
        output,
        cases,
        labels_of,
        plan["labels"],
        record,
        tool=TOOL,
        flag="--output",
        metrics=False,
        timings=timings,
    )
    if timings is not None:
        timings["cases"] = len(cases)
    return dest


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


NEW_SCAN_FLAGS = ("--input", "--output", "--mirror")  # the flags of this mode alone


def add_new_scan_flags(parser: ArgumentParser, required: bool) -> None:
    """Add --input, --output and --mirror (`required`: the first two must be given)."""
    parser.add_argument(
        "--input",
        required=required,
        type=Path,
        help="new scans: a folder of <case>_<XXXX>.nii.gz images, XXXX the channel",
    )
    parser.add_argument(
        "--output", required=required, type=Path, help="new scans: folder for the label files"
    )
    parser.add_argument(
        "--mirror", action="store_true", help="new scans, 3D runs: test-time mirroring"
    )


def run_new_scans(args: argparse.Namespace) -> int:
    """Predict new scans from parsed flags (--run, --input, --output, --mirror, --cpu,
    --batch_size): 0, or 1 with one `error:` line (`steps.run_command`)."""
    runs = f"run {args.run[0]}" if len(args.run) == 1 else f"the {len(args.run)} runs"

    def call() -> Path:
        device = device_of(args)
        return predict_new(args.run, args.input, args.output, device, args.batch_size, args.mirror)

    return run_command(call, f"predictions of {runs} for the scans of {args.input}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, or 1 with one `error:` line)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        required=True,
        type=Path,
        nargs="+",
        help="a training's folder; several: an ensemble",
    )
    add_new_scan_flags(parser, required=True)
    parser.add_argument("--cpu", action="store_true", help="predict on the CPU despite a GPU")
    parser.add_argument(
        "--batch_size",
        type=batch_size_flag,
        default=None,
        help=f"slices (2D) or windows (3D) per pass, at least 1 ({DEFAULT_BATCH_SIZES})",
    )
    return run_new_scans(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
