"""The epoch engine: one pass of a network over its loaders, training or validating.

A pass (`do_epoch`) takes each batch to the device, augments it and computes its distance maps
there when asked (`prepare_batch`), runs the network, evaluates the weighted losses
(`losses.CompoundLoss`), steps the optimizer when training, and records the raw losses, the 2D
Dice of each slice and, when validating, the predicted slices of each patient (`BatchRecord`).
Under torchrun each process runs its share of the batches; the records of every process are
gathered and put back in the single-process order (`summarise`), so every process takes the same
decisions and rank 0 writes what one process would have written.

A training step never waits for the device: the losses and the Dice of each batch stay there
(`BatchLog`) and are read once, when the pass has run all its batches; the first batch of each
loader alone is checked at once (the inputs' values, then the network output and the terms).
Validation reads the predicted classes of each batch, which it keeps; `--save_train` does too.

A NaN or infinite output or loss stops the pass with the epoch, the batch, its first slice and
the loss named (`TrainingError`), found when the pass ends (the first batch: at once); a
scheduler that handles NaN (the adjacency weight controller) gets to lower its weights and
restart the epoch instead (`train_epoch`).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from math import isfinite
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from boundary_loss.data.augment import augment_batch
from boundary_loss.data.augment3d import augment_batch_3d
from boundary_loss.data.loader import (
    DEVICE_TRANSFORMS,
    FolderSpec,
    ShardedBatchSampler,
    group_key,
    gt_transform,
)
from boundary_loss.data.patches import EpochBatchSampler
from boundary_loss.io.distributed import Context
from boundary_loss.losses.deep_supervision import deep_supervision_loss
from boundary_loss.losses.idc_losses import CompoundLoss
from boundary_loss.losses.weight_schedules import DummyScheduler
from boundary_loss.metrics import dice_coef
from boundary_loss.runfolder.ranking import nan_mean_std
from boundary_loss.runfolder.writer import save_predictions
from boundary_loss.training.config import Config

NAN_RETRIES = 3


class TrainingError(Exception):
    """Training cannot go on (a NaN or infinite loss)."""


@dataclass
class EpochLog:
    """What one pass over the loaders measured (over every process, in the single-process order)."""

    losses: np.ndarray  # iteration x loss, raw (unweighted) values; NaN for a skipped term
    dices: np.ndarray  # slice x class, 2D Dice (NaN for unlabelled slices)
    per_loader: list[list[float]] = field(default_factory=list)  # mean raw losses per loader
    volumes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # 3D accumulation
    timing: dict[str, float] = field(default_factory=dict)  # seconds, data_seconds, slices


@dataclass
class BatchRecord:
    """One batch of a pass, as logged; `position` is its place in the single-process order."""

    position: int
    losses: list[float]  # raw terms, NaN where skipped
    dices: np.ndarray | None  # B K (None until the log of its loader is settled)
    stems: list[str]
    spacing: np.ndarray  # B 3
    classes: np.ndarray | None = None  # B H W uint8 predictions (validation, --save_train)
    gt: np.ndarray | None = None  # B H W uint8 (validation)


@dataclass
class Targets:
    """How one loader's batches become the targets of its losses and its ground truth.

    The loader reads `n_losses` target folders, then the ground-truth folder when it is not one
    of them; `gt_index` points into that list (None: an unlabelled loader)."""

    device_fns: list  # per loaded target: a DEVICE_TRANSFORMS function, or None (as loaded)
    gt_index: int | None
    n_losses: int


@dataclass
class Phase:
    """The loaders of a pass (training, or validation) and what feeds their losses, per loader."""

    loaders: list[torch.utils.data.DataLoader]
    targets: list[Targets]
    losses: list[CompoundLoss]


@dataclass
class Pass:
    """Everything one pass needs besides its phase."""

    mode: str  # "train" or "val"
    net: nn.Module
    device: torch.device
    config: Config
    epoch: int
    context: Context
    optimizer: torch.optim.Optimizer | None = None
    save_dir: Path | None = None
    augment: torch.Generator | None = None

    @property
    def train(self) -> bool:
        return self.optimizer is not None


def loader_targets(
    inputs: FolderSpec, gt: FolderSpec | None, targets: Sequence[FolderSpec], on_device: bool
) -> tuple[list[FolderSpec], Targets]:
    """The folders a loader reads (input, the loss targets, then the ground truth when no target
    holds it) and how its batches become loss targets: with `on_device`, distance-map folders
    are read as one-hot labels and transformed on the device."""
    loaded, fns = [inputs], []
    for spec in targets:
        fn = DEVICE_TRANSFORMS.get(spec.transform) if on_device else None
        loaded.append(replace(spec, transform=gt_transform) if fn is not None else spec)
        fns.append(fn)
    gt_index = None
    if gt is not None:
        gt_index = next((i for i, spec in enumerate(targets) if spec == gt), None)
        if gt_index is None:  # a folder of its own, read once more
            loaded.append(gt)
            fns.append(None)
            gt_index = len(targets)
    return loaded, Targets(fns, gt_index, len(targets))


def _sharding(loader: torch.utils.data.DataLoader) -> tuple[int, Callable[[int], int | None]]:
    """Batches of the loader over every process, and the position of this process's j-th."""
    sampler = loader.batch_sampler
    if isinstance(sampler, ShardedBatchSampler):
        return len(sampler.base), sampler.position
    if isinstance(sampler, EpochBatchSampler):  # 3D patches: each process draws its own
        return sampler.batches_of_all(), sampler.position
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
    config: Config,
    augment: torch.Generator | None,
    validate: bool = True,
) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """The input, the loss targets and the ground truth of a batch on the device: augmented
    (training with --augment), with the distance maps computed there (DEVICE_TRANSFORMS; their
    labels and spacing checked with `validate`, which reads them back)."""
    if augment is not None:
        hot = [not t.is_floating_point() for t in labels]
        if image.ndim == 5:  # 3D patches: flips and right-angle rotations, maps kept exact
            image, labels, spacing = augment_batch_3d(image, labels, hot, spacing, augment)
        else:
            image, labels, spacing = augment_batch(
                image, labels, hot, spacing, config.augment_degrees, augment
            )
    for i, fn in enumerate(targets.device_fns):
        if fn is not None:
            labels[i] = fn(labels[i], spacing[:, :2], validate=validate)
    if config.channels_last:
        image = image.contiguous(
            memory_format=torch.channels_last if image.ndim == 4 else torch.channels_last_3d
        )
    gt = None if targets.gt_index is None else labels[targets.gt_index]
    return image, labels[: targets.n_losses], gt


