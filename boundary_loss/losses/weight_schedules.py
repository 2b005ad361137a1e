"""Schedulers of the loss weights, called after each epoch.

A weight scheduler is built from `--scheduler NAME --scheduler_params "{...}"` and called as

    loss_weights = scheduler(epoch, loss_weights, metrics)

with `loss_weights` one list of weights per training loader (the `--losses` of that loader) and
`metrics` the epoch's validation summary (e.g. {"val_dice": 0.71}). It returns the weights for
the next epoch. Schedulers with a state expose `state_dict()` / `load_state_dict()`, saved in
`last.pt` so that `--resume` continues exactly.

The boundary-loss paper (Kervadec et al., MIDL 2019) starts the boundary term at a small weight
and raises it over the epochs: `StealWeight` moves weight from the regional loss to the
boundary loss, `AddWeightLoss` adds to every weight.
"""

from __future__ import annotations

from collections.abc import Sequence

Weights = list[list[float]]

# The schedules of the boundary weight alpha that the compound losses on labels offer by name
# (`label_losses.RegionBoundaryLoss`, `keras_loss.AlphaScheduler`): the rules of `StealWeight`,
# `AddWeightLoss` and `DummyScheduler`.
SCHEDULES = ("steal", "add", "constant")


class DummyScheduler:
    """Keeps the weights as they are. The base of every scheduler, with its capabilities:

    Attributes:
        handles_nan: after an epoch that produced a NaN or infinite loss, the training calls
            the scheduler with `{"nan": True}` and restarts the epoch with the weights it
            returns, instead of stopping (the epoch's first state is then copied each epoch).
        reads_losses: the scheduler reads the raw value of every term (`tra_losses`), so a
            term of weight 0 is computed all the same instead of skipped.
    """

    handles_nan: bool = False
    reads_losses: bool = False

    def __call__(self, epoch: int, weights: Weights, metrics: dict | None = None) -> Weights:
        return [list(w) for w in weights]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StealWeight(DummyScheduler):
    """After each epoch, weights [a, b] become [max(0.1, a - to_steal), b + to_steal].

    Args:
        to_steal: weight moved from the first loss to the second each epoch.

    Raises:
        ValueError: to_steal negative, or a loader with other than two losses.
    """

    def __init__(self, to_steal: float) -> None:
        if not isinstance(to_steal, int | float) or to_steal < 0:
            raise ValueError(
                f"StealWeight: to_steal must be a non-negative number, got {to_steal!r}"
            )
        self.to_steal = float(to_steal)

    def __call__(self, epoch: int, weights: Weights, metrics: dict | None = None) -> Weights:
        new = []
        for w in weights:
            if len(w) != 2:
                raise ValueError(
                    f"StealWeight needs exactly two losses per loader, got weights {w}"
                )
            a, b = w
            new.append([max(0.1, a - self.to_steal), b + self.to_steal])
        return new


class AddWeightLoss(DummyScheduler):
    """After each epoch, adds `to_add[i]` to the weight of the i-th loss of every loader.

    Args:
        to_add: one increment per loss.

    Raises:
        ValueError: to_add does not have one value per loss.
    """

    def __init__(self, to_add: Sequence[float]) -> None:
        if isinstance(to_add, int | float):
            to_add = [to_add]
        self.to_add = [float(a) for a in to_add]

    def __call__(self, epoch: int, weights: Weights, metrics: dict | None = None) -> Weights:
        new = []
        for w in weights:
            if len(w) != len(self.to_add):
                raise ValueError(
                    f"AddWeightLoss: to_add {self.to_add} has {len(self.to_add)} values for "
                    f"{len(w)} losses (weights {w})"
                )
            new.append([a + b for a, b in zip(w, self.to_add, strict=True)])
        return new


