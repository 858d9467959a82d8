"""Paired Wilcoxon test and bootstrap intervals over per-example scores."""

import numpy as np
import pytest
import scipy.stats

from jaxsep.errors import JaxsepError
from jaxsep.evaluate.stats import bootstrap_ci, wilcoxon_one_sided


@pytest.fixture(scope="module")
def paired_scores():
    """SI-SDR-like scores of a baseline and of a model about 1 dB better on each example."""
    rng = np.random.default_rng(0)
    baseline = rng.normal(8.0, 3.0, size=200)
    better = baseline + rng.normal(1.0, 0.8, size=200)
    return baseline, better


def test_wilcoxon_equals_scipy(paired_scores):
    baseline, better = paired_scores
    noisy = baseline + np.random.default_rng(1).normal(0.1, 1.0, size=baseline.size)
    for alternative in ("greater", "less", "two-sided"):
        ours = wilcoxon_one_sided(noisy, baseline, alternative)
        theirs = scipy.stats.wilcoxon(noisy, baseline, alternative=alternative)
        assert ours["p_value"] == theirs.pvalue
        assert ours["statistic"] == theirs.statistic
        assert ours["n"] == baseline.size


def test_wilcoxon_clearly_better_model_is_significant(paired_scores):
    baseline, better = paired_scores
    result = wilcoxon_one_sided(better, baseline)
    assert result["p_value"] < 0.01
    assert 0.5 < result["effect_size"] <= 1.0
    assert result["median_difference"] == pytest.approx(1.0, abs=0.2)
    reverse = wilcoxon_one_sided(baseline, better)
    assert reverse["p_value"] > 0.99
    assert reverse["effect_size"] == pytest.approx(-result["effect_size"])


def test_wilcoxon_identical_models_show_no_significance(paired_scores):
    baseline, _ = paired_scores
    same = wilcoxon_one_sided(baseline, baseline.copy())
    assert same == {
        "statistic": 0.0,
        "p_value": 1.0,
        "n": 0,
        "effect_size": 0.0,
        "median_difference": 0.0,
    }
    rng = np.random.default_rng(2)
    other_run = baseline + rng.normal(0.0, 0.5, size=baseline.size)  # same model, new noise
    assert wilcoxon_one_sided(other_run, baseline)["p_value"] > 0.05


def test_wilcoxon_effect_size_is_rank_biserial_and_drops_ties():
    # differences 1, -2, 3, 0: the tie is dropped (zero_method="wilcox"), ranks 1, 2, 3
    a = np.array([2.0, 0.0, 5.0, 4.0])
    b = np.array([1.0, 2.0, 2.0, 4.0])
    result = wilcoxon_one_sided(a, b)
    assert result["n"] == 3
    assert result["effect_size"] == pytest.approx((4 - 2) / 6)
    assert result["statistic"] == 4.0
    assert result["median_difference"] == pytest.approx(0.5)
    assert wilcoxon_one_sided(a + 10, b)["effect_size"] == 1.0
    assert wilcoxon_one_sided(a - 10, b)["effect_size"] == -1.0
    pratt = wilcoxon_one_sided(a, b, zero_method="pratt")
    assert pratt["n"] == 4
    assert pratt["p_value"] == scipy.stats.wilcoxon(a, b, "pratt", alternative="greater").pvalue


def test_wilcoxon_rejects_bad_input_in_one_line():
    with pytest.raises(JaxsepError, match="equal lengths, got 3 and 2"):
        wilcoxon_one_sided([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(JaxsepError, match="NaN or inf"):
        wilcoxon_one_sided([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(JaxsepError, match="alternative must be one of"):
        wilcoxon_one_sided([1.0], [2.0], "bigger")


def test_bootstrap_ci_of_mean_matches_normal_theory():
    values = np.random.default_rng(3).normal(5.0, 2.0, size=400)
    result = bootstrap_ci(values, confidence=0.95, seed=0, statistic="mean", n_resamples=3000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert result["estimate"] == pytest.approx(values.mean())
    assert result["low"] < result["estimate"] < result["high"]
    assert (result["high"] - result["low"]) / 2 == pytest.approx(half_width, rel=0.1)


def test_bootstrap_ci_of_median_is_seeded_and_narrows_with_confidence():
    values = np.random.default_rng(4).normal(0.0, 1.0, size=150)
    wide = bootstrap_ci(values, confidence=0.99, seed=7, n_resamples=2000)
    assert wide == bootstrap_ci(values, confidence=0.99, seed=7, n_resamples=2000)
    narrow = bootstrap_ci(values, confidence=0.5, seed=7, n_resamples=2000)
    assert wide["estimate"] == np.median(values)
    assert wide["low"] < narrow["low"] <= np.median(values) <= narrow["high"] < wide["high"]


def test_bootstrap_ci_constant_sample_and_bad_input():
    assert bootstrap_ci(np.full(10, 3.0)) == {
        "estimate": 3.0,
        "low": 3.0,
        "high": 3.0,
        "confidence": 0.95,
    }
    with pytest.raises(JaxsepError, match="confidence must be in"):
        bootstrap_ci([1.0, 2.0], confidence=95)
    with pytest.raises(JaxsepError, match="statistic must be one of"):
        bootstrap_ci([1.0, 2.0], statistic="mode")
