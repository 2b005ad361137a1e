"""The training's command line: the original boundary-loss flags, parsed and cross-checked.

`--losses` and `--folders` keep the original's syntax (Kervadec et al., MIDL 2019) but are read by
a literal parser: Python literals, the transform names of `dataloader.TRANSFORMS`, and `+`
between list literals (the original makefiles write `--folders="$(B_DATA)+[...]"`); nothing in
them is ever executed. Two conventions of `--folders` are accepted, told apart by the number of
folders per loader (docs/conventions.md):

- the original's: the input folder, the ground-truth folder of the metrics, then one folder per
  loss (`len(folders) == len(losses) + 2`);
- the short one: the input folder, then one folder per loss, the metrics reading the first
  one-hot loss folder (`len(folders) == len(losses) + 1`); a loader without one is unlabelled.

The command line stays here: `get_args` parses and checks it, and `check_config` turns it, once,
into the typed, frozen `Config` that main.py and the epoch engine read (the flags' values, the
losses, the scheduler and the per-loader folders; the arguments as given are kept for args.json,
the checkpoints and a resume's check); `canonical_args` gives comparable values for that check.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from boundary_loss.data.loader import TRANSFORMS, FolderSpec
from boundary_loss.io.console import ArgumentParser
from boundary_loss.losses import checks
from boundary_loss.losses.idc_losses import LOSSES, CompoundLoss, get_loss
from boundary_loss.losses.weight_schedules import SCHEDULERS, DummyScheduler, get_scheduler
from boundary_loss.maps.adjacency import forbidden_pairs, read_graph
from boundary_loss.networks.registry import NETWORKS
from boundary_loss.preprocessing.plan3d import read_plan
from boundary_loss.runfolder.writer import dataset_identity


class ConfigError(Exception):
    """A command-line option is malformed or inconsistent."""


def build_parser() -> argparse.ArgumentParser:
    """The command line: the original's flags, with --seed, --resume and the speed options."""
    parser = ArgumentParser(
        prog="main.py",
        description="Train one segmentation network with a weighted combination of losses.",
    )
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
    parser.add_argument(
        "--save_train",
        action="store_true",
        help="also save the training predictions, as png per epoch; this reads the predicted "
        "classes of every training batch back from the device (a wait on a GPU each step)",
    )
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
    add_run_flags(parser)
    return parser


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags added to the original's: reproducibility, resuming, speed, evaluation."""
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
    parser.add_argument(
        "--patch_size",
        type=int,
        nargs=3,
        default=None,
        help="--dimensions 3: the training patch, X Y Z voxels (default: the plan's, plan.json)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=250,
        help="--dimensions 3: training batches per epoch (nnU-Net's 250)",
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
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1, got {args.iterations}")
    if args.patch_size is not None and min(args.patch_size) < 1:
        parser.error(f"--patch_size must be 3 positive sizes, got {args.patch_size}")
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
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            # `[...]+[...]`, as the original makefiles join $(B_DATA) and the loss folders
            left, right = convert(node.left), convert(node.right)
            if isinstance(left, list) and isinstance(right, list) and _lists(node):
                return left + right
            raise ConfigError(
                f"{flag}: '+' joins list literals only ([...]+[...]), found it at column "
                f"{node.col_offset} of {shown}"
            )
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


def _lists(node: ast.AST) -> bool:
    """Whether a `+` expression joins list displays only (`[a] + [b] + [c]`)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _lists(node.left) and _lists(node.right)
    return isinstance(node, ast.List)


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


def folders_meaning(
    losses: list[list[tuple[str, dict, float]]], folders: list[list[FolderSpec]]
) -> list[tuple]:
    """What `--folders` means, whichever convention wrote it: per loader, the input, the ground
    truth of the metrics and each loss's target, as (folder, transform name, one-hot) triples.
    `[in, gt, dist]` (short) and `[in, gt]+[gt, dist]` (original) mean the same."""

    def triple(spec: FolderSpec | None) -> tuple | None:
        return None if spec is None else (spec.folder, spec.transform.__name__, spec.is_hot)

    if len(folders) == 1 and len(losses) > 1:
        folders = folders * len(losses)
    if len(losses) == 1 and len(folders) > 1:
        losses = losses * len(folders)
    meaning = []
    for i, (row, loss_list) in enumerate(zip(folders, losses, strict=False)):
        inputs, gt, targets = split_folders(row, len(loss_list), i)
        meaning.append((triple(inputs), triple(gt), [triple(t) for t in targets]))
    return meaning


def check_idc(loss: str, idc: object, n_class: int) -> None:
    """A loss's `idc`: distinct class indices of the `n_class` classes (negative ones count
    from the end, as in Python indexing), checked by the losses' own `checks`.

    Raises:
        ConfigError: not a list of integers, an index outside the classes, or a repeated class.
    """
    if idc is None:
        return  # the loss says it needs idc when it is built
    where = f"--losses: idc of {loss}"
    indices = checks.check_idc(idc, where, negative=True, error=ConfigError)
    classes = f"--n_class (expected 0..{n_class - 1})"
    checks.check_idc_range(
        indices, n_class, where, classes, negative=True, distinct=True, error=ConfigError
    )


@dataclass(frozen=True)
class Config:
    """The checked configuration of a training, built once from its command line
    (`check_config`): what main.py and the epoch engine read, typed.

    The flags keep their names (`--n_class` is `n_class`); `--net_params` and `--metric_axis`
    are parsed, `--losses`, `--folders` and `--scheduler*` are given per training loader as
    `losses`, `inputs`, `ground_truth`, `targets`, the built `loss_fns` and the `scheduler`.
    `recorded` holds every argument as given, by flag: what args.json and the checkpoints
    record, and what a resume compares (`checkpoint.check_resume`).

    Attributes:
        losses: per loader, (name, kwargs, weight) of each loss.
        inputs: per loader, the input folder.
        ground_truth: per loader, the folder of the metrics' ground truth (one-hot), None when
            unlabelled.
        targets: per loader, one folder per loss, its target.
        loss_fns: per loader, the weighted losses, built once.
        scheduler: the loss-weight scheduler.
    """

    # The data and its loaders
    dataset: Path
    workdir: Path
    training_folders: tuple[str, ...]
    validation_folder: str
    val_loader_id: int
    n_class: int
    modalities: int
    dimensions: int
    batch_size: int
    use_spacing: bool
    in_memory: bool
    debug: bool
    group: bool
    group_train: bool
    grp_regex: str
    workers: int
    # 3D (--dimensions 3): the plan of the prepared data (plan.json), the patch, batches/epoch
    plan: dict | None
    patch_size: tuple[int, ...] | None
    iterations: int
    # The network and its optimisation
    network: str
    net_params: dict[str, object]
    weights: str  # "" when the network starts from scratch
    l_rate: float
    use_sgd: bool
    schedule: bool
    schedule_rule: str
    n_epoch: int
    seed: int
    threads: int
    # One step
    temperature: float
    bf16: bool
    channels_last: bool
    augment: bool
    augment_degrees: float
    device_dist_maps: bool
    save_train: bool
    # The metrics and the run
    metric_axis: tuple[int, ...]
    compute_3d_dice: bool
    csv: str
    adjacency_graph: str  # "" without
    resume: bool
    evaluate: bool
    # --losses, --folders and --scheduler, per loader
    losses: list[list[tuple[str, dict, float]]]
    inputs: list[FolderSpec]
    ground_truth: list[FolderSpec | None]
    targets: list[list[FolderSpec]]
    loss_fns: list[CompoundLoss]
    scheduler: DummyScheduler
    recorded: dict[str, object]


def split_folders(
    folders: list[FolderSpec], n_losses: int, loader: int
) -> tuple[FolderSpec, FolderSpec | None, list[FolderSpec]]:
    """Input, ground truth of the metrics and loss targets of one loader's `--folders`.

    Raises:
        ConfigError: neither convention fits the counts, or the ground-truth folder of the
            original's convention is not one-hot.
    """
    if len(folders) == n_losses + 2:  # the original's: input, ground truth, one per loss
        gt = folders[1]
        if not gt.is_hot:
            raise ConfigError(
                f"--folders: the ground-truth folder {gt.folder!r} of loader {loader} (second "
                "entry: input, ground truth, then one folder per loss) must be one-hot, e.g. "
                "('gt_npy', gt_transform, True)"
            )
        return folders[0], gt, folders[2:]
    if len(folders) == n_losses + 1:  # input, one per loss; the metrics read a one-hot one
        gt = next((spec for spec in folders[1:] if spec.is_hot), None)
        return folders[0], gt, folders[1:]
    raise ConfigError(
        f"--losses has {n_losses} loss(es) but --folders gives {len(folders)} folder(s) "
        f"{[spec.folder for spec in folders]} for loader {loader}: expected the input, the "
        f"ground truth and one folder per loss ({n_losses + 2}, as the original), or the input "
        f"and one folder per loss ({n_losses + 1})"
    )


# Transforms that compute distance maps from the labels they are given: on a 3D patch, wrong.
ON_PATCH = frozenset({"dist_map_transform", "normalised_dist_map_transform"})


def check_config(args: argparse.Namespace) -> Config:
    """The configuration of a parsed command line (`get_args`): --losses, --folders,
    --scheduler_params and --net_params parsed and checked to agree, the losses and the
    scheduler built.

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
    split = [
        split_folders(f, len(ls), i) for i, (f, ls) in enumerate(zip(folders, losses, strict=True))
    ]
    for loss_list in losses:
        for name, kwargs, _ in loss_list:
            check_idc(name, kwargs.get("idc"), args.n_class)
    params = parse_literal(args.scheduler_params, "--scheduler_params")
    if not isinstance(params, dict):
        raise ConfigError(f"--scheduler_params must be a dict, got {params!r}")
    try:
        scheduler = get_scheduler(args.scheduler, params)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    skip_zero = not scheduler.reads_losses
    try:  # built once here: a loss may read a file (the adjacency graph) and warn
        loss_fns = [
            CompoundLoss(
                [get_loss(n, **k) for n, k, _ in loss_list],
                [n for n, _, _ in loss_list],
                skip_zero=skip_zero,
            )
            for loss_list in losses
        ]
    except ValueError as error:
        raise ConfigError(f"--losses: {error}") from None
    if args.scheduler == "DummyScheduler" and any(
        all(w == 0 for _, _, w in loss_list) for loss_list in losses
    ):
        raise ConfigError(
            "--losses: every weight of a loader is 0 and --scheduler DummyScheduler keeps them "
            "so: nothing would be trained; give a loss a positive weight"
        )
    if not -n_train <= args.val_loader_id < n_train:
        raise ConfigError(f"--val_loader_id {args.val_loader_id} outside the {n_train} loaders")
    inputs, ground_truth, targets = (list(column) for column in zip(*split, strict=True))
    for compound, specs in zip(loss_fns, targets, strict=True):
        for fn, name, spec in zip(compound.losses, compound.names, specs, strict=True):
            check_target(name, fn.target, spec)
    net_params = parse_literal(args.net_params, "--net_params")
    if not isinstance(net_params, dict):
        raise ConfigError(f"--net_params must be a dict, got {net_params!r}")
    # The flags as parsed, by the field of the same name; --losses, --folders and --scheduler
    # become the per-loader fields below.
    built = {"losses", "inputs", "ground_truth", "targets", "loss_fns", "scheduler", "recorded"}
    built.add("plan")
    plan, patch_size = None, None
    if args.dimensions == 3:
        plan, patch_size = check_3d(args, net_params, targets)
    flags = {f.name: getattr(args, f.name) for f in fields(Config) if f.name not in built}
    return Config(
        **flags
        | {
            "dataset": Path(args.dataset),
            "workdir": Path(args.workdir),
            "training_folders": tuple(args.training_folders),
            "net_params": net_params,
            "metric_axis": tuple(args.metric_axis),
            "plan": plan,
            "patch_size": patch_size,
        },
        losses=losses,
        inputs=inputs,
        ground_truth=ground_truth,
        targets=targets,
        loss_fns=loss_fns,
        scheduler=scheduler,
        recorded=dict(vars(args)),
    )


