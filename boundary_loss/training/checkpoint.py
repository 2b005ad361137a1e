"""Checkpoints of a run folder: reading best.pt / last.pt safely, and resuming only what was run.

- `load_weights` (`--weights`) accepts a best.pt or last.pt of main.py, or a plain state dict
  (a network's `state_dict()` saved alone; a DistributedDataParallel `module.` prefix is removed),
  and refuses, with the file named, an empty or truncated file, a file that is not a checkpoint,
  a tensor or list, and another network's weights (naming the keys or shapes that differ).
- `read_last` (`--resume`) refuses the same, and a best.pt given in place of last.pt.
- `check_resume` (with `resume_changes`) compares the configuration recorded when the run
  started with the one a resume is asked for, and the number of processes. Only `RESUMABLE`
  flags may differ; any other difference stops the resume with the flag and both values named,
  since continuing would mix two experiments in one run folder. What changed is appended to
  `resumes.json` (`record_resume`).
- `set_seed`, `rng_state` and `restore_rng`: the random streams a resume restores.

Every file is read with `torch.load(weights_only=True)`: no pickled code is ever run.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from boundary_loss.io.atomic import write_text_atomic
from boundary_loss.io.distributed import Context
from boundary_loss.training.config import ConfigError, build_parser, canonical_args

# Flags a resume may change, and why that is safe. Everything else must be as recorded.
RESUMABLE = {
    "resume": "how the run is started",
    "n_epoch": "the run may be extended, or ended sooner, but not before the epochs already done",
    "workers": "data loading processes: the same batches, read faster or slower",
    "threads": "CPU threads: the same computation",
    "in_memory": "whether slices are cached: the same data",
    "cpu": "the device: resuming a GPU run on a CPU (or back)",
    "workdir": "the run folder may have been moved",
}

# What a last.pt written by main.py holds.
LAST_KEYS = (
    "model",
    "optimizer",
    "epoch",
    "scheduler",
    "plateau",
    "weights",
    "lrs",
    "weight_log",
    "best_metric",
    "best_epoch",
    "rng",
)


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the flag, the file and why."""


