"""Paired two-sided Wilcoxon signed-rank test over subjects (the paper's Table 1 p-values).

A thin wrapper over ``scipy.stats.wilcoxon`` with its defaults (``zero_method="wilcox"``,
``method="auto"``, no continuity correction) that also records which p-value SciPy computed.
SciPy's "auto" rule (1.17), reproduced by :func:`pvalue_method`, on the differences that remain
after NaN pairs are dropped:

* at most 50 differences, none zero and no ties among their absolute values: the exact null
  distribution -> ``"exact"``;
* zeros or ties and at most 13 differences: an exhaustive permutation test (all 2**n sign
  flips, so deterministic and exact given the ties) -> ``"exact permutation"``;
* otherwise the normal approximation with tie correction -> ``"asymptotic"``.

Zero differences are dropped before ranking (Wilcoxon's convention, SciPy's default); they still
count in ``n`` and still make the rule above leave the plain exact distribution.

Fitness: with m non-zero differences the most extreme outcome (every difference of one sign) has
probability 2 * 2**-m under the null, so no two-sided p can fall below ``2**(1 - m)``
(:func:`min_two_sided_p`): 0.125 for 4 pairs, 0.0625 for 5, 0.031 for 6. At m <= 5 a p < 0.05
is impossible whatever the data, and :func:`wilcoxon_paired` says so in ``p_note``.

Direction: a p-value says nothing of which way a difference goes; :func:`median_difference`
gives the median of the paired differences with its percentile bootstrap CI over pairs.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from defaceaudit.stats.bootstrap import bootstrap_ci

#: SciPy's "auto" switches to the normal approximation above this many differences
MAX_EXACT_N = 50
#: with ties or zeros, SciPy enumerates all sign flips up to this many differences
MAX_PERMUTATION_N = 13

NOT_ENOUGH = "not enough pairs"
#: the significance level the ``p_note`` of :func:`wilcoxon_paired` refers to
ALPHA = 0.05


def _paired_differences(x, y) -> np.ndarray:
    """``x - y`` over pairs where neither is NaN; equal values (also equal infinities) give 0."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    # inf - inf is NaN, but two identical (infinite-PSNR) images are a tie: a zero difference
    with np.errstate(invalid="ignore"):
        return np.where(x == y, 0.0, x - y)


def pvalue_method(d) -> str:
    """Which p-value ``scipy.stats.wilcoxon(d, method="auto")`` computes for differences ``d``."""
    d = np.asarray(d, dtype=float)
    nonzero = np.abs(d[d != 0])
    has_zeros = nonzero.size < d.size
    has_ties = np.unique(nonzero).size < nonzero.size
    if d.size <= MAX_EXACT_N and not (has_zeros or has_ties):
        return "exact"
    if d.size <= MAX_PERMUTATION_N:
        return "exact permutation"
    return "asymptotic"


def min_two_sided_p(n_nonzero: int) -> float:
    """Smallest two-sided p-value the exact Wilcoxon signed-rank test can give for
    ``n_nonzero`` non-zero differences: ``2 * 2**-n_nonzero`` (every sign alike), at most 1.

    Ties among the absolute differences do not lower it (the all-alike configuration stays
    the only most extreme one); above :data:`MAX_PERMUTATION_N` SciPy may use the normal
    approximation, whose minimum is also far below 0.05 there.
    """
    n_nonzero = int(n_nonzero)
    return 1.0 if n_nonzero < 1 else min(1.0, 2.0 ** (1 - n_nonzero))


def p_note(n: int, n_nonzero: int, alpha: float = ALPHA) -> str | None:
    """Why a p-value cannot reach ``alpha``: ``"too few pairs (N=4, p >= 0.125)"`` (or
    ``"(3 non-zero of N=4, p >= 0.25)"`` when zero differences were dropped); None when
    :func:`min_two_sided_p` of ``n_nonzero`` is below ``alpha``."""
    p_min = min_two_sided_p(n_nonzero)
    if p_min < alpha:
        return None
    pairs = f"N={n}" if n_nonzero == n else f"{n_nonzero} non-zero of N={n}"
    return f"too few pairs ({pairs}, p >= {p_min:.3g})"


def wilcoxon_paired(x, y, *, alpha: float = ALPHA) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples ``x`` and ``y`` (same units).

    Pairs with a NaN on either side are dropped. Returns ``{"n", "n_nonzero", "statistic",
    "p_value", "method", "p_min", "p_note"}``: ``n`` pairs used, ``n_nonzero`` of them with a
    non-zero difference, SciPy's statistic (the smaller of the positive and negative rank sums)
    and p-value, ``method`` as :func:`pvalue_method` (or ``"not enough pairs"`` with NaN
    statistic and p-value when no difference is non-zero), ``p_min`` the smallest p the test
    could give with these pairs (:func:`min_two_sided_p`) and ``p_note`` (:func:`p_note`: a
    string when ``p_min >= alpha``, so no outcome could be significant at ``alpha``, else None).
    """
    d = _paired_differences(x, y)
    n_nonzero = int(np.count_nonzero(d))
    result = {
        "n": int(d.size),
        "n_nonzero": n_nonzero,
        "p_min": min_two_sided_p(n_nonzero),
        "p_note": p_note(int(d.size), n_nonzero, alpha),
    }
    if n_nonzero < 1:
        return result | {"statistic": np.nan, "p_value": np.nan, "method": NOT_ENOUGH}
    test = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    return result | {
        "statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "method": pvalue_method(d),
    }


def median_difference(
    x, y, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Median of the paired differences ``x - y`` with its percentile bootstrap CI over pairs.

    Pairs with a NaN on either side are dropped; equal values (also two equal infinities, e.g.
    two images identical to the original) are a zero difference and, unlike in the Wilcoxon
    test, stay in. Returns ``{"n", "median", "ci_low", "ci_high"}`` in the units of ``x``
    (mm, dB, ...): the sign says which way the pairs differ (positive: ``x`` larger). A constant
    shift ``x = y + c`` gives ``c`` with the CI ``[c, c]``. One pair gives a NaN CI
    (:func:`~defaceaudit.stats.bootstrap.bootstrap_ci`); infinite differences (infinite PSNR on
    one side only) can make the median or a bound infinite or, between +inf and -inf, NaN.
    """
    d = _paired_differences(x, y)
    with np.errstate(invalid="ignore"):
        ci = bootstrap_ci(d, np.median, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {
        "n": ci["n"],
        "median": ci["estimate"],
        "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"],
    }