OUTPUT_ERROR = "the network output is NaN or infinite (diverged, or NaN in the input)"


def terms_error(
    names: Sequence[str], raw: Sequence[float], computed: Sequence[bool], where: str
) -> str:
    """The message of the first computed loss term that is NaN or infinite, "" when none is."""
    bad = [(n, v) for n, v, c in zip(names, raw, computed, strict=True) if c and not isfinite(v)]
    return f"{where}: loss {bad[0][0]} is {bad[0][1]}" if bad else ""


def evaluate_losses(
    probs: Tensor,
    labels: Sequence[Tensor],
    losses: CompoundLoss,
    weights: Sequence[float],
    where: str,
    check: bool,
) -> tuple[Tensor | None, list[Tensor | None], str]:
    """The weighted loss of a batch and its terms (None where a zero weight skipped the term).

    With `check` (the first batch of a loader) the output is checked before the losses see it
    and the terms after, both read from the device, and the message of a NaN or infinite one
    is returned ("" otherwise). Without it nothing is read: `BatchLog.settle` checks the
    batch when the pass ends."""
    if check and not torch.isfinite(probs).all():
        return None, [], f"{where}: {OUTPUT_ERROR}"
    total, values = losses(probs, labels, weights)
    if not check:
        return total, values, ""
    computed = [v is not None for v in values]
    return total, values, terms_error(losses.names, losses.raw(values), computed, where)


