"""The learning-rate halving rules: `PlateauHalving` (ours, with a restarting count) and
`original_halving` (the original boundary-loss `main.py`'s rule)."""

from __future__ import annotations


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
