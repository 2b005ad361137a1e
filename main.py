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
(everything --resume needs); and once, args.json, provenance.json and git.diff.
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import io
import json
import platform
import random
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from atomic import atomic_write, write_text_atomic
from dataloader import TRANSFORMS, DataError, FolderSpec, group_key, make_loader
from losses import LOSSES, get_loss
from metrics import forbidden_adjacencies, forbidden_pairs, hd_hd95, read_graph
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


def get_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="sliced data root (e.g. data/isles)")
    parser.add_argument("--workdir", required=True, help="run folder for every output")
    parser.add_argument("--losses", required=True, help="[('Loss', {'idc': [...]}, weight), ...]")
    parser.add_argument("--folders", required=True, help="[('folder', transform, is_hot), ...]")
    parser.add_argument("--network", required=True, choices=sorted(NETWORKS))
    parser.add_argument(
        "--net_params", default="{}", help="dict literal of network arguments, e.g. \"{'nG': 16}\""
    )
    parser.add_argument("--n_class", type=int, required=True, help="number of classes K")
    parser.add_argument("--csv", default="metrics.csv", help="per-epoch metrics file name")
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
        "--adjacency_graph",
        default="",
        help="graph.csv of the training anatomy: count forbidden adjacencies in the validation "
        "predictions every epoch (val_adjacency.npy)",
    )
    args = parser.parse_args(argv)
    for name in ("n_epoch", "batch_size", "n_class", "modalities"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.l_rate <= 0:
        parser.error(f"--l_rate must be positive, got {args.l_rate}")
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
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ConfigError(
            f"{flag}: not a valid literal ({error.msg}, column {error.offset}): {text!r}"
        ) from None

    def convert(node: ast.AST) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            values = [convert(e) for e in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise ConfigError(f"{flag}: '**' is not allowed in {text!r}")
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
            f"{type(node).__name__} at column {getattr(node, 'col_offset', '?')} of {text!r}; "
            "nothing is executed"
        )

    return convert(tree.body)


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
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                raise ConfigError(
                    f"--losses: the weight of {name} must be a number, got {weight!r}"
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


def provenance(args: argparse.Namespace, argv: Sequence[str], device: torch.device) -> dict:
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
    """What one pass over the loaders measured."""

    losses: np.ndarray  # iteration x loss, raw (unweighted) values
    dices: np.ndarray  # slice x class, 2D Dice (NaN for unlabelled slices)
    per_loader: list[list[float]] = field(default_factory=list)  # mean raw losses per loader
    volumes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # 3D accumulation


def save_predictions(classes: Tensor, stems: Sequence[str], folder: Path) -> None:
    """Predicted class maps (B H W) as uint8 png, one per stem (class indices, as gt/)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seg, stem in zip(classes.cpu().numpy().astype(np.uint8), stems, strict=True):
        Image.fromarray(seg).save(folder / f"{stem}.png")


def do_epoch(
    mode: str,
    net: nn.Module,
    device: torch.device,
    loaders: Sequence[torch.utils.data.DataLoader],
    loss_fns: Sequence[Sequence],
    weights: Sequence[Sequence[float]],
    loss_names: Sequence[Sequence[str]],
    args: argparse.Namespace,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    save_dir: Path | None = None,
) -> EpochLog:
    """Train (optimizer given) or validate over the loaders, logging losses, Dice and, when
    validating, the predicted volumes of each patient for the 3D metrics."""
    train = optimizer is not None
    net.train(train)
    K = args.n_class
    n_loss = max(len(f) for f in loss_fns)
    total_iterations = sum(len(loader) for loader in loaders)
    total_slices = sum(len(loader.dataset) for loader in loaders)
    loss_log = np.full((total_iterations, n_loss), np.nan, dtype=np.float32)
    dice_log = np.zeros((total_slices, K), dtype=np.float32)
    volumes: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    done_batches = done_slices = 0
    per_loader = []

    bar = tqdm(total=total_iterations, desc=f">> {mode} epoch {epoch:3d}", ncols=120, leave=False)
    with torch.set_grad_enabled(train):
        for loader, fns, ws, names in zip(loaders, loss_fns, weights, loss_names, strict=True):
            first_batch = done_batches
            for batch in loader:
                image = batch["images"].to(device)
                labels = [t.to(device) for t in batch["labels"]]
                gt = None if batch["gt"] is None else batch["gt"].to(device)
                stems = batch["filenames"]
                B = image.shape[0]
                if train:
                    optimizer.zero_grad(set_to_none=True)
                logits = net(image)
                probs = F.softmax(args.temperature * logits, dim=1)  # B K H W
                if not torch.isfinite(probs).all():
                    raise TrainingError(
                        f"epoch {epoch}, {mode} batch {done_batches} (first slice {stems[0]}): "
                        "the network output is NaN or infinite (diverged, or NaN in the input); "
                        "stopping"
                    )
                values = [fn(probs, label) for fn, label in zip(fns, labels, strict=True)]
                for name, value in zip(names, values, strict=True):
                    if not torch.isfinite(value):
                        raise TrainingError(
                            f"epoch {epoch}, {mode} batch {done_batches} (first slice "
                            f"{stems[0]}): loss {name} is {value.item()}; stopping"
                        )
                loss = sum(w * v for w, v in zip(ws, values, strict=True))
                if train:
                    loss.backward()
                    optimizer.step()

                classes = probs.detach().argmax(dim=1)  # B H W (probs checked by the losses)
                predicted = F.one_hot(classes, K).movedim(-1, 1).to(torch.int32)  # B K H W
                if gt is None:  # an unlabelled loader (semi-supervised): no Dice
                    dice_log[done_slices : done_slices + B] = np.nan
                else:
                    dice_log[done_slices : done_slices + B] = dice_coef(gt, predicted).cpu().numpy()
                loss_log[done_batches, : len(values)] = [v.item() for v in values]
                if save_dir is not None:
                    save_predictions(classes, stems, save_dir)
                if not train and gt is not None:
                    gt_classes = gt.argmax(dim=1)
                    for b, stem in enumerate(stems):
                        key = group_key(stem, args.grp_regex)
                        volumes[key]["stems"].append(stem)
                        volumes[key]["pred"].append(classes[b].cpu().numpy().astype(np.uint8))
                        volumes[key]["gt"].append(gt_classes[b].cpu().numpy().astype(np.uint8))
                        volumes[key]["spacing"].append(batch["spacing"][b].numpy())
                done_batches += 1
                done_slices += B
                running = (
                    np.nanmean(dice_log[:done_slices, args.metric_axis]) if gt is not None else 0
                )
                bar.set_postfix(
                    {"dice": f"{running:.3f}"}
                    | {
                        n: f"{v:.3g}"
                        for n, v in zip(names, np.nanmean(loss_log[:done_batches], 0), strict=False)
                    }
                )
                bar.update()
            per_loader.append(
                np.nanmean(loss_log[first_batch:done_batches, : len(fns)], 0).tolist()
            )
    bar.close()
    stacked = {
        key: {
            "pred": np.stack([p for _, p in sorted(zip(v["stems"], v["pred"], strict=True))], -1),
            "gt": np.stack([g for _, g in sorted(zip(v["stems"], v["gt"], strict=True))], -1),
            "spacing": v["spacing"][0],
        }
        for key, v in volumes.items()
    }
    return EpochLog(loss_log, dice_log, per_loader, stacked)


def metrics_3d(
    volumes: Mapping[str, Mapping[str, np.ndarray]], K: int, spacing_3d: Mapping[str, Sequence]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D Dice, HD and HD95 per patient (sorted by name) and class: three `P K` arrays.

    Spacing: the patient's entry in spacing_3d.json when present, else its slices' spacing.
    """
    keys = sorted(volumes)
    dsc = np.zeros((len(keys), K), dtype=np.float32)
    hd = np.zeros((len(keys), K), dtype=np.float32)
    hd95 = np.zeros((len(keys), K), dtype=np.float32)
    for i, key in enumerate(keys):
        pred, gt = volumes[key]["pred"], volumes[key]["gt"]  # X Y Z
        spacing = spacing_3d.get(key, volumes[key]["spacing"])
        for k in range(K):
            p, t = pred == k, gt == k
            dsc[i, k] = (2 * np.sum(p & t) + 1e-8) / (p.sum() + t.sum() + 1e-8)
            hd[i, k], hd95[i, k] = hd_hd95(p, t, voxelspacing=spacing)
    return dsc, hd, hd95


@dataclass
class TrainResult:
    log: EpochLog
    weights: list[list[float]]


NAN_RETRIES = 3


def train_epoch(
    args: argparse.Namespace,
    net: nn.Module,
    device: torch.device,
    loaders: Sequence[torch.utils.data.DataLoader],
    loss_fns: Sequence[Sequence],
    weights: list[list[float]],
    loss_names: Sequence[Sequence[str]],
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler,
    iter_dir: Path,
) -> TrainResult:
    """One training epoch. A scheduler that handles NaN (`handles_nan`, the adjacency
    LambdaController) gets the chance to lower its weights: the epoch restarts from its first
    state with the new weights, up to NAN_RETRIES times; otherwise a NaN stops the run."""
    handles_nan = getattr(scheduler, "handles_nan", False)
    saved = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()))
    for attempt in range(NAN_RETRIES + 1):
        try:
            log = do_epoch(
                "train",
                net,
                device,
                loaders,
                loss_fns,
                weights,
                loss_names,
                args,
                epoch,
                optimizer,
                iter_dir / "train" if args.save_train else None,
            )
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


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


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


