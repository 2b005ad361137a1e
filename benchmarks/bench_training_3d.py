"""3D training speed: patches per second of the training step, and the share of it spent waiting.

`training_3d`: main.py --dimensions 3 (in this process, through `boundary_loss.training.main`)
on the nnU-Net stand-in prepared by prepare_3d (patches of 32 x 8 x 32 voxels, the settings of
`make -f dataset.make DIM=3` on the stand-in: PlainUNet3D of width 8, batches of 2, GDL + boundary
loss on the whole-volume maps with the StealWeight schedule), EPOCHS epochs of ITERATIONS
batches, the first left out as warm-up. Two configurations alternate, ROUNDS runs each: loading
in the training process (`--workers 0`, the chain's default, the baseline) and WORKERS loading
processes (`--workers 2`). On a CPU torch runs one thread (`--threads 1`, the bench process's
count restored afterwards): on a small host shared with other work, torch's default of one thread
per core made identical runs differ up to five-fold (its threads wait on each other whenever
another process takes a core), and the faster step gives a larger, so stricter, waiting share.
From timing.json:

- patches/s of the training step (patches over the training pass's seconds, validation apart),
  with the loading processes against without;
- the share of the training pass spent waiting for the next batch (data_seconds /
  train_seconds), with the loading processes against without; the target is under 10%.

The stand-in is prepared once under benchmarks/cache/; each run's folder is removed afterwards.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.bench_training import Run, read_timing
from benchmarks.harness import ROOT, Figure, machine_name
from boundary_loss.preprocessing.prepare_3d import prepare_3d
from boundary_loss.preprocessing.synthetic_nnunet import write_nnunet
from boundary_loss.training import main as training

CACHE = ROOT / "benchmarks" / "cache"
PATCH = (32, 8, 32)  # the stand-in's patch in dataset.make DIM=3
EPOCHS = 3  # the first is warm-up
ITERATIONS = 20  # batches per epoch
BATCH = 2
NET_PARAMS = "{'features': 8}"
WORKERS = 2
ROUNDS = 3  # the two configurations alternate, ROUNDS runs each
CPU_THREADS = 1
WAIT_TARGET = 10.0  # %

LOSSES = (
    "[('GeneralizedDice', {'idc': [0, 1, 2, 3]}, 1), ('SurfaceLoss', {'idc': [1, 2, 3]}, 0.01)]"
)
FOLDERS = (
    "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]"
    "+[('gt_npy', gt_transform, True), ('3d_distmap', raw_npy_transform, False)]"
)
THROUGHPUT_NAME = "3D training: patches/s of the training step, --workers {workers}, {where}"
WAIT_NAME = "3D training: data waiting share of the training step, --workers {workers}, {where}"
BASELINE = "the same training with --workers 0 (patches loaded in the training process)"
WAIT_BASELINE = "the same share with --workers 0 (patches loaded in the training process)"


def prepared_standin(cache: Path = CACHE) -> Path:
    """The stand-in nnU-Net dataset prepared for the 3D chain, under `cache` (made once)."""
    root = cache / f"standin-3d-{'x'.join(map(str, PATCH))}"
    prepared = root / "prepared"
    if (prepared / "plan.json").is_file():
        return prepared
    shutil.rmtree(root, ignore_errors=True)
    tmp = root.with_name(root.name + "_tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    source = write_nnunet(tmp / "source")
    prepare_3d(source, tmp / "prepared", patch=PATCH, progress=False)
    shutil.rmtree(tmp / "source")
    tmp.rename(root)
    return prepared


def command(
    prepared: Path,
    workdir: Path,
    workers: int,
    *,
    epochs: int = EPOCHS,
    iterations: int = ITERATIONS,
    net_params: str = NET_PARAMS,
) -> list[str]:
    """main.py's arguments: the gdl_surface_steal training of dataset.make DIM=3 on the stand-in
    (on a CPU with CPU_THREADS threads)."""
    device = [] if torch.cuda.is_available() else ["--cpu", "--threads", str(CPU_THREADS)]
    return [
        *("--dataset", str(prepared), "--workdir", str(workdir), *device),
        *("--network", "PlainUNet3D", "--net_params", net_params),
        *("--n_class", "4", "--modalities", "2", "--metric_axis", "1", "2", "3"),
        *("--dimensions", "3", "--compute_3d_dice", "--grp_regex", r"(.+_\d+)_\d+"),
        *("--batch_size", str(BATCH), "--iterations", str(iterations), "--n_epoch", str(epochs)),
        *("--l_rate", "3e-3", "--seed", "0", "--losses", LOSSES, "--folders", FOLDERS),
        *("--scheduler", "StealWeight", "--scheduler_params", "{'to_steal': 0.01}"),
        *("--workers", str(workers)),
    ]


def train(prepared: Path, workers: int, cache: Path = CACHE, **sizes) -> Run:
    """One training in this process, in a scratch run folder (removed afterwards): its timing,
    the first epoch left out. The bench process's torch thread count is restored."""
    workdir = cache / "training-3d-run_tmp"
    threads = torch.get_num_threads()
    shutil.rmtree(workdir, ignore_errors=True)
    options = ("--workers", str(workers))
    start = time.perf_counter()
    try:
        code = training.main(command(prepared, workdir, workers, **sizes))
        wall = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"main.py --dimensions 3 --workers {workers} failed ({code})")
        return read_timing(workdir / "timing.json", options, wall)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(workdir, ignore_errors=True)