@dataclass
class BatchLog:
    """The batches of one loader as the device left them, read once when the pass ends.

    Per batch: whether the network output was finite, the raw loss terms
    (`CompoundLoss.raw_tensor`) and the 2D Dice, all on the device; and what the host holds
    anyway (the slice names and spacing, the predictions a pass keeps) in its `BatchRecord`,
    completed by `settle`."""

    names: list[str]
    device: torch.device
    records: list[BatchRecord] = field(default_factory=list)
    logged: list[bool] = field(default_factory=list)  # False: a padding repeat, not logged
    wheres: list[str] = field(default_factory=list)
    computed: list[list[bool]] = field(default_factory=list)
    unfinite: list[Tensor] = field(default_factory=list)  # per batch, a bool on the device
    terms: list[Tensor] = field(default_factory=list)  # per batch, float32, NaN if skipped
    dices: list[Tensor | None] = field(default_factory=list)  # per batch B K; None: no gt

    def add(
        self,
        record: BatchRecord,
        logged: bool,
        where: str,
        probs: Tensor,
        values: Sequence[Tensor | None],
        dices: Tensor | None,
    ) -> None:
        """One batch, nothing read from the device."""
        self.records.append(record)
        self.logged.append(logged)
        self.wheres.append(where)
        self.computed.append([v is not None for v in values])
        self.unfinite.append(~torch.isfinite(probs.detach()).all())
        self.terms.append(CompoundLoss.raw_tensor(values, self.device))
        self.dices.append(dices)

    def settle(self, K: int) -> tuple[list[BatchRecord], str]:
        """The logged records, their losses and Dice read from the device (one read each), and
        the message of the first batch whose output or a computed term is NaN or infinite (""
        when none is)."""
        if not self.records:
            return [], ""
        unfinite = torch.stack(self.unfinite).tolist()
        terms = torch.stack(self.terms).tolist()
        labelled = [d for d in self.dices if d is not None]
        dices = torch.cat(labelled).cpu().numpy() if labelled else None
        records, error, row = [], "", 0
        batches = zip(
            self.records,
            self.logged,
            self.wheres,
            self.computed,
            unfinite,
            terms,
            self.dices,
            strict=True,
        )
        for record, logged, where, computed, bad, raw, batch_dices in batches:
            record.losses = raw
            if not error:
                error = (
                    f"{where}: {OUTPUT_ERROR}"
                    if bad
                    else terms_error(self.names, record.losses, computed, where)
                )
            n = len(record.stems)
            if batch_dices is None:  # an unlabelled loader (semi-supervised): no Dice
                record.dices = np.full((n, K), np.nan, dtype=np.float32)
            else:
                record.dices, row = dices[row : row + n], row + n
            if logged:
                records.append(record)
        return records, error


def _record(
    run: Pass, position: int, probs: Tensor, gt: Tensor | None, batch: dict, check: bool
) -> tuple[BatchRecord, Tensor | None]:
    """The host's part of the log of one batch (its slices, their spacing and, validating or
    with --save_train, the predicted classes, read here with the true ones in one copy), and
    its 2D Dice on the device (None for an unlabelled loader; the one-hot check of the Dice on
    the first batch only)."""
    K = run.config.n_class
    classes = probs.detach().argmax(dim=1)  # B H W
    dices = None
    if gt is not None:
        predicted = F.one_hot(classes, K).movedim(-1, 1).to(torch.int32)  # B K H W
        dices = dice_coef(gt, predicted, validate=check)
    record = BatchRecord(position, [], None, list(batch["filenames"]), batch["spacing"].numpy())
    if not run.train and gt is not None:
        both = torch.stack((classes, gt.argmax(dim=1))).to(torch.uint8).cpu().numpy()
        record.classes, record.gt = both[0], both[1]
    elif not run.train or run.config.save_train:
        record.classes = classes.to(torch.uint8).cpu().numpy()
    return record, dices


def _stop_on_error(run: Pass, error: str) -> bool:
    """Raise on a NaN: at once when training (every process together) or in one process; under
    torchrun, validation stops and raises once every process is done (True)."""
    if run.train and run.context.any(bool(error), run.device):
        raise TrainingError(f"{error or 'another process: NaN or infinite'}; stopping")
    if error and not run.context.active:
        raise TrainingError(f"{error}; stopping")
    return bool(error)


def _refused(log: BatchLog, probs: Tensor, where: str, K: int) -> str:
    """Why a loss that checks every call refused a later batch: the first NaN or infinite batch
    logged, or this batch's output ("" if neither: the loss's own error stands)."""
    _, error = log.settle(K)
    if not error and not torch.isfinite(probs).all():
        error = f"{where}: {OUTPUT_ERROR}"
    return error


