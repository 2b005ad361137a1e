"""Predict 3D NIfTI label volumes in the source geometry from a 3D training.

Usage: python -m boundary_loss.inference.predict3d --run RUN --sliced PREPARED --dest DIR
       [--source DATASET] [--lineage LINEAGE] [--mirror] [--cpu] [--batch_size 2]

For data prepared by preprocess/prepare_3d.py (`PREPARED`, holding `plan.json`, `split.json` and
`cases.json`) and a 3D training of main.py on it (`RUN`, holding `best.pt`), writes into `DIR`
what boundary_loss.inference.predict writes for a 2D training:

- `<case><ending>`: one label volume per validation case and per test case (imagesTs), in its
  own geometry: each case is read from the source dataset, normalised and resampled to the
  plan's target spacing as prepare_3d.py did, predicted whole by sliding windows (the training
  patch, overlap 0.5, Gaussian importance; `--mirror`: test-time mirroring along every axis),
  its class probabilities resampled back to the case's own grid (linear, per class, as
  nnU-Net does) and turned into classes there, then into dataset.json's label values; the file
  keeps the source image's affine and header;
- `metrics.csv`: 3D Dice, HD and HD95 (mm) per validation case and class, from the written files
  against the source label files, at the source spacing;
- `predictions.json`: the run, its best epoch, the cases and the files.

The same checks as the 2D predictions come first: the run was trained on `PREPARED` (the md5 of
its split.json), the source files match their lineage, and `DIR` is missing, empty or an earlier
output of this command. Errors are one line: `error: <message>`, exit status 1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from boundary_loss.inference.predict import (
    LEGACY,
    TOOL,
    build_parser,
    check_lineage,
    check_run_data,
    read_record,
    run_own_data,
    write_diverged,
)
from boundary_loss.inference.steps import (
    BATCH_SIZES,
    PredictError,
    case_probabilities,
    check_counts,
    labels_on_source_grid,
    load_network,
    run_patch,
    source_shape,
    write_cases,
)
from boundary_loss.io.atomic import FolderError, check_replaceable
from boundary_loss.preprocessing.nnunet_format import Case, read_dataset
from boundary_loss.preprocessing.plan3d import read_plan
from boundary_loss.preprocessing.prepare_3d import prepare_images
from boundary_loss.preprocessing.volumes import Volume, load_images
from boundary_loss.runfolder.schema import divergence


def check_plan(run: Path, prepared: Path) -> None:
    """Refuse a run whose data was prepared with another plan than `prepared/plan.json` (data
    prepared again with another patch, spacing or normalisation under the same split).

    Raises:
        PredictError: the recorded plan's md5 differs, or none was recorded.
    """
    try:
        data = json.loads((run / "provenance.json").read_text()).get("data", {})
        recorded = data.get("plan_md5")
    except (OSError, ValueError, AttributeError):
        recorded = None
    found = hashlib.md5((prepared / "plan.json").read_bytes()).hexdigest()
    if recorded != found:
        raise PredictError(
            f"--run {run} was trained with another plan than {prepared / 'plan.json'} "
            f"(md5 {recorded}, now {found}): the data was prepared again since; predict with the "
            "data the run was trained on, or train again"
        )


def predict_3d(
    run: Path,
    prepared: Path,
    dest: Path,
    device: torch.device,
    batch_size: int,
    dataset: Path | None = None,
    lineage: Path | None = None,
    mirror: bool = False,
) -> Path:
    """Write the predictions of the 3D training `run` for the validation and test cases of the
    dataset prepared in `prepared` into `dest`.

    Args:
        run: the training's folder (best.pt).
        prepared: the prepare_3d.py output the run was trained on.
        dest: the output folder, replaced when complete.
        device: where the network runs.
        batch_size: windows per forward pass.
        dataset: the source dataset folder (None: the one prepare_3d.py read).
        lineage: the lineage file pinning the source (None: `lineage/<its name>.lineage` when
            present, else the source is not checked, with a warning).
        mirror: test-time mirroring along the three axes (8 passes per window).

    Raises:
        PredictError, SliceError: see the module docstring.
    """
    try:
        check_replaceable(dest, TOOL, "--dest", LEGACY)
    except FolderError as error:
        raise PredictError(str(error)) from None
    try:
        plan = read_plan(prepared / "plan.json")
    except (OSError, ValueError) as error:
        raise PredictError(f"{error} (--sliced: expected a folder of prepare_3d.py)") from None
    split = read_record(prepared / "split.json")
    try:
        description = read_dataset(dataset or plan["dataset"])
        values = [int(value) for _, value in plan["labels"]]
        val = list(split["val"])
    except (KeyError, TypeError, ValueError) as error:
        raise PredictError(
            f"{prepared}: plan.json or split.json is not as prepare_3d.py writes it ({error!r})"
        ) from None
    training = {c.cid: c for c in description.training}
    test = [c.cid for c in description.test]
    missing = [cid for cid in val if cid not in training]
    if missing:
        raise PredictError(f"{description.root}: cases {missing[:5]} of {prepared} are gone")
    cases = {**{cid: training[cid] for cid in val}, **{c.cid: c for c in description.test}}
    try:
        diverged = divergence(run).diverged
    except ValueError as error:
        raise PredictError(str(error)) from None
    if diverged:
        check_run_data(run, prepared)
        return write_diverged(run, dest, description.root, val, test)
    net, best = load_network(run, device, dimensions=3, plan=plan)
    channels = len(plan["channels"])
    check_counts(run, best, channels, len(values), prepared)
    check_run_data(run, prepared)
    check_plan(run, prepared)
    if list(description.channels) != list(plan["channels"]):
        raise PredictError(
            f"{description.root}: channels {list(description.channels)}, but {prepared} was "
            f"prepared from channels {plan['channels']}; give the dataset of the run (--source)"
        )
    check_lineage(description, cases, lineage)
    patch = run_patch(best, plan)

    def labels_of(cid: str, case: Case) -> np.ndarray:
        raw, spacing, _, paths = load_images(Volume(cid, case.images, None, case.four_d), channels)
        image = prepare_images(raw, spacing, paths, plan)
        probs = case_probabilities(net, image, device, patch, batch_size, mirror)
        return labels_on_source_grid(
            probs.cpu().numpy(), source_shape(case), plan["target_spacing"], spacing, values
        )

    record = {"run": str(run), "best_epoch": best.get("epoch"), "dataset": str(description.root)}
    record |= {"dimensions": 3, "mirror": mirror, "validation": val, "test": test}
    label_values = {name: int(value) for name, value in plan["labels"]}
    return write_cases(
        dest, cases, labels_of, label_values, record, tool=TOOL, flag="--dest", legacy=LEGACY
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, or 1 with one `error:` line)."""
    data = "the prepared data of the run (prepare_3d.py output)"
    parser = build_parser(__doc__.splitlines()[0], data, "windows", BATCH_SIZES[3])
    parser.add_argument(
        "--mirror", action="store_true", help="test-time mirroring along the three axes"
    )
    args = parser.parse_args(argv)
    return run_own_data(predict_3d, args, args.mirror)


if __name__ == "__main__":
    raise SystemExit(main())
