"""A training step reads nothing back from the device once its loader's first batch is checked.

A GPU runs ahead of the host until the host asks for a value (`.item()`, `bool(tensor)`,
`.tolist()`, a copy to the CPU...): each such read stalls the step. The engine logs the losses
and the Dice of a training pass on the device and reads them when the pass ends. These tests run
real trainings through `main.train_one_epoch`, and count, from the start of the second training
batch to the end of the last one, every read of a tensor's value:

- on the CPU, by wrapping the tensor methods that read values. What stays on the host by design
  is not counted: the slice spacing the loader gives (never copied to the device), and the step
  counter Adam keeps on the CPU (a CPU tensor on a GPU too). The loading itself (the files, the
  loader's checks) happens on the host before the copy, and is not counted either.
- on CUDA, with `torch.cuda.set_sync_debug_mode("error")`, which raises on any synchronisation.

A NaN or infinite value is then found when the pass ends, and still named by its epoch, batch,
first slice and loss term (or the network output), and the adjacency weight controller still
restarts such an epoch with lowered weights.
"""

from __future__ import annotations

import contextlib
import itertools
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from boundary_loss.io.distributed import Context
from boundary_loss.losses.idc_losses import CompoundLoss, GeneralizedDice
from boundary_loss.maps import distance
from boundary_loss.preprocessing.prepare_3d import prepare_3d
from boundary_loss.preprocessing.synthetic_nnunet import write_nnunet
from boundary_loss.training import main
from boundary_loss.training.config import check_config, get_args
from boundary_loss.training.engine import Pass, TrainingError, do_epoch, train_epoch
from tests.host_reads import HOST_METHODS
from tests.sliced_data import make_sliced_dataset
from tests.test_main import argv, replace
from tests.test_train_3d import argv as argv_3d

N_TRAIN, SLICES, BATCH = 3, 4, 2  # 6 training batches of 2 slices

DIST = "('gt_npy', dist_map_transform, False)"
GT = "('gt_npy', gt_transform, True)"
IN = "('in_npy', tensor_transform, False)"
GDL = "('GeneralizedDice', {'idc': [0, 1]}, 1)"

