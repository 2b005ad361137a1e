"""Train one segmentation network with a weighted combination of losses, validating every epoch.

The command line is the original boundary-loss one (Kervadec et al., MIDL 2019), and the
original's makefile lines run unchanged (docs/conventions.md), e.g.

    python main.py --dataset=data/ISLES/ --n_class=2 --modalities=5 --metric_axis 1 \
        --workdir=results/isles/gdl_surface_steal --network=UNet --use_spacing --schedule \
        --losses="[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]" \
        --folders="[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]+\
[('gt_npy', gt_transform, True), ('gt_npy', dist_map_transform, False)]" \
        --scheduler=StealWeight --scheduler_params="{'to_steal': 0.01}"

A training, in order: the command line is parsed and checked, once, into the typed
configuration everything after reads (`config.Config`); the network, the optimizer and the
loaders are built; a resume restores `last.pt` once its configuration is checked
(`training.checkpoint`); each epoch trains and validates (`training.engine`), measures the 3D
metrics (`metrics`) and writes the run folder (`runfolder.writer`, schema in `runfolder.schema`).
`--evaluate` validates the `--weights` network once instead. Under torchrun (`make NPROC=4`) each
process trains on its share of the batches with DistributedDataParallel; only rank 0 writes.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from boundary_loss.data.loader import DataError, make_loader, read_spacing_3d
from boundary_loss.data.patches import make_patch_loader
from boundary_loss.io.atomic import DISK_FULL, disk_full_message
from boundary_loss.io.console import worker_message
from boundary_loss.io.distributed import Context, LaunchError, setup, teardown
from boundary_loss.metrics import adjacency_violations, metrics_3d
from boundary_loss.networks.registry import get_network
from boundary_loss.runfolder import writer as runwriter
from boundary_loss.runfolder.schema import ADJACENCY, ARRAYS
from boundary_loss.training import checkpoint
from boundary_loss.training.checkpoint import CheckpointError
from boundary_loss.training.config import (
    Config,
    ConfigError,
    check_config,
    get_args,
    read_forbidden,
)
from boundary_loss.training.engine import (
    Pass,
    Phase,
    TrainingError,
    do_epoch,
    loader_targets,
    report_epoch,
    train_epoch,
)
from boundary_loss.training.lr_schedule import PlateauHalving, original_halving
from boundary_loss.training.validate3d import VolumeValidation, validate_volumes, volume_validation

# What every training writes each epoch; ADJACENCY too with --adjacency_graph.
TRAINING_ARRAYS = tuple(name for name in ARRAYS if name != ADJACENCY)


@dataclass(kw_only=True)
class Session:
    """What a training holds fixed: its configuration, the network, its optimizer, the loaders
    and the references."""

    config: Config
    context: Context
    device: torch.device
    net: nn.Module  # the network (validated, saved)
    model: nn.Module  # what trains: the network or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    train: Phase
    val: Phase | VolumeValidation  # 2D: a loader of slices; 3D: whole volumes
    spacing_3d: dict
    forbidden: np.ndarray | None
    augment: torch.Generator | None
    plateau: PlateauHalving = field(default_factory=PlateauHalving)

    @property
    def workdir(self) -> Path:
        return self.config.workdir

    @property
    def arrays(self) -> tuple[str, ...]:
        """The per-epoch arrays this run writes."""
        return TRAINING_ARRAYS + ((ADJACENCY,) if self.forbidden is not None else ())

    @property
    def loss_names(self) -> list[str]:
        """The loss names of the loader with the most losses (the columns of the loss arrays)."""
        return max((losses.names for losses in self.train.losses), key=len)


@dataclass(kw_only=True)
class Progress:
    """What changes from epoch to epoch, and what a resume restores."""

    weights: list[list[float]]
    history: dict[str, list]
    lrs: list[float] = field(default_factory=list)
    weight_log: list = field(default_factory=list)
    timing: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    best_metric: float = -np.inf
    best_epoch: int = -1


def build_network(
    config: Config, context: Context, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """The network (initialised from --weights when given) and what trains it under torchrun."""
    network, net_params = config.network, config.net_params
    if config.plan is not None and network == "PlainUNet3D":  # shaped by the plan's spacing
        net_params = dict(config.plan["network"]) | net_params
    try:
        net = get_network(network, config.modalities, config.n_class, **net_params).to(device)
    except TypeError as error:
        raise ConfigError(f"--net_params {net_params} do not fit {network}: {error}") from None
    if net.dimensions != config.dimensions:
        raise ConfigError(
            f"--network {network} is {net.dimensions}D but --dimensions is {config.dimensions}"
        )
    if config.weights:
        checkpoint.load_weights(net, config.weights, network)
    if config.channels_last:
        layout = torch.channels_last if config.dimensions == 2 else torch.channels_last_3d
        net = net.to(memory_format=layout)
    model = net
    if context.active:
        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    return net, model


def build_optimizer(config: Config, net: nn.Module) -> torch.optim.Optimizer:
    """Adam (betas 0.9, 0.99) as the original, or SGD with --use_sgd."""
    lr = config.l_rate
    if config.use_sgd:
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))


def build_phases_3d(
    config: Config, context: Context, device: torch.device
) -> tuple[Phase, VolumeValidation]:
    """A 3D training's patch loaders (one per --training_folders entry: `iterations` batches of
    random patches per epoch, the maps cut from the whole-volume maps) and its whole-volume
    validation."""
    spacing = read_spacing_3d(config.dataset / "spacing_3d.json")
    read = [
        loader_targets(inputs, gt, targets, on_device=False)
        for inputs, gt, targets in zip(
            config.inputs, config.ground_truth, config.targets, strict=True
        )
    ]
    loaders = [
        make_patch_loader(
            config.dataset / folder,
            specs,
            config.n_class,
            config.patch_size,
            spacing,
            batch_size=config.batch_size,
            iterations=config.iterations,
            seed=config.seed + i,
            workers=config.workers,
            rank=context.rank,
            world_size=context.world_size,
            debug=config.debug,
            oversample=config.plan["oversample_foreground"],
        )
        for i, (folder, (specs, _)) in enumerate(zip(config.training_folders, read, strict=True))
    ]
    specs, targets = read[config.val_loader_id]
    val = volume_validation(
        config.dataset / config.validation_folder,
        specs,
        targets.n_losses,
        targets.gt_index,
        config.loss_fns[config.val_loader_id],
    )
    return Phase(loaders, [t for _, t in read], config.loss_fns), val


def build_phases(config: Config, context: Context, device: torch.device) -> tuple[Phase, Phase]:
    """The training loaders (one per --training_folders entry) and the validation loader, with
    the losses and targets each feeds."""
    common = {
        "use_spacing": config.use_spacing,
        "in_memory": config.in_memory,
        "debug": config.debug,
        "grp_regex": config.grp_regex,
        "num_workers": config.workers,
        "pin_memory": device.type == "cuda",
        "rank": context.rank,
        "world_size": context.world_size,
    }
    on_device = config.device_dist_maps or config.augment
    read = [
        loader_targets(inputs, gt, targets, on_device)
        for inputs, gt, targets in zip(
            config.inputs, config.ground_truth, config.targets, strict=True
        )
    ]
    loaders = [
        make_loader(
            config.dataset / folder,
            specs,
            config.n_class,
            batch_size=config.batch_size,
            train=True,
            group=config.group_train,
            seed=config.seed + i,
            **common,
        )
        for i, (folder, (specs, _)) in enumerate(zip(config.training_folders, read, strict=True))
    ]
    val_specs, val_targets = read[config.val_loader_id]
    val_loader = make_loader(
        config.dataset / config.validation_folder,
        val_specs,
        config.n_class,
        batch_size=config.batch_size,
        train=False,
        group=config.group,
        seed=config.seed,
        **common,
    )
    train = Phase(loaders, [t for _, t in read], config.loss_fns)
    val = Phase([val_loader], [val_targets], [config.loss_fns[config.val_loader_id]])
    return train, val


def open_session(config: Config, context: Context, device: torch.device) -> Session:
    """Check the run folder, and build everything the training needs."""
    workdir = config.workdir
    if config.resume and not (workdir / "last.pt").exists():
        raise ConfigError(f"--resume: {workdir / 'last.pt'} not found (nothing to resume)")
    if config.evaluate and (workdir / "last.pt").exists():
        raise ConfigError(
            f"--evaluate: {workdir} holds a training, whose val_*.npy it would overwrite; give "
            "another --workdir"
        )
    if context.writes:
        workdir.mkdir(parents=True, exist_ok=True)
    checkpoint.set_seed(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    net, model = build_network(config, context, device)
    optimizer = build_optimizer(config, net)
    build = build_phases_3d if config.dimensions == 3 else build_phases
    train, val = build(config, context, device)
    spacing_3d = read_spacing_3d(config.dataset / "spacing_3d.json")
    augment = None
    if config.augment:  # its own stream: turning augmentation on leaves the other draws alone
        augment = torch.Generator().manual_seed(config.seed * 7919 + context.rank)
    return Session(
        config=config,
        context=context,
        device=device,
        net=net,
        model=model,
        optimizer=optimizer,
        train=train,
        val=val,
        spacing_3d=spacing_3d,
        forbidden=read_forbidden(config),
        augment=augment,
    )


def validate(s: Session, epoch: int, weights: list[list[float]], save_dir: Path | None) -> dict:
    """One validation pass of the network (never the DDP wrapper: its forward would synchronise
    processes that hold different numbers of batches) and its 3D metrics. Every process first
    takes rank 0's BatchNorm statistics: each updated its own."""
    s.context.broadcast_buffers(s.net)
    if isinstance(s.val, VolumeValidation):
        return validate_3d(s, weights[s.config.val_loader_id], save_dir)
    run = Pass(
        "val",
        s.net,
        s.device,
        s.config,
        epoch,
        s.context,
        save_dir=save_dir if s.context.writes else None,
    )
    log = do_epoch(run, s.val, [weights[s.config.val_loader_id]])
    dsc, hd, hd95 = metrics_3d(log.volumes, s.config.n_class, s.spacing_3d, s.device, s.context)
    values = {
        "val_loss": log.losses,
        "val_dice": log.dices,
        "val_3d_dsc": dsc,
        "val_3d_hausdorff": hd,
        "val_3d_hd95": hd95,
    }
    if s.forbidden is not None:
        values[ADJACENCY] = adjacency_violations(log.volumes, s.forbidden)
    return values


