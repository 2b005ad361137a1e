"""The boundary loss, the generalised Dice loss and the alpha schedule for Keras 3.

A Keras 3 version (`keras.ops`: the same code under the TensorFlow, JAX and torch backends) of
what `losses.py` and `label_losses.py` do in torch, with the same conventions and the same
values. Keras' own convention is channels last, so every tensor here is `B *spatial K`.

- `dist_maps(labels, K, spacing)`: the data pipeline step giving the signed distance maps of the
  boundary loss from integer labels (`utils.one_hot2dist` per sample, the original's maps), and
  `boundary_targets(...)`, the one-hot labels and those maps in one array for the compound loss.
- `SurfaceLoss(idc)`: `y_true` the maps, `y_pred` softmax probabilities; the mean of their
  product over the classes `idc` (Kervadec et al., MIDL 2019). With `from_labels=True` and the
  torch backend, `y_true` is the one-hot labels and the maps are computed inside the loss, on
  the device, by the exact transform of `distance_torch`.
- `GeneralizedDiceLoss(idc)`: Sudre et al. (2017), class weights 1 / (class size)^2 per image,
  as the original.
- `RegionBoundaryLoss(region, ...)`: `weights[0] * region + weights[1] * boundary`, `y_true` from
  `boundary_targets`; the weights are `keras.Variable`s that `AlphaScheduler` moves after each
  epoch with the original's schedules (`steal`, `add`, `constant`, as `scheduler.py`); its
  config holds the weights, so a model saved mid-schedule loads with them.

The contributed port of the original repository (`keras_loss.py` there) computed its maps with
scipy through `tf.py_function` on the whole `H W K` array (TensorFlow and Keras 2 only); these
take the maps of `utils.one_hot2dist`, per class, with the voxel spacing.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from utils import one_hot2dist

EPS = 1e-10
SCHEDULES = ("steal", "add", "constant")


# ---------------------------------------------------------------------------------------------
# Data pipeline steps (numpy)
# ---------------------------------------------------------------------------------------------


def _one_hot(labels: np.ndarray, K: int) -> np.ndarray:
    """`B *spatial` integer labels -> `B *spatial K` uint8 one-hot, checked."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(
            f"labels: values from {labels.min()} to {labels.max()}, outside the {K} classes "
            f"0..{K - 1}"
        )
    return np.eye(K, dtype=np.uint8)[labels]


def dist_maps(
    labels: np.ndarray, K: int, spacing: Sequence[float] | Sequence[Sequence[float]] | None = None
) -> np.ndarray:
    """Signed distance maps of a batch of integer labels, channels last.

    Args:
        labels: `B *spatial` integer class indices (2D or 3D).
        K: the number of classes.
        spacing: one value per spatial axis, one such sequence per sample, or None (1).

    Returns:
        `B *spatial K` float32: `utils.one_hot2dist` of each sample (exact, the original's maps).

    Raises:
        ValueError: labels out of range or not integers, a spacing of the wrong length.
    """
    one_hot = np.moveaxis(_one_hot(labels, K), -1, 1)  # B K *spatial
    ndim = one_hot.ndim - 2
    per_sample = np.ones((len(one_hot), ndim))
    if spacing is not None:
        per_sample = np.asarray(spacing, dtype=np.float64)
        if per_sample.ndim == 1:
            per_sample = np.broadcast_to(per_sample, (len(one_hot), per_sample.size))
    if per_sample.shape != (len(one_hot), ndim):
        raise ValueError(
            f"spacing: expected {ndim} values, or one such list per sample, got "
            f"{np.asarray(spacing).tolist()}"
        )
    if not np.all(np.isfinite(per_sample) & (per_sample > 0)):
        raise ValueError(f"spacing: values must be finite and positive, got {per_sample.tolist()}")
    pairs = zip(one_hot, per_sample, strict=True)
    maps = [one_hot2dist(sample, resolution=r, dtype=np.float32) for sample, r in pairs]
    return np.moveaxis(np.stack(maps), 1, -1)


def boundary_targets(
    labels: np.ndarray, K: int, spacing: Sequence[float] | Sequence[Sequence[float]] | None = None
) -> np.ndarray:
    """`B *spatial 2K` float32: the one-hot labels, then their signed maps (`dist_maps`), the
    `y_true` of `RegionBoundaryLoss`."""
    return np.concatenate(
        [_one_hot(labels, K).astype(np.float32), dist_maps(labels, K, spacing)], -1
    )