# The trainings counted: the network, its loss lines and the extra flags.
TRAININGS = {
    "dimwit_gdl_surface": (
        "Dimwit",
        f"[{GDL}, ('SurfaceLoss', {{'idc': [1]}}, 0.01)]",
        f"[{IN}, {GT}, {GT}, {DIST}]",
        (),
    ),
    "unet_boundary_device_maps": (
        "UNet",
        f"[{GDL}, ('BoundaryLoss', {{'idc': [1]}}, 0.01)]",
        f"[{IN}, {GT}, {GT}, {DIST}]",
        ("--device_dist_maps", "--net_params", "{'nG': 4}"),
    ),
    "unet_gdl_hausdorff": (
        "UNet",
        f"[{GDL}, ('HausdorffLoss', {{'idc': [1]}}, 0.1)]",
        f"[{IN}, {GT}, {GT}, {GT}]",
        ("--net_params", "{'nG': 4}"),
    ),
}
# On CUDA only: the 2D augmentation decides each slice's flips and turns from draws of a CPU
# generator (reproducible runs), which the CPU count would take for reads; its device copies
# (the small rotations' angles) must not wait.
CUDA_TRAININGS = TRAININGS | {
    "unet_boundary_device_maps_augmented": (
        "UNet",
        f"[{GDL}, ('BoundaryLoss', {{'idc': [1]}}, 0.01)]",
        f"[{IN}, {GT}, {GT}, {DIST}]",
        ("--device_dist_maps", "--augment", "--net_params", "{'nG': 4}"),
    ),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "toy"
    return make_sliced_dataset(root, n_train=N_TRAIN, n_val=1, slices=SLICES)


def session(dataset: Path, workdir: Path, training: str, device: str = "cpu") -> main.Session:
    network, losses, folders, extra = CUDA_TRAININGS[training]
    line = argv(dataset, workdir, *extra, n_epoch=2)
    line = replace(replace(line, "--losses", losses), "--folders", folders)
    line = replace(replace(line, "--network", network), "--batch_size", str(BATCH))
    if device != "cpu":
        line.remove("--cpu")
    return main.open_session(check_config(get_args(line)), Context(), torch.device(device))


class Marked:
    """A training loader that says which batch is running: `window.steady` holds from the
    start of its second batch to the end of its last, the loading of each batch aside."""

    def __init__(self, loader, window: Window) -> None:
        self.loader, self.window = loader, window

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        batches = iter(self.loader)
        for j in itertools.count():
            self.window.steady = False  # the loader's own work, on the host
            batch = next(batches, None)
            if batch is None:
                return
            self.window.host = {batch["spacing"].untyped_storage().data_ptr()}
            self.window.steady = j >= 1
            self.window.steps += j >= 1
            yield batch


class Window:
    """Reads of tensor values during the steady training steps, each with where it was made;
    `switch` is told when the steady steps start and stop."""

    def __init__(self, switch=lambda steady: None) -> None:
        self._steady, self.switch, self.steps = False, switch, 0
        self.reads: list[str] = []
        self.host: set[int] = set()  # the storage of the batch's spacing, kept on the host
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def steady(self) -> bool:
        return self._steady

    @steady.setter
    def steady(self, value: bool) -> None:
        if value != self._steady:
            self.switch(value)
        self._steady = value

    def counts(self, tensor: torch.Tensor) -> bool:
        if not self._steady or tensor.untyped_storage().data_ptr() in self.host:
            return False
        steps = [s.get("step") for s in self.optimizer.state.values()] if self.optimizer else []
        return not any(tensor is step for step in steps)

    def note(self, name: str) -> None:
        site = traceback.extract_stack()[-3]
        self.reads.append(f"{name} at {site.filename}:{site.lineno} ({site.name})")


@contextlib.contextmanager
def counting(monkeypatch: pytest.MonkeyPatch, window: Window) -> Iterator[Window]:
    """Every call of a method that reads a tensor's values (`host_reads.HOST_METHODS`) made in
    the window, noted with its call site."""

    def wrap(name: str, method):
        def counted(tensor, *args, **kwargs):
            if window.counts(tensor):
                window.note(name)
            return method(tensor, *args, **kwargs)

        return counted

    with monkeypatch.context() as patch:
        for name in HOST_METHODS:
            patch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
        yield window


def mark(s: main.Session, window: Window) -> None:
    s.train.loaders[:] = [Marked(loader, window) for loader in s.train.loaders]
    window.optimizer = s.optimizer


def first_progress(s: main.Session) -> main.Progress:
    weights = [[w for _, _, w in losses] for losses in s.config.losses]
    return main.Progress(weights=weights, history={name: [] for name in s.arrays})


# ----------------------------------------------------------------------------------- the CPU


@pytest.mark.parametrize("training", sorted(TRAININGS))
def test_steady_training_steps_read_no_tensor_value(dataset, tmp_path, monkeypatch, training):
    # The distance maps of --device_dist_maps and of the Hausdorff loss with the torch
    # transform, as on a GPU (on the CPU, numpy's would read the tensors by design).
    monkeypatch.setattr(distance, "on_device", torch.is_tensor)
    s = session(dataset, tmp_path / "run", training)
    window = Window()
    mark(s, window)
    progress = first_progress(s)
    with counting(monkeypatch, window):
        for epoch in range(2):  # the second epoch: every loss already called once
            main.train_one_epoch(s, progress, epoch)
    assert window.reads == [], "\n".join(window.reads)
    tra_loss = np.stack(progress.history["tra_loss"])
    assert tra_loss.shape == (2, N_TRAIN * SLICES // BATCH, 2) and np.isfinite(tra_loss).all()


def test_the_counter_sees_a_read(dataset, tmp_path, monkeypatch):
    """The same count catches a read in a step: a network that reads its output."""
    s = session(dataset, tmp_path / "run", "dimwit_gdl_surface")
    window = Window()
    mark(s, window)

    def reading(module, inputs, out) -> None:
        bool(out.isfinite().all())

    s.model.register_forward_hook(reading)
    with counting(monkeypatch, window):
        main.train_one_epoch(s, first_progress(s), 0)
    assert len(window.reads) == N_TRAIN * SLICES // BATCH - 1, window.reads
    assert all(r.startswith("__bool__ at ") for r in window.reads)


# ------------------------------------------------------------------ a NaN, found at the end


class NaNAt:
    """A loss term that is NaN (or infinite) at the given calls (counted from 1), finite at
    the others."""

    def __init__(self, calls, value: float = float("nan")) -> None:
        self.at, self.value, self.calls = set(calls), value, 0

    def __call__(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = (probs[:, 1] * target[:, 1]).mean()
        return loss + self.value if self.calls in self.at else loss


def a_pass(s: main.Session, epoch: int = 0) -> Pass:
    return Pass("train", s.model, s.device, s.config, epoch, s.context, s.optimizer)


def first_slices(s: main.Session) -> list[str]:
    """The first slice of each batch that the training loader's next pass will give."""
    generator = s.train.loaders[0].generator
    state = generator.get_state()
    names = [batch["filenames"][0] for batch in s.train.loaders[0]]
    generator.set_state(state)
    return names


def with_term(s: main.Session, term) -> None:
    s.train.losses[:] = [CompoundLoss([GeneralizedDice(idc=[0, 1]), term], ["GDL", "Odd"])]


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf")])
def test_a_nan_term_of_a_later_batch_is_named_when_the_pass_ends(dataset, tmp_path, value, shown):
    s = session(dataset, tmp_path / "run", "dimwit_gdl_surface")
    with_term(s, NaNAt([4, 5, 6], value))  # batches 3 to 5
    names = first_slices(s)
    with pytest.raises(TrainingError) as error:
        do_epoch(a_pass(s), s.train, [[1.0, 0.5]])
    assert str(error.value) == (
        f"epoch 0, train batch 3 (first slice {names[3]}): loss Odd is {shown}; stopping"
    )


def test_a_nan_output_of_a_later_batch_is_named_when_the_pass_ends(dataset, tmp_path):
    s = session(dataset, tmp_path / "run", "dimwit_gdl_surface")
    calls = []

    def diverge(module, inputs, out):
        calls.append(None)
        return out * float("nan") if len(calls) >= 5 else out

    s.model.register_forward_hook(diverge)
    names = first_slices(s)
    with pytest.raises(TrainingError) as error:
        do_epoch(a_pass(s), s.train, [[1.0, 0.01]])
    assert str(error.value).startswith(
        f"epoch 0, train batch 4 (first slice {names[4]}): the network output is NaN or infinite"
    )


def test_a_nan_in_the_first_batch_stops_before_the_losses_see_it(dataset, tmp_path):
    s = session(dataset, tmp_path / "run", "dimwit_gdl_surface")
    term = NaNAt([1])
    with_term(s, term)
    with pytest.raises(TrainingError, match="train batch 0 .*: loss Odd is nan; stopping"):
        do_epoch(a_pass(s), s.train, [[1.0, 0.5]])
    assert term.calls == 1  # stopped at once: the optimizer never stepped on it
    assert not s.optimizer.state


def test_the_weight_controller_restarts_an_epoch_whose_end_finds_a_nan(dataset, tmp_path):
    """A NaN found when the pass ends: the epoch restarts from its first state with the
    penalty's weight lowered, and ends as an epoch started with that weight does."""
    from boundary_loss.losses.weight_schedules import LambdaController

    retried = session(dataset, tmp_path / "a", "dimwit_gdl_surface")
    term = NaNAt([5, 6])  # the last two batches of the first attempt only
    with_term(retried, term)
    start = {k: v.clone() for k, v in retried.net.state_dict().items()}
    log, weights = train_epoch(a_pass(retried), retried.train, [[1.0, 0.5]], LambdaController())
    assert weights == [[1.0, 0.25]] and term.calls == 12
    assert np.isfinite(log.losses).all()

    fresh = session(dataset, tmp_path / "b", "dimwit_gdl_surface")
    with_term(fresh, NaNAt([]))
    assert all(torch.equal(fresh.net.state_dict()[k], v) for k, v in start.items())
    for _ in fresh.train.loaders[0]:  # the order of the second attempt: the loader's second
        pass
    expected = do_epoch(a_pass(fresh), fresh.train, [[1.0, 0.25]])
    np.testing.assert_array_equal(log.losses, expected.losses)
    np.testing.assert_array_equal(log.dices, expected.dices)
    for k, v in fresh.net.state_dict().items():
        assert torch.equal(retried.net.state_dict()[k], v), k


# ----------------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize("training", sorted(CUDA_TRAININGS))
def test_steady_training_steps_never_synchronise_on_cuda(dataset, tmp_path, training):
    s = session(dataset, tmp_path / "run", training, device="cuda")
    progress = first_progress(s)
    main.train_one_epoch(s, progress, 0)  # the first epoch: every loss called once
    window = Window(lambda steady: torch.cuda.set_sync_debug_mode("error" if steady else 0))
    mark(s, window)
    try:
        main.train_one_epoch(s, progress, 1)  # a synchronisation in a steady step raises
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert window.steps == N_TRAIN * SLICES // BATCH - 1
    assert np.isfinite(np.stack(progress.history["tra_loss"])).all()


# ------------------------------------------------------------------------------ 3D patches


@pytest.fixture(scope="module")
def prepared_3d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standin3d")
    source = write_nnunet(root / "source")
    return prepare_3d(source, root / "prepared", patch=(32, 8, 32), progress=False)


def session_3d(prepared: Path, workdir: Path, device: str = "cpu") -> main.Session:
    """A 3D training with augmentation and deep supervision, the heaviest 3D step."""
    params = "{'features': 4, 'deep_supervision': True}"
    line = argv_3d(prepared, workdir, "--augment", "--net_params", params)
    if device != "cpu":
        line.remove("--cpu")
    return main.open_session(check_config(get_args(line)), Context(), torch.device(device))


def test_steady_3d_training_steps_read_no_tensor_value(prepared_3d, tmp_path, monkeypatch):
    s = session_3d(prepared_3d, tmp_path / "run")
    window = Window()
    mark(s, window)
    progress = first_progress(s)
    with counting(monkeypatch, window):
        for epoch in range(2):
            main.train_one_epoch(s, progress, epoch)
    assert window.reads == [], "\n".join(window.reads)
    assert window.steps == 2 * (s.config.iterations - 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_steady_3d_training_steps_never_synchronise_on_cuda(prepared_3d, tmp_path):
    s = session_3d(prepared_3d, tmp_path / "run", device="cuda")
    progress = first_progress(s)
    main.train_one_epoch(s, progress, 0)
    window = Window(lambda steady: torch.cuda.set_sync_debug_mode("error" if steady else 0))
    mark(s, window)
    try:
        main.train_one_epoch(s, progress, 1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert window.steps == s.config.iterations - 1
