"""Spearman correlations of predicted vs true targets with bootstrap CIs (paper Figure 6).

One row per subject: each subject has one MRI, so every visit row of a subject carries the same
prediction (the one face crop) beside that visit's target. Correlating visit rows would count a
subject once per visit with a duplicated prediction, weighing subjects by their number of visits
and treating dependent rows as independent. The visits are therefore averaged first
(:func:`subject_means`: the mean target and the mean prediction of each subject; the residual
target of eq. 2 averaged over visits is the subject's own radiodensity level), and rho is taken
over subjects.

Subject bootstrap: the test subjects are resampled with replacement, the rho of each replicate
is taken over the drawn subjects' rows.

Paired replicates: the subject indices of replicate ``b`` come from
``numpy.random.default_rng(seed)`` drawing ``[n_resamples, n_subjects]`` integers over the SORTED
subject list, so they depend only on the seed and that list. Every image type of a body part is
evaluated on the same test subjects, hence its replicate ``b`` resamples the same subjects and
the replicates pair up; the Wilcoxon signed-rank test of the paper compares the paired
replicates of an image type with those of the reference (original) images. The table compares
the very subject lists the draws index, and a missing (NaN) or infinite prediction or target is
an error naming the image type, body part and subjects rather than a subject silently dropped
from one image type (a model that diverged on some subjects needs retraining, not averaging).

The paper's Wilcoxon test on replicates is kept as one labelled column only
(``replicate_wilcoxon_p``): bootstrap replicates are not independent observations, they are
as many as one chooses, and the p-value shrinks towards 0 as ``n_resamples`` grows for any
non-zero sample difference, while the CI of the difference keeps its width. The findings are
read off the percentile CI of the paired replicate difference (``diff_ci_low``,
``diff_ci_high``): an image type differs from the reference where that CI excludes 0. CIs over
fewer than 10 subjects are flagged (``ci_note``): a percentile interval on so few is too narrow.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy import stats

from defaceaudit.errors import DefaceAuditError
from defaceaudit.metrics.face_tables import FEW_MARK, format_ci, format_p
from defaceaudit.stats.bootstrap import few_for_percentile, percentile_note
from defaceaudit.stats.paired import wilcoxon_paired
from defaceaudit.tables import atomic_path, write_tsv

__all__ = [
    "TABLE_COLUMNS",
    "radiodensity_table",
    "spearman_bootstrap",
    "subject_means",
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
    "ci_note",
    "mean_difference",
    "diff_ci_low",
    "diff_ci_high",
    "replicate_wilcoxon_statistic",
    "replicate_wilcoxon_p",
)
#: columns that compare an image type with the reference (NaN on the reference's own row)
_COMPARISON_COLUMNS = (
    "mean_difference",
    "diff_ci_low",
    "diff_ci_high",
    "replicate_wilcoxon_statistic",
    "replicate_wilcoxon_p",
)
CONFIDENCE = 0.95


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (ties get average ranks); NaN when either side is constant."""
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1])


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`_spearman` of every row of ``x`` and ``y`` ``[B, n]`` at once -> ``[B]``."""
    rx = stats.rankdata(x, axis=-1)
    ry = stats.rankdata(y, axis=-1)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    sxx, syy = (rx * rx).sum(axis=-1), (ry * ry).sum(axis=-1)
    constant = (sxx == 0) | (syy == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=-1) / np.sqrt(sxx * syy)
    return np.where(constant, np.nan, rho)


def subject_means(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per subject: the mean ``target`` and mean ``prediction`` over its visit rows.

    ``predictions``: one model's rows (``participant_id``, ``target``, ``prediction``; targets
    and predictions in SD units of the training residuals). Rows whose target or prediction is
    NaN are left out first. Returns ``participant_id`` (sorted, as strings), ``target``,
    ``prediction`` and ``n_visits`` (the rows averaged). With one MRI per subject every visit
    row repeats the subject's prediction, which is kept exactly (not re-derived as a float
    mean); the target's mean is the subject's residual radiodensity averaged over visits.
    """
    missing = [c for c in ("participant_id", "target", "prediction") if c not in predictions]
    if missing:
        raise DefaceAuditError(f"predictions lack column(s) {', '.join(missing)}")
    frame = predictions.dropna(subset=["target", "prediction"])
    grouped = frame.groupby(frame["participant_id"].astype(str), sort=True)
    means = grouped[["target", "prediction"]].mean().astype(float)
    # a prediction repeated over the visits is kept bit for bit: the float mean of three equal
    # values can differ from them in the last bit, and a model that predicts one value for
    # every subject (no face left) must stay constant, i.e. have no rho
    low, high = grouped["prediction"].min(), grouped["prediction"].max()
    means["prediction"] = np.where(low == high, low, means["prediction"])
    means["n_visits"] = grouped.size()
    return means.rename_axis("participant_id").reset_index()