def validate_3d(s: Session, weights: list[float], save_dir: Path | None) -> dict:
    """A 3D training's validation: whole volumes by sliding windows (`validate3d`), their 3D
    metrics at the target spacing, forbidden adjacencies counted in 3D."""
    values, volumes = validate_volumes(
        s.net,
        s.val,
        weights,
        config=s.config,
        device=s.device,
        context=s.context,
        save_dir=save_dir,
    )
    dsc, hd, hd95 = metrics_3d(volumes, s.config.n_class, s.spacing_3d, s.device, s.context)
    values |= {"val_3d_dsc": dsc, "val_3d_hausdorff": hd, "val_3d_hd95": hd95}
    if s.forbidden is not None:
        values[ADJACENCY] = adjacency_violations(volumes, s.forbidden, dims=3)
    return values


def evaluate(s: Session, argv: Sequence[str], weights: list[list[float]]) -> None:
    """--evaluate: one validation of --weights, written as a one-epoch run."""
    values = validate(s, 0, weights, s.workdir / "evaluation")
    if s.context.writes:
        for name, value in values.items():
            runwriter.save_npy(s.workdir / f"{name}.npy", value[None])
        runwriter.write_csv(
            s.workdir / s.config.csv,
            {n: v[None] for n, v in values.items()},
            [s.config.l_rate],
            [weights],
            s.loss_names,
        )
        runwriter.write_start(s.workdir, s.config, argv, s.device, s.context)
    report_epoch(s.config, s.context, "evaluation", values, False)


