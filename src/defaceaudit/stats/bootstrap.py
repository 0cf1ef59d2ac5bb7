"""Percentile bootstrap confidence intervals (the paper's "bootstrapping (n=1000)", Tables 1-3).

Resampling is with replacement over the observations (subjects), vectorised: one
[n_resamples, n] index matrix from ``numpy.random.default_rng(seed)``, drawn in row chunks to
bound memory (row chunks draw the same stream as one matrix). The interval is the
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (linear interpolation) of the
resampled statistic, the same construction as ``scipy.stats.bootstrap(method="percentile")``.

Small samples: a percentile interval over n observations can only be built from those n values,
so it cannot reach beyond the sample's range and covers the truth less often than it claims
(for the mean of normal values, a nominal 95 % interval covers about 80 % of the time with
4 values, 88 % with 6 and 90 % with 10; simulated, 2000 samples each). Intervals over fewer than
:data:`MIN_PERCENTILE_N` observations are flagged (:func:`few_for_percentile`,
:data:`FEW_FOR_PERCENTILE_NOTE`) so that tables can mark them as rough.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: percentile CIs over fewer observations (subjects) than this are flagged as rough
MIN_PERCENTILE_N = 10
FEW_FOR_PERCENTILE_NOTE = f"percentile CI on fewer than {MIN_PERCENTILE_N} subjects: too narrow"

#: at most this many resampled values are held in memory at once (8 bytes each)
_CHUNK_VALUES = 1 << 22

Statistic = Callable[..., np.ndarray]


def _clean(values) -> np.ndarray:
    """1-D float array without NaNs."""
    values = np.asarray(values, dtype=float).ravel()
    return values[~np.isnan(values)]


def _resampled_statistic(
    values: np.ndarray, statistic: Statistic, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """``statistic(values[idx], axis=-1)`` for ``n_resamples`` index rows, shape [n_resamples]."""
    n = values.size
    rows_per_chunk = max(1, _CHUNK_VALUES // n)
    out = []
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        out.append(np.asarray(statistic(values[idx], axis=-1), dtype=float))
    return np.concatenate(out)


def bootstrap_ci(
    values,
    statistic: Statistic = np.mean,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap CI of ``statistic`` over 1-D ``values`` (NaNs dropped).

    ``statistic(array, axis=-1)`` must reduce the last axis, like ``np.mean`` or ``np.median``;
    a rate is the mean of 0/1 values. Infinite values are kept (the caller decides what they
    mean; see ``face_tables`` for PSNR). Returns ``{"n", "estimate", "ci_low", "ci_high"}`` in the
    units of the statistic: ``n`` counts the non-NaN values, ``estimate`` is the statistic of
    all of them. With n == 0 the estimate and CI are NaN; with n == 1 the estimate is that value
    and the CI is NaN (every resample would equal the sample: one observation says nothing about
    spread, and a zero-width interval would read as certainty).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    values = _clean(values)
    n = int(values.size)
    if n == 0:
        return {"n": 0, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    estimate = float(statistic(values, axis=-1))
    if n == 1:
        return {"n": 1, "estimate": estimate, "ci_low": np.nan, "ci_high": np.nan}
    rng = np.random.default_rng(seed)
    resampled = _resampled_statistic(values, statistic, n_resamples, rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return {"n": n, "estimate": estimate, "ci_low": float(low), "ci_high": float(high)}


def bootstrap_mean_ci(
    values, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Mean and percentile bootstrap CI of the mean of 1-D ``values`` (NaNs dropped).

    Returns ``{"n", "mean", "ci_low", "ci_high"}`` in the units of ``values`` (mm, dB, ...).
    ``mean`` is the exact sample mean of the non-NaN values. n == 0 gives NaN mean and CI;
    n == 1 gives that value as the mean and a NaN CI (:func:`bootstrap_ci`).
    """
    result = bootstrap_ci(
        values, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    return {
        "n": result["n"],
        "mean": result["estimate"],
        "ci_low": result["ci_low"],
        "ci_high": result["ci_high"],
    }


def few_for_percentile(n: int) -> bool:
    """True when a percentile bootstrap CI exists (n >= 2) but rests on fewer than
    :data:`MIN_PERCENTILE_N` observations, so its coverage falls short of the nominal level."""
    return 2 <= int(n) < MIN_PERCENTILE_N


def percentile_note(n: int) -> str | None:
    """:data:`FEW_FOR_PERCENTILE_NOTE` for a CI on ``n`` observations that
    :func:`few_for_percentile` flags, else None."""
    return FEW_FOR_PERCENTILE_NOTE if few_for_percentile(n) else None