def spearman_bootstrap(predictions: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Spearman's rho of ``target`` vs ``prediction`` over subjects, with a subject bootstrap.

    ``predictions``: one model's test rows (``participant_id``, ``target``, ``prediction``),
    one or more visits per subject; :func:`subject_means` averages each subject's visits first
    (rows with a NaN target or prediction left out). Returns ``{"rho", "rho_boot_mean",
    "ci_low", "ci_high", "n_subjects", "n_rows", "subjects", "boot"}``: rho over the subjects'
    mean rows; ``n_rows`` the visit rows they came from; ``subjects`` the sorted subject ids
    ``[n_subjects]`` that the draws index (replicates of two calls pair up only when these lists
    are equal); ``boot`` ``[n_resamples]`` the replicates' rho (NaN for a replicate whose
    predictions or targets are constant, e.g. one subject drawn every time; such replicates are
    ignored by the mean and the percentile 95% CI).
    """
    means = subject_means(predictions)
    subjects = means["participant_id"].to_numpy()
    target = means["target"].to_numpy(dtype=float)
    prediction = means["prediction"].to_numpy(dtype=float)
    rho = _spearman(target, prediction)
    result = {
        "rho": rho,
        "n_subjects": int(subjects.size),
        "n_rows": int(means["n_visits"].sum()),
        "subjects": subjects.tolist(),
    }
    if subjects.size < 2:
        boot = np.full(n_resamples, np.nan)
        return result | {"rho_boot_mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "boot": boot}
    draws = np.random.default_rng(seed).integers(
        0, subjects.size, size=(n_resamples, subjects.size)
    )
    boot = _spearman_rows(target[draws], prediction[draws])
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
    numbers (rho over subjects, visits averaged; ``n_rows`` the visit rows); ``ci_note`` when
    the CIs rest on fewer than 10 subjects; ``mean_difference`` = mean over replicates of (this
    rho - reference rho) with its percentile 95% CI (``diff_ci_low``/``diff_ci_high``), from
    which the findings are read; the paper's Wilcoxon signed-rank test of the paired
    replicates (:func:`defaceaudit.stats.paired.wilcoxon_paired`, two-sided) as
    ``replicate_wilcoxon_statistic``/``replicate_wilcoxon_p`` (its p shrinks with
    ``n_resamples``: not a test of the data). The reference's own row has NaN there.

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
            row["ci_note"] = percentile_note(res["n_subjects"])
            if image_type == reference:
                row |= dict.fromkeys(_COMPARISON_COLUMNS, np.nan)
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
                    "replicate_wilcoxon_statistic": test["statistic"],
                    "replicate_wilcoxon_p": test["p_value"],
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


#: Markdown header of the replicate test: the paper's method, not a test of the data
REPLICATE_P_LABEL = "Wilcoxon p over bootstrap replicates (paper's method)"


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    """Cells for the Markdown table: rho to 3 decimals, CIs to 2 (with the few-subjects mark),
    the replicate p in scientific notation."""
    few = [few_for_percentile(n) for n in table["n_subjects"]]

    def cis(mean: str, low: str, high: str) -> list[str]:
        cells = zip(table[mean], table[low], table[high], few, strict=True)
        return [format_ci(m, lo, hi, few=f) for m, lo, hi, f in cells]

    counts = zip(table["n_subjects"], table["n_rows"], strict=True)
    return pd.DataFrame(
        {
            "Body part": table["body_part"],
            "Image type": table["image_type"],
            "Subjects (visit rows)": [f"{s} ({r})" for s, r in counts],
            "Spearman rho": [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in table["rho"]],
            "Bootstrap mean [95% CI]": cis("rho_boot_mean", "ci_low", "ci_high"),
            "Difference to reference [95% CI]": cis(
                "mean_difference", "diff_ci_low", "diff_ci_high"
            ),
            REPLICATE_P_LABEL: [_format_p(p) for p in table["replicate_wilcoxon_p"]],
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
    distinguishable (the CI holds 0). The reference is each body part's first row. The
    replicate Wilcoxon p plays no part (it shrinks with the number of resamples); with fewer
    than 10 subjects (``n_subjects``) the sentence says that the CIs are rough."""
    lines = []
    for part, rows in table.groupby("body_part", sort=False):
        ref = rows.iloc[0]
        rho = format_ci(ref["rho"], ref["ci_low"], ref["ci_high"])
        text = (
            f"{part}: {ref['image_type']} rho (95% CI) {rho}, "
            f"{_VERDICT[_side_of_zero(ref['ci_low'], ref['ci_high'])]}."
        )
        n_subjects = ref.get("n_subjects", np.nan)
        if np.isfinite(n_subjects) and few_for_percentile(n_subjects):
            text += (
                f" Only {int(n_subjects)} test subjects: the percentile CIs are too narrow, "
                "read them as rough ranges."
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
        "predicted from face crops; Spearman's rho over the test subjects, one row per "
        "subject: each subject has one MRI, hence one prediction, and its visits' targets are "
        "averaged (visit rows: the rows averaged).",
        "95% CI: percentile bootstrap over test subjects, the same subject draws for every "
        f"image type. {FEW_MARK}: a CI over fewer than 10 subjects, too narrow: read it as a "
        "rough range.",
        "Difference to reference: mean over the paired bootstrap replicates of (this image "
        "type's rho - the reference's), the reference being the first row of each body part, "
        "with its 95% percentile CI; the findings below are read off this CI.",
        f"{REPLICATE_P_LABEL}: the paper's Wilcoxon signed-rank test of the paired replicates, "
        "given for comparison with the paper only. Replicates are not independent "
        "observations and are as many as one draws, so this p shrinks with the number of "
        "resamples whatever the effect: it is not a test of the data.",
        "Test subjects: a split of the cohort by subject (radiodensity.split). On the demo "
        "cohort every subject is a deformation of one of three real heads, so the test "
        "subjects are new deformations of the same people the models trained on; the "
        "radiodensity was made to depend on each subject's own facial soft-tissue offset.",
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
