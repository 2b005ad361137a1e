"""Predict 3D NIfTI label volumes in the source geometry from a trained network.

Usage: python -m boundary_loss.inference.predict --run RUN --sliced SLICED --dest DIR
       [--source DATASET] [--lineage LINEAGE] [--cpu] [--batch_size 32]
   or: python -m boundary_loss.inference.predict --run RUN [RUN ...] --input DIR --output DIR
       [--mirror] [--cpu] [--batch_size N]

The second form, chosen by --input, predicts new scans with a 2D or 3D run or an ensemble of
runs (boundary_loss.inference.predict_new, docs/predict-new.md); the flags of one form are
refused in the other (exit status 2). The rest of this docstring is the first form's.

For a dataset sliced by preprocess/slice_nnunet.py (`SLICED`, holding `source.json` and
`split.json`) and a training of main.py on it (`RUN`, holding `best.pt`), writes into `DIR`:

- `<case><ending>`: one label volume per validation case (split.json) and per test case
  (imagesTs), in the source geometry: each case is read from the source dataset and prepared as
  the slicer prepared it (the same normalisation, axis and slice shape), the network's classes
  are resized back to the source in-plane size (nearest neighbour), the axes put back in their
  order, and the class indices turned into dataset.json's label values; the file keeps the
  source image's affine and header (uint8 voxels, no scaling, no display window, no intent), so
  it opens on the image in ITK-SNAP or 3D Slicer;
- `metrics.csv`: 3D Dice, HD and HD95 (mm) per validation case and class, computed from the
  written files against the source label files, in the source spacing (metrics; HD and HD95
  as medpy's, an empty class in both 0, in one of them the volume's diagonal);
- `predictions.json`: the run, its best epoch, the cases and the files.

The source dataset is the one named in `source.json`, or `--source` (the same data, moved).
Before anything is computed, three checks keep the predictions and their metrics honest:

- the run was trained on `SLICED`: the md5 of `SLICED/split.json` equals the one main.py
  recorded in the run's provenance.json (other data with the same class and channel counts would
  otherwise be normalised and scored as if the network had seen it);
- every source file read (the cases' images and labels) matches the lineage that pinned the
  dataset (`--lineage`, by default `lineage/<dataset folder name>.lineage` as dataset.make
  writes it; without one, a warning says the source is unchecked);
- `DIR` is missing, empty, or an earlier output of boundary_loss_predict (marked by
  `.written_by.json`, or holding `predictions.json`): a dataset, a run folder or any other
  folder is never replaced.

Everything is written into `DIR_tmp/DIR` and moved to `DIR` when complete
(`io.atomic.staged_folder`). Errors are one line: `error: <message>`, exit status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from boundary_loss.inference.predict_new import (
    NEW_SCAN_FLAGS,
    add_new_scan_flags,
    run_new_scans,
)
from boundary_loss.inference.steps import (
    BATCH_SIZES,
    DEFAULT_BATCH_SIZES,
    PredictError,
    batch_size_flag,
    check_counts,
    device_of,
    load_network,
    predict_volume,
    run_command,
    source_shape,
    to_source_grid,
    write_cases,
)
from boundary_loss.io.atomic import FolderError, check_replaceable
from boundary_loss.io.console import ArgumentParser
from boundary_loss.preprocessing.nnunet_format import Case, DatasetDescription, read_dataset
from boundary_loss.preprocessing.verify_lineage import LineageError, md5sum, read_lineage
from boundary_loss.preprocessing.volumes import Geometry, Volume, load_volume
from boundary_loss.runfolder.schema import divergence

# The name in the marker of a predictions folder, and the record file of the predictions folders
# made before the marker existed: boundary_loss_predict replaces only those (atomic.staged_folder).
TOOL, LEGACY = "predict.py", ("predictions.json",)
# Where dataset.make pins a dataset's files, by the dataset folder's name: lineage/ of the
# folder make runs in (the checkout), as dataset.make writes it.
LINEAGES = Path("lineage")


# ---------------------------------------------------------------------------------------------
# Which data: the run's, the slices', the source's
# ---------------------------------------------------------------------------------------------


def check_run_data(run: Path, sliced: Path) -> None:
    """Refuse a run trained on other sliced data than `sliced`.

    main.py records the md5 of the data's `split.json` (which names every case of each split,
    with the seed and the slice shape) in the run's provenance.json; predictions are only made
    with the slices whose split.json has that md5, so that the normalisation, the validation cases
    and the metrics are those of the data the network was trained on.

    Raises:
        PredictError: the sums differ, or the run records no data identity.
    """
    path = run / "provenance.json"
    try:
        data = json.loads(path.read_text()).get("data")
        recorded = data.get("split_md5") if isinstance(data, dict) else None
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, str):
        raise PredictError(
            f"{path}: no record of the data the run was trained on (data.split_md5, written by "
            "main.py); expected the folder of a training of main.py"
        )
    found = hashlib.md5((sliced / "split.json").read_bytes()).hexdigest()
    if found != recorded:
        trained_on = data.get("path", "?")
        raise PredictError(
            f"--run {run} was trained on {trained_on} (split.json md5 {recorded}), but --sliced "
            f"{sliced} is other data (split.json md5 {found}); give the sliced data of the run"
        )


def default_lineage(dataset: Path) -> Path | None:
    """`lineage/<dataset folder name>.lineage`, where dataset.make pins a dataset, if present."""
    path = LINEAGES / f"{Path(dataset).resolve().name}.lineage"
    return path if path.is_file() else None


def check_source(files: Sequence[Path], root: Path, lineage_path: Path) -> None:
    """Check the source files read for the predictions and their metrics against the lineage
    that pinned the dataset (preprocess/dataset_lineage.py), so that no prediction is made from,
    nor scored against, files edited since.

    Raises:
        PredictError: the lineage is unreadable, or a file is not pinned in it or has changed.
    """
    try:
        sums = read_lineage(lineage_path).sums
    except (LineageError, OSError) as error:
        raise PredictError(f"--lineage {lineage_path}: {error}") from None
    again = "restore it as pinned, or pin the dataset again (REPIN=1 with make) and rebuild"
    for path in files:
        name = Path(path).relative_to(root).as_posix()
        if name not in sums:
            raise PredictError(f"{path}: not pinned in {lineage_path}; {again}")
        found = md5sum(Path(path))
        if found != sums[name]:
            raise PredictError(
                f"{path}: changed since it was pinned in {lineage_path} (md5 {sums[name]}, now "
                f"{found}); {again}"
            )


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def read_record(path: Path) -> dict:
    """A JSON record of the prepared data (split.json, source.json).

    Raises:
        PredictError: missing or not JSON.
    """
    if not path.is_file():
        raise PredictError(
            f"{path}: file not found (expected a folder of slice_nnunet.py or prepare_3d.py)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PredictError(f"{path}: not valid JSON ({error})") from None


def predict(
    run: Path,
    sliced: Path,
    dest: Path,
    device: torch.device,
    batch_size: int,
    dataset: Path | None = None,
    lineage: Path | None = None,
) -> Path:
    """Write the predictions of `run` for the validation and test cases of `sliced` into `dest`.

    Args:
        run: the training's folder (best.pt).
        sliced: the slice_nnunet.py output.
        dest: the output folder, replaced when complete.
        device: where the network runs.
        batch_size: slices per forward pass.
        dataset: the source dataset folder (None: the one named in source.json).
        lineage: the lineage file pinning the source (None: `lineage/<its name>.lineage` when
            present, else the source is not checked, with a warning).

    Raises:
        PredictError, SliceError: see the module docstring.
    """
    try:
        check_replaceable(dest, TOOL, "--dest", LEGACY)
    except FolderError as error:
        raise PredictError(str(error)) from None
    if (sliced / "plan.json").is_file():
        raise PredictError(
            f"--sliced {sliced}: 3D data of prepare_3d.py; predict its trainings with "
            "boundary_loss.inference.predict3d"
        )
    source = read_record(sliced / "source.json")
    split = read_record(sliced / "split.json")
    try:
        description = read_dataset(dataset or source["dataset"])
        values = list(source["labels"].values())
        norms = tuple(tuple(n) for n in source["normalisation"])
        geometry = Geometry(int(source["axis"]), norms)
        shape = tuple(int(n) for n in split["shape"])
        val, test = list(split["val"]), list(source["test"])
    except (KeyError, TypeError, ValueError) as error:
        raise PredictError(
            f"{sliced}: source.json or split.json is not as slice_nnunet.py writes it ({error!r})"
        ) from None
    label_map = tuple((v, i) for i, v in enumerate(values) if v != i)
    training = {c.cid: c for c in description.training}
    testing = {c.cid: c for c in description.test}
    missing = [cid for cid in val if cid not in training] + [c for c in test if c not in testing]
    if missing:
        raise PredictError(f"{description.root}: cases {missing[:5]} of {sliced} are gone")
    cases = {**{cid: training[cid] for cid in val}, **{cid: testing[cid] for cid in test}}
    try:
        diverged = divergence(run).diverged
    except ValueError as error:  # a damaged metric array, named
        raise PredictError(str(error)) from None
    if diverged:
        check_run_data(run, sliced)
        return write_diverged(run, dest, description.root, val, test)
    net, best = load_network(run, device)
    check_counts(run, best, len(source["channels"]), len(values), sliced)
    check_run_data(run, sliced)
    check_lineage(description, cases, lineage)

    def labels_of(cid: str, case: Case) -> np.ndarray:
        volume = Volume(cid, case.images, None, case.four_d)
        images, _, _ = load_volume(volume, values, label_map, shape, geometry)
        classes = predict_volume(net, images, device, batch_size)
        return to_source_grid(classes, source_shape(case), geometry.axis, values)

    record = {"run": str(run), "best_epoch": best.get("epoch"), "dataset": str(description.root)}
    record |= {"validation": val, "test": test}
    return write_cases(
        dest, cases, labels_of, source["labels"], record, tool=TOOL, flag="--dest", legacy=LEGACY
    )


def check_lineage(description: DatasetDescription, cases: dict[str, Case], lineage: Path | None):
    """Check the files of `cases` against `lineage` (None: `lineage/<dataset name>.lineage` when
    present, else a warning that the source is unchecked).

    Raises:
        PredictError: see `check_source`.
    """
    lineage = lineage or default_lineage(description.root)
    if lineage is None:
        print(
            f"warning: {description.root} is not checked against a lineage (no --lineage, no "
            f"{LINEAGES / (description.root.name + '.lineage')}): the metrics use its files as "
            "they are now",
            file=sys.stderr,
        )
        return
    read = [f for c in cases.values() for f in (*c.images, c.label) if f is not None]
    check_source(read, description.root, lineage)


def write_diverged(run: Path, dest: Path, root: Path, val: list, test: list) -> Path:
    """The predictions folder of a diverged run (every 3D metric NaN, no best.pt): no NIfTI
    file, a metrics.csv without rows, and predictions.json saying why, so that the report and
    the archive are still made; a warning names the run."""
    print(
        f"warning: run {run} diverged (all its 3D metrics are NaN): no predictions", file=sys.stderr
    )
    record = {"run": str(run), "diverged": True, "dataset": str(root)}
    record |= {"validation": val, "test": test}
    # No case, so no labels to compute: write_cases writes only the records (and handles a
    # full disk like any predictions folder).
    return write_cases(dest, {}, None, {}, record, tool=TOOL, flag="--dest", legacy=LEGACY)


# The flags of each mode of boundary_loss_predict: the run's own data (one run), new scans
# (boundary_loss.inference.predict_new, one run or an ensemble).
OWN_DATA_FLAGS = ("--sliced", "--dest", "--source", "--lineage")


def build_parser(
    description: str, data: str, batch: str, batch_size: int | None, modes: str = "own"
) -> ArgumentParser:
    """The command line the prediction commands share.

    Args:
        description: the command's first docstring line.
        data: what --sliced is.
        batch: what a forward pass holds.
        batch_size: the default of --batch_size (None: chosen by the runs' dimensions).
        modes: "own" (--run RUN --sliced --dest: a run's own data) or "both" (that, or
            --run RUN [RUN ...] --input --output: new scans; `main` tells them apart).
    """
    parser = ArgumentParser(description=description)
    own = modes == "own"
    if own:
        parser.add_argument("--run", required=True, type=Path, help="a training's folder (best.pt)")
    else:
        several = "a training's folder (best.pt); several: an ensemble (new scans only)"
        parser.add_argument("--run", required=True, type=Path, nargs="+", help=several)
    parser.add_argument("--sliced", required=own, type=Path, help=data)
    parser.add_argument(
        "--dest", required=own, type=Path, help="folder for the NIfTI files (own data)"
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="the dataset folder (default: the one prepared)",
    )
    parser.add_argument(
        "--lineage",
        type=Path,
        default=None,
        help="the lineage file pinning the source (default: lineage/<dataset name>.lineage)",
    )
    if not own:
        add_new_scan_flags(parser, required=False)
    parser.add_argument("--cpu", action="store_true", help="predict on the CPU despite a GPU")
    default = f"default {batch_size}" if batch_size else DEFAULT_BATCH_SIZES
    parser.add_argument(
        "--batch_size",
        type=batch_size_flag,
        default=batch_size,
        help=f"{batch} per pass, at least 1 ({default})",
    )
    return parser


def run_own_data(predictor: Callable[..., Path], args: argparse.Namespace, *extra: object) -> int:
    """Run a command's own-data `predictor` on its parsed flags (then `extra`): 0, or 1 with one
    `error:` line (`steps.run_command`)."""

    def call() -> Path:
        return predictor(
            args.run,
            args.sliced,
            args.dest,
            device_of(args),
            args.batch_size,
            args.source,
            args.lineage,
            *extra,
        )

    return run_command(call, f"predictions of {args.run}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, or 1 with one `error:` line; 2 for flags
    that do not go together).

    With --input, the runs predict new scans (boundary_loss.inference.predict_new); otherwise
    one run predicts its own data (--sliced, --dest). The flags of one mode are refused in the
    other.
    """
    batch = "slices (2D) or windows (3D, new scans)"
    parser = build_parser(
        __doc__.splitlines()[0], "the slice_nnunet.py output", batch, None, modes="both"
    )
    parser.usage = (
        "%(prog)s --run RUN --sliced SLICED --dest DIR [--source DATASET] [--lineage LINEAGE] "
        "[--cpu] [--batch_size N]\n       %(prog)s --run RUN [RUN ...] --input DIR --output DIR "
        "[--mirror] [--cpu] [--batch_size N]"
    )
    parser.description = (
        f"{parser.description.rstrip('.')}; or, with --input, label files for new scans "
        "(boundary_loss.inference.predict_new)."
    )
    args = parser.parse_args(argv)
    given = {
        flag
        for flag in (*OWN_DATA_FLAGS, *NEW_SCAN_FLAGS)
        if getattr(args, flag[2:]) not in (None, False)
    }
    own = [flag for flag in OWN_DATA_FLAGS if flag in given]
    new = [flag for flag in NEW_SCAN_FLAGS if flag in given]
    if own and new:
        parser.error(
            f"{', '.join(new)} (predictions on new scans) and {', '.join(own)} (predictions of "
            "a run's own data) do not go together: give --input and --output, or --sliced and "
            "--dest"
        )
    if new:
        missing = [flag for flag in ("--input", "--output") if flag not in given]
        if missing:
            parser.error(f"new scans need --input and --output (missing: {', '.join(missing)})")
        return run_new_scans(args)
    missing = [flag for flag in ("--sliced", "--dest") if flag not in given]
    if missing:
        parser.error(
            f"the following arguments are required: {', '.join(missing)} (or --input and "
            "--output to predict new scans)"
        )
    if len(args.run) > 1:
        parser.error(
            f"--run: {len(args.run)} runs; an ensemble predicts new scans only (--input, "
            "--output): --sliced predicts the own data of one run"
        )
    args.run = args.run[0]
    args.batch_size = BATCH_SIZES[2] if args.batch_size is None else args.batch_size
    return run_own_data(predict, args)


if __name__ == "__main__":
    raise SystemExit(main())
