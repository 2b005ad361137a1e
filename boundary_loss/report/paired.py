"""Paired comparison of two trainings on the same validation patients: did the change help?

Both trainings give, for each seed and each patient, the value of a metric (e.g. the 3D Dice) at
their best epoch: two `seeds x patients` arrays with the same patients in the same order (a 1-D
array is one seed). The method:

- the difference of a patient in a seed is run - baseline; a pair where either value is not
  finite (NaN, an undefined metric) is left out, the difference of a patient is the mean over the
  seeds where its pair is finite, and a patient with no finite pair is dropped;
- the effect is the mean over patients of these per-patient differences (with every pair finite,
  the plain mean of run - baseline over patients and seeds);
- its 95% confidence interval is a percentile bootstrap: each resample draws the patients with
  replacement and, when there are several seeds, independently the seeds with replacement (one
  draw of seeds per resample, shared by its patients); the statistic of a resample is the mean
  over the drawn patients of their mean difference over the drawn seeds (a drawn patient with no
  finite pair in the drawn seeds is left out, a resample with none at all is ignored); the bounds
  are the 2.5th and 97.5th percentiles (numpy's linear interpolation) of the statistics of
  `n_boot` resamples from `numpy.random.default_rng(seed)`;
- the test is the two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, default options:
  zero differences dropped, the exact distribution for small samples without ties or zeros, the
  normal approximation otherwise) on the per-patient differences; it is not run, and the p-value
  is None, with fewer than 2 patients or when every difference is 0;
- the run is called better (or worse) than the baseline only when the confidence interval
  excludes 0 and p < 0.05; better or worse follows the sign of the interval and whether a higher
  value of the metric is better. Anything else reads "no detectable difference".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

ALPHA = 0.05
PERCENTILES = (2.5, 97.5)


def method_text(unit: str = "patient") -> str:
    """The method in words, for the page (`unit`: what a patient is called, "case" in a
    cross-validation)."""
    return (
        f"Each training is compared with its baseline on the same validation {unit}s, at the best "
        f"epoch of each run. The difference of a {unit} is run minus baseline, averaged over the "
        f"seeds where both values are finite (a {unit} with no finite pair is dropped); the "
        f"effect is the mean of these differences over {unit}s. Its 95% confidence interval is a "
        "percentile bootstrap (2.5th and 97.5th percentiles of 10,000 resamples by default): each "
        f"resample draws the {unit}s with replacement and, with several seeds, the seeds with "
        "replacement independently, and takes the mean difference. The p-value is that of a "
        f"two-sided Wilcoxon signed-rank test on the per-{unit} differences (none with fewer than "
        f"2 {unit}s or when every difference is 0). A run is called better or worse than its "
        "baseline only when the interval excludes 0 and p < 0.05; otherwise there is no "
        "detectable difference."
    )


METHOD = method_text()


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of one training with its baseline on one metric.

    Attributes:
        run: the training compared.
        baseline: the baseline training.
        metric: the metric, e.g. "val_3d_dsc".
        higher_is_better: whether a higher value of the metric is better.
        n_patients: patients with at least one finite pair.
        n_seeds: seeds (rows of the inputs).
        mean_difference: mean over patients (and seeds) of run - baseline.
        ci_low: lower bound of the bootstrap 95% confidence interval of that mean.
        ci_high: upper bound of that interval.
        p_value: two-sided Wilcoxon signed-rank p-value on the per-patient differences, None
            with fewer than 2 patients or when every difference is 0.
        sentence: the result in one plain sentence.
    """

    run: str
    baseline: str
    metric: str
    higher_is_better: bool
    n_patients: int
    n_seeds: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float | None
    sentence: str

    @property
    def verdict(self) -> str:
        """The decision: "better", "worse" or "no detectable difference" (see `verdict`)."""
        return verdict(self.ci_low, self.ci_high, self.p_value, self.higher_is_better)


