"""Schedulers of the loss weights, called after each epoch, and the learning-rate halving rules.

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


class DummyScheduler:
    """Keeps the weights as they are."""

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


SCHEDULERS: dict[str, type[DummyScheduler]] = {
    "DummyScheduler": DummyScheduler,
    "StealWeight": StealWeight,
    "AddWeightLoss": AddWeightLoss,
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


# ---------------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------------


class PlateauHalving:
    """Halve the learning rate after `patience` epochs without a new best validation metric.

    The count restarts after each halving, so the rate halves at most once per `patience` epochs.
    """

    def __init__(self, patience: int = 20) -> None:
        self.patience = patience
        self.since_best = 0

    def step(self, improved: bool) -> bool:
        """Record an epoch; True when the learning rate must be halved now."""
        self.since_best = 0 if improved else self.since_best + 1
        if self.since_best >= self.patience:
            self.since_best = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.since_best = int(state["since_best"])


def original_halving(epoch: int, best_epoch: int, patience: int = 20) -> bool:
    """The original's rule, kept for exact reproduction: halve whenever
    `epoch % (best_epoch + patience) == 0`, which also halves right after epoch 0."""
    return epoch % (best_epoch + patience) == 0