def run(args: argparse.Namespace, argv: Sequence[str]) -> None:
    config = check_config(args)
    dataset = Path(args.dataset)
    workdir = Path(args.workdir)
    last_path = workdir / "last.pt"
    if args.resume and not last_path.exists():
        raise ConfigError(f"--resume: {last_path} not found (nothing to resume)")
    workdir.mkdir(parents=True, exist_ok=True)

    set_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cpu = args.cpu or not torch.cuda.is_available()
    device = torch.device("cpu" if cpu else "cuda")
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
        state = torch.load(args.weights, map_location=device, weights_only=True)
        net.load_state_dict(state["model"] if "model" in state else state)
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
    }
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
        for i, (folder, specs) in enumerate(zip(args.training_folders, config.folders, strict=True))
    ]
    val_specs = config.folders[args.val_loader_id]
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
    spacing_3d = _load_json(dataset / "spacing_3d.json")
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
    val_id = args.val_loader_id

    history: dict[str, list] = {name: [] for name in arrays}
    lrs: list[float] = []
    weight_log: list = []
    start_epoch, best_metric, best_epoch = 0, -np.inf, -1
    if args.resume:
        state = torch.load(last_path, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        plateau.load_state_dict(state["plateau"])
        weights, lrs, weight_log = state["weights"], state["lrs"], state["weight_log"]
        start_epoch, best_metric, best_epoch = (
            state["epoch"] + 1,
            state["best_metric"],
            state["best_epoch"],
        )
        for name in arrays:
            history[name] = list(np.load(workdir / f"{name}.npy")[:start_epoch])
        restore_rng(state["rng"])
        print(f">>> Resuming {workdir} after epoch {state['epoch']}", flush=True)
    else:
        save_text(workdir / "args.json", json.dumps(vars(args), indent=2))
        prov = provenance(args, argv, device)
        save_text(workdir / "provenance.json", json.dumps(prov, indent=2))
        save_text(workdir / "git.diff", _git("diff", "HEAD"))

    for epoch in range(start_epoch, args.n_epoch):
        for i, loader in enumerate(train_loaders):
            if loader.generator is not None:
                loader.generator.manual_seed(args.seed * 100_003 + epoch * 101 + i)
            if hasattr(loader.batch_sampler, "set_epoch"):
                loader.batch_sampler.set_epoch(epoch)
        iter_dir = workdir / f"iter{epoch:03d}"
        tra = train_epoch(args, net, device, train_loaders, loss_fns, weights, loss_names, epoch,
                          optimizer, scheduler, iter_dir)  # fmt: skip
        weights = tra.weights
        val = do_epoch(
            "val",
            net,
            device,
            [val_loader],
            [loss_fns[val_id]],
            [weights[val_id]],
            [loss_names[val_id]],
            args,
            epoch,
            save_dir=iter_dir / "val",
        )
        dsc3, hd3, hd95_3 = metrics_3d(val.volumes, args.n_class, spacing_3d)
        for name, value in zip(
            ARRAYS,
            (tra.log.losses, val.losses, tra.log.dices, val.dices, dsc3, hd3, hd95_3),
            strict=True,
        ):
            history[name].append(value)
        if forbidden is not None:
            history[ADJACENCY].append(adjacency_violations(val.volumes, forbidden))
        lrs.append(optimizer.param_groups[0]["lr"])
        weight_log.append([list(w) for w in weights])
        for name in arrays:
            save_npy(workdir / f"{name}.npy", np.stack(history[name]))
        write_csv(
            workdir / args.csv,
            {n: np.stack(v) for n, v in history.items()},
            lrs,
            weight_log,
            max(loss_names, key=len),
        )

        metric = float((dsc3 if args.compute_3d_dice else val.dices)[:, args.metric_axis].mean())
        improved = metric > best_metric
        if improved:
            best_metric, best_epoch = metric, epoch
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
            shutil.copytree(iter_dir, best_tmp)
            shutil.rmtree(workdir / "best_epoch", ignore_errors=True)
            best_tmp.replace(workdir / "best_epoch")
            save_text(workdir / "best_epoch.txt", f"{epoch}\n")

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
            "rng": rng_state(),
        }
        save_torch(last_path, state)
        axis = args.metric_axis
        print(
            f">> epoch {epoch:3d}: val dice {val.dices[:, axis].mean():.4f}, "
            f"3D dice {dsc3[:, axis].mean():.4f}, HD {hd3[:, axis].mean():.3f} mm, "
            f"HD95 {hd95_3[:, axis].mean():.3f} mm{' (best)' if improved else ''}",
            flush=True,
        )
    print(f">>> Done: best epoch {best_epoch}, metric {best_metric:.4f}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args(argv)
    try:
        run(args, argv)
    except (ConfigError, DataError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # input validation of the losses and networks
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
