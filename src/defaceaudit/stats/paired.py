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
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: SciPy's "auto" switches to the normal approximation above this many differences
MAX_EXACT_N = 50
#: with ties or zeros, SciPy enumerates all sign flips up to this many differences
MAX_PERMUTATION_N = 13

NOT_ENOUGH = "not enough pairs"


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


def wilcoxon_paired(x, y) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples ``x`` and ``y`` (same units).

    Pairs with a NaN on either side are dropped. Returns ``{"n", "n_nonzero", "statistic",
    "p_value", "method"}``: ``n`` pairs used, ``n_nonzero`` of them with a non-zero difference,
    SciPy's statistic (the smaller of the positive and negative rank sums) and p-value, and
    ``method`` as :func:`pvalue_method` (or ``"not enough pairs"`` with NaN statistic and
    p-value when no difference is non-zero).
    """
    d = _paired_differences(x, y)
    n_nonzero = int(np.count_nonzero(d))
    result = {"n": int(d.size), "n_nonzero": n_nonzero}
    if n_nonzero < 1:
        return result | {"statistic": np.nan, "p_value": np.nan, "method": NOT_ENOUGH}
    test = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    return result | {
        "statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "method": pvalue_method(d),
    }
