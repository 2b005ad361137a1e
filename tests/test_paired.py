"""Tests for paired.py: paired comparison of a training with its baseline.

Expected values come from a plain-loop bootstrap written here (the same generator calls, in the
same order, as the vectorised one), from exact Wilcoxon p-values worked by hand, from
scipy.stats.wilcoxon and from per-patient means computed cell by cell.
"""

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from boundary_loss.report.paired import (
    METHOD,
    Comparison,
    compare,
    grouped_sentence,
    p_text,
    signed,
)


def loop_bootstrap(differences: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI by plain loops: patients and (with S > 1) seeds resampled."""
    n_seeds, n_patients = differences.shape
    rng = np.random.default_rng(seed)
    patient_draws = rng.integers(0, n_patients, size=(n_boot, n_patients))
    if n_seeds > 1:
        seed_draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    else:
        seed_draws = np.zeros((n_boot, 1), dtype=np.int64)
    stats = []
    for b in range(n_boot):
        patient_means = []
        for p in patient_draws[b]:
            cell = [differences[s, p] for s in seed_draws[b] if math.isfinite(differences[s, p])]
            if cell:
                patient_means.append(sum(cell) / len(cell))
        if patient_means:
            stats.append(sum(patient_means) / len(patient_means))
    stats.sort()

    def percentile(q: float) -> float:
        h = (len(stats) - 1) * q / 100
        lo = math.floor(h)
        hi = min(lo + 1, len(stats) - 1)
        return stats[lo] + (h - lo) * (stats[hi] - stats[lo])

    return percentile(2.5), percentile(97.5)


def run_compare(run_values, baseline_values, higher_is_better=True, **kwargs) -> Comparison:
    return compare(
        run_values,
        baseline_values,
        run="gdl_surface_steal",
        baseline="gdl",
        metric="val_3d_dsc" if higher_is_better else "val_3d_hd95",
        higher_is_better=higher_is_better,
        **kwargs,
    )


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_equals_loop_one_seed():
    rng = np.random.default_rng(3)
    baseline = rng.uniform(0.6, 0.9, 15)
    run = baseline + rng.normal(0.02, 0.03, 15)
    result = run_compare(run, baseline, n_boot=3000, seed=11)
    low, high = loop_bootstrap((run - baseline)[None, :], 3000, 11)
    assert result.ci_low == pytest.approx(low, rel=1e-12, abs=1e-12)
    assert result.ci_high == pytest.approx(high, rel=1e-12, abs=1e-12)
    assert result.ci_low < result.mean_difference < result.ci_high


def test_bootstrap_ci_equals_loop_seeds_and_nan():
    rng = np.random.default_rng(4)
    baseline = rng.uniform(0.6, 0.9, (3, 12))
    run = baseline + rng.normal(0.01, 0.04, (3, 12))
    run[0, 2] = np.nan  # patient 2 has finite pairs in seeds 1 and 2 only
    baseline[1, 5] = np.nan
    baseline[2, 5] = np.nan  # patient 5: seed 0 only
    result = run_compare(run, baseline, n_boot=2000, seed=5)
    differences = run - baseline
    low, high = loop_bootstrap(differences, 2000, 5)
    assert result.ci_low == pytest.approx(low, rel=1e-12, abs=1e-12)
    assert result.ci_high == pytest.approx(high, rel=1e-12, abs=1e-12)


def test_bootstrap_is_deterministic_and_seeded():
    rng = np.random.default_rng(6)
    baseline = rng.uniform(0, 1, (2, 20))
    run = baseline + rng.normal(0, 0.1, (2, 20))
    a = run_compare(run, baseline, n_boot=500, seed=1)
    b = run_compare(run, baseline, n_boot=500, seed=1)
    c = run_compare(run, baseline, n_boot=500, seed=2)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


# ----------------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_exact_all_positive():
    # Ranks 1..5 all positive: of the 2^5 sign patterns only this one has W- = 0 (and only its
    # mirror W+ = 0), so the exact two-sided p is 2/32.
    result = run_compare(np.arange(1.0, 6.0), np.zeros(5))
    assert result.p_value == pytest.approx(2 / 32, abs=1e-12)


def test_wilcoxon_exact_one_negative():
    # Differences [1, -2, 3, 4, 5]: W- = 2. Subsets of {1..5} with rank sum <= 2: {}, {1}, {2},
    # so the one-sided p is 3/32 and the two-sided p 6/32.
    result = run_compare(np.array([1.0, -2.0, 3.0, 4.0, 5.0]), np.zeros(5))
    assert result.p_value == pytest.approx(6 / 32, abs=1e-12)


def test_wilcoxon_matches_scipy_on_seed_means():
    rng = np.random.default_rng(8)
    baseline = rng.uniform(0.6, 0.9, (3, 40))
    run = baseline + rng.normal(0.005, 0.03, (3, 40))
    run[1, 7] = np.nan
    result = run_compare(run, baseline, n_boot=200)
    means = []
    for p in range(40):
        cell = [run[s, p] - baseline[s, p] for s in range(3) if math.isfinite(run[s, p])]
        means.append(sum(cell) / len(cell))
    assert result.p_value == pytest.approx(wilcoxon(means).pvalue, rel=1e-12)
    assert result.mean_difference == pytest.approx(sum(means) / 40, rel=1e-12)


def test_no_p_value_when_all_differences_zero():
    values = np.linspace(0.5, 0.9, 6)
    result = run_compare(values, values.copy(), n_boot=100)
    assert result.p_value is None
    assert result.mean_difference == 0
    assert "no Wilcoxon test (every difference is 0)" in result.sentence
    assert result.sentence.startswith("No detectable difference")


def test_no_p_value_with_one_patient():
    result = run_compare([0.9], [0.5], n_boot=100)
    assert result.n_patients == 1
    assert result.p_value is None
    assert result.ci_low == pytest.approx(0.4) and result.ci_high == pytest.approx(0.4)
    assert "with 1 patient:" in result.sentence
    assert "fewer than 2 patients" in result.sentence


# ----------------------------------------------------------------------------- decision


@pytest.mark.parametrize(
    ("higher_is_better", "shift", "expected"),
    [
        (True, 0.05, "better"),
        (True, -0.05, "worse"),
        (False, -2.0, "better"),
        (False, 2.0, "worse"),
    ],
)
def test_clear_effect_decision(higher_is_better, shift, expected):
    rng = np.random.default_rng(9)
    baseline = rng.uniform(0.6, 0.9, 20) if higher_is_better else rng.uniform(3, 10, 20)
    run = baseline + shift + rng.normal(0, abs(shift) / 5, 20)
    result = run_compare(run, baseline, higher_is_better=higher_is_better, n_boot=2000)
    assert result.p_value is not None and result.p_value < 0.05
    assert result.ci_low > 0 or result.ci_high < 0
    metric = "val_3d_dsc" if higher_is_better else "val_3d_hd95"
    assert result.sentence.startswith(f"gdl_surface_steal is {expected} than gdl on {metric}: ")
    assert "on average over 20 patients (95% CI " in result.sentence
    assert f"{signed(result.mean_difference)} on average" in result.sentence
    assert result.sentence.endswith(".")
    assert result.verdict == expected


def test_four_patients_no_detectable_difference():
    # With 4 patients the smallest exact two-sided Wilcoxon p is 2/16 = 0.125.
    baseline = np.array([5.0, 7.0, 4.0, 9.0])
    run = baseline - np.array([0.5, 1.0, 1.5, 2.0])
    result = run_compare(run, baseline, higher_is_better=False, n_boot=1000)
    assert result.p_value == pytest.approx(0.125, abs=1e-12)
    assert result.ci_high < 0  # the CI alone excludes 0, the test does not agree
    assert result.sentence == (
        "No detectable difference between gdl_surface_steal and gdl on val_3d_hd95 with "
        f"4 patients: -1.25 on average (95% CI {signed(result.ci_low)} to "
        f"{signed(result.ci_high)}), Wilcoxon p = 0.125."
    )
    assert result.verdict == "no detectable difference"


def test_small_p_but_ci_contains_zero_is_no_difference():
    # Every per-patient difference positive but one huge negative outlier: the signed-rank test
    # sees 19 of 20 positive, the mean (hence the CI) is pulled below 0.
    differences = np.full(20, 0.01)
    differences[0] = -5.0
    result = run_compare(differences, np.zeros(20), n_boot=2000)
    assert result.p_value is not None and result.p_value < 0.05
    assert result.ci_low < 0
    assert result.sentence.startswith("No detectable difference")


def test_signed_format():
    assert [signed(x) for x in (0.031, 0.012, -0.4, -1.9, 1.2)] == [
        "+0.031",
        "+0.012",
        "-0.4",
        "-1.9",
        "+1.2",
    ]
    assert signed(0.0303371) == "+0.0303"
    assert signed(12345.6) == "+12300"
    assert signed(-0.0) == "+0"


def test_small_p_value_text():
    rng = np.random.default_rng(10)
    baseline = rng.uniform(0.6, 0.9, 60)
    run = baseline + 0.05 + rng.normal(0, 0.005, 60)
    result = run_compare(run, baseline, n_boot=500)
    assert result.p_value < 0.001
    assert result.sentence.endswith("Wilcoxon p < 0.001.")


# ----------------------------------------------------------------------------- NaN and shapes


def test_nan_pairs_left_out_per_patient():
    baseline = np.array([[0.5, 0.6, 0.7, 0.8], [0.5, 0.6, 0.7, 0.8]])
    run = np.array([[0.6, np.nan, 0.9, np.nan], [0.8, 0.7, 0.7, np.nan]])
    baseline[1, 2] = np.nan
    result = run_compare(run, baseline, n_boot=200)
    # patient 0: (0.1 + 0.3) / 2; patient 1: seed 1 only, 0.1; patient 2: seed 0 only, 0.2;
    # patient 3: no finite pair, dropped.
    assert result.n_patients == 3
    assert result.n_seeds == 2
    assert result.mean_difference == pytest.approx((0.2 + 0.1 + 0.2) / 3, rel=1e-12)


def test_no_finite_pair_raises():
    with pytest.raises(ValueError, match="no patient"):
        run_compare([np.nan, 0.5], [0.5, np.nan])


@pytest.mark.parametrize(
    ("run_values", "baseline_values", "name"),
    [
        (np.zeros((3, 10)), np.zeros((3, 9)), "baseline_values"),
        (np.zeros((3, 10)), np.zeros((2, 10)), "baseline_values"),
        (np.zeros((2, 3, 10)), np.zeros((2, 3, 10)), "run_values"),
        (np.zeros(10), np.zeros((1, 2, 10)), "baseline_values"),
        (np.zeros(0), np.zeros(0), "run_values"),
    ],
)
def test_shape_errors_name_the_argument(run_values, baseline_values, name):
    with pytest.raises(ValueError, match=name):
        run_compare(run_values, baseline_values)


def test_n_boot_must_be_positive():
    with pytest.raises(ValueError, match="n_boot"):
        run_compare(np.ones(5), np.zeros(5), n_boot=0)


# ----------------------------------------------------------------------------- seeds


def test_three_seeds():
    rng = np.random.default_rng(12)
    baseline = rng.uniform(0.6, 0.9, (3, 10))
    run = baseline + rng.normal(0.04, 0.01, (3, 10))
    result = run_compare(run, baseline, n_boot=2000)
    assert result.n_seeds == 3
    assert result.n_patients == 10
    assert result.mean_difference == pytest.approx(float(np.mean(run - baseline)), rel=1e-12)
    assert "over 10 patients and 3 seeds (95% CI" in result.sentence


def test_one_seed_row_equals_1d():
    rng = np.random.default_rng(13)
    baseline = rng.uniform(0.6, 0.9, 10)
    run = baseline + rng.normal(0.0, 0.02, 10)
    a = run_compare(run, baseline, n_boot=500)
    b = run_compare(run[None, :], baseline[None, :], n_boot=500)
    assert a == b
    assert a.n_seeds == 1
    assert "seed" not in a.sentence


def test_method_paragraph():
    assert "\n" not in METHOD
    for phrase in ("with replacement", "2.5th and 97.5th", "two-sided Wilcoxon", "p < 0.05"):
        assert phrase in METHOD


def test_grouped_sentence_says_each_training_once_grouped_by_decision() -> None:
    """One sentence per training: the metrics grouped by decision, the sample said once."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 0.7, size=20)
    dice = compare(
        base + 0.05, base, run="surface", baseline="gdl", metric="val_3d_dsc", higher_is_better=True
    )
    hd = compare(
        base + 2.0,
        base,
        run="surface",
        baseline="gdl",
        metric="val_3d_hausdorff",
        higher_is_better=False,
    )
    hd95 = compare(
        base + rng.normal(0, 1, 20),
        base,
        run="surface",
        baseline="gdl",
        metric="val_3d_hd95",
        higher_is_better=False,
    )
    assert (dice.verdict, hd.verdict, hd95.verdict) == (
        "better",
        "worse",
        "no detectable difference",
    )
    text = grouped_sentence([hd95, hd, dice], {"val_3d_dsc": "3D Dice", "val_3d_hd95": "HD95"})
    assert text == (
        f"surface against gdl, over 20 patients: better on 3D Dice ({signed(dice.mean_difference)}"
        f", 95% CI {signed(dice.ci_low)} to {signed(dice.ci_high)}, Wilcoxon p < 0.001); worse "
        f"on val_3d_hausdorff ({signed(hd.mean_difference)}, 95% CI {signed(hd.ci_low)} to "
        f"{signed(hd.ci_high)}, Wilcoxon p < 0.001); no detectable difference on HD95 "
        f"({signed(hd95.mean_difference)}, 95% CI {signed(hd95.ci_low)} to "
        f"{signed(hd95.ci_high)}, {p_text(hd95.p_value, 20)})."
    )
    assert text.count("surface") == 1 and text.count("patients") == 1


def test_grouped_sentence_names_each_sample_when_they_differ() -> None:
    """Metrics compared on different patients (a NaN left out) carry their own sample."""
    a = compare(
        [0.6, 0.7, 0.8], [0.5, 0.6, 0.7], run="r", baseline="b", metric="m1", higher_is_better=True
    )
    b = compare(
        [0.6, np.nan, 0.8],
        [0.5, 0.6, 0.6],
        run="r",
        baseline="b",
        metric="m2",
        higher_is_better=True,
    )
    text = grouped_sentence([a, b])
    assert text.startswith("r against b: no detectable difference on m1 (")
    assert ", 3 patients) and m2 (" in text and text.endswith(", 2 patients).")
    with pytest.raises(ValueError, match="other runs"):
        grouped_sentence(
            [a, compare([1, 2], [0, 1], run="x", baseline="b", metric="m", higher_is_better=True)]
        )
    with pytest.raises(ValueError, match="no comparison"):
        grouped_sentence([])
