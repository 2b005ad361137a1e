"""Ranking epochs of a per-epoch metric array, shared by report.py and plot.py.

The score of an epoch is the NaN-aware mean over samples of the per-sample value, itself the
NaN-aware mean over the chosen columns; the best epoch is that of the highest score for Dice and
the lowest for everything else (`runfolder.schema.better`), the first one on ties. NaN values (a
metric undefined for an empty class) are left out of every mean and standard deviation (ddof=0).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from boundary_loss.runfolder.schema import Mode


def nan_mean_std(values: np.ndarray, axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware mean and standard deviation (ddof=0) along `axis`.

    Args:
        values: array of any shape.
        axis: the axis or axes reduced.

    Returns:
        (mean, std), NaN where every value is NaN, without a warning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN on purpose
        return np.nanmean(values, axis=axis), np.nanstd(values, axis=axis)


def per_sample(data: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """Per-sample value: the NaN-aware mean over the chosen columns.

    Args:
        data: E x N x K array.
        columns: chosen column indices.

    Returns:
        E x N array.
    """
    mean, _ = nan_mean_std(data[:, :, list(columns)], axis=2)
    return mean


def epoch_scores(data: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """Score of each epoch: the NaN-aware mean over samples of the per-sample value.

    Args:
        data: E x N x K array.
        columns: chosen column indices.

    Returns:
        E vector (NaN for an epoch with no finite value).
    """
    mean, _ = nan_mean_std(per_sample(data, columns), axis=1)
    return mean


def best_index(scores: np.ndarray, mode: Mode) -> int | None:
    """Index of the best score (the first one on ties), NaN ignored.

    Args:
        scores: E vector.
        mode: "max" or "min".

    Returns:
        The 0-based index, None when every score is NaN.
    """
    if np.all(np.isnan(scores)):
        return None
    return int(np.nanargmax(scores) if mode == "max" else np.nanargmin(scores))


def running_best(scores: np.ndarray, mode: Mode) -> np.ndarray:
    """Index, for each epoch, of the best epoch so far (NaN ignored; -1 before the first value).

    Args:
        scores: E vector.
        mode: "max" or "min".

    Returns:
        E vector of int.
    """
    index = np.full(scores.shape, -1, dtype=np.int64)
    best = -1
    for e, value in enumerate(scores):
        if not np.isnan(value) and (
            best < 0 or (value > scores[best] if mode == "max" else value < scores[best])
        ):
            best = e
        index[e] = best
    return index
