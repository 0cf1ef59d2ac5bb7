"""Percentile bootstrap and paired Wilcoxon test against SciPy."""

import numpy as np
import pytest
from scipy import stats

from defaceaudit.stats import (
    bootstrap,
    bootstrap_ci,
    bootstrap_mean_ci,
    few_for_percentile,
    median_difference,
    min_two_sided_p,
    percentile_note,
    wilcoxon_paired,
)
from defaceaudit.stats.paired import pvalue_method


def _sample(n=25, seed=3):
    return np.random.default_rng(seed).normal(5.0, 2.0, n)


# --- bootstrap -------------------------------------------------------------------------------


def _quantile_se(boot_sd: float, n_resamples: int, alpha: float) -> float:
    """Monte Carlo SE of an alpha-quantile estimated from n_resamples bootstrap means.

    The bootstrap distribution of a mean is close to normal with sd ``boot_sd``; the sample
    quantile of B draws has SE sqrt(alpha (1 - alpha) / B) / f(q), f the density at the
    quantile (Serfling 1980, 2.3.3).
    """
    z = stats.norm.ppf(alpha)
    density = stats.norm.pdf(z) / boot_sd
    return np.sqrt(alpha * (1 - alpha) / n_resamples) / density


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_bootstrap_agrees_with_scipy_percentile_large_b(confidence):
    x = _sample()
    b = 40_000
    ours = bootstrap_mean_ci(x, n_resamples=b, confidence=confidence, seed=1)
    # a different stream for SciPy, so the comparison is between independent estimates
    theirs = stats.bootstrap(
        (x,),
        np.mean,
        method="percentile",
        n_resamples=b,
        confidence_level=confidence,
        rng=np.random.default_rng(12345),
    ).confidence_interval
    alpha = (1 - confidence) / 2
    boot_sd = x.std(ddof=0) / np.sqrt(x.size)
    # difference of two independent quantile estimates: sqrt(2) x SE; 5 SE makes a false
    # failure negligible (~6e-7) while a wrong level (e.g. 90% for 95%) moves an endpoint by
    # ~0.3 boot_sd, about 16 SE here.
    tol = 5 * np.sqrt(2) * _quantile_se(boot_sd, b, alpha)
    assert ours["ci_low"] == pytest.approx(theirs.low, abs=tol)
    assert ours["ci_high"] == pytest.approx(theirs.high, abs=tol)


def test_bootstrap_agrees_with_scipy_at_1000_resamples_over_seeds():
    x = _sample(n=15, seed=7)
    seeds = range(100)
    ours = np.array(
        [[bootstrap_mean_ci(x, seed=s)[k] for k in ("ci_low", "ci_high")] for s in seeds]
    )
    theirs = np.array(
        [
            stats.bootstrap(
                (x,),
                np.mean,
                method="percentile",
                n_resamples=1000,
                rng=np.random.default_rng(10_000 + s),
            ).confidence_interval
            for s in seeds
        ]
    )
    boot_sd = x.std(ddof=0) / np.sqrt(x.size)
    # the averages over 100 seeds of two independent estimators: SE = quantile SE / 10 each
    tol = 5 * np.sqrt(2) * _quantile_se(boot_sd, 1000, 0.025) / np.sqrt(len(seeds))
    np.testing.assert_allclose(ours.mean(axis=0), theirs.mean(axis=0), atol=tol, rtol=0)


def test_bootstrap_mean_is_exact_and_inside_ci():
    for seed in range(5):
        x = _sample(n=12, seed=seed)
        result = bootstrap_mean_ci(x, seed=seed)
        assert result["mean"] == np.mean(x)
        assert result["n"] == x.size
        assert result["ci_low"] < result["mean"] < result["ci_high"]


def test_bootstrap_is_deterministic_by_seed():
    x = _sample()
    assert bootstrap_mean_ci(x, seed=4) == bootstrap_mean_ci(x, seed=4)
    assert bootstrap_mean_ci(x, seed=4)["ci_low"] != bootstrap_mean_ci(x, seed=5)["ci_low"]


def test_bootstrap_chunking_does_not_change_the_result(monkeypatch):
    x = _sample(n=30)
    whole = bootstrap_mean_ci(x, n_resamples=500, seed=2)
    monkeypatch.setattr(bootstrap, "_CHUNK_VALUES", 7 * x.size)  # 7 rows per chunk
    assert bootstrap_mean_ci(x, n_resamples=500, seed=2) == whole