def resume(s: Session, argv: Sequence[str]) -> Progress:
    """The progress of an interrupted run from its last.pt, once its configuration is checked;
    the resume is recorded in resumes.json."""
    last = s.workdir / "last.pt"
    state = checkpoint.read_last(last)  # on the CPU: the random states must stay CPU tensors
    start = int(state["epoch"]) + 1
    changes = checkpoint.check_resume(s.config.recorded, s.workdir, state, start, s.context)
    checkpoint.fit_state(s.net, checkpoint.model_state(state, last, "--resume"), last, "--resume")
    try:
        s.optimizer.load_state_dict(state["optimizer"])
        s.config.scheduler.load_state_dict(state["scheduler"])
        s.plateau.load_state_dict(state["plateau"])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"--resume {last}: its optimizer or scheduler state does not fit this run "
            f"({type(error).__name__}: {error})"
        ) from None
    history = {}
    for name in s.arrays:
        history[name] = runwriter.read_history(s.workdir / f"{name}.npy", start)
        if history[name] is None:
            raise CheckpointError(
                f"--resume: {s.workdir / name}.npy is missing, unreadable or holds fewer than the "
                f"{start} epochs of last.pt; the run folder is incomplete: start the run again "
                "without --resume"
            )
    checkpoint.restore_rng(state["rng"][s.context.rank] if s.context.active else state["rng"])
    if s.augment is not None and "augment" in state:
        s.augment.set_state(state["augment"][s.context.rank])
    if s.context.writes:
        command, commit = (
            shlex.join(["python", "main.py", *argv]),
            runwriter.git("rev-parse", "HEAD"),
        )
        entry = {
            "after_epoch": start - 1,
            "command": command,
            "commit": commit.strip(),
            "changed": changes,
        }
        checkpoint.record_resume(s.workdir, entry)
        runwriter.save_json(s.workdir / "args.json", s.config.recorded)
    print(f">>> Resuming {s.workdir} after epoch {start - 1}", flush=True)
    timing = runwriter.read_timing(s.workdir / "timing.json", start)
    return Progress(
        weights=state["weights"],
        history={n: list(h) for n, h in history.items()},
        lrs=state["lrs"],
        weight_log=state["weight_log"],
        timing=timing,
        start_epoch=start,
        best_metric=state["best_metric"],
        best_epoch=state["best_epoch"],
    )


