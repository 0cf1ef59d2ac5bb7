"""Statistics for the paper's tables: percentile bootstrap CIs and paired Wilcoxon tests."""

from defaceaudit.stats.bootstrap import bootstrap_ci, bootstrap_mean_ci
from defaceaudit.stats.paired import wilcoxon_paired

__all__ = ["bootstrap_ci", "bootstrap_mean_ci", "wilcoxon_paired"]