def test_bootstrap_drops_nans_and_handles_tiny_samples():
    x = _sample(n=10)
    with_nan = np.insert(x, [2, 5], np.nan)
    assert bootstrap_mean_ci(with_nan, seed=0) == bootstrap_mean_ci(x, seed=0)
    empty = bootstrap_mean_ci([np.nan, np.nan])
    assert empty["n"] == 0
    assert all(np.isnan(empty[k]) for k in ("mean", "ci_low", "ci_high"))
    one = bootstrap_mean_ci([np.nan, 2.5])
    assert one["n"] == 1 and one["mean"] == 2.5  # one value: no interval
    assert np.isnan(one["ci_low"]) and np.isnan(one["ci_high"])
    from defaceaudit.metrics.face_tables import format_ci

    assert format_ci(one["mean"], one["ci_low"], one["ci_high"]) == "2.50 [n/a]"


def test_bootstrap_ci_general_statistic_and_rate():
    x = _sample(n=40)
    median = bootstrap_ci(x, np.median, seed=0)
    assert median["estimate"] == np.median(x)
    assert median["ci_low"] <= median["estimate"] <= median["ci_high"]
    failures = np.array([1] * 3 + [0] * 17, dtype=float)
    rate = bootstrap_ci(failures, np.mean, seed=0)
    assert rate["estimate"] == pytest.approx(0.15)
    assert 0.0 <= rate["ci_low"] < 0.15 < rate["ci_high"] <= 1.0


def test_bootstrap_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_mean_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1.0, 2.0], confidence=95)


# --- Wilcoxon --------------------------------------------------------------------------------


def _pairs(n, seed=0, shift=0.4):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 0.3, n)
    return x, x - shift * rng.random(n) + rng.normal(0, 0.2, n)


def _scipy_with(method, d):
    return stats.wilcoxon(d, method=method)


@pytest.mark.parametrize(
    ("n", "rounding", "expected_method", "scipy_method"),
    [
        (20, None, "exact", "exact"),
        (80, None, "asymptotic", "asymptotic"),
        (30, 1, "asymptotic", "asymptotic"),  # ties after rounding
        (10, 1, "exact permutation", stats.PermutationMethod()),  # ties, few pairs
    ],
)
def test_wilcoxon_equals_scipy(n, rounding, expected_method, scipy_method):
    x, y = _pairs(n, seed=n)
    if rounding is not None:
        x, y = np.round(x, rounding), np.round(y, rounding)
    result = wilcoxon_paired(x, y)
    reference = stats.wilcoxon(x, y)  # SciPy's defaults: wilcox zeros, auto method
    assert result["n"] == n
    assert result["statistic"] == reference.statistic
    assert result["p_value"] == reference.pvalue
    assert result["method"] == expected_method
    # the recorded method is the one SciPy's "auto" chose
    explicit = _scipy_with(scipy_method, x - y)
    assert result["p_value"] == explicit.pvalue


def test_wilcoxon_zero_differences_are_dropped_but_counted():
    x, y = _pairs(12, seed=5)
    y[[1, 4]] = x[[1, 4]]
    result = wilcoxon_paired(x, y)
    assert (result["n"], result["n_nonzero"]) == (12, 10)
    assert result["method"] == "exact permutation"
    without_zeros = stats.wilcoxon(np.delete(x - y, [1, 4]))
    assert result["statistic"] == without_zeros.statistic


def test_wilcoxon_drops_nan_pairs():
    x, y = _pairs(18, seed=2)
    x_nan, y_nan = x.copy(), y.copy()
    x_nan[3] = np.nan
    y_nan[7] = np.nan
    keep = np.ones(18, bool)
    keep[[3, 7]] = False
    result = wilcoxon_paired(x_nan, y_nan)
    reference = stats.wilcoxon(x[keep], y[keep])
    assert result["n"] == 16
    assert (result["statistic"], result["p_value"]) == (reference.statistic, reference.pvalue)


def test_wilcoxon_all_equal_or_empty_gives_nan():
    x = np.arange(6.0)
    for a, b in [(x, x), ([np.nan], [1.0]), ([], [])]:
        result = wilcoxon_paired(a, b)
        assert result["method"] == "not enough pairs"
        assert np.isnan(result["p_value"]) and np.isnan(result["statistic"])
    assert wilcoxon_paired(x, x)["n"] == 6