class LambdaController(DummyScheduler):
    """Automatic weight of the adjacency penalty, as in Ganaye et al. (MICCAI 2018).

    After epoch 0 the penalty's weight is set so that, weighted, it is `fraction` of the
    segmentation term (both measured as the epoch's mean raw training losses). Then, every
    `every` epochs, the weight is multiplied by `factor` while the validation Dice holds (stays
    within `tolerance` of the best so far), and divided by `factor` when it drops further or
    when an epoch produced NaN (`metrics["nan"]`); the count restarts after each change.

    Args:
        index: position of the penalty in each loader's losses (default: the last).
        reference: position of the segmentation term it is scaled against (default: the first).
        fraction: penalty / segmentation term after epoch 0.
        factor: multiplier of each raise (and divisor of each back-off), > 1.
        every: epochs between two raises.
        tolerance: Dice drop tolerated before backing off.
        max_weight: ceiling of the weight.

    The metrics it reads: `val_dice` (float), `tra_losses` (one list of mean raw losses per
    loader), `nan` (bool, optional).
    """

    handles_nan = True  # the training restarts a NaN epoch with the lowered weights
    reads_losses = True  # it scales the penalty from its raw value: never skip a zero weight

    def __init__(
        self,
        index: int = -1,
        reference: int = 0,
        fraction: float = 0.1,
        factor: float = 2.0,
        every: int = 5,
        tolerance: float = 0.01,
        max_weight: float = 1e3,
    ) -> None:
        if not fraction > 0 or not factor > 1 or not every >= 1 or tolerance < 0:
            raise ValueError(
                "LambdaController: needs fraction > 0, factor > 1, every >= 1, tolerance >= 0; "
                f"got fraction={fraction}, factor={factor}, every={every}, tolerance={tolerance}"
            )
        self.index, self.reference = index, reference
        self.fraction, self.factor, self.every = fraction, factor, every
        self.tolerance, self.max_weight = tolerance, max_weight
        self.best_dice = -float("inf")
        self.since_change = 0
        self.started = False

    def _scale(self, weights: Weights, scale: float) -> Weights:
        new = [list(w) for w in weights]
        for w in new:
            w[self.index] = min(self.max_weight, w[self.index] * scale)
        return new

    def __call__(self, epoch: int, weights: Weights, metrics: dict | None = None) -> Weights:
        metrics = metrics or {}
        if metrics.get("nan"):
            self.since_change = 0
            return self._scale(weights, 1 / self.factor)
        dice = float(metrics.get("val_dice", float("nan")))
        if not self.started:
            self.started = True
            self.best_dice = dice
            new = [list(w) for w in weights]
            for w, losses in zip(new, metrics.get("tra_losses", []), strict=False):
                penalty = losses[self.index]
                # The magnitude: the boundary loss, for one, is negative on good predictions.
                segmentation = abs(w[self.reference] * losses[self.reference])
                if penalty > 0 and segmentation > 0:
                    w[self.index] = min(self.max_weight, self.fraction * segmentation / penalty)
            return new
        self.since_change += 1
        if dice < self.best_dice - self.tolerance:
            self.since_change = 0
            self.best_dice = max(self.best_dice, dice)
            return self._scale(weights, 1 / self.factor)
        self.best_dice = max(self.best_dice, dice)
        if self.since_change >= self.every:
            self.since_change = 0
            return self._scale(weights, self.factor)
        return [list(w) for w in weights]

    def state_dict(self) -> dict:
        return {
            "best_dice": self.best_dice,
            "since_change": self.since_change,
            "started": self.started,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best_dice = float(state["best_dice"])
        self.since_change = int(state["since_change"])
        self.started = bool(state["started"])


SCHEDULERS: dict[str, type[DummyScheduler]] = {
    "DummyScheduler": DummyScheduler,
    "StealWeight": StealWeight,
    "AddWeightLoss": AddWeightLoss,
    "LambdaController": LambdaController,
}


def get_scheduler(name: str, params: dict) -> DummyScheduler:
    """Build a weight scheduler by name.

    Raises:
        ValueError: unknown name (known ones listed) or bad parameters.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown --scheduler {name!r}; known: {', '.join(sorted(SCHEDULERS))}")
    try:
        return SCHEDULERS[name](**params)
    except TypeError as error:
        raise ValueError(f"--scheduler_params {params} do not fit {name}: {error}") from None