# ---------------------------------------------------------------------------------------------
# Losses (keras.ops)
# ---------------------------------------------------------------------------------------------


def _classes(tensor, idc: Sequence[int] | None):
    """The channels `idc` of a channels-last tensor (all of them for None)."""
    if idc is None:
        return tensor
    return ops.take(tensor, list(idc), axis=-1)


def _check_idc(idc: Sequence[int] | None, what: str) -> list[int] | None:
    if idc is None:
        return None
    integers = (int, np.integer)
    if isinstance(idc, str) or not len(idc) or not all(isinstance(i, integers) for i in idc):
        raise ValueError(f"{what}: expected a list of class indices, got {idc!r}")
    if min(idc) < 0:
        raise ValueError(f"{what}: expected class indices >= 0, got {list(idc)}")
    return [int(i) for i in idc]


def surface_loss(y_true, y_pred, idc: Sequence[int] | None = None):
    """Per sample: mean over pixels and classes `idc` of probabilities times signed maps."""
    product = _classes(ops.cast(y_pred, "float32"), idc) * _classes(
        ops.cast(y_true, "float32"), idc
    )
    return ops.mean(ops.reshape(product, (ops.shape(product)[0], -1)), axis=-1)


def generalized_dice_loss(y_true, y_pred, idc: Sequence[int] | None = None):
    """Per sample: 1 - 2 (sum_k w sum(p t) + eps) / (sum_k w (sum p + sum t) + eps),
    w = 1 / (sum t + eps)^2 per class, the sums over the pixels."""
    p = _classes(ops.cast(y_pred, "float32"), idc)
    t = _classes(ops.cast(y_true, "float32"), idc)
    axes = tuple(range(1, len(p.shape) - 1))
    w = 1 / (ops.sum(t, axis=axes) + EPS) ** 2  # B K
    intersection = ops.sum(w * ops.sum(p * t, axis=axes), axis=-1)
    union = ops.sum(w * (ops.sum(p, axis=axes) + ops.sum(t, axis=axes)), axis=-1)
    return 1 - 2 * (intersection + EPS) / (union + EPS)


def _torch_dist_maps(one_hot):
    """Signed maps of a channels-last one-hot tensor, on its device (torch backend only)."""
    from distance_torch import one_hot2dist_torch

    channels_first = one_hot.movedim(-1, 1).round()
    return one_hot2dist_torch(channels_first).movedim(1, -1).detach()


def _channels_last() -> None:
    """Refuse Keras' channels-first setting: every tensor here is `B *spatial K`."""
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"keras.config.image_data_format() is {keras.config.image_data_format()!r}: these "
            "losses take channels-last tensors (B *spatial K); set it to 'channels_last'"
        )


@keras.saving.register_keras_serializable(package="boundary_loss")
class SurfaceLoss(keras.losses.Loss):
    """The boundary loss: `y_true` signed maps (`dist_maps`), `y_pred` probabilities.

    Args:
        idc: the classes supervised (None: all; for two classes the paper uses [1]).
        from_labels: `y_true` is the one-hot labels and the maps are computed inside the loss
            (torch backend only: the exact transform on the device; unit spacing).
        **kwargs: those of `keras.losses.Loss` (`name`, `reduction`, `dtype`).
    """

    def __init__(
        self, idc: Sequence[int] | None = None, from_labels: bool = False, **kwargs
    ) -> None:
        super().__init__(**{"name": "surface_loss", **kwargs})
        _channels_last()
        self.idc = _check_idc(idc, "idc")
        if from_labels and keras.backend.backend() != "torch":
            raise ValueError(
                f"from_labels: the maps are computed inside the loss with the torch backend only "
                f"(this is {keras.backend.backend()}); use dist_maps() in the data pipeline"
            )
        self.from_labels = from_labels

    def call(self, y_true, y_pred):
        if self.from_labels:
            y_true = _torch_dist_maps(y_true)
        return surface_loss(y_true, y_pred, self.idc)

    def get_config(self) -> dict:
        return {**super().get_config(), "idc": self.idc, "from_labels": self.from_labels}


