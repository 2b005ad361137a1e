"""Checks of keras_loss.py under one Keras backend, run by tests/test_keras_loss.py.

Keras picks its backend once, at import, from KERAS_BACKEND: tests/test_keras_loss.py runs this
file with pytest once per backend, in a process of its own. Every value is compared with the
torch losses of the pipeline (losses.py, label_losses.py) on the same inputs, moved from Keras'
channels-last layout to torch's channels-first one.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from keras import ops

import keras_loss as kl
from label_losses import LabelBoundaryLoss, RegionBoundaryLoss
from losses import GeneralizedDice, SurfaceLoss

BACKEND = keras.backend.backend()


def inputs(shape: tuple[int, ...], K: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels `B *shape` with blobs of every class, and probabilities `B *shape K`."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int64)
    for b in range(shape[0]):
        for k in range(1, K):
            corner = [int(rng.integers(0, n - 4)) for n in shape[1:]]
            labels[(b, *(slice(c, c + 3 + k) for c in corner))] = k
    logits = rng.normal(size=(*shape, K)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels, probs.astype(np.float32)


def first(array: np.ndarray) -> torch.Tensor:
    """Channels last (Keras) -> channels first (torch)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 1)))


@pytest.mark.parametrize(
    "shape, K, idc, spacing",
    [((3, 20, 16), 2, [1], (0.9, 1.7)), ((2, 10, 8, 6), 3, [0, 1, 2], (0.8, 1.1, 3.0))],
    ids=["2D", "3D"],
)
def test_surface_loss_equals_the_torch_loss(shape, K, idc, spacing):
    labels, probs = inputs(shape, K)
    maps = kl.dist_maps(labels, K, spacing)
    value = float(ops.convert_to_numpy(kl.SurfaceLoss(idc)(maps, probs)))
    expected = SurfaceLoss(idc=idc)(first(probs), first(maps)).item()
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # The maps are the device maps of the label-input loss too.
    device = LabelBoundaryLoss(idc).distance_maps(torch.from_numpy(labels), K, spacing)
    torch.testing.assert_close(first(maps), device, rtol=1e-5, atol=1e-5)


def test_generalized_dice_equals_the_torch_loss():
    labels, probs = inputs((4, 24, 24), 3, seed=1)
    one_hot = np.eye(3, dtype=np.float32)[labels]
    for idc in ([0, 1, 2], [1, 2]):
        value = float(ops.convert_to_numpy(kl.GeneralizedDiceLoss(idc)(one_hot, probs)))
        expected = GeneralizedDice(idc=idc)(first(probs), first(one_hot)).item()
        assert value == pytest.approx(expected, rel=1e-5)


def test_compound_equals_the_torch_compound():
    labels, probs = inputs((3, 20, 20), 3, seed=2)
    targets = kl.boundary_targets(labels, 3, (1.0, 0.6))
    value = float(ops.convert_to_numpy(kl.RegionBoundaryLoss(alpha=0.3)(targets, probs)))
    torch_loss = RegionBoundaryLoss("gdl", alpha=0.3, from_logits=False, spacing=(1.0, 0.6))
    expected = torch_loss(first(probs), torch.from_numpy(labels)).item()
    assert value == pytest.approx(expected, rel=1e-5)


def test_alpha_scheduler_moves_the_weights_inside_fit():
    """With a learning rate of 0 the network stays put, so each epoch's loss is the region
    term plus the scheduled alpha times the boundary term, on every backend (JAX compiles the
    step again after each change)."""
    labels, _ = inputs((4, 16, 16), 2, seed=3)
    targets = kl.boundary_targets(labels, 2)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype(np.float32)
    model = keras.Sequential(
        [keras.Input((16, 16, 1)), keras.layers.Conv2D(2, 3, padding="same", activation="softmax")]
    )
    loss = kl.RegionBoundaryLoss(alpha=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    scheduler = kl.AlphaScheduler(loss, "steal", 0.25)
    history = model.fit(x, targets, epochs=3, batch_size=4, callbacks=[scheduler], verbose=0,
                        validation_data=(x, targets))  # fmt: skip
    assert history.history["alpha"] == pytest.approx([0.5, 0.75, 1.0])  # the epoch's own
    assert loss.current == pytest.approx([0.25, 1.25])  # for the next epoch
    pred = model.predict(x, verbose=0)
    region = float(np.mean(ops.convert_to_numpy(kl.generalized_dice_loss(targets[..., :2], pred))))
    boundary = float(np.mean(ops.convert_to_numpy(kl.surface_loss(targets[..., 2:], pred, [1]))))
    expected = [1.0 * region + 0.5 * boundary, 0.75 * region + 0.75 * boundary,
                0.5 * region + 1.0 * boundary]  # fmt: skip
    assert history.history["loss"] == pytest.approx(expected, rel=1e-4)
    assert history.history["val_loss"] == pytest.approx(expected, rel=1e-4)  # validation too
    final = 0.25 * region + 1.25 * boundary
    assert model.evaluate(x, targets, verbose=0) == pytest.approx(final, rel=1e-4)


def test_losses_round_trip_through_their_config_and_a_saved_model(tmp_path):
    """A model saved mid-schedule loads with its loss and the loss's current weights."""
    for loss in (kl.SurfaceLoss([1]), kl.GeneralizedDiceLoss([0, 1], reduction="sum")):
        again = type(loss).from_config(loss.get_config())
        assert again.get_config() == loss.get_config()
    loss = kl.RegionBoundaryLoss(boundary_idc=[1], alpha=0.2)
    loss.current = [0.7, 0.5]
    layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 1, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.loss, kl.RegionBoundaryLoss)
    assert loaded.loss.current == [0.7, 0.5] and loaded.loss.boundary_idc == [1]


def test_compound_names_a_y_true_without_its_maps():
    labels, probs = inputs((2, 8, 8), 2, seed=6)
    one_hot = np.eye(2, dtype=np.float32)[labels]
    with pytest.raises(ValueError, match="y_true: 2 channels for 2 classes; expected 4"):
        kl.RegionBoundaryLoss()(one_hot, probs)


def test_maps_inside_the_loss_where_the_backend_allows():
    labels, probs = inputs((2, 16, 12), 2, seed=4)
    one_hot = np.eye(2, dtype=np.float32)[labels]
    if BACKEND != "torch":
        with pytest.raises(ValueError, match=f"torch backend only \\(this is {BACKEND}\\)"):
            kl.SurfaceLoss([1], from_labels=True)
        return
    inside = kl.SurfaceLoss([1], from_labels=True)(one_hot, probs)
    outside = kl.SurfaceLoss([1])(kl.dist_maps(labels, 2), probs)
    assert float(ops.convert_to_numpy(inside)) == pytest.approx(float(outside), rel=1e-5)


@pytest.mark.parametrize(
    "labels, spacing, message",
    [
        (np.full((2, 8, 8), 2), None, "labels: values from 2 to 2, outside the 2 classes"),
        (np.zeros((2, 8, 8)), None, "labels: expected integer class indices, got float64"),
        (np.zeros((2, 8, 8), dtype=int), (1.0, 1.0, 1.0), "spacing: expected 2 values"),
        (np.zeros((2, 8, 8), dtype=int), (1.0, -1.0), "spacing: values must be finite"),
    ],
    ids=["out of range", "float", "spacing length", "spacing value"],
)
def test_bad_input_names_the_argument_and_the_value(labels, spacing, message):
    with pytest.raises(ValueError, match=message):
        kl.dist_maps(labels, 2, spacing)
