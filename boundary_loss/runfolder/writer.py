"""Writing a run folder: every file main.py leaves in `--workdir`, complete or absent.

The folder's schema (what each array holds, how its columns are named) is `runfolder.py`; this
module writes it. Every file goes through `atomic.atomic_write`: written under a temporary name in
its folder and renamed when complete, so an interrupted or failed write (a full disk included)
never leaves a half-written product. Checkpoints are serialised in memory first, so that a full
disk is reported as such (torch's own writer turns it into an opaque RuntimeError).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import nn

from boundary_loss.io.atomic import atomic_write, write_text_atomic
from boundary_loss.io.distributed import Context
from boundary_loss.preprocessing.plan3d import norm_entry, read_plan
from boundary_loss.runfolder.ranking import nan_mean_std
from boundary_loss.runfolder.schema import csv_columns

ROOT = Path(__file__).resolve().parent
PACKAGES = ("torch", "numpy", "scipy", "edt", "nibabel", "scikit-image", "matplotlib", "pillow")


class RunConfig(Protocol):
    """What the writer reads of a training's configuration (`training.config.Config`)."""

    @property
    def recorded(self) -> Mapping[str, object]: ...  # every argument as given, by flag

    @property
    def dataset(self) -> Path: ...

    @property
    def seed(self) -> int: ...

    @property
    def csv(self) -> str: ...

    @property
    def network(self) -> str: ...

    @property
    def modalities(self) -> int: ...

    @property
    def n_class(self) -> int: ...


def save_text(path: Path, text: str) -> None:
    """A UTF-8 text file, atomically."""
    write_text_atomic(path, text)


def save_json(path: Path, value: object, indent: int = 2) -> None:
    """A JSON file, atomically."""
    write_text_atomic(path, json.dumps(value, indent=indent))


def save_torch(path: Path, obj: object) -> None:
    """A `torch.save` file (state dicts and plain data), serialised in memory then written."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def save_npy(path: Path, array: np.ndarray) -> None:
    """A `.npy` file, atomically."""
    atomic_write(path, lambda handle: np.save(handle, array))


def save_predictions(classes: np.ndarray, stems: Sequence[str], folder: Path) -> None:
    """Predicted class maps (`B H W` uint8) as png, one per stem (class indices, as gt/)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seg, stem in zip(classes, stems, strict=True):
        path = folder / f"{stem}.png"
        try:
            Image.fromarray(seg).save(path)
        except OSError as error:  # a failed write names no file: name it
            raise OSError(error.errno, error.strerror, str(path)) from None


def git(*args: str) -> str:
    """The output of a git command in the repository, "" when git or the checkout is missing."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def dataset_identity(dataset: str | Path) -> dict[str, str | None]:
    """Where the sliced data is and which it is: its absolute path and the md5 of its
    `split.json` (which names every patient of each split), so that runs on the same data
    are recognised whatever the folder was called, and runs on other data are not; for 3D
    data, also the md5 of its `plan.json` (the normalisation, spacing, patch and network)."""
    path = Path(dataset).resolve()
    split = path / "split.json"
    digest = hashlib.md5(split.read_bytes()).hexdigest() if split.is_file() else None
    identity = {"path": str(path), "split_md5": digest}
    plan = path / "plan.json"
    if plan.is_file():
        identity["plan_md5"] = hashlib.md5(plan.read_bytes()).hexdigest()
    return identity


def run_plan(dataset: str | Path) -> dict | None:
    """What preprocesses a new scan as the run's training data was preprocessed, without that
    data: the run's `plan.json` (docs/run-folder.md), from the records of the data's preparer.

    Args:
        dataset: the training data (`--dataset`): slices of preprocess/slice_nnunet.py (holding
            source.json and split.json) or volumes of preprocess/prepare_3d.py (plan.json).

    Returns:
        `dimensions` (2 or 3), `name` (the dataset's), `channels` (dataset.json's names, in
        order), `labels` (name -> value, in class-index order), `normalisation` (one entry per
        channel, as the 3D plan writes them: `plan3d.norm_entry`) and `grid`: in 2D the slice
        `axis` and slice `shape`, in 3D the whole plan of prepare_3d.py (target spacing, patch,
        the network's pools and kernels, ...). None for data without those records (the
        slicers of ISLES, WMH and ACDC).

    Raises:
        ValueError: the records are there but not as their preparer writes them.
    """
    folder = Path(dataset)
    if (folder / "plan.json").is_file():
        grid = read_plan(folder / "plan.json")
        return {
            "dimensions": 3,
            "name": grid["name"],
            "channels": list(grid["channels"]),
            "labels": {name: int(value) for name, value in grid["labels"]},
            "normalisation": list(grid["normalisation"]),
            "grid": grid,
        }
    if not ((folder / "source.json").is_file() and (folder / "split.json").is_file()):
        return None
    source = json.loads((folder / "source.json").read_text(encoding="utf-8"))
    split = json.loads((folder / "split.json").read_text(encoding="utf-8"))
    try:
        channels = [str(c) for c in source["channels"]]
        norms = [tuple(n) for n in source["normalisation"]]
        if len(norms) != len(channels):
            raise ValueError(f"{len(norms)} normalisations for {len(channels)} channels")
        return {
            "dimensions": 2,
            "name": str(source.get("name", folder.name)),
            "channels": channels,
            "labels": {str(name): int(value) for name, value in source["labels"].items()},
            "normalisation": [norm_entry(*pair) for pair in zip(channels, norms, strict=True)],
            "grid": {"axis": int(source["axis"]), "shape": [int(n) for n in split["shape"]]},
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{folder}: source.json or split.json is not as slice_nnunet.py writes it ({error!r})"
        ) from None


def provenance(
    config: RunConfig, argv: Sequence[str], device: torch.device, context: Context
) -> dict:
    """What produced this run: code version, command, data, packages, device. No environment
    dump (it can hold secrets)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "commit": git("rev-parse", "HEAD").strip() or "unknown (not a git checkout)",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip()),
        "command": shlex.join(["python", "main.py", *argv]),
        "data": dataset_identity(config.dataset),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "processes": context.world_size,
        "seed": config.seed,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_start(
    workdir: Path, config: RunConfig, argv: Sequence[str], device, context: Context
) -> None:
    """args.json (the arguments as given), provenance.json, git.diff and, for data of
    slice_nnunet.py or prepare_3d.py, plan.json (`run_plan`) of a new run.

    Records of the data that are not as their preparer writes them leave the run without
    plan.json, with a warning: the training goes on, only predictions on new scans need it.
    """
    save_json(workdir / "args.json", config.recorded)
    save_json(workdir / "provenance.json", provenance(config, argv, device, context))
    save_text(workdir / "git.diff", git("diff", "HEAD"))
    try:
        plan = run_plan(config.dataset)
    except (OSError, ValueError) as error:
        print(f"warning: no plan.json in {workdir}: {error}", file=sys.stderr)
        plan = None
    if plan is None:
        (workdir / "plan.json").unlink(missing_ok=True)  # a run folder used before, other data
    else:
        save_json(workdir / "plan.json", plan, indent=1)


