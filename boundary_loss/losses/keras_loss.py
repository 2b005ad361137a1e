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

Bad input raises ValueError naming the argument, its value and shape, with the wording of the
torch losses. Shapes, ranks and `idc` are checked on every call (from the static shapes, so also
while a step is traced). The value checks (probabilities summing to one over the classes, which
raw logits, NaN and inf fail; maps without NaN; maps that are not the labels) read values back
from the device, a synchronisation: they run on the first call of each loss object whose tensors
hold values (eager execution), or on every call with `validate=True`. A step compiled before
that (JAX's jit, a TensorFlow graph, torch.compile) cannot raise on values: the same checks are
then computed in the graph, on the device, and make the loss NaN for a batch that fails them
(Keras' `TerminateOnNaN` stops there; one eager call of the loss on that batch names the fault).

The contributed port of the original repository (`keras_loss.py` there) computed its maps with
scipy through `tf.py_function` on the whole `H W K` array (TensorFlow and Keras 2 only); these
take the maps of `utils.one_hot2dist`, per class, with the voxel spacing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from boundary_loss.losses.checks import (
    check_flag,
    check_idc_range,
    check_optional_idc,
    check_weight,
)
from boundary_loss.losses.weight_schedules import SCHEDULES
from boundary_loss.maps.distance import one_hot2dist

EPS = 1e-10
# Machine epsilon of the half-precision dtypes: `utils.simplex`'s tolerance on their sums.
HALF_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7}


# ---------------------------------------------------------------------------------------------
# Data pipeline steps (numpy)
# ---------------------------------------------------------------------------------------------


def _is_integer(value: object) -> bool:
    """An int or a numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _one_hot(labels: np.ndarray, K: int) -> np.ndarray:
    """`B *spatial` integer labels -> `B *spatial K` uint8 one-hot, checked.

    Raises:
        ValueError: naming the argument: K not a positive integer; labels not integers, not
            `B H W` / `B X Y Z`, empty, or outside 0..K-1.
    """
    if not _is_integer(K) or K < 1:
        raise ValueError(f"K: expected a positive integer (the number of classes), got {K!r}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got {labels.dtype}")
    if labels.ndim not in (3, 4):
        raise ValueError(
            "labels: expected B x H x W or B x X x Y x Z class indices (2D or 3D, a batch axis "
            f"first), got shape {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError(f"labels: empty, shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= K:
        raise ValueError(
            f"labels: values from {labels.min()} to {labels.max()}, outside the {K} classes "
            f"0..{K - 1} (shape {labels.shape})"
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
        ValueError: labels out of range, not integers, not 2D or 3D with a batch axis, or empty;
            K not a positive integer; a spacing of the wrong length or value.
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
    `y_true` of `RegionBoundaryLoss`.

    Args:
        labels, K, spacing: as `dist_maps`.

    Returns:
        The one-hot labels and the maps, concatenated on the last axis.

    Raises:
        ValueError: as `dist_maps`.
    """
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
    from boundary_loss.maps.distance_torch import one_hot2dist_torch

    channels_first = one_hot.movedim(-1, 1).round()
    return one_hot2dist_torch(channels_first).movedim(1, -1).detach()


def _channels_last() -> None:
    """Refuse Keras' channels-first setting: every tensor here is `B *spatial K`."""
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"keras.config.image_data_format() is {keras.config.image_data_format()!r}: these "
            "losses take channels-last tensors (B *spatial K); set it to 'channels_last'"
        )


def _shape(tensor) -> tuple:
    """The static shape (None for an axis unknown while tracing)."""
    return tuple(None if n is None else int(n) for n in tensor.shape)