def _describe(obj: object) -> str:
    """A few words on what a loaded object is, for messages."""
    if isinstance(obj, Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        keys = sorted(map(str, obj))
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        return f"a dict without network weights (keys: {shown or 'none'})"
    return f"a {type(obj).__name__}"


def read_checkpoint(path: str | Path, flag: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with one clear error for a bad file.

    Raises:
        CheckpointError: missing, empty, truncated or foreign file, or pickled objects.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{flag} {path}: a folder; expected a checkpoint file (best.pt)")
    if not path.is_file():
        raise CheckpointError(f"{flag} {path}: file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{flag} {path}: empty file (an interrupted copy or save?); expected a checkpoint"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load raises many kinds on a bad file
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
        raise CheckpointError(
            f"{flag} {path}: not a readable PyTorch checkpoint ({reason[:200]}); expected a "
            "best.pt or last.pt of main.py or a state dict saved with torch.save, complete "
            "(a truncated copy fails too)"
        ) from None


def model_state(checkpoint: object, path: str | Path, flag: str) -> dict[str, Tensor]:
    """The network weights in a loaded checkpoint: its `model` entry, or the state dict itself.

    A `module.` prefix on every key (a DistributedDataParallel state dict) is removed.

    Raises:
        CheckpointError: no state dict of tensors in it.
    """
    state = checkpoint
    if isinstance(checkpoint, Mapping) and "model" in checkpoint:
        state = checkpoint["model"]
    valid = isinstance(state, Mapping) and len(state) > 0
    valid = valid and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    if not valid:
        raise CheckpointError(
            f"{flag} {path}: holds {_describe(checkpoint)}, not network weights; expected a "
            "best.pt or last.pt of main.py or a state dict (name -> tensor)"
        )
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def fit_state(net: nn.Module, state: Mapping[str, Tensor], path: str | Path, flag: str) -> None:
    """Load `state` into `net`, or say which weights do not fit.

    Raises:
        CheckpointError: missing or unexpected weights, or shapes that differ.
    """
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape ({_names(shapes)})")
    if problems:
        raise CheckpointError(
            f"{flag} {path}: the weights do not fit {type(net).__name__} as built by --network, "
            f"--modalities, --n_class and --net_params: {'; '.join(problems)}"
        )
    net.load_state_dict(state)


def load_weights(net: nn.Module, path: str | Path, network: str) -> None:
    """`--weights`: initialise `net` (built as `--network network`) from a checkpoint.

    Raises:
        CheckpointError: unreadable file, no weights in it, or weights of another network.
    """
    checkpoint = read_checkpoint(path, "--weights")
    state = model_state(checkpoint, path, "--weights")
    recorded = checkpoint.get("network") if isinstance(checkpoint, Mapping) else None
    if isinstance(recorded, str) and recorded != network:
        raise CheckpointError(
            f"--weights {path}: weights of a {recorded} network, not of --network {network}"
        )
    fit_state(net, state, path, "--weights")


def read_last(path: str | Path) -> dict:
    """`--resume`: the last.pt of a run, checked to hold everything a resume restores.

    Raises:
        CheckpointError: unreadable file, a best.pt in its place, or missing entries.
    """
    checkpoint = read_checkpoint(path, "--resume")
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"--resume {path}: holds {_describe(checkpoint)}; expected the last.pt main.py "
            "writes after each epoch"
        )
    if "model" in checkpoint and "optimizer" not in checkpoint and "network" in checkpoint:
        raise CheckpointError(
            f"--resume {path}: this is a best.pt (weights only, no optimizer or epoch); a resume "
            "needs the run's last.pt; to start a new run from these weights, use --weights"
        )
    missing = [key for key in LAST_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"--resume {path}: not a last.pt of main.py (no {', '.join(missing)}); expected the "
            "last.pt main.py writes after each epoch"
        )
    return dict(checkpoint)


def resume_changes(
    recorded: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any],
    canonical: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    epochs_done: int,
    source: str | Path,
) -> dict[str, dict[str, Any]]:
    """The flags a resume changes, refusing any that may not change.

    Args:
        recorded: the arguments the run was started with (args.json / last.pt), by flag.
        current: the arguments of the resume, by flag (every flag, defaults included).
        defaults: the flags' defaults, taken for flags the run did not record (added since).
        canonical: arguments -> comparable values (parsed literals, normalised paths).
        epochs_done: epochs in last.pt; `--n_epoch` may not go below it.
        source: where `recorded` comes from, for messages.

    Returns:
        flag -> {"from": recorded value, "to": new value}, for the allowed changes.

    Raises:
        CheckpointError: naming the first flag that differs and may not, with both values.
    """
    known = {name: value for name, value in defaults.items() if value is not None}
    before = canonical({**current, **known, **recorded})
    after = canonical(current)
    changes = {}
    for name in sorted(after):
        if name in before and before[name] != after[name]:
            old, new = recorded.get(name, before[name]), current[name]
            if name not in RESUMABLE:
                allowed = ", ".join(f"--{flag}" for flag in sorted(RESUMABLE) if flag != "resume")
                raise CheckpointError(
                    f"--resume: --{name} is {new!r} but the run was started with {old!r} "
                    f"({source}); a resumed run must keep its configuration (only {allowed} may "
                    "change): start a new run in another --workdir instead"
                )
            changes[name] = {"from": old, "to": new}
    if after["n_epoch"] < epochs_done:
        raise CheckpointError(
            f"--resume: --n_epoch {after['n_epoch']} is below the {epochs_done} epochs already "
            f"done ({source}); expected at least {epochs_done}"
        )
    return changes


def record_resume(workdir: Path, entry: Mapping[str, Any]) -> None:
    """Append one resume (epoch, date, command, changed flags) to `workdir/resumes.json`."""
    path = workdir / "resumes.json"
    history: object = []
    if path.is_file():
        try:
            history = json.loads(path.read_text())
        except json.JSONDecodeError:
            history = None
    if not isinstance(history, list):
        raise CheckpointError(
            f"--resume: {path} is not the list of earlier resumes main.py writes; move it aside "
            "to resume"
        )
    history.append({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **entry})
    write_text_atomic(path, json.dumps(history, indent=2) + "\n")


def check_resume(
    current: Mapping[str, Any], workdir: Path, state: Mapping, start_epoch: int, context: Context
) -> dict:
    """Refuse a resume whose configuration or process count differs from the recorded run's.

    Args:
        current: the arguments of the resume, by flag (`Config.recorded`).
        workdir: the run folder.
        state: its last.pt.
        start_epoch: the first epoch the resume trains.
        context: this process among the training's.

    Returns:
        The allowed changes (`RESUMABLE`), flag -> {"from", "to"}.

    Raises:
        CheckpointError: a flag that may not change, or another number of processes.
    """
    source = workdir / "last.pt"
    recorded = state.get("args")
    if not isinstance(recorded, dict):  # a last.pt of an earlier version: the run's args.json
        source = workdir / "args.json"
        try:
            recorded = json.loads(source.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointError(
                f"--resume: cannot read the run's configuration from {source} ({error}); "
                "without it a resume cannot be checked: start the run again without --resume"
            ) from None
    parser = build_parser()
    defaults = {name: parser.get_default(name) for name in current}
    try:
        changes = resume_changes(recorded, current, defaults, canonical_args, start_epoch, source)
    except ConfigError as error:
        raise CheckpointError(f"--resume: the recorded configuration ({source}): {error}") from None
    saved = state.get("processes", len(state["rng"]) if isinstance(state["rng"], list) else 1)
    if saved != context.world_size:
        raise CheckpointError(
            f"--resume {source}: the run was trained by {saved} process(es), this resume has "
            f"{context.world_size}; resume with the same number (NPROC={saved})"
        )
    return changes


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Random states as plain types and tensors, so last.pt loads with weights_only=True."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    """Restore the generators saved by `rng_state`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
