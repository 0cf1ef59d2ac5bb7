"""Spearman correlations of predicted vs true targets with bootstrap CIs (paper Figure 6).

Cluster bootstrap: the test SUBJECTS are resampled with replacement and each drawn subject brings
all its visit rows. Visits of one subject share the face image and the subject's random
intercept, so they are not independent; resampling rows would understate the CI's width.

Paired replicates: the subject indices of replicate ``b`` come from
``numpy.random.default_rng(seed)`` drawing ``[n_resamples, n_subjects]`` integers over the SORTED
subject list, so they depend only on the seed and that list. Every image type of a body part is
evaluated on the same test subjects, hence its replicate ``b`` resamples the same subjects and
the replicates pair up; the Wilcoxon signed-rank test of the paper compares the paired
replicates of an image type with those of the reference (original) images. The table compares
the very subject lists the draws index, and a missing (NaN) or infinite prediction or target is
an error naming the image type, body part and subjects rather than a subject silently dropped
from one image type (a model that diverged on some subjects needs retraining, not averaging).

Caveat (documented, as in the paper): bootstrap replicates are not independent observations, and
the Wilcoxon p-value shrinks as ``n_resamples`` grows whatever the effect. The table therefore
also gives the percentile CI of the paired replicate difference (``diff_ci_low``,
``diff_ci_high``), whose exclusion of 0 is the better-founded test.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy import stats

from defaceaudit.errors import DefaceAuditError
from defaceaudit.face_tables import format_ci, format_p
from defaceaudit.stats.paired import wilcoxon_paired
from defaceaudit.tables import atomic_path, write_tsv

__all__ = [
    "TABLE_COLUMNS",
    "radiodensity_table",
    "spearman_bootstrap",
    "write_radiodensity_tables",
]

#: Columns of :func:`radiodensity_table`.
TABLE_COLUMNS = (
    "body_part",
    "image_type",
    "n_subjects",
    "n_rows",
    "rho",
    "rho_boot_mean",
    "ci_low",
    "ci_high",
    "mean_difference",
    "diff_ci_low",
    "diff_ci_high",
    "wilcoxon_statistic",
    "p_value",
)
CONFIDENCE = 0.95


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (ties get average ranks); NaN when either side is constant."""
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1])


