"""training.py: which folders a loader reads, and where the losses and the metrics find them."""

from __future__ import annotations

import pytest
import torch

from boundary_loss.data.loader import FolderSpec, dist_map_transform, gt_transform, tensor_transform
from boundary_loss.losses.weight_schedules import SCHEDULERS, DummyScheduler
from boundary_loss.training import engine as training
from boundary_loss.training.engine import (
    NAN_RETRIES,
    Pass,
    TrainingError,
    loader_targets,
    train_epoch,
)

IN = FolderSpec("in_npy", tensor_transform, False)
GT = FolderSpec("gt_npy", gt_transform, True)
DIST = FolderSpec("gt_npy", dist_map_transform, False)
PNG_GT = FolderSpec("gt", gt_transform, True)


def test_a_ground_truth_that_is_also_a_loss_target_is_read_once():
    loaded, targets = loader_targets(IN, GT, [GT, DIST], on_device=False)
    assert loaded == [IN, GT, DIST]
    assert targets.gt_index == 0 and targets.n_losses == 2
    assert targets.device_fns == [None, None]


def test_a_ground_truth_folder_of_its_own_is_read_after_the_targets():
    loaded, targets = loader_targets(IN, PNG_GT, [DIST], on_device=False)
    assert loaded == [IN, DIST, PNG_GT]
    assert targets.gt_index == 1 and targets.n_losses == 1


def test_an_unlabelled_loader_has_no_ground_truth():
    loaded, targets = loader_targets(IN, None, [DIST], on_device=False)
    assert loaded == [IN, DIST] and targets.gt_index is None


def test_on_device_distance_maps_are_read_as_labels_and_transformed_there():
    loaded, targets = loader_targets(IN, GT, [GT, DIST], on_device=True)
    assert loaded[2].transform is gt_transform  # the labels travel; the map is made on device
    assert targets.device_fns[0] is None and targets.device_fns[1] is not None


# ----------------------------------------------------------------------- a NaN during training


class HalvingScheduler(DummyScheduler):
    """A scheduler that handles NaN as the adjacency LambdaController does: it lowers weights."""

    handles_nan = True

    def __call__(self, epoch, weights, metrics):
        assert metrics == {"nan": True} and epoch == 0
        return [[w / 2 for w in ws] for ws in weights]


def a_pass() -> Pass:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    return Pass("train", net, torch.device("cpu"), None, 0, None, optimizer)


def stepping_epoch(fail_times: int, seen: list):
    """A stand-in for do_epoch: one optimiser step (so that the weights and Adam's state move),
    then a NaN stop for the first `fail_times` calls; records the weights it started from."""

    def epoch(run, phase, weights):
        seen.append(({k: v.clone() for k, v in run.net.state_dict().items()}, weights))
        run.optimizer.zero_grad()
        run.net(torch.ones(1, 2)).sum().backward()
        run.optimizer.step()
        if len(seen) <= fail_times:
            raise TrainingError(
                f"epoch 0, train batch 3: loss NonAdjacencyLoss is nan (try {len(seen)})"
            )
        return "log"

    return epoch


def test_a_nan_restarts_the_epoch_from_its_first_state_with_lower_weights(monkeypatch):
    run, seen = a_pass(), []
    first = {k: v.clone() for k, v in run.net.state_dict().items()}
    monkeypatch.setattr(training, "do_epoch", stepping_epoch(2, seen))
    log, weights = train_epoch(run, None, [[1.0, 0.8]], HalvingScheduler())
    assert log == "log" and weights == [[0.25, 0.2]]
    assert [w for _, w in seen] == [[[1.0, 0.8]], [[0.5, 0.4]], [[0.25, 0.2]]]
    for state, _ in seen:  # every attempt started from the epoch's first weights
        assert all(torch.equal(state[k], first[k]) for k in first)
    # ... and from the first optimiser state: the last attempt's single step equals a fresh one
    fresh = a_pass()
    stepping_epoch(0, [])(fresh, None, None)
    assert all(torch.equal(run.net.state_dict()[k], fresh.net.state_dict()[k]) for k in first)


def test_a_nan_after_the_last_retry_stops_the_run(monkeypatch):
    monkeypatch.setattr(training, "do_epoch", stepping_epoch(NAN_RETRIES + 1, []))
    with pytest.raises(TrainingError, match=f"try {NAN_RETRIES + 1}"):
        train_epoch(a_pass(), None, [[1.0, 1.0]], HalvingScheduler())


def test_without_a_nan_handling_scheduler_nothing_is_copied(monkeypatch):
    """A NaN then stops the run at once, so the epoch's first state would never be used."""
    copies = []
    monkeypatch.setattr(training.copy, "deepcopy", lambda x: copies.append(x) or x)
    monkeypatch.setattr(training, "do_epoch", stepping_epoch(0, []))
    assert train_epoch(a_pass(), None, [[1.0]], DummyScheduler()) == ("log", [[1.0]])
    assert copies == []
    monkeypatch.setattr(training, "do_epoch", stepping_epoch(1, []))
    with pytest.raises(TrainingError, match="try 1"):
        train_epoch(a_pass(), None, [[1.0]], DummyScheduler())


def test_every_scheduler_declares_its_capabilities_on_the_class():
    """The training reads `handles_nan` and `reads_losses` without probing: the base class
    says False, the adjacency controller True for both."""
    assert DummyScheduler.handles_nan is False and DummyScheduler.reads_losses is False
    for name, cls in SCHEDULERS.items():
        assert issubclass(cls, DummyScheduler), name
        expected = name == "LambdaController"
        assert (cls.handles_nan, cls.reads_losses) == (expected, expected), name
