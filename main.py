"""Train one segmentation network with a weighted combination of losses, validating every epoch.

The command line is the original boundary-loss one (Kervadec et al., MIDL 2019), e.g.

    python main.py --dataset data/isles --workdir results/isles/gdl_surface_steal \\
        --network UNet --n_class 2 --metric_axis 1 --n_epoch 100 --batch_size 8 \\
        --losses="[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]" \\
        --folders="[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True), \\
                    ('gt_npy', dist_map_transform, False)]" \\
        --scheduler StealWeight --scheduler_params="{'to_steal': 0.01}" --modalities 5

`--losses` and `--folders` keep the original's syntax but are parsed as literals (transform names
resolved from dataloader.TRANSFORMS): nothing in them is ever executed.

The work dir receives, every epoch: metrics.csv, tra_loss.npy / val_loss.npy (epoch x iteration
x loss), tra_dice.npy / val_dice.npy (epoch x slice x class), val_3d_dsc.npy,
val_3d_hausdorff.npy, val_3d_hd95.npy (epoch x patient x class, computed during validation with
each patient's spacing), iter<NNN>/val/*.png predictions; on a new best epoch, best_epoch/,
best_epoch.txt and best.pt (state dict and metadata, loadable with weights_only=True); last.pt
(everything --resume needs); timing.json (time spent training and waiting for data); and once,
args.json, provenance.json and git.diff. `--evaluate` validates the --weights network alone.

Speed options, off by default (README "Speed and scale"): --device_dist_maps and --augment
(distance maps computed on the device, after an online augmentation), --bf16, --channels_last,
--workers, --in_memory. Under torchrun (`make NPROC=4`), each process trains on its share of the
batches with DistributedDataParallel, the logs are gathered, and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import io
import itertools
import json
import math
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from atomic import DISK_FULL, atomic_write, disk_full_message, write_text_atomic
from augment import augment_batch
from checkpoint import (
    CheckpointError,
    fit_state,
    load_weights,
    model_state,
    read_last,
    record_resume,
    resume_changes,
)
from console import ArgumentParser
from dataloader import (
    DEVICE_TRANSFORMS,
    TRANSFORMS,
    DataError,
    FolderSpec,
    ShardedBatchSampler,
    group_key,
    gt_transform,
    make_loader,
)
from distributed import Context, LaunchError, setup, teardown
from losses import LOSSES, get_loss
from metrics import forbidden_adjacencies, forbidden_pairs, hd_hd95, hd_hd95_torch, read_graph
from networks import NETWORKS, get_network
from scheduler import SCHEDULERS, PlateauHalving, get_scheduler, original_halving
from utils import dice_coef

ROOT = Path(__file__).resolve().parent
PACKAGES = ("torch", "numpy", "scipy", "edt", "nibabel", "scikit-image", "matplotlib", "pillow")


class ConfigError(Exception):
    """A command-line option is malformed or inconsistent."""


class TrainingError(Exception):
    """Training cannot go on (a NaN or infinite loss)."""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line: the original's flags, with --seed, --resume and the speed options."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="sliced data root (e.g. data/isles)")
    parser.add_argument("--workdir", required=True, help="run folder for every output")
    parser.add_argument("--losses", required=True, help="[('Loss', {'idc': [...]}, weight), ...]")
    parser.add_argument("--folders", required=True, help="[('folder', transform, is_hot), ...]")
    parser.add_argument("--network", required=True, choices=sorted(NETWORKS))
    parser.add_argument(
        "--net_params", default="{}", help="dict literal of network arguments, e.g. \"{'nG': 16}\""
    )
    parser.add_argument("--n_class", type=int, required=True, help="number of classes K")
    parser.add_argument(
        "--csv", default="metrics.csv", help="per-epoch metrics file name, in the work dir"
    )
    parser.add_argument(
        "--metric_axis", type=int, nargs="+", default=[1], help="classes of the best-epoch Dice"
    )
    parser.add_argument("--debug", action="store_true", help="10 slices per loader")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even with CUDA")
    parser.add_argument("--in_memory", action="store_true", help="load every slice once")
    parser.add_argument(
        "--schedule", action="store_true", help="halve the learning rate on plateaus"
    )
    parser.add_argument(
        "--schedule_rule",
        choices=["plateau", "original"],
        default="plateau",
        help="plateau: after 20 epochs without improvement; original: the original's rule "
        "(epoch %% (best_epoch + 20) == 0, which also halves after epoch 0)",
    )
    parser.add_argument("--use_sgd", action="store_true", help="SGD instead of Adam")
    parser.add_argument(
        "--compute_3d_dice", action="store_true", help="choose the best epoch by the 3D Dice"
    )
    parser.add_argument("--save_train", action="store_true", help="also save train predictions")
    parser.add_argument(
        "--use_spacing", action="store_true", help="transforms get the slice spacing (mm)"
    )
    parser.add_argument("--group", action="store_true", help="validate one patient per batch")
    parser.add_argument("--group_train", action="store_true", help="train one patient per batch")
    parser.add_argument("--n_epoch", type=int, default=100)
    parser.add_argument("--l_rate", type=float, default=1e-3)
    parser.add_argument("--grp_regex", default=r"(.+)_\d+", help="regex: first group = patient")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature")
    parser.add_argument("--scheduler", default="DummyScheduler", choices=sorted(SCHEDULERS))
    parser.add_argument("--scheduler_params", default="{}", help="dict literal of its arguments")
    parser.add_argument("--modalities", type=int, default=1, help="input channels")
    parser.add_argument("--dimensions", type=int, default=2, choices=[2, 3])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--weights", default="", help="initial weights: a best.pt or last.pt")
    parser.add_argument("--training_folders", nargs="+", default=["train"])
    parser.add_argument("--validation_folder", default="val")
    parser.add_argument("--val_loader_id", type=int, default=-1, help="losses/folders of val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from workdir/last.pt")
    parser.add_argument("--workers", type=int, default=0, help="data loading processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads of torch (0: torch's default, one per core); 1 when several trainings "
        "share the CPU (make -j), whose threads would otherwise compete",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="online augmentation on the device (flips, 90-degree and small rotations), the "
        "distance maps recomputed exactly after it; off by default, as the original",
    )
    parser.add_argument(
        "--augment_degrees", type=float, default=10.0, help="largest small rotation of --augment"
    )
    parser.add_argument(
        "--device_dist_maps",
        action="store_true",
        help="compute the distance-map targets on the device (the GPU) from the labels",
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast of the network")
    parser.add_argument("--channels_last", action="store_true", help="channels-last memory")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="validate the --weights network once and write the validation outputs (no training)",
    )
    parser.add_argument(
        "--adjacency_graph",
        default="",
        help="graph.csv of the training anatomy: count forbidden adjacencies in the validation "
        "predictions every epoch (val_adjacency.npy)",
    )
    return parser


def get_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; a bad flag exits with argparse's one-line error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("n_epoch", "batch_size", "n_class", "modalities"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("l_rate", "temperature"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name} must be a positive number, got {value}")
    if args.csv in ("", ".", "..") or Path(args.csv).name != args.csv:
        parser.error(
            f"--csv {args.csv!r}: expected a file name, written in --workdir (e.g. metrics.csv), "
            "not a path"
        )
    if args.evaluate and not args.weights:
        parser.error("--evaluate needs --weights (a best.pt or last.pt)")
    if args.augment and args.dimensions != 2:
        parser.error("--augment transforms 2D slices: it needs --dimensions 2")
    if not 0 <= args.augment_degrees <= 180:
        parser.error(f"--augment_degrees must be within 0..180, got {args.augment_degrees}")
    if not all(0 <= k < args.n_class for k in args.metric_axis):
        parser.error(f"--metric_axis {args.metric_axis} outside the {args.n_class} classes")
    return args


def parse_literal(text: str, flag: str, names: Mapping[str, object] | None = None) -> object:
    """Parse a Python literal from the command line, resolving bare `names`; never executes.

    Raises:
        ConfigError: a syntax error, an unknown name, or anything other than literals and names
            (a call, an attribute, an operator...), with the flag and the column named.
    """
    names = names or {}
    shown = repr(text) if len(text) <= 200 else f"{text[:200]!r}... ({len(text)} characters)"
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ConfigError(
            f"{flag}: not a valid literal ({error.msg}, column {error.offset}): {shown}"
        ) from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{flag}: nested too deeply to be a configuration literal") from None

    def convert(node: ast.AST) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            values = [convert(e) for e in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise ConfigError(f"{flag}: '**' is not allowed in {shown}")
            return {convert(k): convert(v) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = convert(node.operand)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            known = f"; known names: {', '.join(sorted(names))}" if names else ""
            raise ConfigError(f"{flag}: unknown name {node.id!r}{known}")
        raise ConfigError(
            f"{flag}: only literals{' and names' if names else ''} are allowed, found "
            f"{type(node).__name__} at column {getattr(node, 'col_offset', '?')} of {shown}; "
            "nothing is executed"
        )

    try:
        return convert(tree.body)
    except RecursionError:
        raise ConfigError(f"{flag}: nested too deeply to be a configuration literal") from None


def _per_loader(value: object, flag: str, is_entry) -> list[list]:
    """A list of entries, or a list of such lists (one per training loader)."""
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{flag}: expected a non-empty list, got {value!r}")
    if all(is_entry(v) for v in value):
        return [list(value)]
    if all(isinstance(v, list | tuple) and v and all(is_entry(e) for e in v) for v in value):
        return [list(v) for v in value]
    raise ConfigError(f"{flag}: malformed entries in {value!r}")


def parse_losses(text: str) -> list[list[tuple[str, dict, float]]]:
    """`--losses`: [(name, kwargs, weight), ...] or one such list per training loader."""
    value = parse_literal(text, "--losses")

    def is_entry(v: object) -> bool:
        return isinstance(v, tuple | list) and len(v) == 3 and isinstance(v[0], str)

    lists = _per_loader(value, "--losses", is_entry)
    for entries in lists:
        for name, kwargs, weight in entries:
            if name not in LOSSES:
                raise ConfigError(
                    f"--losses: unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}"
                )
            if not isinstance(kwargs, dict):
                raise ConfigError(
                    f"--losses: the arguments of {name} must be a dict, got {kwargs!r}"
                )
            number = isinstance(weight, int | float) and not isinstance(weight, bool)
            if not (number and math.isfinite(weight) and weight >= 0):
                raise ConfigError(
                    f"--losses: the weight of {name} must be a number >= 0, got {weight!r} (a "
                    "scheduler moves weights between losses; none takes a negative one)"
                )
    return [[(n, k, float(w)) for n, k, w in entries] for entries in lists]


def parse_folders(text: str) -> list[list[FolderSpec]]:
    """`--folders`: [(folder, transform, is_hot), ...] or one such list per training loader."""
    value = parse_literal(text, "--folders", TRANSFORMS)
    transforms = set(TRANSFORMS.values())

    def is_entry(v: object) -> bool:
        return isinstance(v, tuple | list) and len(v) == 3 and isinstance(v[0], str)

    lists = _per_loader(value, "--folders", is_entry)
    specs = []
    for entries in lists:
        if len(entries) < 2:
            raise ConfigError(
                f"--folders: needs the input folder and at least one target: {entries}"
            )
        row = []
        for folder, transform, is_hot in entries:
            if isinstance(transform, str):
                if transform not in TRANSFORMS:
                    raise ConfigError(
                        f"--folders: unknown transform {transform!r}; known: "
                        f"{', '.join(sorted(TRANSFORMS))}"
                    )
                transform = TRANSFORMS[transform]
            if transform not in transforms:
                raise ConfigError(f"--folders: {transform!r} is not a transform")
            if not isinstance(is_hot, bool):
                raise ConfigError(f"--folders: the flag of {folder} must be True or False")
            row.append(FolderSpec(folder, transform, is_hot))
        specs.append(row)
    return specs


def check_idc(loss: str, idc: object, n_class: int) -> None:
    """A loss's `idc`: distinct class indices of the `n_class` classes (negative ones count
    from the end, as in Python indexing).

    Raises:
        ConfigError: not a list of integers, an index outside the classes, or a repeated class.
    """
    if idc is None:
        return  # the loss says it needs idc when it is built
    where = f"--losses: idc of {loss}"
    if not isinstance(idc, list | tuple) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in idc
    ):
        raise ConfigError(f"{where} must be a list of class indices, got {str(idc)[:80]}")
    outside = [i for i in idc if not -n_class <= i < n_class]
    if outside:
        raise ConfigError(
            f"{where}: {str(outside[:5])[:80]} outside the {n_class} classes of --n_class "
            f"(expected 0..{n_class - 1})"
        )
    classes = [i % n_class for i in idc]
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        raise ConfigError(f"{where} names class(es) {repeated} more than once")


@dataclass
class Config:
    """The parsed, cross-checked configuration of the loaders and losses."""

    losses: list[list[tuple[str, dict, float]]]  # (name, kwargs, weight) per loader
    folders: list[list[FolderSpec]]
    loss_fns: list[list]  # the losses, built once
    scheduler: object


def check_config(args: argparse.Namespace) -> Config:
    """Parse --losses, --folders and --scheduler_params and check that they agree.

    Raises:
        ConfigError: naming the flag, for every inconsistency.
    """
    losses = parse_losses(args.losses)
    folders = parse_folders(args.folders)
    n_train = len(args.training_folders)
    if len(losses) == 1:
        losses = losses * n_train
    if len(folders) == 1:
        folders = folders * n_train
    for flag, lists in (("--losses", losses), ("--folders", folders)):
        if len(lists) != n_train:
            raise ConfigError(
                f"{flag} gives {len(lists)} lists for {n_train} --training_folders "
                f"{args.training_folders}"
            )
    for i, (loss_list, folder_list) in enumerate(zip(losses, folders, strict=True)):
        if len(loss_list) != len(folder_list) - 1:
            raise ConfigError(
                f"--losses has {len(loss_list)} loss(es) {[n for n, _, _ in loss_list]} but "
                f"--folders gives {len(folder_list) - 1} target folder(s) "
                f"{[s.folder for s in folder_list[1:]]} for loader {i}: one target per loss"
            )
    for loss_list in losses:
        for name, kwargs, _ in loss_list:
            check_idc(name, kwargs.get("idc"), args.n_class)
    try:  # built once here: a loss may read a file (the adjacency graph) and warn
        loss_fns = [[get_loss(n, **k) for n, k, _ in loss_list] for loss_list in losses]
    except ValueError as error:
        raise ConfigError(f"--losses: {error}") from None
    if not -n_train <= args.val_loader_id < n_train:
        raise ConfigError(f"--val_loader_id {args.val_loader_id} outside the {n_train} loaders")
    params = parse_literal(args.scheduler_params, "--scheduler_params")
    if not isinstance(params, dict):
        raise ConfigError(f"--scheduler_params must be a dict, got {params!r}")
    try:
        scheduler = get_scheduler(args.scheduler, params)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return Config(losses, folders, loss_fns, scheduler)


# ---------------------------------------------------------------------------------------------
# Run folder: atomic writes and provenance
# ---------------------------------------------------------------------------------------------


def save_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def save_torch(path: Path, obj: object) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array))


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def provenance(
    args: argparse.Namespace, argv: Sequence[str], device: torch.device, context: Context
) -> dict:
    """What produced this run: code version, command, packages, device. No environment dump."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "commit": _git("rev-parse", "HEAD").strip() or "unknown (not a git checkout)",
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no").strip()),
        "command": shlex.join(["python", "main.py", *argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "processes": context.world_size,
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def set_seed(seed: int) -> None:
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
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------------


@dataclass
class EpochLog:
    """What one pass over the loaders measured (over every process, in the single-process order)."""

    losses: np.ndarray  # iteration x loss, raw (unweighted) values
    dices: np.ndarray  # slice x class, 2D Dice (NaN for unlabelled slices)
    per_loader: list[list[float]] = field(default_factory=list)  # mean raw losses per loader
    volumes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # 3D accumulation
    timing: dict[str, float] = field(default_factory=dict)  # seconds, data_seconds, slices


@dataclass
class BatchRecord:
    """One batch of a pass, as logged; `position` is its place in the single-process order."""

    position: int
    losses: list[float]
    dices: np.ndarray  # B K
    stems: list[str]
    spacing: np.ndarray  # B 3
    classes: np.ndarray | None = None  # B H W uint8 predictions (validation, --save_train)
    gt: np.ndarray | None = None  # B H W uint8 (validation)


@dataclass
class Targets:
    """How one loader's batches become the inputs of its losses."""

    device_fns: list  # per target: a DEVICE_TRANSFORMS function, or None (used as loaded)
    gt_index: int | None  # the target holding the ground truth one-hot (None: unlabelled)


@dataclass
class Phase:
    """The loaders of a pass (training, or validation) and what feeds their losses, per loader."""

    loaders: list[torch.utils.data.DataLoader]
    targets: list[Targets]
    loss_fns: list[list]
    loss_names: list[list[str]]


def save_predictions(classes: np.ndarray, stems: Sequence[str], folder: Path) -> None:
    """Predicted class maps (B H W uint8) as png, one per stem (class indices, as gt/)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seg, stem in zip(classes, stems, strict=True):
        path = folder / f"{stem}.png"
        try:
            Image.fromarray(seg).save(path)
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(path)) from None


def _sharding(loader: torch.utils.data.DataLoader) -> tuple[int, Callable[[int], int | None]]:
    """Batches of the loader over every process, and the position of this process's j-th."""
    sampler = loader.batch_sampler
    if isinstance(sampler, ShardedBatchSampler):
        return len(sampler.base), sampler.position
    return len(loader), lambda j: j


def to_device(batch: dict, device: torch.device) -> tuple[Tensor, list[Tensor]]:
    """The input and the targets of a batch, copied to the device (asynchronously from pinned
    memory on CUDA)."""
    image = batch["images"].to(device, non_blocking=True)
    return image, [t.to(device, non_blocking=True) for t in batch["labels"]]


def prepare_batch(
    image: Tensor,
    labels: list[Tensor],
    spacing: Tensor,
    targets: Targets,
    args: argparse.Namespace,
    augment: torch.Generator | None,
) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """The input, the loss targets and the ground truth of a batch on the device: augmented
    (training with --augment), with the distance maps computed there (DEVICE_TRANSFORMS)."""
    if augment is not None:
        hot = [not t.is_floating_point() for t in labels]
        image, labels, spacing = augment_batch(
            image, labels, hot, spacing, args.augment_degrees, augment
        )
    for i, fn in enumerate(targets.device_fns):
        if fn is not None:
            labels[i] = fn(labels[i], spacing[:, :2])
    if args.channels_last:
        image = image.contiguous(
            memory_format=torch.channels_last if image.ndim == 4 else torch.channels_last_3d
        )
    gt = None if targets.gt_index is None else labels[targets.gt_index]
    return image, labels, gt


def do_epoch(
    mode: str,
    net: nn.Module,
    device: torch.device,
    phase: Phase,
    weights: Sequence[Sequence[float]],
    args: argparse.Namespace,
    epoch: int,
    context: Context,
    optimizer: torch.optim.Optimizer | None = None,
    save_dir: Path | None = None,
    augment: torch.Generator | None = None,
) -> EpochLog:
    """Train (optimizer given) or validate over the phase's loaders, logging losses, Dice and, when
    validating, the predicted volumes of each patient for the 3D metrics. Under torchrun each
    process runs its share of the batches and the logs of all are gathered."""
    train = optimizer is not None
    net.train(train)
    K = args.n_class
    records: list[BatchRecord] = []
    data_seconds = 0.0
    slices = 0
    error = ""
    local_save = save_dir if not context.active else None  # else rank 0 saves after gathering
    keep_classes = not train or args.save_train
    total = sum(len(loader) for loader in phase.loaders)
    bar = tqdm(total=total, desc=f">> {mode} epoch {epoch:3d}", ncols=120, leave=False,
               disable=not context.writes)  # fmt: skip
    start = time.perf_counter()
    offset = 0
    with bar, torch.set_grad_enabled(train):  # the bar is cleared on an error too
        for loader, target, fns, ws, names in zip(
            phase.loaders, phase.targets, phase.loss_fns, weights, phase.loss_names, strict=True
        ):
            n_batches, position = _sharding(loader)
            batches = iter(loader)
            for j in itertools.count():
                waiting = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                image, labels = to_device(batch, device)
                if device.type == "cuda":  # the copy is asynchronous: count it as waiting
                    torch.cuda.current_stream(device).synchronize()
                data_seconds += time.perf_counter() - waiting
                image, labels, gt = prepare_batch(
                    image, labels, batch["spacing"], target, args, augment
                )
                stems = batch["filenames"]
                B = image.shape[0]
                if train:
                    optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    logits = net(image)
                probs = F.softmax(args.temperature * logits.float(), dim=1)  # B K H W
                where = f"epoch {epoch}, {mode} batch {offset + j} (first slice {stems[0]})"
                values, raw = [], []
                if not torch.isfinite(probs).all():
                    error = (
                        f"{where}: the network output is NaN or infinite (diverged, or NaN in "
                        "the input)"
                    )
                else:
                    values = [fn(probs, label) for fn, label in zip(fns, labels, strict=True)]
                    raw = torch.stack([v.detach().float() for v in values]).tolist()
                    bad = [(n, v) for n, v in zip(names, raw, strict=True) if not np.isfinite(v)]
                    if bad:
                        error = f"{where}: loss {bad[0][0]} is {bad[0][1]}"
                if train and context.any(bool(error), device):  # every process stops together
                    raise TrainingError(f"{error or 'another process: NaN or infinite'}; stopping")
                if error and not context.active:
                    raise TrainingError(f"{error}; stopping")
                if error:  # validation under torchrun: raised once every process is done
                    break
                if train:
                    loss = sum(w * v for w, v in zip(ws, values, strict=True))
                    loss.backward()
                    optimizer.step()

                classes = probs.detach().argmax(dim=1)  # B H W
                if gt is None:  # an unlabelled loader (semi-supervised): no Dice
                    dices = np.full((B, K), np.nan, dtype=np.float32)
                else:
                    predicted = F.one_hot(classes, K).movedim(-1, 1).to(torch.int32)  # B K H W
                    dices = dice_coef(gt, predicted).cpu().numpy()
                record = BatchRecord(
                    offset + j if position(j) is None else offset + position(j), raw, dices,
                    list(stems), batch["spacing"].numpy(),
                )  # fmt: skip
                if keep_classes:
                    record.classes = classes.cpu().numpy().astype(np.uint8)
                if not train and gt is not None:
                    record.gt = gt.argmax(dim=1).cpu().numpy().astype(np.uint8)
                if local_save is not None:
                    save_predictions(record.classes, stems, local_save)
                if position(j) is not None:  # a padding repeat is trained on, not logged
                    records.append(record)
                slices += B
                shown = {n: f"{v:.3g}" for n, v in zip(names, raw, strict=True)}
                if gt is not None:
                    shown = {"dice": f"{dices[:, args.metric_axis].mean():.3f}"} | shown
                bar.set_postfix(shown)
                bar.update()
            offset += n_batches
    elapsed = time.perf_counter() - start
    gathered = context.gather((records, error, slices))
    errors = [e for _, e, _ in gathered if e]
    if errors:  # validation: raised once every process has finished its share
        raise TrainingError(f"{errors[0]}; stopping")
    records = [r for rs, _, _ in gathered for r in rs]
    if context.active and context.writes and save_dir is not None:
        for r in records:
            save_predictions(r.classes, r.stems, save_dir)
    timing = {
        "seconds": elapsed,
        "data_seconds": data_seconds,
        "slices": sum(n for _, _, n in gathered),
    }
    sizes = [_sharding(loader)[0] for loader in phase.loaders]
    n_losses = [len(f) for f in phase.loss_fns]
    return summarise(records, sizes, n_losses, K, args.grp_regex, timing)


def summarise(
    records: Sequence[BatchRecord],
    sizes: Sequence[int],
    n_losses: Sequence[int],
    K: int,
    grp_regex: str,
    timing: dict[str, float],
) -> EpochLog:
    """The logs of a pass from its batch records, in the single-process order of the batches."""
    records = sorted(records, key=lambda r: r.position)
    loss_log = np.full((sum(sizes), max(n_losses)), np.nan, dtype=np.float32)
    for r in records:
        loss_log[r.position, : len(r.losses)] = r.losses
    dices = np.concatenate([r.dices for r in records]) if records else np.zeros((0, K))
    bounds = np.cumsum([0, *sizes])
    per_loader = [
        np.nanmean(loss_log[a:b, :n], 0).tolist()
        for a, b, n in zip(bounds[:-1], bounds[1:], n_losses, strict=True)
    ]
    volumes: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.gt is None:
            continue
        for b, stem in enumerate(r.stems):
            volume = volumes[group_key(stem, grp_regex)]
            volume["stems"].append(stem)
            volume["pred"].append(r.classes[b])
            volume["gt"].append(r.gt[b])
            volume["spacing"].append(r.spacing[b])
    stacked = {
        key: {
            "pred": np.stack([p for _, p in sorted(zip(v["stems"], v["pred"], strict=True))], -1),
            "gt": np.stack([g for _, g in sorted(zip(v["stems"], v["gt"], strict=True))], -1),
            "spacing": v["spacing"][0],
        }
        for key, v in volumes.items()
    }
    return EpochLog(loss_log, dices.astype(np.float32), per_loader, stacked, timing)


def metrics_3d(
    volumes: Mapping[str, Mapping[str, np.ndarray]],
    K: int,
    spacing_3d: Mapping[str, Sequence],
    device: torch.device | None = None,
    context: Context | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D Dice, HD and HD95 per patient (sorted by name) and class: three `P K` arrays.

    Spacing: the patient's entry in spacing_3d.json when present, else its slices' spacing.
    On CUDA, HD and HD95 come from the device transform (metrics.hd_hd95_torch), else from
    metrics.hd_hd95; under torchrun each process measures its share of the patients.
    """
    context = context or Context()
    on_cuda = device is not None and device.type == "cuda"
    keys = sorted(volumes)
    mine = {}
    for key in keys[context.rank :: context.world_size]:
        pred, gt = volumes[key]["pred"], volumes[key]["gt"]  # X Y Z
        spacing = spacing_3d.get(key, volumes[key]["spacing"])
        if on_cuda:
            pred, gt = torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device)
        rows = np.zeros((3, K), dtype=np.float32)  # dsc, hd, hd95
        for k in range(K):
            p, t = pred == k, gt == k
            rows[0, k] = (2 * float((p & t).sum()) + 1e-8) / (float(p.sum() + t.sum()) + 1e-8)
            if on_cuda:
                rows[1:, k] = hd_hd95_torch(p, t, voxelspacing=spacing)
            else:
                rows[1:, k] = hd_hd95(p, t, voxelspacing=spacing)
        mine[key] = rows
    merged = {k: v for part in context.gather(mine) for k, v in part.items()}
    table = np.stack([merged[key] for key in keys]) if keys else np.zeros((0, 3, K), np.float32)
    return table[:, 0], table[:, 1], table[:, 2]


@dataclass
class TrainResult:
    log: EpochLog
    weights: list[list[float]]


NAN_RETRIES = 3


def train_epoch(
    args: argparse.Namespace,
    net: nn.Module,
    device: torch.device,
    phase: Phase,
    weights: list[list[float]],
    epoch: int,
    context: Context,
    optimizer: torch.optim.Optimizer,
    scheduler,
    iter_dir: Path,
    augment: torch.Generator | None,
) -> TrainResult:
    """One training epoch. A scheduler that handles NaN (`handles_nan`, the adjacency
    LambdaController) gets the chance to lower its weights: the epoch restarts from its first
    state with the new weights, up to NAN_RETRIES times; otherwise a NaN stops the run."""
    handles_nan = getattr(scheduler, "handles_nan", False)
    saved = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()))
    for attempt in range(NAN_RETRIES + 1):
        try:
            save_dir = iter_dir / "train" if args.save_train and context.writes else None
            log = do_epoch("train", net, device, phase, weights, args, epoch, context, optimizer,
                           save_dir, augment)  # fmt: skip
            return TrainResult(log, weights)
        except TrainingError as error:
            if not handles_nan or attempt == NAN_RETRIES:
                raise
            weights = scheduler(epoch, weights, {"nan": True})
            net.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            print(f">> {error}; restarting the epoch with weights {weights}", flush=True)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

ADJACENCY = "val_adjacency"
ARRAYS = (
    "tra_loss",
    "val_loss",
    "tra_dice",
    "val_dice",
    "val_3d_dsc",
    "val_3d_hausdorff",
    "val_3d_hd95",
)


def adjacency_violations(
    volumes: Mapping[str, Mapping[str, np.ndarray]], forbidden: np.ndarray
) -> np.ndarray:
    """Forbidden adjacencies in each patient's prediction (sorted by name): `P 2` array of the
    forbidden voxel pairs and the connected components involved, counted slice by slice (2D
    neighbourhoods, as the graph of the 2D training slices and the 2D estimator)."""
    keys = sorted(volumes)
    res = np.zeros((len(keys), 2), dtype=np.float32)
    for i, key in enumerate(keys):
        pred = volumes[key]["pred"]  # X Y Z
        for z in range(pred.shape[-1]):
            res[i] += forbidden_adjacencies(pred[..., z], forbidden)
    return res


def read_spacing_3d(path: Path) -> dict[str, list[float]]:
    """The slicer's `spacing_3d.json` (volume id -> [dx, dy, dz] in mm); {} when absent, the
    slices' own spacing being used then.

    Raises:
        DataError: unreadable JSON, or entries that are not three positive numbers.
    """
    if not path.exists():
        return {}
    try:
        spacing = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON file ({error}); re-slice the data") from None
    valid = isinstance(spacing, dict) and all(
        isinstance(v, list)
        and len(v) == 3
        and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0
            for x in v
        )
        for v in spacing.values()
    )
    if not valid:
        raise DataError(
            f"{path}: expected an object mapping volume ids to three positive voxel sizes "
            "[dx, dy, dz]; re-slice the data"
        )
    return spacing


def read_history(path: Path, epochs: int) -> np.ndarray:
    """The first `epochs` epochs of a per-epoch array of the run being resumed.

    Raises:
        CheckpointError: missing, unreadable, or shorter than last.pt says.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CheckpointError(
            f"--resume: {path} cannot be read ({error}); the run folder is incomplete: start "
            "the run again without --resume"
        ) from None
    if len(array) < epochs:
        raise CheckpointError(
            f"--resume: {path} holds {len(array)} epochs but last.pt is after epoch "
            f"{epochs - 1}; the run folder is inconsistent: start the run again without --resume"
        )
    return array[:epochs]


def canonical_args(values: Mapping[str, object]) -> dict[str, object]:
    """Arguments as comparable values: literals parsed, transforms by name, paths normalised
    (`--dataset=data/ISLES/` and `data/ISLES` are the same folder)."""
    out = dict(values)
    out["losses"] = parse_losses(str(values["losses"]))
    out["folders"] = [
        [(s.folder, s.transform.__name__, s.is_hot) for s in row]
        for row in parse_folders(str(values["folders"]))
    ]
    for name in ("net_params", "scheduler_params"):
        out[name] = parse_literal(str(values[name]), f"--{name}")
    for name in ("dataset", "workdir", "weights", "adjacency_graph"):
        if values.get(name):
            out[name] = os.path.normpath(str(values[name]))
    return out


def check_resume(
    args: argparse.Namespace, workdir: Path, state: Mapping, start_epoch: int, context: Context
) -> dict:
    """Refuse a resume whose configuration or process count differs from the recorded run's.

    Returns:
        The allowed changes (checkpoint.RESUMABLE), flag -> {"from", "to"}.

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
    defaults = {name: parser.get_default(name) for name in vars(args)}
    try:
        changes = resume_changes(recorded, vars(args), defaults, canonical_args, start_epoch,
                                 source)  # fmt: skip
    except ConfigError as error:
        raise CheckpointError(f"--resume: the recorded configuration ({source}): {error}") from None
    saved = state.get("processes", len(state["rng"]) if isinstance(state["rng"], list) else 1)
    if saved != context.world_size:
        raise CheckpointError(
            f"--resume {source}: the run was trained by {saved} process(es), this resume has "
            f"{context.world_size}; resume with the same number (NPROC={saved})"
        )
    return changes


def _load_json_list(path: Path) -> list:
    return json.loads(path.read_text()) if path.exists() else []


def write_csv(
    path: Path,
    history: dict[str, np.ndarray],
    lrs: list[float],
    weights: list,
    loss_names: Sequence[str],
) -> None:
    """metrics.csv: one row per epoch, means over slices/patients per class (or per loss)."""
    epochs = len(lrs)
    header = ["epoch", "lr", "weights"]
    rows = [[e, f"{lrs[e]:.3g}", json.dumps(weights[e])] for e in range(epochs)]
    for name, array in history.items():
        if array.ndim != 3 or len(array) != epochs:
            continue
        per = np.nanmean(array, axis=1)  # epoch x (class or loss)
        if name.endswith("loss"):
            header += [f"{name}_{n}" for n in loss_names][: per.shape[1]]
        elif name == ADJACENCY:
            header += [f"{name}_pairs", f"{name}_components"]
        else:
            header += [f"{name}_class{j}" for j in range(per.shape[1])]
        for e in range(epochs):
            rows[e] += [f"{v:.6g}" for v in per[e]]

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def loader_targets(specs: Sequence[FolderSpec], on_device: bool) -> tuple[list, Targets]:
    """The folders a loader reads and how its batches become loss targets: with `on_device`,
    distance-map folders are read as one-hot labels and transformed on the device."""
    loaded, fns = [specs[0]], []
    for spec in specs[1:]:
        fn = DEVICE_TRANSFORMS.get(spec.transform) if on_device else None
        loaded.append(replace(spec, transform=gt_transform) if fn is not None else spec)
        fns.append(fn)
    hot = [i for i, spec in enumerate(specs[1:]) if spec.is_hot]
    return loaded, Targets(fns, hot[0] if hot else None)


def run(args: argparse.Namespace, argv: Sequence[str], context: Context, device: torch.device):
    """One training (or, with --evaluate, one validation of --weights) in this process."""
    config = check_config(args)
    dataset = Path(args.dataset)
    workdir = Path(args.workdir)
    last_path = workdir / "last.pt"
    if args.resume and not last_path.exists():
        raise ConfigError(f"--resume: {last_path} not found (nothing to resume)")
    if args.evaluate and last_path.exists():
        raise ConfigError(
            f"--evaluate: {workdir} holds a training, whose val_*.npy it would overwrite; give "
            "another --workdir"
        )
    if context.writes:
        workdir.mkdir(parents=True, exist_ok=True)

    set_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    net_params = parse_literal(args.net_params, "--net_params")
    if not isinstance(net_params, dict):
        raise ConfigError(f"--net_params must be a dict, got {net_params!r}")
    try:
        net = get_network(args.network, args.modalities, args.n_class, **net_params).to(device)
    except TypeError as error:
        raise ConfigError(f"--net_params {net_params} do not fit {args.network}: {error}") from None
    if net.dimensions != args.dimensions:
        raise ConfigError(
            f"--network {args.network} is {net.dimensions}D but --dimensions is {args.dimensions}"
        )
    if args.weights:
        load_weights(net, args.weights, args.network)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last if args.dimensions == 2 else
                     torch.channels_last_3d)  # fmt: skip
    model = net  # what training runs: the network, or its DistributedDataParallel wrapper
    if context.active:
        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if args.use_sgd:
        optimizer = torch.optim.SGD(
            net.parameters(), lr=args.l_rate, momentum=0.9, weight_decay=5e-4
        )
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=args.l_rate, betas=(0.9, 0.99))

    loss_fns = config.loss_fns
    weights = [[w for _, _, w in loss_list] for loss_list in config.losses]
    loss_names = [[n for n, _, _ in loss_list] for loss_list in config.losses]
    scheduler = config.scheduler
    plateau = PlateauHalving()

    common = {
        "use_spacing": args.use_spacing,
        "in_memory": args.in_memory,
        "debug": args.debug,
        "grp_regex": args.grp_regex,
        "num_workers": args.workers,
        "pin_memory": device.type == "cuda",
        "rank": context.rank,
        "world_size": context.world_size,
    }
    on_device = args.device_dist_maps or args.augment
    read = [loader_targets(specs, on_device) for specs in config.folders]
    train_loaders = [
        make_loader(
            dataset / folder,
            specs,
            args.n_class,
            batch_size=args.batch_size,
            train=True,
            group=args.group_train,
            seed=args.seed + i,
            **common,
        )
        for i, (folder, (specs, _)) in enumerate(zip(args.training_folders, read, strict=True))
    ]
    val_specs, val_targets = read[args.val_loader_id]
    val_loader = make_loader(
        dataset / args.validation_folder,
        val_specs,
        args.n_class,
        batch_size=args.batch_size,
        train=False,
        group=args.group,
        seed=args.seed,
        **common,
    )
    train_phase = Phase(train_loaders, [t for _, t in read], loss_fns, loss_names)
    val_id = args.val_loader_id
    val_phase = Phase([val_loader], [val_targets], [loss_fns[val_id]], [loss_names[val_id]])
    spacing_3d = read_spacing_3d(dataset / "spacing_3d.json")
    forbidden = None
    if args.adjacency_graph:
        try:
            forbidden = forbidden_pairs(read_graph(args.adjacency_graph))
        except (OSError, ValueError) as error:
            raise ConfigError(f"--adjacency_graph: {error}") from None
        if forbidden.shape != (args.n_class, args.n_class):
            raise ConfigError(
                f"--adjacency_graph {args.adjacency_graph} is {forbidden.shape[0]} x "
                f"{forbidden.shape[1]} for --n_class {args.n_class}"
            )
    arrays = ARRAYS + ((ADJACENCY,) if forbidden is not None else ())
    augment = None
    if args.augment:  # its own stream: turning augmentation on leaves the other draws alone
        augment = torch.Generator().manual_seed(args.seed * 7919 + context.rank)

    def validate(epoch: int, weights: list[list[float]], save_dir: Path | None) -> dict:
        """One validation pass of the network (never the DDP wrapper: its forward would
        synchronise processes that hold different numbers of batches) and its 3D metrics.
        Every process first takes rank 0's BatchNorm statistics: each updated its own."""
        context.broadcast_buffers(net)
        log = do_epoch("val", net, device, val_phase, [weights[val_id]], args, epoch, context,
                       save_dir=save_dir if context.writes else None)  # fmt: skip
        dsc3, hd3, hd95_3 = metrics_3d(log.volumes, args.n_class, spacing_3d, device, context)
        values = {"val_loss": log.losses, "val_dice": log.dices, "val_3d_dsc": dsc3,
                  "val_3d_hausdorff": hd3, "val_3d_hd95": hd95_3}  # fmt: skip
        if forbidden is not None:
            values[ADJACENCY] = adjacency_violations(log.volumes, forbidden)
        return {"log": log, "values": values}

    if args.evaluate:
        val = validate(0, weights, workdir / "evaluation")
        if context.writes:
            for name, value in val["values"].items():
                save_npy(workdir / f"{name}.npy", value[None])
            write_csv(workdir / args.csv, {n: v[None] for n, v in val["values"].items()},
                      [args.l_rate], [weights], max(loss_names, key=len))  # fmt: skip
            save_text(workdir / "args.json", json.dumps(vars(args), indent=2))
            save_text(workdir / "provenance.json",
                      json.dumps(provenance(args, argv, device, context), indent=2))  # fmt: skip
        report_epoch(args, context, "evaluation", val["values"], False)
        return

    history: dict[str, list] = {name: [] for name in arrays}
    timing: list[dict] = []
    lrs: list[float] = []
    weight_log: list = []
    start_epoch, best_metric, best_epoch = 0, -np.inf, -1
    if args.resume:
        # On the CPU: the random states must stay CPU tensors; load_state_dict moves the rest.
        state = read_last(last_path)
        start_epoch = int(state["epoch"]) + 1
        changes = check_resume(args, workdir, state, start_epoch, context)
        fit_state(net, model_state(state, last_path, "--resume"), last_path, "--resume")
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            plateau.load_state_dict(state["plateau"])
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(
                f"--resume {last_path}: its optimizer or scheduler state does not fit this run "
                f"({type(error).__name__}: {error})"
            ) from None
        weights, lrs, weight_log = state["weights"], state["lrs"], state["weight_log"]
        best_metric, best_epoch = state["best_metric"], state["best_epoch"]
        for name in arrays:
            history[name] = list(read_history(workdir / f"{name}.npy", start_epoch))
        timing = [t for t in _load_json_list(workdir / "timing.json") if t["epoch"] < start_epoch]
        restore_rng(state["rng"][context.rank] if context.active else state["rng"])
        if augment is not None and "augment" in state:
            augment.set_state(state["augment"][context.rank])
        if context.writes:
            command = shlex.join(["python", "main.py", *argv])
            commit = _git("rev-parse", "HEAD").strip()
            record_resume(workdir, {"after_epoch": start_epoch - 1, "command": command,
                                    "commit": commit, "changed": changes})  # fmt: skip
            save_text(workdir / "args.json", json.dumps(vars(args), indent=2))
        print(f">>> Resuming {workdir} after epoch {state['epoch']}", flush=True)
    elif context.writes:
        save_text(workdir / "args.json", json.dumps(vars(args), indent=2))
        prov = provenance(args, argv, device, context)
        save_text(workdir / "provenance.json", json.dumps(prov, indent=2))
        save_text(workdir / "git.diff", _git("diff", "HEAD"))

    for epoch in range(start_epoch, args.n_epoch):
        for i, loader in enumerate(train_loaders):
            if loader.generator is not None:
                loader.generator.manual_seed(args.seed * 100_003 + epoch * 101 + i)
            if hasattr(loader.batch_sampler, "set_epoch"):
                loader.batch_sampler.set_epoch(epoch)
        iter_dir = workdir / f"iter{epoch:03d}"
        tra = train_epoch(args, model, device, train_phase, weights, epoch, context, optimizer,
                          scheduler, iter_dir, augment)  # fmt: skip
        weights = tra.weights
        started = time.perf_counter()
        val = validate(epoch, weights, iter_dir / "val")
        values = {"tra_loss": tra.log.losses, "tra_dice": tra.log.dices} | val["values"]
        for name in arrays:
            history[name].append(values[name])
        lrs.append(optimizer.param_groups[0]["lr"])
        weight_log.append([list(w) for w in weights])
        timing.append(
            {
                "epoch": epoch,
                "train_seconds": tra.log.timing["seconds"],
                "data_seconds": tra.log.timing["data_seconds"],
                "train_slices": tra.log.timing["slices"],
                "val_seconds": time.perf_counter() - started,
                "processes": context.world_size,
            }
        )
        if context.writes:
            for name in arrays:
                save_npy(workdir / f"{name}.npy", np.stack(history[name]))
            write_csv(workdir / args.csv, {n: np.stack(v) for n, v in history.items()}, lrs,
                      weight_log, max(loss_names, key=len))  # fmt: skip
            save_text(workdir / "timing.json", json.dumps(timing, indent=1))

        dices = val["values"]["val_3d_dsc" if args.compute_3d_dice else "val_dice"]
        metric = float(dices[:, args.metric_axis].mean())
        improved = metric > best_metric
        if improved:
            best_metric, best_epoch = metric, epoch
            if context.writes:
                save_best(workdir, iter_dir, net, epoch, metric, args)

        if args.schedule:
            halve = (
                plateau.step(improved)
                if args.schedule_rule == "plateau"
                else original_halving(epoch, best_epoch)
            )
            if halve:
                for group in optimizer.param_groups:
                    group["lr"] /= 2
        weights = scheduler(epoch, weights, {"val_dice": metric, "tra_losses": tra.log.per_loader})

        state = {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "scheduler": scheduler.state_dict(),
            "plateau": plateau.state_dict(),
            "weights": weights,
            "lrs": lrs,
            "weight_log": weight_log,
            "best_metric": best_metric,
            "best_epoch": best_epoch,
            # Every process's random streams (each rank's differ), gathered for rank 0 to save.
            "rng": context.gather(rng_state()) if context.active else rng_state(),
            "args": vars(args),
            "processes": context.world_size,
        }
        if augment is not None:
            state["augment"] = context.gather(augment.get_state())
        if context.writes:
            save_torch(last_path, state)
        report_epoch(args, context, f"epoch {epoch:3d}", val["values"], improved)
    if context.writes:
        print(f">>> Done: best epoch {best_epoch}, metric {best_metric:.4f}", flush=True)


def save_best(
    workdir: Path, iter_dir: Path, net: nn.Module, epoch: int, metric: float, args
) -> None:
    """best.pt (weights and what rebuilds the network), best_epoch/ and best_epoch.txt."""
    best = {
        "model": net.state_dict(),
        "epoch": epoch,
        "metric": metric,
        "network": args.network,
        "n_in": args.modalities,
        "n_class": args.n_class,
        "args": vars(args),
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


def report_epoch(
    args: argparse.Namespace, context: Context, what: str, values: dict, improved: bool
) -> None:
    """One line per epoch on stdout (rank 0's under torchrun)."""
    if not context.writes:
        return
    axis = args.metric_axis
    print(
        f">> {what}: val dice {values['val_dice'][:, axis].mean():.4f}, "
        f"3D dice {values['val_3d_dsc'][:, axis].mean():.4f}, "
        f"HD {values['val_3d_hausdorff'][:, axis].mean():.3f} mm, "
        f"HD95 {values['val_3d_hd95'][:, axis].mean():.3f} mm{' (best)' if improved else ''}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args(argv)
    try:
        context, device = setup(args.cpu)
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        run(args, argv, context, device)
    except (ConfigError, DataError, TrainingError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"error: {disk_full_message(error, args.workdir)}", file=sys.stderr)
        return 1
    except ValueError as error:  # input validation of the losses and networks
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        teardown(context)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