class DataClock:
    """The seconds a pass waits for its data, without synchronising a batch: the host's wait
    for the loader and for its copy calls and, on CUDA, the copies' own time on the stream
    (events around them, read when the loader ends)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.host = 0.0
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def copy(self, batch: dict) -> tuple[Tensor, list[Tensor]]:
        """`to_device(batch)`, its time on the stream recorded on CUDA."""
        if self.device.type != "cuda":
            return to_device(batch, self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        moved = to_device(batch, self.device)
        end.record()
        self.events.append((start, end))
        return moved

    def seconds(self) -> float:
        """The seconds counted (waits for the last copy to end)."""
        if not self.events:
            return self.host
        self.events[-1][1].synchronize()
        return self.host + sum(a.elapsed_time(b) for a, b in self.events) / 1000


def run_loader(
    run: Pass,
    loader,
    targets: Targets,
    losses: CompoundLoss,
    weights: Sequence[float],
    offset: int,
    bar: tqdm,
) -> tuple[BatchLog, float, int, str]:
    """One loader of a pass: its batches through the network (and the optimizer when
    training). Returns the log of its batches (on the device, `BatchLog`), the seconds spent
    waiting for data, the slices and the error of a first batch that stopped a validation
    under torchrun ("" otherwise)."""
    n_batches, position = _sharding(loader)
    save = run.save_dir if not run.context.active else None  # else rank 0 saves after gathering
    log, clock, slices = BatchLog(list(losses.names), run.device), DataClock(run.device), 0
    batches = iter(loader)
    for j in itertools.count():
        waiting = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            clock.host += time.perf_counter() - waiting
            break
        image, labels = clock.copy(batch)
        clock.host += time.perf_counter() - waiting
        check = j == 0  # the first batch: its values checked at once
        image, labels, gt = prepare_batch(
            image, labels, batch["spacing"], targets, run.config, run.augment, check
        )
        if run.train:
            run.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.config.bf16):
            outputs = run.net(image)
        # a deep-supervised network also gives its lower-resolution outputs when training
        logits, coarse = (outputs[0], outputs[1:]) if isinstance(outputs, list) else (outputs, [])
        probs = F.softmax(run.config.temperature * logits.float(), dim=1)  # B K *xyz
        first = batch["filenames"][0]
        where = f"epoch {run.epoch}, {run.mode} batch {offset + j} (first slice {first})"
        try:
            total, values, error = evaluate_losses(probs, labels, losses, weights, where, check)
        except ValueError:
            refused = "" if check else _refused(log, probs, where, run.config.n_class)
            if refused:
                raise TrainingError(f"{refused}; stopping") from None
            raise
        if check and _stop_on_error(run, error):
            return log, clock.seconds(), slices, error
        if run.train and total is not None:
            if coarse:
                scaled = [F.softmax(run.config.temperature * c.float(), dim=1) for c in coarse]
                total = deep_supervision_loss(total, values, scaled, labels, losses, weights)
            total.backward()
            run.optimizer.step()
        place = offset + j if position(j) is None else offset + position(j)
        record, dices = _record(run, place, probs, gt, batch, check)
        if save is not None:
            save_predictions(record.classes, record.stems, save)
        # a padding repeat (no position) is trained on, not logged
        log.add(record, position(j) is not None, where, probs, values, dices)
        slices += image.shape[0]
        bar.update()
    return log, clock.seconds(), slices, ""


def do_epoch(run: Pass, phase: Phase, weights: Sequence[Sequence[float]]) -> EpochLog:
    """Train (`run.optimizer` given) or validate over the phase's loaders, logging losses, Dice
    and, when validating, the predicted volumes of each patient for the 3D metrics. Under
    torchrun each process runs its share of the batches and the logs of all are gathered.

    The logs are read from the device once the loaders are done; a NaN or infinite output or
    term found then stops the pass as it would have at its batch (every process agreeing in
    one collective when training): the epoch's updates are lost either way."""
    run.net.train(run.train)
    logs: list[BatchLog] = []
    data_seconds, slices, error, offset = 0.0, 0, "", 0
    total = sum(len(loader) for loader in phase.loaders)
    bar = tqdm(
        total=total,
        desc=f">> {run.mode} epoch {run.epoch:3d}",
        ncols=120,
        leave=False,
        disable=not run.context.writes,
    )
    start = time.perf_counter()
    with bar, torch.set_grad_enabled(run.train):  # the bar is cleared on an error too
        for loader, targets, losses, ws in zip(
            phase.loaders, phase.targets, phase.losses, weights, strict=True
        ):
            log, waited, n, error = run_loader(run, loader, targets, losses, ws, offset, bar)
            logs.append(log)
            data_seconds += waited
            slices += n
            if error:
                break
            offset += _sharding(loader)[0]
        records: list[BatchRecord] = []
        for log in logs:
            settled, found = log.settle(run.config.n_class)
            records += settled
            error = error or found
        if run.train:
            _stop_on_error(run, error)  # one collective under torchrun
        elif error and not run.context.active:
            raise TrainingError(f"{error}; stopping")
        elapsed = time.perf_counter() - start
        gathered = run.context.gather((records, error, slices))
        errors = [e for _, e, _ in gathered if e]
        if errors:  # validation: raised once every process has finished its share
            raise TrainingError(f"{errors[0]}; stopping")
        records = [r for rs, _, _ in gathered for r in rs]
        if run.context.active and run.context.writes and run.save_dir is not None:
            for r in records:
                save_predictions(r.classes, r.stems, run.save_dir)
        timing = {
            "seconds": elapsed,
            "data_seconds": data_seconds,
            "slices": sum(n for _, _, n in gathered),
        }
        sizes = [_sharding(loader)[0] for loader in phase.loaders]
        n_losses = [len(losses) for losses in phase.losses]
        epoch = summarise(
            records, sizes, n_losses, run.config.n_class, run.config.grp_regex, timing
        )
        bar.set_postfix(_shown(epoch, phase, run.config.metric_axis), refresh=True)
    return epoch