def as_seeds_by_patients(values: np.ndarray, name: str) -> np.ndarray:
    """The values as a float `seeds x patients` array.

    Args:
        values: 1-D (patients, one seed) or 2-D (seeds x patients) array-like.
        name: the argument's name, for the error message.

    Returns:
        A 2-D float64 array.

    Raises:
        ValueError: when `values` is neither 1-D nor 2-D, or has no patient or no seed.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D (patients) or 2-D (seeds x patients), got shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"{name} has no value, got shape {array.shape}")
    return array


def paired_differences(run_values: np.ndarray, baseline_values: np.ndarray) -> np.ndarray:
    """Differences run - baseline, NaN where either value is not finite.

    Args:
        run_values: 1-D or 2-D (seeds x patients) values of the training compared.
        baseline_values: the baseline's values, the same shape.

    Returns:
        A `seeds x patients` float64 array.

    Raises:
        ValueError: naming the argument, when a shape is not 1-D or 2-D or the shapes differ.
    """
    run = as_seeds_by_patients(run_values, "run_values")
    base = as_seeds_by_patients(baseline_values, "baseline_values")
    if run.shape != base.shape:
        raise ValueError(
            f"baseline_values has shape {base.shape} but run_values has shape {run.shape}: "
            "both must be seeds x patients, the same patients in the same order"
        )
    finite = np.isfinite(run) & np.isfinite(base)
    return np.where(finite, run - np.where(finite, base, 0.0), np.nan)


def per_patient(differences: np.ndarray) -> np.ndarray:
    """Mean difference of each patient over its finite seeds; patients with none are dropped.

    Args:
        differences: `seeds x patients` array, NaN for a missing pair.

    Returns:
        1-D array, one value per patient with at least one finite pair.
    """
    finite = np.isfinite(differences)
    counts = finite.sum(axis=0)
    sums = np.where(finite, differences, 0.0).sum(axis=0)
    keep = counts > 0
    return sums[keep] / counts[keep]


def bootstrap_means(differences: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap statistics of the mean difference, patients and seeds resampled independently.

    The generator draws, in this order, `integers(0, P, size=(n_boot, P))` (the patients of each
    resample) and, when S > 1, `integers(0, S, size=(n_boot, S))` (its seeds).

    Args:
        differences: `S x P` array, NaN for a missing pair, every patient with a finite pair.
        n_boot: number of resamples.
        seed: seed of `numpy.random.default_rng`.

    Returns:
        The statistic of each resample, resamples with no finite pair left out.
    """
    n_seeds, n_patients = differences.shape
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n_patients, size=(n_boot, n_patients))
    if n_seeds > 1:
        seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        offsets = n_seeds * np.arange(n_boot)[:, None]
        weights = np.bincount((seeds + offsets).ravel(), minlength=n_boot * n_seeds)
        weights = weights.reshape(n_boot, n_seeds).astype(np.float64)
    else:
        weights = np.ones((n_boot, 1))
    finite = np.isfinite(differences)
    sums = weights @ np.where(finite, differences, 0.0)  # n_boot x P, over the drawn seeds
    counts = weights @ finite.astype(np.float64)
    drawn_sums = np.take_along_axis(sums, patients, axis=1)
    drawn_counts = np.take_along_axis(counts, patients, axis=1)
    valid = drawn_counts > 0
    means = np.where(valid, drawn_sums / np.where(valid, drawn_counts, 1.0), 0.0)
    n_valid = valid.sum(axis=1)
    ok = n_valid > 0
    return means[ok].sum(axis=1) / n_valid[ok]


