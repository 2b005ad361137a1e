"""Training speed: main.py as the makefiles run it, with and without the speed options.

- `training_throughput`: main.py (a subprocess) for 3 epochs of the paper's ISLES training (GDL +
  boundary loss with the StealWeight schedule) on a generated sliced dataset, once as the original
  ran (no option, no loading process, every file read at every step) and once with the speed
  options of the device. Slices per second from timing.json, the first epoch left out as warm-up;
  the two configurations alternate, twice each. With it, `data_wait_share`: the share of the
  training pass spent waiting for the next batch (host-to-device copy included), with the options
  against without; on a GPU it should stay under 10%.

  On CUDA: 480 slices of 5 x 256 x 256, the UNet of the paper, options `--bf16 --channels_last
  --in_memory --workers 4`. On a CPU: 48 slices of 5 x 128 x 128, a UNet of width 8; the options
  are `--in_memory` and, in turn, each of `--channels_last`, `--device_dist_maps`, `--bf16` and
  `--workers 1` that made the options kept so far at least 5% faster, measured back to back in
  2-epoch runs (one epoch measured) in this run (the notes say what each one did).
- `isles_chain`: the wall time of `make -f isles.make DATA=synthetic-full` (4 trainings x 100
  epochs on the real-size synthetic ISLES cohort, then the plots, report and archive) in a scratch
  copy of the repository under benchmarks/cache/, on a machine with CUDA only; elsewhere it is
  written as not yet measured, at once.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.harness import ROOT, Figure, machine_name, not_yet_measured
from tests.sliced_data import make_sliced_dataset

CACHE = ROOT / "benchmarks" / "cache"
MAIN = ROOT / "main.py"
EPOCHS = 3  # the first is warm-up
PROBE_EPOCHS = 2  # runs that only choose the CPU options: one epoch measured
ROUNDS = 2  # baseline and options alternate, ROUNDS runs each
FASTER = 1.05  # a CPU option is kept when it speeds a run up by at least this factor
WAIT_TARGET = 10.0  # %, on a GPU

LOSSES = "[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]"
FOLDERS = (
    "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True), "
    "('gt_npy', dist_map_transform, False)]"
)
THROUGHPUT_BASELINE = "the same training without options (workers 0, files read every step)"
WAIT_BASELINE = "the same share without the options (workers 0, files read every step)"


@dataclass(frozen=True)
class Setting:
    """The dataset and network of the training figure on one kind of device."""

    size: int  # slice side
    n_train: int  # training patients
    n_val: int
    slices: int  # per patient
    net_params: str
    batch_size: int
    device_args: tuple[str, ...]

    @property
    def describe(self) -> str:
        net = "UNet" if self.net_params == "{}" else f"UNet {self.net_params}"
        return (
            f"{self.n_train * self.slices} training slices of 5 x {self.size} x {self.size}, "
            f"{net}, batch {self.batch_size}"
        )


GPU_SETTING = Setting(256, 40, 4, 12, "{}", 8, ())
CPU_SETTING = Setting(128, 4, 1, 12, "{'nG': 8}", 8, ("--cpu",))
GPU_OPTIONS = ("--bf16", "--channels_last", "--in_memory", "--workers", "4")
CPU_CANDIDATES = (("--channels_last",), ("--device_dist_maps",), ("--bf16",), ("--workers", "1"))


@dataclass(frozen=True)
class Run:
    """One main.py run, its warm-up epoch left out."""

    options: tuple[str, ...]
    slices: int
    train_seconds: float
    data_seconds: float
    wall_seconds: float

    @property
    def slices_per_second(self) -> float:
        return self.slices / self.train_seconds

    @property
    def wait_share(self) -> float:
        """Percent of the training pass spent waiting for the next batch."""
        return 100 * self.data_seconds / self.train_seconds


def read_timing(path: Path, options: tuple[str, ...] = (), wall_seconds: float = 0.0) -> Run:
    """The Run of a main.py timing.json (one object per epoch), without the first epoch."""
    epochs = sorted(json.loads(path.read_text()), key=lambda e: e["epoch"])[1:]
    if not epochs:
        raise ValueError(f"{path}: a single epoch, none left after the warm-up")
    return Run(
        options=tuple(options),
        slices=sum(int(e["train_slices"]) for e in epochs),
        train_seconds=sum(float(e["train_seconds"]) for e in epochs),
        data_seconds=sum(float(e["data_seconds"]) for e in epochs),
        wall_seconds=wall_seconds,
    )


def dataset(setting: Setting) -> Path:
    """The generated sliced dataset of a setting, under benchmarks/cache/ (made once)."""
    root = CACHE / f"training-{setting.size}-{setting.n_train}x{setting.slices}"
    if not (root / "spacing_3d.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        tmp = root.with_name(root.name + "_tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_sliced_dataset(
            tmp,
            n_train=setting.n_train,
            n_val=setting.n_val,
            slices=setting.slices,
            size=setting.size,
            K=2,
            C=5,
        )
        tmp.rename(root)
    return root


def command(
    data: Path, workdir: Path, setting: Setting, options, main: Path = MAIN, epochs: int = EPOCHS
) -> list[str]:
    """main.py as isles.make runs the gdl_surface_steal training."""
    return [
        sys.executable,
        str(main),
        "--dataset",
        str(data),
        "--workdir",
        str(workdir),
        "--network",
        "UNet",
        "--net_params",
        setting.net_params,
        "--n_class",
        "2",
        "--modalities",
        "5",
        "--metric_axis",
        "1",
        "--grp_regex",
        r"(case_\d+_\d+)_\d+",
        "--n_epoch",
        str(epochs),
        "--batch_size",
        str(setting.batch_size),
        "--l_rate",
        "1e-3",
        "--seed",
        "0",
        "--use_spacing",
        "--compute_3d_dice",
        "--losses",
        LOSSES,
        "--folders",
        FOLDERS,
        "--scheduler",
        "StealWeight",
        "--scheduler_params",
        "{'to_steal': 0.01}",
        *setting.device_args,
        *options,
    ]


def train(data: Path, setting: Setting, options=(), main: Path = MAIN, epochs: int = EPOCHS) -> Run:
    """Run main.py once in a scratch workdir (removed afterwards) and read its timing.json."""
    workdir = CACHE / "training-run_tmp"
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run(
        command(data, workdir, setting, options, main, epochs),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    try:
        if done.returncode != 0:
            raise RuntimeError(
                f"main.py {' '.join(options) or '(no option)'} failed ({done.returncode}):\n"
                f"{done.stderr[-3000:]}"
            )
        if not (workdir / "timing.json").exists():
            raise RuntimeError(f"main.py {' '.join(options)} wrote no timing.json")
        return read_timing(workdir / "timing.json", tuple(options), wall)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _median_run(runs: list[Run]) -> tuple[float, float]:
    """Median slices/s and median wait share of repeated runs."""
    return (
        statistics.median(r.slices_per_second for r in runs),
        statistics.median(r.wait_share for r in runs),
    )


def choose_cpu_options(data: Path, setting: Setting, main: Path = MAIN) -> tuple[tuple, str]:
    """`--in_memory` plus, greedily, each candidate that made the options chosen so far at least
    FASTER times faster: the two measured back to back in PROBE_EPOCHS runs (so that interactions,
    such as a loading process competing with torch's threads, count); and a note of the verdicts.
    """
    kept, said, factors = ["--in_memory"], [], {}
    for candidate in CPU_CANDIDATES:
        current = train(data, setting, tuple(kept), main, PROBE_EPOCHS)
        run = train(data, setting, (*kept, *candidate), main, PROBE_EPOCHS)
        factor = factors[candidate[0]] = run.slices_per_second / current.slices_per_second
        if factor >= FASTER:
            verdict = "kept"
        else:
            verdict = "slower, left out" if factor < 1 else f"within {FASTER - 1:.0%}, left out"
        said.append(
            f"{' '.join(candidate)} {factor:.2f}x ({run.slices_per_second:.1f} against "
            f"{current.slices_per_second:.1f} slices/s, {verdict})"
        )
        if factor >= FASTER:
            kept += candidate
    note = (
        "Options on this CPU, from --in_memory, each candidate added to those kept so far and "
        f"measured against them back to back ({PROBE_EPOCHS}-epoch runs, the first epoch left "
        f"out): {'; '.join(said)}."
    )
    if factors.get("--bf16", 1) < 1 and not cpu_has_bf16():
        note += (
            " bf16 autocast is slower here: the CPU lists no bf16 instructions (avx512_bf16, "
            "amx_bf16) in /proc/cpuinfo, so bf16 convolutions run without hardware support."
        )
    return tuple(kept), note


def cpu_has_bf16() -> bool:
    """Whether /proc/cpuinfo lists bf16 instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_throughput(main: Path = MAIN) -> list[Figure]:
    """The throughput figure and the data wait share figure, from the same runs."""
    cuda = torch.cuda.is_available()
    setting = GPU_SETTING if cuda else CPU_SETTING
    data = dataset(setting)
    if cuda:
        options, chosen = GPU_OPTIONS, "The options of a GPU, set in advance."
    else:
        options, chosen = choose_cpu_options(data, setting, main)
    base_runs, option_runs = [], []
    for _ in range(ROUNDS):
        base_runs.append(train(data, setting, (), main))
        option_runs.append(train(data, setting, options, main))
    base_speed, base_wait = _median_run(base_runs)
    speed, wait = _median_run(option_runs)
    where = "cuda" if cuda else "CPU"
    runs = (
        f"{setting.describe}, GDL + boundary loss (distance maps from gt_npy), {EPOCHS} epochs "
        f"per run, the first left out; {ROUNDS} runs of each configuration alternated (medians)"
    )
    machine, date = machine_name(), time.strftime("%Y-%m-%d")
    throughput = Figure(
        name=f"training throughput, main.py with speed options, {where}",
        value=round(speed, 2),
        unit="slices/s",
        baseline=THROUGHPUT_BASELINE,
        baseline_value=round(base_speed, 2),
        ratio=round(speed / base_speed, 2),
        target_ratio=None,
        same_values=None,
        machine=machine,
        notes=f"{runs}. Options: {' '.join(options)}; slices/s of each run: baseline "
        f"{', '.join(f'{r.slices_per_second:.1f}' for r in base_runs)}, options "
        f"{', '.join(f'{r.slices_per_second:.1f}' for r in option_runs)}. {chosen} Outputs not "
        "compared (bf16 and the loading order change the rounding).",
        date=date,
    )
    share = Figure(
        name=f"data wait share of the training pass, main.py with speed options, {where}",
        value=round(wait, 2),
        unit="%",
        baseline=WAIT_BASELINE,
        baseline_value=round(base_wait, 2),
        ratio=round(base_wait / wait, 2) if wait > 0 else None,
        target_ratio=None,
        same_values=None,
        machine=machine,
        notes="lower is better: the time spent waiting for the next batch (host-to-device copy "
        "included) over the training pass, from timing.json; ratio = share without / with the "
        f"options; {'target under 10% on a GPU' if cuda else 'no target on a CPU'}. The runs "
        "of the training throughput figure.",
        date=date,
        target_max=WAIT_TARGET if cuda else None,
    )
    return [throughput, share]


CHAIN_NAME = "isles.make DATA=synthetic-full, the whole chain (4 trainings x 100 epochs)"
CHAIN_BASELINE = "none: the chain's wall time"
CHAIN_NEEDS = "needs a GPU: 4 trainings x 100 epochs at real size"


def scratch_copy(dest: Path) -> Path:
    """The working tree's files (tracked, and untracked but not ignored: no data/, results/,
    .venv or benchmarks/cache/) copied to `dest`, replacing what was there."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    shutil.rmtree(dest, ignore_errors=True)
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def isles_chain() -> Figure:
    if not torch.cuda.is_available():
        return not_yet_measured(CHAIN_NAME, CHAIN_NEEDS, unit="min", baseline=CHAIN_BASELINE)
    scratch = scratch_copy(CACHE / "isles-chain")
    print(
        f"isles_chain: make -f isles.make DATA=synthetic-full in {scratch}: 4 trainings x 100 "
        "epochs at real size, this takes long",
        flush=True,
    )
    start = time.perf_counter()
    done = subprocess.run(
        ["make", "-f", "isles.make", "DATA=synthetic-full", f"CC={sys.executable}"],
        cwd=scratch,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"make -f isles.make DATA=synthetic-full failed ({done.returncode}) in {scratch}:\n"
            f"{done.stderr[-3000:]}"
        )
    results = scratch / "results" / "isles-synthetic-full"
    trainings = []
    for timing in sorted(results.glob("*/timing.json")):
        epochs = json.loads(timing.read_text())
        seconds = sum(e["train_seconds"] + e.get("val_seconds", 0) for e in epochs)
        trainings.append(f"{timing.parent.name} {seconds / 60:.1f} min")
    shutil.rmtree(scratch)
    return Figure(
        name=CHAIN_NAME,
        value=round(wall / 60, 1),
        unit="min",
        baseline=CHAIN_BASELINE,
        baseline_value=None,
        ratio=None,
        target_ratio=None,
        same_values=None,
        machine=machine_name(),
        notes="generation of the cohort, unpacking, slicing, 4 trainings (UNet, 100 epochs, one "
        "after the other), plots, report and archive, in a scratch copy of the repository; "
        f"training and validation passes: {', '.join(trainings) or 'no timing.json found'}.",
        date=time.strftime("%Y-%m-%d"),
    )


BENCHES = {"training_throughput": training_throughput, "isles_chain": isles_chain}