def check_3d(
    args: argparse.Namespace, net_params: dict, targets: list[list[FolderSpec]]
) -> tuple[dict, tuple[int, ...]]:
    """The plan and the patch of a 3D training (--dimensions 3), checked against its flags.

    Raises:
        ConfigError: no readable plan.json in --dataset, a patch the plan's network cannot
            take, a distance-map folder that would compute the maps on the patch, or a flag
            that only 2D slices have.
    """
    path = Path(args.dataset) / "plan.json"
    try:
        plan = read_plan(path)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"--dimensions 3: {error} (--dataset must be a folder written by "
            "preprocess/prepare_3d.py)"
        ) from None
    if plan["n_class"] != args.n_class:
        raise ConfigError(f"--n_class {args.n_class}, but {path} has {plan['n_class']} classes")
    if len(plan["channels"]) != args.modalities:
        raise ConfigError(
            f"--modalities {args.modalities}, but {path} has {len(plan['channels'])} channels"
        )
    for flag in ("device_dist_maps", "group", "group_train", "save_train", "channels_last"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag} is for 2D slices; a 3D training does not take it")
    for specs in targets:
        for spec in specs:
            if spec.transform.__name__ in ON_PATCH:
                raise ConfigError(
                    f"--folders: ({spec.folder!r}, {spec.transform.__name__}) would compute the "
                    "distance maps on each 3D patch, where a class outside the patch gets no "
                    "distances; use the maps of the whole volume, ('3d_distmap', "
                    "raw_npy_transform, False)"
                )
    patch = tuple(args.patch_size or plan["patch_size"])
    if args.network == "PlainUNet3D":
        pools = net_params.get("pools", plan["network"]["pools"])
        valid = isinstance(pools, list | tuple) and all(
            isinstance(p, list | tuple)
            and len(p) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in p)
            for p in pools
        )
        if not valid:
            raise ConfigError(
                f"--net_params pools {pools!r}: expected a list of [x, y, z] strides (positive "
                "integers), one per downsampling, as plan.json's network.pools"
            )
        factor = [math.prod(p[a] for p in pools) for a in range(3)]
        if any(s % f for s, f in zip(patch, factor, strict=True)):
            raise ConfigError(
                f"--patch_size {list(patch)}: each size must be a multiple of {factor}, the "
                f"downsampling of the network's pools {pools} ({path})"
            )
    return plan, patch