def test_wilcoxon_identical_infinities_are_ties():
    x, y = _pairs(8, seed=9)
    x[0] = y[0] = np.inf  # two images identical to the original: infinite PSNR on both sides
    x[1] = np.inf  # infinite PSNR beats every finite one
    result = wilcoxon_paired(x, y)
    assert (result["n"], result["n_nonzero"]) == (8, 7)
    # the same test as SciPy on the differences with the tie as 0 and inf - finite as +inf
    d = np.concatenate([[0.0], x[1:] - y[1:]])
    expected = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    assert np.isinf(d[1]) and d[1] > 0
    assert (result["statistic"], result["p_value"]) == (expected.statistic, expected.pvalue)
    assert np.isfinite(result["p_value"])


def test_wilcoxon_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="length"):
        wilcoxon_paired([1.0, 2.0], [1.0])


def test_pvalue_method_rule():
    assert pvalue_method(np.arange(1.0, 51.0)) == "exact"
    assert pvalue_method(np.arange(1.0, 52.0)) == "asymptotic"
    assert pvalue_method([1.0, -1.0, 2.0]) == "exact permutation"
    assert pvalue_method([0.0, 1.0, 2.0]) == "exact permutation"


# --- fitness and direction -----------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 9))
def test_min_two_sided_p_is_scipys_exact_p_when_every_sign_agrees(n):
    """All differences of one sign are the most extreme outcome: p = 2 / 2**n, exactly."""
    d = np.arange(1.0, n + 1)
    assert min_two_sided_p(n) == min(1.0, 2.0 / 2**n)
    assert stats.wilcoxon(d, method="exact").pvalue == pytest.approx(min_two_sided_p(n))
    assert wilcoxon_paired(d, np.zeros(n))["p_min"] == min_two_sided_p(n)


def test_four_or_five_pairs_can_never_reach_p_below_005():
    x = np.array([3.1, 4.0, 3.7, 3.3])
    result = wilcoxon_paired(x, x - 3.0)  # every subject 3 units apart: as extreme as it gets
    assert result["p_value"] == 0.125 == result["p_min"]
    assert result["p_note"] == "too few pairs (N=4, p >= 0.125)"
    five = wilcoxon_paired(np.arange(5.0), np.arange(5.0) - 1)
    assert five["p_min"] == 0.0625 and five["p_note"] == "too few pairs (N=5, p >= 0.0625)"
    six = wilcoxon_paired(np.arange(6.0), np.arange(6.0) - 1)
    assert six["p_min"] == 0.03125 and six["p_note"] is None
    # a zero difference leaves fewer signed ranks: the floor is that of the non-zero ones
    zeros = wilcoxon_paired([1.0, 2, 3, 4, 5, 6], [1.0, 1, 2, 3, 4, 5])
    assert zeros["p_min"] == 0.0625
    assert zeros["p_note"] == "too few pairs (5 non-zero of N=6, p >= 0.0625)"
    assert wilcoxon_paired([1.0], [1.0])["p_min"] == 1.0


def test_median_difference_of_a_constant_shift_is_the_shift():
    y = _sample(12, seed=8)
    result = median_difference(y + 1.5, y, n_resamples=300, seed=2)
    assert result["n"] == 12
    assert (result["median"], result["ci_low"], result["ci_high"]) == pytest.approx((1.5,) * 3)
    down = median_difference(y - 0.5, y)
    assert down["median"] == pytest.approx(-0.5) and down["ci_high"] == pytest.approx(-0.5)


def test_median_difference_is_the_bootstrap_of_the_paired_median():
    x, y = _pairs(9, seed=4)
    x[2] = np.nan  # dropped pair
    result = median_difference(x, y, n_resamples=500, seed=7)
    d = (x - y)[~np.isnan(x)]
    expected = bootstrap_ci(d, np.median, n_resamples=500, seed=7)
    assert result["n"] == 8 and result["median"] == np.median(d)
    assert (result["ci_low"], result["ci_high"]) == (expected["ci_low"], expected["ci_high"])
    # zero differences stay in the median (unlike in the Wilcoxon test)
    same = median_difference([1.0, 2.0, 3.0], [1.0, 2.0, 0.0])
    assert same["median"] == 0.0


def test_percentile_cis_on_fewer_than_ten_subjects_are_flagged():
    assert [few_for_percentile(n) for n in (0, 1, 2, 9, 10, 469)] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]
    assert "fewer than 10 subjects" in percentile_note(4)
    assert percentile_note(10) is None and percentile_note(1) is None