def write_csv(
    path: Path,
    history: Mapping[str, np.ndarray],
    lrs: Sequence[float],
    weights: Sequence,
    loss_names: Sequence[str],
) -> None:
    """metrics.csv: one row per epoch, the mean over slices/patients of every column of every
    per-epoch array (headers from `runfolder.csv_columns`)."""
    epochs = len(lrs)
    header = ["epoch", "lr", "weights"]
    rows = [[e, f"{lrs[e]:.3g}", json.dumps(weights[e])] for e in range(epochs)]
    for name, array in history.items():
        if array.ndim != 3 or len(array) != epochs:
            continue
        per = nan_mean_std(array, axis=1)[0]  # epoch x (class, loss term or count)
        header += csv_columns(name, per.shape[1], loss_names)
        for e in range(epochs):
            rows[e] += [f"{v:.6g}" for v in per[e]]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def write_epoch(
    workdir: Path,
    config: RunConfig,
    history: Mapping[str, list[np.ndarray]],
    lrs: Sequence[float],
    weight_log: Sequence,
    loss_names: Sequence[str],
    timing: Sequence[dict],
) -> None:
    """Every per-epoch product after an epoch: the arrays, metrics.csv and timing.json."""
    stacked = {name: np.stack(values) for name, values in history.items()}
    for name, array in stacked.items():
        save_npy(workdir / f"{name}.npy", array)
    write_csv(workdir / config.csv, stacked, lrs, weight_log, loss_names)
    save_json(workdir / "timing.json", list(timing), indent=1)


def read_history(path: Path, epochs: int) -> np.ndarray | None:
    """The first `epochs` epochs of a per-epoch array of a run being resumed; None when the file
    is missing, unreadable or shorter (the caller says what to do)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return array[:epochs] if len(array) >= epochs else None


def read_timing(path: Path, epochs: int) -> list[dict]:
    """timing.json's entries of the first `epochs` epochs ([] when absent or unreadable)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(entries, list):
        return []
    return [t for t in entries if isinstance(t, dict) and t.get("epoch", epochs) < epochs]


def save_best(
    workdir: Path, iter_dir: Path, net: nn.Module, epoch: int, metric: float, config: RunConfig
) -> None:
    """best.pt (weights and what rebuilds the network), best_epoch/ and best_epoch.txt."""
    best = {
        "model": net.state_dict(),
        "epoch": epoch,
        "metric": metric,
        "network": config.network,
        "n_in": config.modalities,
        "n_class": config.n_class,
        "args": dict(config.recorded),
    }
    save_torch(workdir / "best.pt", best)
    best_tmp = workdir / "best_epoch_tmp"
    shutil.rmtree(best_tmp, ignore_errors=True)
    for source in sorted(iter_dir.rglob("*")):  # one copy at a time: an error names its file
        target = best_tmp / source.relative_to(iter_dir)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shutil.rmtree(workdir / "best_epoch", ignore_errors=True)
    best_tmp.replace(workdir / "best_epoch")
    save_text(workdir / "best_epoch.txt", f"{epoch}\n")
