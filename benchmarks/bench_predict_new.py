"""Predicting one new scan (boundary_loss.inference.predict_new): the time per case and its split.

`predict_new`: one test image of the nnU-Net stand-in (`standin_101`, two channels, 52 x 11 x 44
voxels at 0.9 x 3.0 x 1.1 mm), copied into a folder of new scans, predicted by one run of each
chain with the stand-in's `dataset.make DATA=synthetic` settings, its networks initialised (the
time does not depend on the weights):

- 2D: a UNet of width 8 (`{'nG': 8}`) on the slices of slice_nnunet.py at 64 x 64, along the
  coarse axis, 32 slices per forward pass;
- 3D: a PlainUNet3D of width 8 shaped by the plan of prepare_3d.py with patches of 32 x 8 x 32
  (benchmarks/bench_training_3d.py's prepared stand-in), 2 windows per forward pass.

Each run folder holds what main.py leaves (best.pt, args.json, plan.json from
`runfolder.writer.run_plan`). The whole call is timed, REPEAT times after a warm-up, and its
`timings` give the split: setup (the checks of the run and the scan, best.pt loaded), preprocess
(reading, normalising, slicing or resampling), network (forward passes, softmax, argmax, the
result on the host), restore (back to the scan's grid) and write (the NIfTI file and
predictions.json); medians of each. There is no baseline: the figure
is the time per case, the split in the notes. The stand-in and its slices are made once under
benchmarks/cache/.
"""

from __future__ import annotations

import datetime
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench_training_3d import prepared_standin
from benchmarks.harness import ROOT, Figure, machine_name
from boundary_loss.inference.predict_new import PHASES, predict_new
from boundary_loss.networks.registry import get_network
from boundary_loss.preprocessing.slice_nnunet import nnunet_dataset
from boundary_loss.preprocessing.slicing import slice_dataset
from boundary_loss.preprocessing.synthetic_nnunet import NNUNET_NAME, write_nnunet
from boundary_loss.runfolder.writer import run_plan

CACHE = ROOT / "benchmarks" / "cache"
CASE = "standin_101"  # a test image of the stand-in
SHAPE_2D = (64, 64)  # the stand-in's slices in dataset.make DATA=synthetic
NETWORKS = {2: ("UNet", {"nG": 8}), 3: ("PlainUNet3D", {"features": 8})}
REPEAT = 7
NAME = "predict-new: one new scan, {what}, {where}"
BASELINE = "none: the time per case, its split in the notes"


def standin_source(cache: Path = CACHE) -> Path:
    """The stand-in nnU-Net dataset under `cache` (written once)."""
    root = cache / "standin-source"
    if not (root / NNUNET_NAME / "dataset.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        write_nnunet(root)
    return root / NNUNET_NAME


def sliced_standin(source: Path, cache: Path = CACHE) -> Path:
    """The stand-in sliced by slice_nnunet.py at SHAPE_2D under `cache` (made once)."""
    sliced = cache / f"standin-2d-{'x'.join(map(str, SHAPE_2D))}"
    if not (sliced / "source.json").is_file():
        shutil.rmtree(sliced, ignore_errors=True)
        dataset = nnunet_dataset(source, 0, "auto")
        slice_dataset(dataset, source, sliced, shape=SHAPE_2D, workers=1, progress=False)
    return sliced


def make_run(folder: Path, data: Path, dimensions: int) -> Path:
    """A run folder as main.py leaves it, for an initialised network on `data`."""
    plan = run_plan(data)
    network, params = NETWORKS[dimensions]
    shaped = {**plan["grid"]["network"], **params} if dimensions == 3 else params
    torch.manual_seed(0)
    n_in, n_class = len(plan["channels"]), len(plan["labels"])
    net = get_network(network, n_in, n_class, **shaped)
    folder.mkdir(parents=True)
    args = {"network": network, "net_params": repr(params), "patch_size": None}
    best = {"model": net.state_dict(), "epoch": 0, "metric": 0.0, "network": network}
    torch.save(best | {"n_in": n_in, "n_class": n_class, "args": args}, folder / "best.pt")
    (folder / "args.json").write_text(json.dumps(args))
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder


def _figure(run: Path, scans: Path, out: Path, device: torch.device, what: str) -> Figure:
    """Time `predict_new` of the one scan by `run`, REPEAT times after a warm-up."""
    predict_new([run], scans, out, device)
    totals, phases = [], {phase: [] for phase in PHASES}
    for _ in range(REPEAT):
        timings: dict[str, float] = {}
        start = time.perf_counter()
        predict_new([run], scans, out, device, timings=timings)
        totals.append(time.perf_counter() - start)
        for phase in PHASES:
            phases[phase].append(timings[phase] / timings["cases"])
    total = statistics.median(totals) * 1e3
    split = {phase: statistics.median(values) * 1e3 for phase, values in phases.items()}
    parts = ", ".join(
        f"{phase} {ms:.1f} ms ({100 * ms / total:.0f}%)" for phase, ms in split.items()
    )
    other = total - sum(split.values())
    where = "cuda" if device.type == "cuda" else "CPU"
    print(f"predict-new {what}: {total:.1f} ms per case ({parts})", flush=True)
    return Figure(
        name=NAME.format(what=what, where=where),
        value=round(total, 1),
        unit="ms",
        baseline=BASELINE,
        baseline_value=None,
        ratio=None,
        target_ratio=None,
        same_values=None,
        machine=machine_name(),
        notes=f"Medians of {REPEAT} calls after a warm-up, one case per call: {parts}; the "
        f"rest ({other:.1f} ms) is the output folder's staging (made aside, then moved in).",
        date=datetime.date.today().isoformat(),
    )


def predict_new_bench() -> list[Figure]:
    """The two figures: a 2D run and a 3D run predicting the same new scan."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = standin_source()
    sliced = sliced_standin(source)
    prepared = prepared_standin()
    with tempfile.TemporaryDirectory(prefix="bench_predict_new_") as tmp:
        folder = Path(tmp)
        scans = folder / "scans"
        scans.mkdir()
        for path in sorted((source / "imagesTs").glob(f"{CASE}_*.nii.gz")):
            shutil.copy(path, scans / path.name)
        run_2d = make_run(folder / "run-2d", sliced, 2)
        run_3d = make_run(folder / "run-3d", prepared, 3)
        return [
            _figure(run_2d, scans, folder / "out-2d", device, "2D run (UNet nG 8, 64 x 64 slices)"),
            _figure(
                run_3d,
                scans,
                folder / "out-3d",
                device,
                "3D run (PlainUNet3D features 8, patches 32 x 8 x 32)",
            ),
        ]


BENCHES = {"predict_new": predict_new_bench}