def last_state(s: Session, p: Progress, epoch: int) -> dict:
    """Everything --resume needs after `epoch` (loadable with weights_only=True)."""
    state = {
        "model": s.net.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "epoch": epoch,
        "scheduler": s.config.scheduler.state_dict(),
        "plateau": s.plateau.state_dict(),
        "weights": p.weights,
        "lrs": p.lrs,
        "weight_log": p.weight_log,
        "best_metric": p.best_metric,
        "best_epoch": p.best_epoch,
        # Every process's random streams (each rank's differ), gathered for rank 0 to save.
        "rng": s.context.gather(checkpoint.rng_state())
        if s.context.active
        else checkpoint.rng_state(),
        "args": dict(s.config.recorded),
        "processes": s.context.world_size,
    }
    if s.augment is not None:
        state["augment"] = s.context.gather(s.augment.get_state())
    return state


def train_one_epoch(s: Session, p: Progress, epoch: int) -> None:
    """Train, validate, record and checkpoint one epoch; then halve the learning rate and move
    the loss weights as scheduled."""
    config = s.config
    for i, loader in enumerate(s.train.loaders):
        if loader.generator is not None:
            loader.generator.manual_seed(config.seed * 100_003 + epoch * 101 + i)
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
    iter_dir = s.workdir / f"iter{epoch:03d}"
    save_train = iter_dir / "train" if config.save_train and s.context.writes else None
    run = Pass(
        "train", s.model, s.device, config, epoch, s.context, s.optimizer, save_train, s.augment
    )
    log, p.weights = train_epoch(run, s.train, p.weights, config.scheduler)
    started = time.perf_counter()
    values = {"tra_loss": log.losses, "tra_dice": log.dices} | validate(
        s, epoch, p.weights, iter_dir / "val"
    )
    for name in s.arrays:
        p.history[name].append(values[name])
    p.lrs.append(s.optimizer.param_groups[0]["lr"])
    p.weight_log.append([list(w) for w in p.weights])
    p.timing.append(
        {
            "epoch": epoch,
            "train_seconds": log.timing["seconds"],
            "data_seconds": log.timing["data_seconds"],
            "train_slices": log.timing["slices"],
            "val_seconds": time.perf_counter() - started,
            "processes": s.context.world_size,
        }
    )
    if s.context.writes:
        runwriter.write_epoch(
            s.workdir, config, p.history, p.lrs, p.weight_log, s.loss_names, p.timing
        )

    dices = values["val_3d_dsc" if config.compute_3d_dice else "val_dice"]
    metric = float(dices[:, list(config.metric_axis)].mean())
    improved = metric > p.best_metric
    if improved:
        p.best_metric, p.best_epoch = metric, epoch
        if s.context.writes:
            runwriter.save_best(s.workdir, iter_dir, s.net, epoch, metric, config)
    if config.schedule:
        rule = config.schedule_rule == "plateau"
        if s.plateau.step(improved) if rule else original_halving(epoch, p.best_epoch):
            for group in s.optimizer.param_groups:
                group["lr"] /= 2
    p.weights = config.scheduler(
        epoch, p.weights, {"val_dice": metric, "tra_losses": log.per_loader}
    )
    state = last_state(s, p, epoch)
    if s.context.writes:
        runwriter.save_torch(s.workdir / "last.pt", state)
    report_epoch(config, s.context, f"epoch {epoch:3d}", values, improved)


def run(args: argparse.Namespace, argv: Sequence[str], context: Context, device: torch.device):
    """One training (or, with --evaluate, one validation of --weights) in this process, from
    its parsed command line: checked once into its `Config`, which everything after reads."""
    config = check_config(args)
    s = open_session(config, context, device)
    weights = [[w for _, _, w in losses] for losses in config.losses]
    if config.evaluate:
        evaluate(s, argv, weights)
        return
    if config.resume:
        progress = resume(s, argv)
    else:
        progress = Progress(weights=weights, history={name: [] for name in s.arrays})
        if context.writes:
            runwriter.write_start(s.workdir, config, argv, device, context)
    for epoch in range(progress.start_epoch, config.n_epoch):
        train_one_epoch(s, progress, epoch)
    if context.writes:
        print(
            f">>> Done: best epoch {progress.best_epoch}, metric {progress.best_metric:.4f}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; one `error: ...` line and status 1 on anything a user can cause."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args(argv)
    try:
        context, device = setup(args.cpu)
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finished = False
    try:
        run(args, argv, context, device)
        finished = True
    except (ConfigError, DataError, TrainingError, CheckpointError, ValueError) as error:
        print(f"error: {worker_message(error)}", file=sys.stderr)  # ValueError: input checks
        return 1
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"error: {disk_full_message(error, args.workdir)}", file=sys.stderr)
        return 1
    finally:
        teardown(context, finished)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
