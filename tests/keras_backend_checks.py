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

from boundary_loss.losses import keras_loss as kl
from boundary_loss.losses.idc_losses import GeneralizedDice, SurfaceLoss
from boundary_loss.losses.label_losses import LabelBoundaryLoss, RegionBoundaryLoss
from tests.host_reads import host_reads

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
    history = model.fit(
        x,
        targets,
        epochs=3,
        batch_size=4,
        callbacks=[scheduler],
        verbose=0,
        validation_data=(x, targets),
    )
    assert history.history["alpha"] == pytest.approx([0.5, 0.75, 1.0])  # the epoch's own
    assert loss.current == pytest.approx([0.25, 1.25])  # for the next epoch
    pred = model.predict(x, verbose=0)
    region = float(np.mean(ops.convert_to_numpy(kl.generalized_dice_loss(targets[..., :2], pred))))
    boundary = float(np.mean(ops.convert_to_numpy(kl.surface_loss(targets[..., 2:], pred, [1]))))
    expected = [
        1.0 * region + 0.5 * boundary,
        0.75 * region + 0.75 * boundary,
        0.5 * region + 1.0 * boundary,
    ]
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


# ---------------------------------------------------------------------------------------------
# Input checks: the static ones on every call, the value checks once (or with validate=True)
# ---------------------------------------------------------------------------------------------