def training_3d(
    run: Callable[[Path, int], Run] = train, prepare: Callable[[], Path] = prepared_standin
) -> list[Figure]:
    """The throughput figure and the data waiting figure, from the same runs."""
    prepared = prepare()
    base_runs: list[Run] = []
    worker_runs: list[Run] = []
    for _ in range(ROUNDS):
        base_runs.append(run(prepared, 0))
        worker_runs.append(run(prepared, WORKERS))
    base_speed = statistics.median(r.slices_per_second for r in base_runs)
    speed = statistics.median(r.slices_per_second for r in worker_runs)
    base_wait = statistics.median(r.wait_share for r in base_runs)
    wait = statistics.median(r.wait_share for r in worker_runs)
    where = "cuda" if torch.cuda.is_available() else "CPU"
    runs = (
        f"main.py --dimensions 3 in-process on the prepared nnU-Net stand-in ({len(base_runs)} "
        f"runs of each configuration alternated, medians): PlainUNet3D {NET_PARAMS}, patches of "
        f"{' x '.join(map(str, PATCH))}, batches of {BATCH}, {EPOCHS} epochs of {ITERATIONS} "
        "batches, the first left out as warm-up; GDL + boundary loss (whole-volume maps cut with "
        "each patch), StealWeight"
        + ("" if torch.cuda.is_available() else f"; --threads {CPU_THREADS}")
    )

    def listed(runs: list[Run], of: Callable[[Run], float]) -> str:
        return ", ".join(f"{of(r):.1f}" for r in runs)

    machine, date = machine_name(), time.strftime("%Y-%m-%d")
    throughput = Figure(
        name=THROUGHPUT_NAME.format(workers=WORKERS, where=where),
        value=round(speed, 2),
        unit="patches/s",
        baseline=BASELINE,
        baseline_value=round(base_speed, 2),
        ratio=round(speed / base_speed, 2),
        target_ratio=None,
        same_values=None,
        machine=machine,
        notes=f"higher is better; ratio = with / without the loading processes. {runs}. "
        f"Patches/s of each run: --workers 0 {listed(base_runs, lambda r: r.slices_per_second)};"
        f" --workers {WORKERS} {listed(worker_runs, lambda r: r.slices_per_second)}. Outputs "
        "not compared (timing only).",
        date=date,
    )
    share = Figure(
        name=WAIT_NAME.format(workers=WORKERS, where=where),
        value=round(wait, 2),
        unit="%",
        baseline=WAIT_BASELINE,
        baseline_value=round(base_wait, 2),
        ratio=round(base_wait / wait, 2) if wait > 0 else None,
        target_ratio=None,
        same_values=None,
        machine=machine,
        notes="lower is better: the time spent waiting for the next batch of patches "
        "(host-to-device copy included) over the training pass, from timing.json "
        "(data_seconds / train_seconds); ratio = share without / with the loading processes; "
        f"target under {WAIT_TARGET:g}%. The runs of the 3D training throughput figure; shares "
        f"of each run: --workers 0 {listed(base_runs, lambda r: r.wait_share)}%; --workers "
        f"{WORKERS} {listed(worker_runs, lambda r: r.wait_share)}%.",
        date=date,
        target_max=WAIT_TARGET,
    )
    return [throughput, share]


BENCHES = {"training_3d": training_3d}