def spearman_bootstrap(predictions: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Spearman's rho of ``target`` vs ``prediction`` with a subject-cluster bootstrap.

    ``predictions``: one model's test rows (``participant_id``, ``target``, ``prediction``).
    Rows whose target or prediction is NaN are left out. Returns ``{"rho", "rho_boot_mean",
    "ci_low", "ci_high", "n_subjects", "n_rows", "subjects", "boot"}``: rho over the rows kept;
    ``subjects`` the sorted subject ids ``[n_subjects]`` that the draws index (replicates of two
    calls pair up only when these lists are equal); ``boot`` ``[n_resamples]`` the replicates'
    rho (NaN for a replicate whose predictions or targets are constant, e.g. one subject drawn
    every time; such replicates are ignored by the mean and the percentile 95% CI).
    """
    missing = [c for c in ("participant_id", "target", "prediction") if c not in predictions]
    if missing:
        raise DefaceAuditError(f"predictions lack column(s) {', '.join(missing)}")
    frame = predictions.dropna(subset=["target", "prediction"])
    ids = frame["participant_id"].astype(str).to_numpy()
    subjects = np.array(sorted(set(ids)))
    target = frame["target"].to_numpy(dtype=float)
    prediction = frame["prediction"].to_numpy(dtype=float)
    rho = _spearman(target, prediction)
    result = {
        "rho": rho,
        "n_subjects": int(subjects.size),
        "n_rows": int(ids.size),
        "subjects": subjects.tolist(),
    }
    if subjects.size < 2:
        boot = np.full(n_resamples, np.nan)
        return result | {"rho_boot_mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "boot": boot}
    code = np.searchsorted(subjects, ids)
    rows_of = [np.flatnonzero(code == k) for k in range(subjects.size)]
    draws = np.random.default_rng(seed).integers(
        0, subjects.size, size=(n_resamples, subjects.size)
    )
    boot = np.empty(n_resamples)
    for b, drawn in enumerate(draws):
        rows = np.concatenate([rows_of[k] for k in drawn])
        boot[b] = _spearman(target[rows], prediction[rows])
    alpha = (1.0 - CONFIDENCE) / 2.0
    finite = boot[np.isfinite(boot)]
    low, high = np.quantile(finite, [alpha, 1.0 - alpha]) if finite.size else (np.nan, np.nan)
    return result | {
        "rho_boot_mean": float(finite.mean()) if finite.size else np.nan,
        "ci_low": float(low),
        "ci_high": float(high),
        "boot": boot,
    }


def _check_finite(predictions: pd.DataFrame, what: str) -> None:
    """Raise :class:`DefaceAuditError` naming ``what`` and the subjects when a row's ``target``
    or ``prediction`` is NaN or infinite."""
    values = predictions[["target", "prediction"]].to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        subjects = sorted(set(predictions.loc[bad, "participant_id"].astype(str)))
        raise DefaceAuditError(
            f"{what}: {int(bad.sum())} test row(s) with a missing or infinite prediction or "
            f"target, subject(s) {', '.join(subjects[:10])}; rerun that model (a diverged "
            "network or a damaged predictions file) so every image type covers the same subjects"
        )


def radiodensity_table(
    predictions: pd.DataFrame,
    reference: str = "original",
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 6's numbers: rho with bootstrap CI per image type x body part, tested against the
    reference image type.

    ``predictions``: rows of every model (``participant_id``, ``body_part``, ``image_type``,
    ``target``, ``prediction``; only ``split == "test"`` rows when a ``split`` column exists).
    For each body part, every image type must have the same test subjects, and every test row
    a finite target and prediction (else :class:`DefaceAuditError` naming the body part, image
    type and subjects), so replicates pair up. Per row: :func:`spearman_bootstrap`'s
    numbers; ``mean_difference`` = mean over replicates of (this rho - reference rho) with its
    percentile 95% CI (``diff_ci_low``/``diff_ci_high``); the Wilcoxon signed-rank test of the
    paired replicates (:func:`defaceaudit.stats.paired.wilcoxon_paired`, two-sided). The
    reference's own row has NaN there.

    Returns ``(table, boot_long)``: ``table`` with :data:`TABLE_COLUMNS` (body parts in order of
    appearance, reference first then image types in order of appearance); ``boot_long`` with
    ``body_part, image_type, replicate, rho``.
    """
    needed = ["participant_id", "body_part", "image_type", "target", "prediction"]
    missing = [c for c in needed if c not in predictions.columns]
    if missing:
        raise DefaceAuditError(f"predictions lack column(s) {', '.join(missing)}")
    frame = predictions
    if "split" in frame.columns:
        frame = frame.loc[frame["split"] == "test"]
    rows, boots = [], []
    for part in dict.fromkeys(frame["body_part"]):
        of_part = frame.loc[frame["body_part"] == part]
        types = list(dict.fromkeys(of_part["image_type"]))
        if reference not in types:
            raise DefaceAuditError(
                f"{part}: no predictions of the reference image type {reference}"
            )
        types = [reference] + [t for t in types if t != reference]
        results = {}
        for image_type in types:
            sub = of_part.loc[of_part["image_type"] == image_type]
            _check_finite(sub, f"{part}: {image_type}")
            results[image_type] = spearman_bootstrap(sub, n_resamples, seed)
        ref = results[reference]
        for image_type, res in results.items():
            if res["subjects"] != ref["subjects"]:
                raise DefaceAuditError(
                    f"{part}: {image_type} was tested on other subjects than {reference} "
                    f"({res['n_subjects']} vs {ref['n_subjects']}); bootstrap replicates "
                    "cannot pair"
                )
            row = {k: res[k] for k in ("n_subjects", "n_rows", "rho", "rho_boot_mean")}
            row |= {"body_part": part, "image_type": image_type}
            row |= {"ci_low": res["ci_low"], "ci_high": res["ci_high"]}
            if image_type == reference:
                row |= dict.fromkeys(TABLE_COLUMNS[8:], np.nan)
            else:
                diff = res["boot"] - ref["boot"]
                diff = diff[np.isfinite(diff)]
                test = wilcoxon_paired(res["boot"], ref["boot"])
                alpha = (1.0 - CONFIDENCE) / 2.0
                low, high = np.quantile(diff, [alpha, 1 - alpha]) if diff.size else (np.nan,) * 2
                row |= {
                    "mean_difference": float(diff.mean()) if diff.size else np.nan,
                    "diff_ci_low": float(low),
                    "diff_ci_high": float(high),
                    "wilcoxon_statistic": test["statistic"],
                    "p_value": test["p_value"],
                }
            rows.append(row)
            boots.append(
                pd.DataFrame(
                    {
                        "body_part": part,
                        "image_type": image_type,
                        "replicate": np.arange(res["boot"].size),
                        "rho": res["boot"],
                    }
                )
            )
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    boot_long = (
        pd.concat(boots, ignore_index=True)
        if boots
        else pd.DataFrame(columns=["body_part", "image_type", "replicate", "rho"])
    )
    return table, boot_long


def _format_p(p: float) -> str:
    """Scientific notation with 2 significant digits (``3.1e-05``); ``n/a`` for NaN."""
    return format_p(p) if not np.isfinite(p) or p <= 0 else f"{p:.1e}"


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    """Cells for the Markdown table: rho to 3 decimals, CIs to 2, p in scientific notation."""

    def cis(mean: str, low: str, high: str) -> list[str]:
        return [
            format_ci(m, lo, hi)
            for m, lo, hi in zip(table[mean], table[low], table[high], strict=True)
        ]

    counts = zip(table["n_subjects"], table["n_rows"], strict=True)
    return pd.DataFrame(
        {
            "Body part": table["body_part"],
            "Image type": table["image_type"],
            "Subjects (rows)": [f"{s} ({r})" for s, r in counts],
            "Spearman rho": [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in table["rho"]],
            "Bootstrap mean [95% CI]": cis("rho_boot_mean", "ci_low", "ci_high"),
            "Difference to reference [95% CI]": cis(
                "mean_difference", "diff_ci_low", "diff_ci_high"
            ),
            "Wilcoxon p": [_format_p(p) for p in table["p_value"]],
        }
    )


def _side_of_zero(low: float, high: float) -> int | None:
    """+1 when a 95 % CI lies above 0, -1 below, 0 when it holds 0, None when undefined."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return 1 if low > 0 else -1 if high < 0 else 0


#: how the reference's rho reads, and how another image type compares with it, by CI side
_VERDICT = {
    1: "is significantly positive",
    -1: "is significantly negative",
    0: "is not significantly different from 0 (its CI holds 0)",
    None: "has no confidence interval",
}
_COMPARISON = {-1: "lower than", 1: "higher than", 0: "not distinguishable from"}


def radiodensity_findings(table: pd.DataFrame) -> list[str]:
    """One plain sentence per body part, read off :func:`radiodensity_table`'s table: whether
    the reference's rho is significantly positive (95 % CI above 0) and which image types are
    lower than it (CI of the paired difference below 0), higher (above 0) or not
    distinguishable (the CI holds 0). The reference is each body part's first row."""
    lines = []
    for part, rows in table.groupby("body_part", sort=False):
        ref = rows.iloc[0]
        rho = format_ci(ref["rho"], ref["ci_low"], ref["ci_high"])
        text = (
            f"{part}: {ref['image_type']} rho (95% CI) {rho}, "
            f"{_VERDICT[_side_of_zero(ref['ci_low'], ref['ci_high'])]}."
        )
        groups: dict[int, list[str]] = {-1: [], 1: [], 0: []}
        undefined = []
        for _, row in rows.iloc[1:].iterrows():
            if not np.isfinite(row["rho"]):
                undefined.append(row["image_type"])
                continue
            side = _side_of_zero(row["diff_ci_low"], row["diff_ci_high"])
            difference = format_ci(row["mean_difference"], row["diff_ci_low"], row["diff_ci_high"])
            groups[0 if side is None else side].append(
                f"{row['image_type']} ({row['rho']:.2f}, difference {difference})"
            )
        for side, names in groups.items():
            if names:
                text += f" {'; '.join(names)}: {_COMPARISON[side]} the {ref['image_type']}."
        if undefined:
            text += (
                f" {'; '.join(undefined)}: no rho (the model predicts one value for every "
                "subject: no facial voxel is left in the crop)."
            )
        lines.append(text)
    return lines


def write_radiodensity_tables(
    table: pd.DataFrame, out_tsv: str | os.PathLike, out_md: str | os.PathLike
) -> None:
    """Write :func:`radiodensity_table`'s table as TSV (full precision, ``n/a``) and as
    Markdown (formatted cells, with footnotes on the bootstrap and the test), atomically."""
    write_tsv(table, out_tsv)
    body = _formatted(table).to_markdown(index=False, disable_numparse=True)
    notes = [
        "Radiodensity residuals (eq. 2: age and sex regressed out by a linear mixed model) "
        "predicted from face crops; Spearman's rho on the test subjects' rows.",
        "95% CI: percentile bootstrap over test subjects (all visits of a drawn subject), "
        "the same subject draws for every image type.",
        "Difference and Wilcoxon signed-rank p: paired bootstrap replicates, this image type "
        "vs the reference (first row of each body part). The p-value shrinks with the number "
        "of replicates; the CI of the difference is the more conservative comparison.",
    ]
    findings = "\n".join(f"- {line}" for line in radiodensity_findings(table))
    parts = [
        "# Muscle radiodensity from facial voxels (Figure 6)",
        body,
        *notes,
        "## Findings",
        "Read off the table above; a CI that excludes 0 is called significant.",
        findings,
    ]
    text = "\n\n".join(parts)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text + "\n")