def _shown(log: EpochLog, phase: Phase, metric_axis: Sequence[int]) -> dict[str, str]:
    """The progress bar's summary of a pass: its mean Dice and mean raw terms."""
    names = max((losses.names for losses in phase.losses), key=len)
    means = nan_mean_std(log.losses, 0)[0] if len(log.losses) else []
    shown = {n: f"{v:.3g}" for n, v in zip(names, means, strict=False)}
    labelled = log.dices[:, list(metric_axis)]
    if len(labelled) and not np.isnan(labelled).all():
        shown = {"dice": f"{nan_mean_std(labelled, (0, 1))[0]:.3f}"} | shown
    return shown


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
        nan_mean_std(loss_log[a:b, :n], 0)[0].tolist()  # NaN for a term skipped all epoch
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


def train_epoch(
    run: Pass, phase: Phase, weights: list[list[float]], scheduler: DummyScheduler
) -> tuple[EpochLog, list[list[float]]]:
    """One training epoch, and the weights it ended with. A scheduler that handles NaN
    (`handles_nan`, the adjacency LambdaController) gets the chance to lower its weights: the
    epoch restarts from its first state with the new weights, up to NAN_RETRIES times;
    otherwise a NaN stops the run, and the epoch's first state is not copied at all."""
    if not scheduler.handles_nan:  # a NaN stops the run: no state to restart from is needed
        return do_epoch(run, phase, weights), weights
    saved = (copy.deepcopy(run.net.state_dict()), copy.deepcopy(run.optimizer.state_dict()))
    for attempt in range(NAN_RETRIES + 1):
        try:
            return do_epoch(run, phase, weights), weights
        except TrainingError as error:
            if attempt == NAN_RETRIES:
                raise
            weights = scheduler(run.epoch, weights, {"nan": True})
            run.net.load_state_dict(saved[0])
            run.optimizer.load_state_dict(saved[1])
            print(f">> {error}; restarting the epoch with weights {weights}", flush=True)
    raise AssertionError("unreachable")


def report_epoch(config: Config, context: Context, what: str, values: dict, improved: bool) -> None:
    """One line per epoch on stdout (rank 0's under torchrun): the validation metrics."""
    if not context.writes:
        return
    axis = list(config.metric_axis)
    print(
        f">> {what}: val dice {values['val_dice'][:, axis].mean():.4f}, "
        f"3D dice {values['val_3d_dsc'][:, axis].mean():.4f}, "
        f"HD {values['val_3d_hausdorff'][:, axis].mean():.3f} mm, "
        f"HD95 {values['val_3d_hd95'][:, axis].mean():.3f} mm{' (best)' if improved else ''}",
        flush=True,
    )
