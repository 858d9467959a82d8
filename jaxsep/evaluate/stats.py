"""Significance and uncertainty of paired per-example scores (e.g. SI-SDR of two models).

Thin, validated wrappers over `scipy.stats` that return plain dicts, ready for a JSON report.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from jaxsep.errors import JaxsepError

ALTERNATIVES = ("greater", "less", "two-sided")
ZERO_METHODS = ("wilcox", "pratt", "zsplit")
STATISTICS = {"median": np.median, "mean": np.mean}


def _scores(values, name: str) -> np.ndarray:
    """A finite 1-D float64 array or a one-line error (NaN scores must be dealt with upstream)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise JaxsepError(f"{name}: expected a non-empty 1-D array of scores, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise JaxsepError(f"{name}: scores contain NaN or inf ({np.sum(~np.isfinite(array))})")
    return array


def wilcoxon_one_sided(
    a,
    b,
    alternative: str = "greater",
    *,
    zero_method: str = "wilcox",
) -> dict[str, float | int]:
    """Wilcoxon signed-rank test that model `a` scores `alternative` than model `b`, paired.

    `zero_method="wilcox"` (scipy's default, as used by the ChimeraNet paper's evaluation) drops
    pairs with identical scores before ranking; `n` is the number of pairs that were ranked. If
    every pair is tied there is no evidence either way: p = 1 and effect size 0 (returned without
    calling scipy, which would warn and divide by zero).

    `effect_size` is the matched-pairs rank-biserial correlation (W+ - W-) / (W+ + W-) over the
    ranked pairs, in [-1, 1]: +1 when `a` beats `b` on every pair, -1 when it loses on every one.
    `median_difference` is the median of `a - b` over all pairs.
    """
    if alternative not in ALTERNATIVES:
        raise JaxsepError(
            f"wilcoxon: alternative must be one of {ALTERNATIVES}, got {alternative!r}"
        )
    if zero_method not in ZERO_METHODS:
        raise JaxsepError(
            f"wilcoxon: zero_method must be one of {ZERO_METHODS}, got {zero_method!r}"
        )
    first, second = _scores(a, "wilcoxon a"), _scores(b, "wilcoxon b")
    if first.shape != second.shape:
        raise JaxsepError(
            f"wilcoxon: paired scores need equal lengths, got {first.size} and {second.size}"
        )
    difference = first - second
    median_difference = float(np.median(difference))
    ranked = difference[difference != 0] if zero_method == "wilcox" else difference
    if not np.any(difference != 0):
        return {
            "statistic": 0.0,
            "p_value": 1.0,
            "n": int(ranked.size),
            "effect_size": 0.0,
            "median_difference": median_difference,
        }
    result = scipy.stats.wilcoxon(first, second, zero_method=zero_method, alternative=alternative)
    ranks = scipy.stats.rankdata(np.abs(ranked))
    positive, negative = ranks[ranked > 0].sum(), ranks[ranked < 0].sum()
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "n": int(ranked.size),
        "effect_size": float((positive - negative) / ranks.sum()),
        "median_difference": median_difference,
    }


def bootstrap_ci(
    values,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    statistic: str = "median",
    n_resamples: int = 9999,
    method: str = "percentile",
) -> dict[str, float]:
    """Bootstrap confidence interval of the median (or mean) of per-example scores.

    Defaults to the percentile method: BCa's jackknife acceleration is unstable for the median
    of scores with ties. Seeded, so a report is reproducible. Returns `{"estimate", "low",
    "high", "confidence"}`; a constant sample gives a zero-width interval.
    """
    if statistic not in STATISTICS:
        raise JaxsepError(f"bootstrap_ci: statistic must be one of {tuple(STATISTICS)}")
    if not 0.0 < confidence < 1.0:
        raise JaxsepError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    sample = _scores(values, "bootstrap_ci")
    function = STATISTICS[statistic]
    estimate = float(function(sample))
    if np.all(sample == sample[0]):  # scipy returns NaN bounds (and warns) for degenerate data
        return {"estimate": estimate, "low": estimate, "high": estimate, "confidence": confidence}
    result = scipy.stats.bootstrap(
        (sample,),
        lambda x, axis: function(x, axis=axis),
        confidence_level=confidence,
        n_resamples=n_resamples,
        method=method,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return {
        "estimate": estimate,
        "low": float(interval.low),
        "high": float(interval.high),
        "confidence": confidence,
    }