def check_target(loss: str, kind: str | None, spec: FolderSpec) -> None:
    """A loss's target folder gives what the loss expects: one-hot labels (`is_hot` True), or a
    signed distance map (`is_hot` False); a loss needing no ground truth takes any.

    Raises:
        ConfigError: naming the loss, the folder and what it should be.
    """
    if kind is None or spec.is_hot == (kind == "one-hot"):
        return
    example = (
        "('gt_npy', gt_transform, True)"
        if kind == "one-hot"
        else ("('gt_npy', dist_map_transform, False)")
    )
    raise ConfigError(
        f"--folders: {loss} takes a {kind} target, but its folder ({spec.folder!r}, "
        f"{spec.transform.__name__}, {spec.is_hot}) gives "
        f"{'one-hot labels' if spec.is_hot else 'a distance map'}; "
        f"expected e.g. {example} (folders: the input, [the ground truth,] one per loss)"
    )


def canonical_args(values: Mapping[str, object]) -> dict[str, object]:
    """Arguments as comparable values: literals parsed, transforms by name, paths normalised
    (`--dataset=data/ISLES/` and `data/ISLES` are the same folder)."""
    out = dict(values)
    out["losses"] = parse_losses(str(values["losses"]))
    out["folders"] = folders_meaning(out["losses"], parse_folders(str(values["folders"])))
    for name in ("net_params", "scheduler_params"):
        out[name] = parse_literal(str(values[name]), f"--{name}")
    for name in ("workdir", "weights", "adjacency_graph"):
        if values.get(name):
            out[name] = os.path.realpath(str(values[name]))
    data = dataset_identity(str(values["dataset"]))  # the data itself, whatever its path
    out["dataset"] = data["split_md5"] or data["path"]
    return out


def read_forbidden(config: Config) -> np.ndarray | None:
    """The forbidden class pairs of --adjacency_graph (None without it)."""
    if not config.adjacency_graph:
        return None
    try:
        forbidden = forbidden_pairs(read_graph(config.adjacency_graph))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--adjacency_graph: {error}") from None
    if forbidden.shape != (config.n_class, config.n_class):
        raise ConfigError(
            f"--adjacency_graph {config.adjacency_graph} is {forbidden.shape[0]} x "
            f"{forbidden.shape[1]} for --n_class {config.n_class}"
        )
    return forbidden