def batch(K: int = 2, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels `2 8 8`, their maps, probabilities and logits `2 8 8 K`."""
    labels, probs = inputs((2, 8, 8), K, seed)
    logits = np.log(probs) + 3.0  # the softmax of these is probs; they do not sum to one
    return labels, kl.dist_maps(labels, K), probs, logits.astype(np.float32)


def value(tensor) -> float:
    return float(ops.convert_to_numpy(tensor))


def with_nan(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array[1, 2, 3, 0] = np.nan
    return array


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "logits",
            r"SurfaceLoss: y_pred is not a probability simplex over axis -1 \(shape "
            r"\(2, 8, 8, 2\), dtype float32\): sums deviate from 1 by up to 3.61 \(softmax "
            r"missing, or NaN/inf values\?\)",
        ),
        ("nan probs", r"SurfaceLoss: y_pred is not a probability simplex .* by up to nan"),
        ("nan maps", r"SurfaceLoss: y_true holds NaN or inf values \(shape \(2, 8, 8, 2\)\)"),
        (
            "labels as maps",
            r"SurfaceLoss: y_true is one-hot \(shape \(2, 8, 8, 2\)\): it "
            r"expects the signed distance maps",
        ),
        ("compound logits", r"RegionBoundaryLoss: y_pred is not a probability simplex"),
        ("compound nan maps", r"RegionBoundaryLoss: y_true\[..., K:\] \(the maps\) holds NaN"),
        (
            "compound labels",
            r"RegionBoundaryLoss: y_true\[..., :K\] \(the one-hot labels\) is "
            r"not a probability simplex",
        ),
        ("gdl logits", r"GeneralizedDiceLoss: y_pred is not a probability simplex"),
    ],
)
def test_values_that_are_not_probabilities_or_maps_are_named(case, message):
    labels, maps, probs, logits = batch()
    one_hot = np.eye(2, dtype=np.float32)[labels]
    targets = kl.boundary_targets(labels, 2)
    broken_labels, broken_maps = targets.copy(), targets.copy()
    broken_labels[0, 0, 0, :2] = 0.5, 0.7
    broken_maps[1, 2, 3, 2] = np.nan
    calls = {
        "logits": lambda: kl.SurfaceLoss([1])(maps, logits),
        "nan probs": lambda: kl.SurfaceLoss([1])(maps, with_nan(probs)),
        "nan maps": lambda: kl.SurfaceLoss([1])(with_nan(maps), probs),
        "labels as maps": lambda: kl.SurfaceLoss([1])(one_hot, probs),
        "compound logits": lambda: kl.RegionBoundaryLoss()(targets, logits),
        "compound nan maps": lambda: kl.RegionBoundaryLoss()(broken_maps, probs),
        "compound labels": lambda: kl.RegionBoundaryLoss()(broken_labels, probs),
        "gdl logits": lambda: kl.GeneralizedDiceLoss()(one_hot, logits),
    }
    with pytest.raises(ValueError, match=message):
        calls[case]()


def test_half_precision_probabilities_get_the_tolerance_of_their_dtype():
    """A float16 softmax sums to one within a few of its rounding steps, as `utils.simplex`
    allows in torch; the same sums in float32 are refused."""
    labels, maps, probs, _ = batch(K=4)
    half = probs.astype(np.float16)
    half[..., 0] += np.float16(3e-3)  # within 4 K eps(float16) = 0.0156
    expected = kl.surface_loss(maps, half.astype(np.float32), [1, 2, 3])
    assert value(kl.SurfaceLoss([1, 2, 3])(maps, half)) == pytest.approx(value(ops.mean(expected)))
    with pytest.raises(ValueError, match=r"y_pred is not a probability simplex .*float32"):
        kl.SurfaceLoss([1, 2, 3])(maps, half.astype(np.float32))


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "idc",
            r"SurfaceLoss: idc: \[2\] outside the 2 classes of y_pred \(shape "
            r"\(2, 8, 8, 2\)\)",
        ),
        (
            "shape",
            r"SurfaceLoss: y_pred and y_true must have the same shape, got \(2, 8, 8, 2\) "
            r"and \(2, 8, 6, 2\)",
        ),
        (
            "1D",
            r"SurfaceLoss: y_pred must be B x H x W x K or B x X x Y x Z x K .* got shape "
            r"\(2, 8, 2\)",
        ),
        ("empty", r"SurfaceLoss: y_pred is empty, shape \(0, 8, 8, 2\)"),
        ("gdl idc", r"GeneralizedDiceLoss: idc: \[3\] outside the 2 classes of y_pred"),
        ("region_idc", r"RegionBoundaryLoss: region_idc: \[2\] outside the 2 classes of y_pred"),
        ("boundary_idc", r"RegionBoundaryLoss: boundary_idc: \[5\] outside the 2 classes"),
        (
            "compound grid",
            r"RegionBoundaryLoss: y_true shape \(2, 8, 6, 4\) does not match "
            r"y_pred \(2, 8, 8, 2\): expected \(2, 8, 8, 4\)",
        ),
        ("one class", r"RegionBoundaryLoss: y_pred has 1 class \(shape \(2, 8, 8, 1\)\)"),
    ],
)
def test_shapes_and_indices_are_checked_on_every_call(case, message):
    """After a first call that passed, the shape checks still run: they cost no read back."""
    labels, maps, probs, _ = batch()
    targets = kl.boundary_targets(labels, 2)
    surface, gdl = kl.SurfaceLoss([1]), kl.GeneralizedDiceLoss([0, 1])
    region = kl.RegionBoundaryLoss()
    surface(maps, probs), gdl(targets[..., :2], probs), region(targets, probs)  # checked once
    calls = {
        "idc": lambda: kl.SurfaceLoss([2])(maps, probs),
        "shape": lambda: surface(maps[:, :, :6], probs),
        "1D": lambda: surface(maps[:, 0], probs[:, 0]),
        "empty": lambda: surface(maps[:0], probs[:0]),
        "gdl idc": lambda: kl.GeneralizedDiceLoss([0, 3])(targets[..., :2], probs),
        "region_idc": lambda: kl.RegionBoundaryLoss(region_idc=[0, 2])(targets, probs),
        "boundary_idc": lambda: kl.RegionBoundaryLoss(boundary_idc=[5])(targets, probs),
        "compound grid": lambda: region(targets[:, :, :6], probs),
        "one class": lambda: region(targets[..., :2], probs[..., :1]),
    }
    with pytest.raises(ValueError, match=message):
        calls[case]()


@pytest.mark.parametrize(
    "labels, K, message",
    [
        (
            np.zeros((4, 16), dtype=int),
            2,
            r"labels: expected B x H x W or B x X x Y x Z .* got "
            r"shape \(4, 16\)",
        ),
        (np.zeros((0, 8, 8), dtype=int), 2, r"labels: empty, shape \(0, 8, 8\)"),
        (np.zeros((2, 8, 8), dtype=int), True, r"K: expected a positive integer .* got True"),
        (np.zeros((2, 8, 8), dtype=int), 0, r"K: expected a positive integer .* got 0"),
    ],
    ids=["1D", "empty batch", "K bool", "K zero"],
)
def test_dist_maps_refuses_1d_labels_and_an_empty_batch(labels, K, message):
    for make in (kl.dist_maps, kl.boundary_targets):
        with pytest.raises(ValueError, match=message):
            make(labels, K)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: kl.RegionBoundaryLoss(alpha=True),
            "alpha: expected a finite number >= 0, got True",
        ),
        (
            lambda: kl.RegionBoundaryLoss(weights=[1.0, float("nan")]),
            "weights: expected two finite numbers >= 0",
        ),
        (lambda: kl.RegionBoundaryLoss(weights=[1.0, False]), r"weights: .* got \[1.0, False\]"),
        (
            lambda: kl.SurfaceLoss(idc=[True]),
            r"SurfaceLoss: idc must be a list of class indices, got \[True\]",
        ),
        (lambda: kl.SurfaceLoss(validate="yes"), "validate: expected True or False, got 'yes'"),
        (
            lambda: kl.AlphaScheduler(kl.RegionBoundaryLoss(), step_size=float("nan")),
            "step_size: expected a finite number >= 0, got nan",
        ),
    ],
    ids=["alpha bool", "weights nan", "weights bool", "idc bool", "validate str", "step nan"],
)
def test_settings_that_are_not_numbers_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_value_checks_run_on_the_first_call_only_unless_validate(monkeypatch):
    """The value checks read the device back (a synchronisation): once per loss object, or on
    every call with validate=True. Counted at the one place they are computed."""
    labels, maps, probs, logits = batch()
    counted = []
    failures = kl.SurfaceLoss._failures
    monkeypatch.setattr(
        kl.SurfaceLoss, "_failures", lambda self, *a: counted.append(1) or failures(self, *a)
    )
    once, every = kl.SurfaceLoss([1]), kl.SurfaceLoss([1], validate=True)
    for _ in range(3):
        once(maps, probs), every(maps, probs)
    assert len(counted) == 1 + 3
    # Later calls of `once` read nothing: logits then give the meaningless value the formula
    # gives, as the unchecked loss did, and validate=True still refuses them.
    expected = value(ops.mean(kl.surface_loss(maps, logits, [1])))
    assert value(once(maps, logits)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="y_pred is not a probability simplex"):
        every(maps, logits)
    assert once.get_config()["validate"] is False and every.get_config()["validate"] is True


def compiled(fn):
    """`fn` traced and compiled whole by the backend, called on backend tensors: a read of a
    value by the host would fail the trace (JAX's jit, torch.compile without graph break, a
    TensorFlow graph)."""
    if BACKEND == "jax":
        import jax

        step = jax.jit(fn)
    elif BACKEND == "torch":
        step = torch.compile(fn, backend="aot_eager", fullgraph=True)
    else:
        import tensorflow as tf

        step = tf.function(fn)
    return lambda *arrays: step(*(ops.convert_to_tensor(a) for a in arrays))


def test_after_the_first_call_nothing_is_read_back_from_the_device(monkeypatch):
    """The first call reads the checks' result back; the next ones read nothing. Under torch,
    every host read of a tensor's values (`.item()`, `bool()`, `.numpy()`, `.tolist()`,
    `torch.allclose`...) is counted; under the other backends, the next calls run compiled
    whole, which a host read would break."""
    labels, maps, probs, _ = batch()
    targets = kl.boundary_targets(labels, 2)
    for loss, y_true in ((kl.SurfaceLoss([1]), maps), (kl.RegionBoundaryLoss(), targets)):
        if BACKEND != "torch":
            expected = value(loss(y_true, probs))  # the first call: checked
            step = compiled(lambda t, p, loss=loss: loss(t, p))
            assert value(step(y_true, probs)) == pytest.approx(expected)
            continue
        y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(probs)
        with host_reads(monkeypatch) as reads:
            loss(y_true, y_pred)
        assert reads, "the first call reads the checks' result back"
        with host_reads(monkeypatch) as reads:
            loss(y_true, y_pred)
            loss(y_true, y_pred)
        assert reads == [], f"{loss.name} read {reads} back"


def test_a_compiled_step_cannot_raise_so_bad_input_makes_the_loss_nan():
    """Eager execution (the torch backend's fit) raises on the first batch. A traced step (JAX's
    jit, a TensorFlow graph) has no values to raise on: the checks run on the device and turn
    the loss into NaN, without a read back, and the weights take no step from that batch."""
    labels, _, _, _ = batch(seed=9)
    targets = kl.boundary_targets(np.tile(labels, (2, 1, 1)), 2)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, padding="same")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=kl.RegionBoundaryLoss())
    before = [w.copy() for w in model.get_weights()]
    if BACKEND == "torch":
        with pytest.raises(ValueError, match="RegionBoundaryLoss: y_pred is not a probability"):
            model.fit(x, targets, epochs=1, batch_size=2, verbose=0)
        return
    history = model.fit(x, targets, epochs=1, batch_size=2, verbose=0)
    assert np.isnan(history.history["loss"][0])
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_compiled_the_checks_are_computed_on_the_device_until_an_eager_call_passed():
    """Compiled before any eager call, the loss carries its checks: NaN for logits or NaN maps,
    with a zero gradient; the right value otherwise. Compiled after an eager call passed the
    checks, it carries none (validate=True keeps them)."""
    _, maps, probs, logits = batch()
    fresh, checked, validating = (
        kl.SurfaceLoss([1]),
        kl.SurfaceLoss([1]),
        kl.SurfaceLoss([1], validate=True),
    )
    expected = value(checked(maps, probs))
    validating(maps, probs)
    for loss in (fresh, validating):
        step = compiled(lambda t, p, loss=loss: loss(t, p))
        assert np.isnan(value(step(maps, logits))) and np.isnan(value(step(with_nan(maps), probs)))
        assert value(step(maps, probs)) == pytest.approx(expected)
    unchecked = compiled(lambda t, p: checked(t, p))
    assert value(unchecked(maps, logits)) == pytest.approx(
        value(kl.surface_loss(maps, logits, [1]).mean())
    )
    if BACKEND == "jax":
        import jax

        for y_true, y_pred in ((maps, logits), (with_nan(maps), probs)):
            gradient = jax.grad(lambda p, t=y_true: kl.SurfaceLoss([1])(t, p))(y_pred)
            assert np.all(np.asarray(gradient) == 0)  # a failing batch moves nothing