@keras.saving.register_keras_serializable(package="boundary_loss")
class GeneralizedDiceLoss(keras.losses.Loss):
    """The generalised Dice loss: `y_true` one-hot labels, `y_pred` probabilities."""

    def __init__(self, idc: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(**{"name": "generalized_dice_loss", **kwargs})
        _channels_last()
        self.idc = _check_idc(idc, "idc")

    def call(self, y_true, y_pred):
        return generalized_dice_loss(y_true, y_pred, self.idc)

    def get_config(self) -> dict:
        return {**super().get_config(), "idc": self.idc}


@keras.saving.register_keras_serializable(package="boundary_loss")
class RegionBoundaryLoss(keras.losses.Loss):
    """`weights[0] * GDL + weights[1] * boundary loss`, `y_true` from `boundary_targets`.

    Args:
        region_idc: classes of the generalised Dice loss (None: all).
        boundary_idc: classes of the boundary loss (None: all but 0).
        alpha: the boundary weight at the start (the paper: 0.01).
        weights: both weights, [region, alpha], instead (a saved loss's config holds them, so
            a model saved mid-schedule resumes with its weights).
        **kwargs: those of `keras.losses.Loss`.
    """

    def __init__(
        self,
        region_idc: Sequence[int] | None = None,
        boundary_idc: Sequence[int] | None = None,
        alpha: float = 0.01,
        weights: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**{"name": "region_boundary_loss", **kwargs})
        _channels_last()
        self.region_idc = _check_idc(region_idc, "region_idc")
        self.boundary_idc = _check_idc(boundary_idc, "boundary_idc")
        current = [1.0, float(alpha)] if weights is None else [float(w) for w in weights]
        if len(current) != 2 or not all(0 <= w < float("inf") for w in current):
            raise ValueError(f"weights: expected two finite numbers >= 0, got {current}")
        # The weights as Python floats (exact schedules), and as a variable the loss reads.
        self.current = current
        self.weights = keras.Variable(self.current, trainable=False, name="loss_weights")

    def call(self, y_true, y_pred):
        K = y_pred.shape[-1]
        if y_true.shape[-1] != 2 * K:
            raise ValueError(
                f"y_true: {y_true.shape[-1]} channels for {K} classes; expected {2 * K}, the "
                "one-hot labels then their maps, as boundary_targets() gives them"
            )
        one_hot, maps = y_true[..., :K], y_true[..., K:]
        boundary_idc = self.boundary_idc if self.boundary_idc is not None else list(range(1, K))
        region = generalized_dice_loss(one_hot, y_pred, self.region_idc)
        boundary = surface_loss(maps, y_pred, boundary_idc)
        weights = ops.convert_to_tensor(self.weights)
        return weights[0] * region + weights[1] * boundary

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "region_idc": self.region_idc,
            "boundary_idc": self.boundary_idc,
            "weights": list(self.current),
        }


class AlphaScheduler(keras.callbacks.Callback):
    """Moves a `RegionBoundaryLoss`'s weights after each epoch, as `scheduler.py` does.

    Args:
        loss: the compound loss whose weights move.
        schedule: "steal" (region weight - step, floored at 0.1; alpha + step), "add" (alpha +
            step) or "constant".
        step_size: the change per epoch (the paper: 0.01).
    """

    def __init__(self, loss: RegionBoundaryLoss, schedule: str = "steal", step_size: float = 0.01):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.loss, self.schedule, self.step_size = loss, schedule, float(step_size)

    def next_weights(self, weights: Sequence[float]) -> list[float]:
        """The weights after one more epoch."""
        region, alpha = (float(w) for w in weights)
        if self.schedule == "steal":
            return [max(0.1, region - self.step_size), alpha + self.step_size]
        if self.schedule == "add":
            return [region, alpha + self.step_size]
        return [region, alpha]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["alpha"] = self.loss.current[1]  # the weight this epoch trained with
        weights = self.next_weights(self.loss.current)
        self.loss.current = weights
        self.loss.weights.assign(np.asarray(weights, dtype="float32"))
        if keras.backend.backend() == "jax" and self.model is not None:
            # JAX compiles the loss's weights in as constants: compile its steps again.
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)