def bootstrap_ci(differences: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95% confidence interval of the mean difference.

    Args:
        differences: `S x P` array, NaN for a missing pair, every patient with a finite pair.
        n_boot: number of resamples.
        seed: seed of `numpy.random.default_rng`.

    Returns:
        (2.5th, 97.5th) percentiles of the bootstrap statistics, NaN when none is defined.
    """
    stats = bootstrap_means(differences, n_boot, seed)
    if stats.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(stats, PERCENTILES)
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of per-patient differences.

    Args:
        differences: 1-D per-patient differences.

    Returns:
        The p-value, None with fewer than 2 differences or when every difference is 0.
    """
    if differences.size < 2 or not np.any(differences != 0):
        return None
    try:
        return float(wilcoxon(differences, alternative="two-sided").pvalue)
    except ValueError:
        return None


def verdict(ci_low: float, ci_high: float, p_value: float | None, higher_is_better: bool) -> str:
    """The decision: better or worse only when the CI excludes 0 and p < 0.05.

    Args:
        ci_low: lower bound of the confidence interval of run - baseline.
        ci_high: upper bound.
        p_value: Wilcoxon p-value, None when not tested.
        higher_is_better: whether a higher value of the metric is better.

    Returns:
        "better", "worse" or "no detectable difference".
    """
    if p_value is None or not p_value < ALPHA:
        return "no detectable difference"
    if ci_low > 0:
        return "better" if higher_is_better else "worse"
    if ci_high < 0:
        return "worse" if higher_is_better else "better"
    return "no detectable difference"


def signed(value: float) -> str:
    """A number with 3 significant digits and its sign, never in scientific notation.

    Args:
        value: the number.

    Returns:
        e.g. "+0.031", "-1.9", "+12300", "+0".
    """
    if not math.isfinite(value):
        return str(value)
    return np.format_float_positional(
        value + 0.0, precision=3, unique=False, fractional=False, trim="-", sign=True
    )


def p_text(p_value: float | None, n_patients: int) -> str:
    """The Wilcoxon part of the sentence.

    Args:
        p_value: the p-value, None when not tested.
        n_patients: patients compared.

    Returns:
        e.g. "Wilcoxon p = 0.008", "Wilcoxon p < 0.001", "no Wilcoxon test (every difference is 0)".
    """
    if p_value is None:
        why = "fewer than 2 patients" if n_patients < 2 else "every difference is 0"
        return f"no Wilcoxon test ({why})"
    if p_value < 0.001:
        return "Wilcoxon p < 0.001"
    text = np.format_float_positional(
        p_value, precision=3, unique=False, fractional=False, trim="-"
    )
    return f"Wilcoxon p = {text}"


def sample_text(n_patients: int, n_seeds: int, unit: str = "patient") -> str:
    """The sample in words: "20 patients", or "20 patients and 3 seeds" with several seeds.

    Args:
        n_patients: patients compared.
        n_seeds: seeds.
        unit: what a patient is called ("case" in a cross-validation).

    Returns:
        The phrase.
    """
    text = f"{n_patients} {unit}{'s' if n_patients != 1 else ''}"
    return f"{text} and {n_seeds} seeds" if n_seeds > 1 else text


def sentence(
    run: str,
    baseline: str,
    metric: str,
    decision: str,
    mean_difference: float,
    ci: tuple[float, float],
    p_value: float | None,
    n_patients: int,
    n_seeds: int,
) -> str:
    """The result in one plain sentence.

    Args:
        run: the training compared.
        baseline: the baseline training.
        metric: the metric.
        decision: "better", "worse" or "no detectable difference".
        mean_difference: mean of run - baseline.
        ci: (low, high) bounds of its 95% confidence interval.
        p_value: Wilcoxon p-value, None when not tested.
        n_patients: patients compared.
        n_seeds: seeds.

    Returns:
        e.g. "gdl_surface_steal is better than gdl on val_3d_dsc: +0.031 on average over 20
        patients (95% CI +0.012 to +0.05), Wilcoxon p = 0.008."
    """
    sample = sample_text(n_patients, n_seeds)
    interval = f"(95% CI {signed(ci[0])} to {signed(ci[1])})"
    test = p_text(p_value, n_patients)
    mean = signed(mean_difference)
    if decision in ("better", "worse"):
        return (
            f"{run} is {decision} than {baseline} on {metric}: "
            f"{mean} on average over {sample} {interval}, {test}."
        )
    return (
        f"No detectable difference between {run} and {baseline} on {metric} with {sample}: "
        f"{mean} on average {interval}, {test}."
    )


DECISIONS = ("better", "worse", "no detectable difference")  # the order of a grouped sentence


def _join(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def grouped_sentence(
    results: Sequence[Comparison], names: Mapping[str, str] | None = None, unit: str = "patient"
) -> str:
    """The comparisons of one training with its baseline on several metrics, in one sentence.

    The metrics are grouped by decision (better, then worse, then no detectable difference), each
    with its mean difference, confidence interval and test; the sample is said once when every
    metric has the same one, else with each metric.

    Args:
        results: comparisons of the same run and baseline (one per metric), in the order shown.
        names: the metrics' names in the sentence (e.g. {"val_3d_dsc": "3D Dice"}); a metric not
            in it is named as it is.
        unit: what a patient is called ("case" in a cross-validation).

    Returns:
        e.g. "gdl_surface_steal against gdl, over 20 patients: better on 3D Dice (+0.031, 95% CI
        +0.012 to +0.05, Wilcoxon p = 0.008); no detectable difference on HD (-0.41, 95% CI -1.2
        to +0.33, Wilcoxon p = 0.27) and HD95 (...)."

    Raises:
        ValueError: no comparison, or comparisons of different runs or baselines.
    """
    if not results:
        raise ValueError("no comparison to put in a sentence")
    run, baseline = results[0].run, results[0].baseline
    if any((r.run, r.baseline) != (run, baseline) for r in results):
        raise ValueError(f"comparisons of other runs than {run} against {baseline} in one sentence")
    names = names or {}
    samples = {(r.n_patients, r.n_seeds) for r in results}
    shared = len(samples) == 1
    head = f"{run} against {baseline}"
    if shared:
        head += f", over {sample_text(results[0].n_patients, results[0].n_seeds, unit)}"

    def detail(r: Comparison) -> str:
        text = (
            f"{names.get(r.metric, r.metric)} ({signed(r.mean_difference)}, 95% CI "
            f"{signed(r.ci_low)} to {signed(r.ci_high)}, {p_text(r.p_value, r.n_patients)}"
        )
        return text + (")" if shared else f", {sample_text(r.n_patients, r.n_seeds, unit)})")

    parts = [
        f"{decision} on {_join([detail(r) for r in results if r.verdict == decision])}"
        for decision in DECISIONS
        if any(r.verdict == decision for r in results)
    ]
    return f"{head}: {'; '.join(parts)}."


def compare(
    run_values: np.ndarray,
    baseline_values: np.ndarray,
    *,
    run: str,
    baseline: str,
    metric: str,
    higher_is_better: bool,
    n_boot: int = 10000,
    seed: int = 0,
) -> Comparison:
    """Paired comparison of a training with its baseline on the same patients.

    Args:
        run_values: `seeds x patients` values of the metric of the training compared, at the best
            epoch of each seed (1-D: one seed).
        baseline_values: the baseline's values, the same patients in the same order.
        run: name of the training compared.
        baseline: name of the baseline.
        metric: name of the metric.
        higher_is_better: whether a higher value of the metric is better.
        n_boot: number of bootstrap resamples.
        seed: seed of the bootstrap's `numpy.random.default_rng`.

    Returns:
        The Comparison.

    Raises:
        ValueError: naming the argument, on a shape that is not 1-D or 2-D, on different shapes,
            on n_boot < 1, or when no patient has a finite pair.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    differences = paired_differences(run_values, baseline_values)
    differences = differences[:, np.isfinite(differences).any(axis=0)]
    n_seeds, n_patients = differences.shape
    if n_patients == 0:
        raise ValueError("no patient has a finite pair in run_values and baseline_values")
    patients = per_patient(differences)
    mean_difference = float(patients.mean())
    ci = bootstrap_ci(differences, n_boot, seed)
    p_value = wilcoxon_p(patients)
    decision = verdict(ci[0], ci[1], p_value, higher_is_better)
    return Comparison(
        run=run,
        baseline=baseline,
        metric=metric,
        higher_is_better=higher_is_better,
        n_patients=n_patients,
        n_seeds=n_seeds,
        mean_difference=mean_difference,
        ci_low=ci[0],
        ci_high=ci[1],
        p_value=p_value,
        sentence=sentence(
            run, baseline, metric, decision, mean_difference, ci, p_value, n_patients, n_seeds
        ),
    )
