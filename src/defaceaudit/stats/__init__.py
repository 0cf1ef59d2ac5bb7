"""Statistics for the paper's tables: percentile bootstrap CIs, paired Wilcoxon tests with the
smallest p they can reach, and median paired differences with bootstrap CIs."""

from defaceaudit.stats.bootstrap import (
    MIN_PERCENTILE_N,
    bootstrap_ci,
    bootstrap_mean_ci,
    few_for_percentile,
    percentile_note,
)
from defaceaudit.stats.paired import (
    median_difference,
    min_two_sided_p,
    p_note,
    wilcoxon_paired,
)

__all__ = [
    "MIN_PERCENTILE_N",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "few_for_percentile",
    "median_difference",
    "min_two_sided_p",
    "p_note",
    "percentile_note",
    "wilcoxon_paired",
]