def _same_shape(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(m == n or None in (m, n) for m, n in zip(a, b, strict=True))


def _check_y_pred(name: str, y_pred) -> int:
    """The static checks of `y_pred` (`B *spatial K`, 2D or 3D, not empty); returns K."""
    shape = _shape(y_pred)
    if len(shape) not in (4, 5) or shape[-1] is None:
        raise ValueError(
            f"{name}: y_pred must be B x H x W x K or B x X x Y x Z x K (channels last, K known), "
            f"got shape {shape}"
        )
    if 0 in shape:
        raise ValueError(f"{name}: y_pred is empty, shape {shape}")
    return shape[-1]


def _check_idc_range(name: str, what: str, idc: Sequence[int], K: int, shape: tuple) -> None:
    """`checks.check_idc_range` against the K classes of y_pred."""
    check_idc_range(idc, K, f"{name}: {what}", f"y_pred (shape {shape})")


def _check_pair(name: str, y_true, y_pred, idc: Sequence[int] | None) -> None:
    """The static checks of a loss on (`y_true`, `y_pred`) of one shape, and its `idc` within
    y_pred's K classes."""
    K = _check_y_pred(name, y_pred)
    if not _same_shape(_shape(y_true), _shape(y_pred)):
        raise ValueError(
            f"{name}: y_pred and y_true must have the same shape, got {_shape(y_pred)} and "
            f"{_shape(y_true)}"
        )
    if idc is not None:
        _check_idc_range(name, "idc", idc, K, _shape(y_pred))


def _holds_values(*tensors) -> bool:
    """True when the tensors hold values the host can read now (eager execution); False while
    a function is traced or compiled (JAX's jit, a TensorFlow graph, torch.compile, Keras'
    symbolic build on torch's meta device), where there is no value to read."""
    if any(isinstance(t, keras.KerasTensor) for t in tensors):
        return False
    try:
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    except ImportError:  # pragma: no cover (a Keras 3 without it)
        pass
    else:
        if in_symbolic_scope():
            return False
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return not any(isinstance(t, jax.core.Tracer) for t in tensors)
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return False
        return not any(torch.is_tensor(t) and t.device.type == "meta" for t in tensors)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    return backend == "numpy"


def _sum_error(tensor):
    """|sum over the last axis - 1| (NaN where the tensor holds NaN)."""
    return ops.abs(ops.sum(tensor, axis=-1) - 1)


def _not_simplex(tensor, atol: float):
    """Scalar bool: `tensor` does not sum to one over its last axis within `atol` (NaN and inf
    fail, their comparisons being false)."""
    return ops.logical_not(ops.all(_sum_error(tensor) <= atol))


def _is_one_hot(tensor):
    """Scalar bool: values 0 and 1 only, summing to one over the last axis (`utils.one_hot`)."""
    binary = ops.all(ops.logical_or(ops.equal(tensor, 0), ops.equal(tensor, 1)))
    return ops.logical_and(binary, ops.logical_not(_not_simplex(tensor, 1e-5)))


def _not_finite(tensor):
    """Scalar bool: NaN or inf somewhere."""
    return ops.logical_not(ops.all(ops.isfinite(tensor)))


def _simplex_message(name: str, what: str, tensor, dtype: str) -> str:
    """`utils.check_simplex`'s message, for a channels-last tensor (read on the failure path)."""
    deviation = float(ops.convert_to_numpy(ops.max(_sum_error(tensor))))
    return (
        f"{name}: {what} is not a probability simplex over axis -1 (shape {_shape(tensor)}, "
        f"dtype {dtype}): sums deviate from 1 by up to {deviation:.3g} (softmax missing, or "
        "NaN/inf values?)"
    )


Failures = list[tuple[object, Callable[[], str]]]


class _ProbabilityLoss(keras.losses.Loss):
    """Base of the losses whose `y_pred` is probabilities: the `validate` switch and the value
    checks (`_failures`, defined by each loss): on the first call that holds values, or on every
    call with `validate=True`; in a traced step, computed on the device, a failure making the
    loss NaN (see the module docstring)."""

    def __init__(self, validate: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        _channels_last()
        self.validate = check_flag(validate, "validate")
        self._values_checked = False  # the value checks passed once, on values
        self._pred_dtype = keras.backend.floatx()

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras casts y_pred to the loss's dtype before `call`; the tolerance of the simplex
        # check follows the dtype it came in, as `utils.simplex` (half precision: looser).
        dtype = getattr(y_pred, "dtype", None)
        self._pred_dtype = (
            keras.backend.standardize_dtype(dtype) if dtype is not None else keras.backend.floatx()
        )
        return super().__call__(y_true, y_pred, sample_weight)

    def _atol(self, K: int) -> float:
        """`utils.simplex`'s tolerance on the sums: torch.allclose's for float32 and wider, four
        rounding steps per class in half precision."""
        if self._pred_dtype in HALF_EPS:
            return 4 * K * HALF_EPS[self._pred_dtype]
        return 1e-8 + 1e-5

    def _pred_failure(self, y_pred) -> tuple[object, Callable[[], str]]:
        name, dtype = type(self).__name__, self._pred_dtype
        flag = _not_simplex(y_pred, self._atol(_shape(y_pred)[-1]))
        return flag, lambda: _simplex_message(name, "y_pred", y_pred, dtype)

    def _failures(self, y_true, y_pred) -> Failures:
        """(scalar bool tensor, true when the check fails; its message) for each check."""
        raise NotImplementedError

    def _check_values(self, y_true, y_pred):
        """Run the value checks when due. On values: raise ValueError with the message of the
        first check that fails (one read back from the device for all of them), else return
        None. Traced: return the scalar bool tensor 'a check fails', for `_guard`."""
        if self._values_checked and not self.validate:
            return None
        failures = self._failures(y_true, y_pred)
        flags = ops.stop_gradient(ops.stack([flag for flag, _ in failures]))
        if not _holds_values(y_true, y_pred):
            return ops.any(flags)
        for failed, (_, message) in zip(ops.convert_to_numpy(flags), failures, strict=True):
            if failed:
                raise ValueError(message())
        self._values_checked = True
        return None

    @staticmethod
    def _sanitised(y_true, failed):
        """y_true, zeros when a traced value check failed: NaN maps would otherwise give NaN
        gradients through the NaN loss of `_guard`, and the batch must move nothing."""
        if failed is None:
            return y_true
        return ops.where(failed, ops.zeros_like(y_true), y_true)

    @staticmethod
    def _guard(losses, failed):
        """The per-sample losses, NaN when a traced value check failed (their gradient is
        then 0: the failing batch moves no weight)."""
        if failed is None:
            return losses
        return ops.where(failed, ops.full_like(losses, float("nan")), losses)

    def get_config(self) -> dict:
        return {**super().get_config(), "validate": self.validate}


@keras.saving.register_keras_serializable(package="boundary_loss")
class SurfaceLoss(_ProbabilityLoss):
    """The boundary loss: `y_true` signed maps (`dist_maps`), `y_pred` probabilities.

    Args:
        idc: the classes supervised (None: all; for two classes the paper uses [1]).
        from_labels: `y_true` is the one-hot labels and the maps are computed inside the loss
            (torch backend only: the exact transform on the device; unit spacing).
        validate: the value checks on every call (a device-to-host synchronisation each);
            False (the default): on the first call holding values only.
        **kwargs: those of `keras.losses.Loss` (`name`, `reduction`, `dtype`).

    Raises:
        ValueError: at construction, a bad setting; at a call, naming the argument and its
            shape: y_pred not `B *spatial K` (2D or 3D) or empty, y_true of another shape, idc
            beyond K; on the first call, y_pred not probabilities (raw logits, NaN, inf), maps
            with NaN or inf or that are one-hot labels (with from_labels: labels not one-hot).
    """

    def __init__(
        self,
        idc: Sequence[int] | None = None,
        from_labels: bool = False,
        validate: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(validate, **{"name": "surface_loss", **kwargs})
        self.idc = check_optional_idc(idc, f"{type(self).__name__}: idc")
        if from_labels and keras.backend.backend() != "torch":
            raise ValueError(
                f"from_labels: the maps are computed inside the loss with the torch backend only "
                f"(this is {keras.backend.backend()}); use dist_maps() in the data pipeline"
            )
        self.from_labels = from_labels

    def _failures(self, y_true, y_pred) -> Failures:
        name, shape = type(self).__name__, _shape(y_true)
        if self.from_labels:
            return [
                self._pred_failure(y_pred),
                (
                    ops.logical_not(_is_one_hot(y_true)),
                    lambda: (
                        f"{name}: y_true is not one-hot along axis -1 (shape {shape}): with "
                        "from_labels=True it takes the one-hot labels"
                    ),
                ),
            ]
        return [
            self._pred_failure(y_pred),
            (
                _not_finite(y_true),
                lambda: (
                    f"{name}: y_true holds NaN or inf values (shape {shape}): expected the "
                    "signed distance maps of dist_maps()"
                ),
            ),
            (
                _is_one_hot(y_true),
                lambda: (
                    f"{name}: y_true is one-hot (shape {shape}): it expects the signed "
                    "distance maps (dist_maps), not the labels"
                ),
            ),
        ]

    def call(self, y_true, y_pred):
        _check_pair(type(self).__name__, y_true, y_pred, self.idc)
        failed = self._check_values(y_true, y_pred)
        if self.from_labels:
            y_true = _torch_dist_maps(y_true)
        else:
            y_true = self._sanitised(y_true, failed)
        return self._guard(surface_loss(y_true, y_pred, self.idc), failed)

    def get_config(self) -> dict:
        return {**super().get_config(), "idc": self.idc, "from_labels": self.from_labels}


@keras.saving.register_keras_serializable(package="boundary_loss")
class GeneralizedDiceLoss(_ProbabilityLoss):
    """The generalised Dice loss: `y_true` one-hot labels, `y_pred` probabilities.

    Args:
        idc: the classes supervised (None: all).
        validate: the value checks on every call, as `SurfaceLoss`; False (the default): on the
            first call holding values only.
        **kwargs: those of `keras.losses.Loss`.

    Raises:
        ValueError: as `SurfaceLoss`; on the first call, y_pred or y_true not summing to one.
    """

    def __init__(self, idc: Sequence[int] | None = None, validate: bool = False, **kwargs) -> None:
        super().__init__(validate, **{"name": "generalized_dice_loss", **kwargs})
        self.idc = check_optional_idc(idc, f"{type(self).__name__}: idc")

    def _failures(self, y_true, y_pred) -> Failures:
        name = type(self).__name__
        return [
            self._pred_failure(y_pred),
            (
                _not_simplex(y_true, 1e-8 + 1e-5),
                lambda: _simplex_message(name, "y_true", y_true, "float32"),
            ),
        ]

    def call(self, y_true, y_pred):
        _check_pair(type(self).__name__, y_true, y_pred, self.idc)
        failed = self._check_values(y_true, y_pred)
        y_true = self._sanitised(y_true, failed)
        return self._guard(generalized_dice_loss(y_true, y_pred, self.idc), failed)

    def get_config(self) -> dict:
        return {**super().get_config(), "idc": self.idc}


@keras.saving.register_keras_serializable(package="boundary_loss")
class RegionBoundaryLoss(_ProbabilityLoss):
    """`weights[0] * GDL + weights[1] * boundary loss`, `y_true` from `boundary_targets`.

    Args:
        region_idc: classes of the generalised Dice loss (None: all).
        boundary_idc: classes of the boundary loss (None: all but 0).
        alpha: the boundary weight at the start (the paper: 0.01).
        weights: both weights, [region, alpha], instead (a saved loss's config holds them, so
            a model saved mid-schedule resumes with its weights).
        validate: the value checks on every call, as `SurfaceLoss`; False (the default): on the
            first call holding values only.
        **kwargs: those of `keras.losses.Loss`.

    Raises:
        ValueError: at construction, alpha or weights not finite numbers >= 0 (a bool
            included); at a call, as `SurfaceLoss`, and y_true not the 2K channels of
            `boundary_targets` on y_pred's grid.
    """

    def __init__(
        self,
        region_idc: Sequence[int] | None = None,
        boundary_idc: Sequence[int] | None = None,
        alpha: float = 0.01,
        weights: Sequence[float] | None = None,
        validate: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(validate, **{"name": "region_boundary_loss", **kwargs})
        self.region_idc = check_optional_idc(region_idc, "RegionBoundaryLoss: region_idc")
        self.boundary_idc = check_optional_idc(boundary_idc, "RegionBoundaryLoss: boundary_idc")
        if weights is None:
            current = [1.0, check_weight(alpha, "alpha")]
        else:
            valid = not isinstance(weights, str) and len(weights) == 2
            try:
                current = [check_weight(w, "weights") for w in weights] if valid else []
            except ValueError:
                current = []
            if len(current) != 2:
                raise ValueError(f"weights: expected two finite numbers >= 0, got {weights!r}")
        # The weights as Python floats (exact schedules), and as a variable the loss reads.
        self.current = current
        self.weights = keras.Variable(self.current, trainable=False, name="loss_weights")

    def _failures(self, y_true, y_pred) -> Failures:
        name, K = type(self).__name__, _shape(y_pred)[-1]
        one_hot, maps = y_true[..., :K], y_true[..., K:]
        return [
            self._pred_failure(y_pred),
            (
                _not_simplex(one_hot, 1e-8 + 1e-5),
                lambda: _simplex_message(
                    name, "y_true[..., :K] (the one-hot labels)", one_hot, "float32"
                ),
            ),
            (
                _not_finite(maps),
                lambda: (
                    f"{name}: y_true[..., K:] (the maps) holds NaN or inf values (shape "
                    f"{_shape(y_true)}): expected boundary_targets()"
                ),
            ),
        ]

    def call(self, y_true, y_pred):
        name = type(self).__name__
        K = _check_y_pred(name, y_pred)
        pred, true = _shape(y_pred), _shape(y_true)
        if true[-1] != 2 * K:
            raise ValueError(
                f"{name}: y_true: {true[-1]} channels for {K} classes; expected {2 * K}, the "
                "one-hot labels then their maps, as boundary_targets() gives them (y_true shape "
                f"{true}, y_pred shape {pred})"
            )
        if not _same_shape(true[:-1], pred[:-1]):
            raise ValueError(
                f"{name}: y_true shape {true} does not match y_pred {pred}: expected "
                f"{(*pred[:-1], 2 * K)}, the one-hot labels then their maps"
            )
        if K < 2:
            raise ValueError(
                f"{name}: y_pred has {K} class (shape {pred}); the boundary term needs 2 classes "
                "or more"
            )
        boundary_idc = self.boundary_idc if self.boundary_idc is not None else list(range(1, K))
        if self.region_idc is not None:
            _check_idc_range(name, "region_idc", self.region_idc, K, pred)
        _check_idc_range(name, "boundary_idc", boundary_idc, K, pred)
        failed = self._check_values(y_true, y_pred)
        y_true = self._sanitised(y_true, failed)
        one_hot, maps = y_true[..., :K], y_true[..., K:]
        region = generalized_dice_loss(one_hot, y_pred, self.region_idc)
        boundary = surface_loss(maps, y_pred, boundary_idc)
        weights = ops.convert_to_tensor(self.weights)
        return self._guard(weights[0] * region + weights[1] * boundary, failed)

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

    Raises:
        ValueError: an unknown schedule, a step_size that is not a finite number >= 0.
    """

    def __init__(self, loss: RegionBoundaryLoss, schedule: str = "steal", step_size: float = 0.01):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.loss, self.schedule = loss, schedule
        self.step_size = check_weight(step_size, "step_size")

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
