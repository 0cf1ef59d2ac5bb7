"""The paper's Tables 1-3 (Gao, Xu et al. 2025) from per-subject face metrics.

Input: a long table, one row per subject x defacer x image type (``results/metrics/
face_metrics.tsv``, ``n/a`` for missing values) with the columns of :data:`FACE_METRIC_COLUMNS`.
``defacer`` names the defacer whose removed region defines the row; ``image_type`` is
``defaced``, ``population_average`` or ``dpm_refaced`` (any may be absent); ``image`` names the
producer of the compared image. Distances are in mm, PSNR in dB, SSIM unitless.

Outputs:

* :func:`summarise`: per test set x defacer x metric x image type, the mean and its 95%
  percentile bootstrap CI over subjects (the paper's "bootstrapping (n=1000)"). Every cell uses
  the same ``seed``, so a cell does not change when other cells are added (e.g. DPM rows).
  ``ci_note`` flags a CI on fewer than 10 subjects (too narrow, :mod:`defaceaudit.stats`).
* :func:`paired_tests`: over subjects paired within a test set, for population average vs
  DPMs (Table 1's test) and defaced vs every other image type: the median paired difference
  (``image_a - image_b``) with its percentile bootstrap CI, which shows the direction and size,
  and the two-sided Wilcoxon signed-rank test, with the smallest p it could reach (``p_min``)
  and ``p_note`` where that is not below 0.05 (at most 5 pairs: the demo's 4 test subjects
  give p >= 0.125 whatever the faces look like).
* :func:`paper_tables`: the formatted tables; :func:`write_face_tables` writes TSV + Markdown.

Infinite PSNR (an image identical to the original inside the region, MSE = 0) has no finite
mean: such values are left out of the mean and CI and counted in ``n_infinite`` (clipping would
invent a number). The paired tests keep them, because ranks are well defined: an infinite PSNR
outranks every finite one and two infinite values are a tie (zero difference).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from defaceaudit.paths import FACE_TABLE_NAMES
from defaceaudit.stats import (
    bootstrap_mean_ci,
    few_for_percentile,
    median_difference,
    percentile_note,
    wilcoxon_paired,
)
from defaceaudit.tables import atomic_path, write_tsv

#: columns of face_metrics.tsv, in order
FACE_METRIC_COLUMNS = (
    "subject",
    "test_set",
    "defacer",
    "image_type",
    "image",
    "masd_mm",
    "masd_symmetric_mm",
    "ssim_head",
    "psnr_head_db",
    "ssim_face",
    "psnr_face_db",
    "n_face_voxels",
)
ID_COLUMNS = ("subject", "test_set", "defacer", "image_type", "image")
#: summarised metrics, in output order
METRICS = (
    "masd_mm",
    "masd_symmetric_mm",
    "psnr_head_db",
    "psnr_face_db",
    "ssim_head",
    "ssim_face",
)
TEST_SETS = ("internal_test", "external_test")
TEST_SET_LABELS = {"internal_test": "Internal", "external_test": "External"}
IMAGE_TYPES = ("defaced", "population_average", "dpm_refaced")
#: Table 1's own test first, then defaced against the refaced images
TEST_PAIRS = (
    ("population_average", "dpm_refaced"),
    ("defaced", "population_average"),
    ("defaced", "dpm_refaced"),
)
CONFIDENCE = 0.95
TABLE_NAMES = FACE_TABLE_NAMES
NA = "n/a"

SUMMARY_COLUMNS = (
    "test_set",
    "defacer",
    "metric",
    "image_type",
    "image",
    "n",
    "n_missing",
    "n_infinite",
    "mean",
    "ci_low",
    "ci_high",
    "ci_note",
)
TEST_COLUMNS = (
    "test_set",
    "defacer",
    "metric",
    "image_a",
    "image_b",
    "n",
    "n_nonzero",
    "median_diff",
    "median_diff_ci_low",
    "median_diff_ci_high",
    "ci_note",
    "statistic",
    "p_value",
    "p_min",
    "p_note",
    "method",
)
#: marks a CI over fewer than 10 subjects in the Markdown and TSV tables (footnote)
FEW_MARK = "†"

_ROW_LABELS = ("Testing set", "Defaced by")
_MASD_COLUMNS = {
    "defaced": "Defaced",
    "population_average": "Refaced with a population average",
    "dpm_refaced": "Refaced with DPMs",
}
_P_COLUMNS = {
    ("population_average", "dpm_refaced"): "p: population average vs DPMs",
    ("defaced", "population_average"): "p: defaced vs population average",
    ("defaced", "dpm_refaced"): "p: defaced vs DPMs",
}
#: the median-difference column beside each p column (difference = first - second image)
_DIFF_COLUMNS = {
    ("population_average", "dpm_refaced"): "Median difference: population average - DPMs",
    ("defaced", "population_average"): "Median difference: defaced - population average",
    ("defaced", "dpm_refaced"): "Median difference: defaced - DPMs",
}
#: Tables 2-3 compare the two refaced images, as the paper's text does (section 4)
_QUALITY_PAIR = ("population_average", "dpm_refaced")
_QUALITY_COLUMNS = {
    "defaced": "defaced",
    "population_average": "population average",
    "dpm_refaced": "DPMs-refaced",
}
_REGIONS = {"head": "Whole head", "face": "Face (M5)"}


# --- reading and checking -------------------------------------------------------------------


def read_face_metrics(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate per-job face-metric TSVs (``n/a`` = missing), keeping the column order.

    Identifier columns are read as strings (``01`` stays ``01``); ``inf`` parses as infinity.
    Columns are the union in first-seen order; no paths gives an empty :data:`FACE_METRIC_COLUMNS`
    frame.
    """
    frames = [
        pd.read_csv(
            path,
            sep="\t",
            na_values=[NA, ""],
            keep_default_na=False,
            dtype=dict.fromkeys(ID_COLUMNS, str),
        )
        for path in paths
    ]
    columns = list(dict.fromkeys(c for frame in frames for c in frame.columns))
    if not columns:
        columns = list(FACE_METRIC_COLUMNS)
    filled = [frame for frame in frames if len(frame)]
    if not filled:
        return pd.DataFrame(columns=columns)
    return pd.concat(filled, ignore_index=True, sort=False).reindex(columns=columns)


def _checked(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy with numeric metrics; raises on missing columns or duplicated subjects."""
    missing = [
        c for c in ("subject", "test_set", "defacer", "image_type", *METRICS) if c not in rows
    ]
    if missing:
        raise ValueError(f"face metrics lack columns: {', '.join(missing)}")
    rows = rows.copy()
    for metric in METRICS:
        rows[metric] = pd.to_numeric(rows[metric]).astype(float)
    keys = ["test_set", "defacer", "image_type", "subject"]
    duplicated = rows.duplicated(keys, keep=False)
    if duplicated.any():
        first = rows.loc[duplicated, keys].iloc[0].tolist()
        raise ValueError(f"more than one face-metric row for {first}")
    return rows


def _preferred_order(value: str, preferred: tuple[str, ...]) -> tuple[int, str]:
    """Sort key: known values in their paper order first, the rest alphabetically."""
    if value in preferred:
        return preferred.index(value), ""
    return len(preferred), str(value).lower()


def _blocks(rows: pd.DataFrame) -> list[tuple[str, str, dict[str, pd.DataFrame]]]:
    """``(test_set, defacer, {image_type: rows})`` in table order (paper test-set order,
    defacers alphabetically, image types defaced / population average / DPMs / others)."""
    blocks = []
    for (test_set, defacer), block in rows.groupby(["test_set", "defacer"], sort=False):
        types = sorted(block["image_type"].unique(), key=lambda t: _preferred_order(t, IMAGE_TYPES))
        by_type = {t: block[block["image_type"] == t] for t in types}
        blocks.append((test_set, defacer, by_type))
    blocks.sort(key=lambda b: (_preferred_order(b[0], TEST_SETS), str(b[1]).lower()))
    return blocks


# --- statistics -------------------------------------------------------------------------------


def _summary_cell(values: np.ndarray, *, n_resamples: int, seed: int) -> dict:
    """Mean and CI of the finite values; NaN and infinite values counted apart."""
    missing = np.isnan(values)
    infinite = np.isinf(values)
    ci = bootstrap_mean_ci(
        values[~missing & ~infinite], n_resamples=n_resamples, confidence=CONFIDENCE, seed=seed
    )
    return {
        "n": ci["n"],
        "n_missing": int(missing.sum()),
        "n_infinite": int(infinite.sum()),
        "mean": ci["mean"],
        "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"],
        "ci_note": percentile_note(ci["n"]),
    }


def _producers(group: pd.DataFrame) -> str:
    """The image producers of a group joined by ``+`` (empty without an ``image`` column)."""
    if "image" not in group:
        return ""
    return "+".join(sorted(group["image"].dropna().astype(str).unique()))


def summarise(rows: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Long table of mean [95% percentile bootstrap CI] per test set x defacer x metric x image.

    Columns :data:`SUMMARY_COLUMNS`: ``n`` finite values used, ``n_missing`` (NaN) and
    ``n_infinite`` (infinite PSNR, identical images) rows left out, ``image`` the producer(s)
    of the image type joined by ``+``; mean and CI in the metric's units (mm, dB, SSIM);
    ``ci_note`` says when the CI rests on fewer than 10 subjects (NaN otherwise).
    """
    rows = _checked(rows)
    records = []
    for test_set, defacer, by_type in _blocks(rows):
        for metric in METRICS:
            for image_type, group in by_type.items():
                cell = _summary_cell(
                    group[metric].to_numpy(float), n_resamples=n_resamples, seed=seed
                )
                records.append(
                    {
                        "test_set": test_set,
                        "defacer": defacer,
                        "metric": metric,
                        "image_type": image_type,
                        "image": _producers(group),
                    }
                    | cell
                )
    return pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))


def _pairs(image_types: Iterable[str]) -> list[tuple[str, str]]:
    """Tested pairs among the present image types: Table 1's pair, then defaced vs the rest."""
    present = list(image_types)
    pairs = [p for p in TEST_PAIRS if p[0] in present and p[1] in present]
    extra = [("defaced", t) for t in present if t not in IMAGE_TYPES and "defaced" in present]
    return pairs + extra


def _paired_values(by_type: dict[str, pd.DataFrame], a: str, b: str, metric: str):
    """Values of ``metric`` for image types ``a`` and ``b`` over the subjects that have both."""
    left = by_type[a][["subject", metric]]
    right = by_type[b][["subject", metric]]
    merged = left.merge(right, on="subject", suffixes=("_a", "_b"))
    return merged[f"{metric}_a"].to_numpy(float), merged[f"{metric}_b"].to_numpy(float)


def paired_tests(rows: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Median paired difference and Wilcoxon signed-rank test over subjects, for every metric
    and image-type pair present.

    Columns :data:`TEST_COLUMNS`; ``n`` is the number of subjects with both images and no NaN.
    ``median_diff`` is the median over subjects of ``image_a - image_b`` in the metric's units
    (mm, dB, SSIM; positive: ``image_a`` larger) with its 95% percentile bootstrap CI
    (``n_resamples``, ``seed``; :func:`defaceaudit.stats.median_difference`; zero differences
    kept) and ``ci_note`` when that CI rests on fewer than 10 subjects. ``statistic``,
    ``p_value``, ``method``, ``p_min`` (the smallest p these pairs allow) and ``p_note`` (why
    p cannot fall below 0.05, e.g. ``"too few pairs (N=4, p >= 0.125)"``) are those of
    :func:`defaceaudit.stats.wilcoxon_paired` (zero differences dropped there).
    """
    rows = _checked(rows)
    records = []
    for test_set, defacer, by_type in _blocks(rows):
        for metric in METRICS:
            for a, b in _pairs(by_type):
                x, y = _paired_values(by_type, a, b, metric)
                diff = median_difference(x, y, n_resamples=n_resamples, seed=seed)
                test = wilcoxon_paired(x, y)
                records.append(
                    {
                        "test_set": test_set,
                        "defacer": defacer,
                        "metric": metric,
                        "image_a": a,
                        "image_b": b,
                        "median_diff": diff["median"],
                        "median_diff_ci_low": diff["ci_low"],
                        "median_diff_ci_high": diff["ci_high"],
                        "ci_note": percentile_note(diff["n"]),
                    }
                    | test
                )
    return pd.DataFrame.from_records(records, columns=list(TEST_COLUMNS))


# --- formatting -------------------------------------------------------------------------------


def format_ci(mean: float, low: float, high: float, decimals: int = 2, *, few: bool = False) -> str:
    """``"mean [low, high]"``; ``n/a`` when the mean is NaN, ``"mean [n/a]"`` without an
    interval (a single value). ``few`` appends :data:`FEW_MARK` to an interval (a percentile
    CI on fewer than 10 subjects, explained in a footnote)."""
    if not np.isfinite(mean):
        return NA
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.{decimals}f} [{NA}]"
    mark = FEW_MARK if few else ""
    return f"{mean:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]{mark}"


def format_p(p: float) -> str:
    """Exact p-value: 3 decimals from 0.001 (``0.026``), else 2 significant digits
    (``3.1e-05``); ``n/a`` for NaN; a p-value that underflowed to 0 prints ``<1e-300``."""
    if not np.isfinite(p):
        return NA
    if p >= 0.001:
        return f"{p:.3f}"
    if p > 0:
        return f"{p:.1e}"
    return "<1e-300"


def _test_set_sizes(summary: pd.DataFrame) -> dict[str, int]:
    """N per test set: the most subjects any cell has rows for (finite + NaN + infinite)."""
    counts = summary["n"].astype(int)
    for extra in ("n_missing", "n_infinite"):
        if extra in summary:
            counts = counts + summary[extra].astype(int)
    return counts.groupby(summary["test_set"]).max().to_dict()


def _test_set_label(test_set: str, n: int) -> str:
    """``Internal (N=15)``; unknown test sets keep their name."""
    return f"{TEST_SET_LABELS.get(test_set, test_set)} (N={n})"


def _row_keys(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(test_set, defacer) pairs in table order."""
    keys = summary[["test_set", "defacer"]].drop_duplicates().itertuples(index=False)
    return sorted(keys, key=lambda k: (_preferred_order(k[0], TEST_SETS), str(k[1]).lower()))


def _cells(summary: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Summary rows by (test_set, defacer, metric, image_type)."""
    keys = ["test_set", "defacer", "metric", "image_type"]
    return {tuple(row[keys]): row for _, row in summary.iterrows()}


def _test_rows(tests: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Test rows by (test_set, defacer, metric, image_a, image_b), in the tested order only
    (the sign of the median difference depends on it)."""
    keys = ["test_set", "defacer", "metric", "image_a", "image_b"]
    return {tuple(row[keys]): row for _, row in tests.iterrows()}


def _ci_cell(cells: dict, key: tuple, decimals: int) -> str:
    row = cells.get(key)
    if row is None:
        return NA
    few = few_for_percentile(row["n"])
    return format_ci(row["mean"], row["ci_low"], row["ci_high"], decimals, few=few)


def _diff_cell(tests: dict, key: tuple, decimals: int) -> str:
    """``median [low, high]`` of the paired difference (with the few-subjects mark)."""
    row = tests.get(key)
    if row is None:
        return NA
    few = few_for_percentile(row["n"])
    low, high = row["median_diff_ci_low"], row["median_diff_ci_high"]
    return format_ci(row["median_diff"], low, high, decimals, few=few)


def _p_cell(tests: dict, key: tuple) -> str:
    """The exact p, or the reason no p below 0.05 was possible (``p_note``) instead of it."""
    row = tests.get(key)
    if row is None:
        return NA
    note = row.get("p_note")
    if isinstance(note, str) and note and np.isfinite(row["p_value"]):
        return note
    return format_p(row["p_value"])


def _row_start(test_set: str, defacer: str, sizes: dict[str, int]) -> dict[str, str]:
    return {"Testing set": _test_set_label(test_set, sizes[test_set]), "Defaced by": defacer}


#: what a Table 1 DPM cell carries when the refaced faces are no closer to the originals than
#: the defaced input they were made from: on average, or for some subjects of the row
#: (:func:`_no_better_mark`)
NO_BETTER_MARK = " [attack no better than defaced]"


def _attack_no_better(cells: dict, key: tuple) -> bool:
    """Whether the mean DPM-refaced MASD of ``key`` (test_set, defacer, metric) is at least the
    defaced one's: the attack did not move the face toward the original on that row."""
    defaced, refaced = cells.get((*key, "defaced")), cells.get((*key, "dpm_refaced"))
    if defaced is None or refaced is None:
        return False
    return bool(np.isfinite(refaced["mean"]) and refaced["mean"] >= defaced["mean"])


def _subjects_no_better(rows: pd.DataFrame | None, key: tuple) -> tuple[int, int]:
    """(subjects whose DPM-refaced MASD is at least their defaced one, subjects with both) on
    the row ``key`` (test_set, defacer, metric) of the per-subject ``rows``; (0, 0) without
    rows."""
    if rows is None or rows.empty:
        return 0, 0
    test_set, defacer, metric = key
    row = rows[(rows["test_set"] == test_set) & (rows["defacer"] == defacer)]
    wide = row.pivot_table(index="subject", columns="image_type", values=metric)
    if not {"defaced", "dpm_refaced"} <= set(wide.columns):
        return 0, 0
    both = wide[["defaced", "dpm_refaced"]].dropna()
    return int((both["dpm_refaced"] >= both["defaced"]).sum()), len(both)


def _no_better_mark(cells: dict, rows: pd.DataFrame | None, key: tuple) -> str:
    """:data:`NO_BETTER_MARK` when the row's mean DPM MASD is no better than the defaced one;
    ``" [attack no better than defaced for k of n subjects]"`` when the mean is better but k
    subjects are not; else nothing. A mean can hide a person the models never saw."""
    if _attack_no_better(cells, key):
        return NO_BETTER_MARK
    worse, n = _subjects_no_better(rows, key)
    if worse:
        return f"{NO_BETTER_MARK[:-1]} for {worse} of {n} subjects]"
    return ""


def _no_better_note(table: pd.DataFrame) -> str | None:
    """The footnote for :data:`NO_BETTER_MARK`, when a cell of ``table`` carries it."""
    column = _MASD_COLUMNS["dpm_refaced"]
    if (
        column not in table
        or not table[column].astype(str).str.contains(NO_BETTER_MARK[:-1], regex=False).any()
    ):
        return None
    return (
        f"{NO_BETTER_MARK.strip()}: on this row the DPM-refaced faces are no closer to the "
        "originals than the defaced input, on average or for the subjects counted. The attack "
        "failed there (for example on a person the models never saw, when they were trained on "
        "few people): that shows a weak attack, not that the defacer protects the face."
    )


def _masd_table(
    summary: pd.DataFrame, tests: pd.DataFrame, metric: str, rows: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Table 1 layout for ``metric``: three mean [CI] columns, then per tested pair the median
    difference [CI] and the p-value (or why it cannot be small). ``rows`` (per subject, as
    :func:`summarise` takes them) let the DPM cell count the subjects the attack failed on."""
    cells, by_key, sizes = _cells(summary), _test_rows(tests), _test_set_sizes(summary)
    records = []
    for test_set, defacer in _row_keys(summary):
        record = _row_start(test_set, defacer, sizes)
        for image_type, column in _MASD_COLUMNS.items():
            record[column] = _ci_cell(cells, (test_set, defacer, metric, image_type), 2)
        record[_MASD_COLUMNS["dpm_refaced"]] += _no_better_mark(
            cells, rows, (test_set, defacer, metric)
        )
        for pair, column in _P_COLUMNS.items():
            key = (test_set, defacer, metric, *pair)
            record[_DIFF_COLUMNS[pair]] = _diff_cell(by_key, key, 2)
            record[column] = _p_cell(by_key, key)
        records.append(record)
    pairs = [c for pair in _P_COLUMNS for c in (_DIFF_COLUMNS[pair], _P_COLUMNS[pair])]
    columns = [*_ROW_LABELS, *_MASD_COLUMNS.values(), *pairs]
    return pd.DataFrame.from_records(records, columns=columns)


def _quality_pair_columns(region: str) -> tuple[str, str]:
    """Column labels of the population average vs DPMs comparison of a region in Tables 2-3."""
    label = _REGIONS[region]
    return f"{label}: population average - DPMs", f"{label}: p"


def _quality_table(
    summary: pd.DataFrame, tests: pd.DataFrame, metrics: dict[str, str], decimals: int
) -> pd.DataFrame:
    """Tables 2-3 layout: whole head then face (M5), each defaced / population average / DPMs,
    then per region the median difference population average - DPMs [CI] and its p."""
    cells, by_key, sizes = _cells(summary), _test_rows(tests), _test_set_sizes(summary)
    columns = [
        f"{_REGIONS[region]}: {label}" for region in metrics for label in _QUALITY_COLUMNS.values()
    ]
    columns += [c for region in metrics for c in _quality_pair_columns(region)]
    records = []
    for test_set, defacer in _row_keys(summary):
        record = _row_start(test_set, defacer, sizes)
        for region, metric in metrics.items():
            for image_type, label in _QUALITY_COLUMNS.items():
                key = (test_set, defacer, metric, image_type)
                record[f"{_REGIONS[region]}: {label}"] = _ci_cell(cells, key, decimals)
        for region, metric in metrics.items():
            diff_column, p_column = _quality_pair_columns(region)
            key = (test_set, defacer, metric, *_QUALITY_PAIR)
            record[diff_column] = _diff_cell(by_key, key, decimals)
            record[p_column] = _p_cell(by_key, key)
        records.append(record)
    return pd.DataFrame.from_records(records, columns=[*_ROW_LABELS, *columns])


def paper_tables(
    summary: pd.DataFrame, tests: pd.DataFrame, rows: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """Tables 1-3 as string frames, keyed by :data:`TABLE_NAMES`.

    Rows are test set x defacer (``Internal (N=15)``, ``quickshear``); cells are
    ``mean [low, high]`` (2 decimals; SSIM 3, because face SSIM of defaced images sits near 0)
    or ``n/a`` for an image type without rows, with :data:`FEW_MARK` after a CI on fewer than
    10 subjects. Beside each p-value (Table 1: the three tested pairs; Tables 2-3: population
    average vs DPMs per region) the median paired difference (first - second image, the
    metric's units) with its CI; a p-value is exact (``0.026``, ``3.1e-05``), or, where the
    pairs are too few for any p < 0.05, the reason (``too few pairs (N=4, p >= 0.125)``).
    A Table 1 DPM cell no better than the defaced one, on average or (given the per-subject
    ``rows``) for some subjects, carries :data:`NO_BETTER_MARK`.
    """
    head_face_psnr = {"head": "psnr_head_db", "face": "psnr_face_db"}
    return {
        "table1_masd": _masd_table(summary, tests, "masd_mm", rows),
        "table1_masd_symmetric": _masd_table(summary, tests, "masd_symmetric_mm", rows),
        "table2_psnr": _quality_table(summary, tests, head_face_psnr, 2),
        "table3_ssim": _quality_table(
            summary, tests, {"head": "ssim_head", "face": "ssim_face"}, 3
        ),
    }


# --- Markdown ---------------------------------------------------------------------------------

_TITLES = {
    "table1_masd": "Table 1. Mean absolute surface distance (mm) between the original face and the "
    "defaced or refaced face (other -> original)",
    "table1_masd_symmetric": "Table 1 (symmetric). Mean absolute surface distance (mm) between the "
    "original face and the defaced or refaced face (mean of both directions)",
    "table2_psnr": "Table 2. Peak signal-to-noise ratio (PSNR, dB) of defaced, "
    "population-average-refaced and DPMs-refaced images against the original",
    "table3_ssim": "Table 3. Structural similarity index measure (SSIM) of defaced, "
    "population-average-refaced and DPMs-refaced images against the original",
}
_MASD_DIRECTION = {
    "masd_mm": "For every vertex of the defaced or refaced face, the distance (mm) to the nearest "
    "vertex of the original face, averaged over the vertices (other -> original; the paper does "
    "not say which direction it used).",
    "masd_symmetric_mm": "Mean of the two directed mean distances (mm): other -> original and "
    "original -> other. Table 1 has the other -> original direction alone.",
}


def _m5_note(summary: pd.DataFrame) -> str:
    """The face region's definition, as computed: with or without a population average."""
    if (summary["image_type"] == "population_average").any():
        region = (
            "the intersection of the region removed by the defacer, the region altered by "
            "population-average refacing and the head masks of the original and the "
            "population-average image (the paper's area changed by defacing)"
        )
    else:
        region = (
            "the region removed by the defacer inside the original's head mask (no "
            "population-average refacer configured: the paper's M2 and M4 are left out)"
        )
    return f"Face (M5): {region}. Whole head: the original's head mask."


def _values_note(n_resamples: int, seed: int) -> str:
    return (
        f"Values: mean and {CONFIDENCE:.0%} confidence interval [in square brackets] over "
        f"subjects, percentile bootstrap with n={n_resamples} resamples (seed {seed}). "
        "N: subjects of the testing set with results (the most in any cell; fewer than the "
        "split's subjects where jobs failed). n/a: no rows for that image type (refacing off "
        "for the DPM column, no population-average refacer configured for its column, or not "
        f"run yet). {FEW_MARK}: a percentile CI over fewer than 10 subjects; it cannot reach "
        "beyond the few values seen and covers the truth less often than stated (about 80 % "
        "instead of 95 % for the mean of 4 normal values): read it as a rough range."
    )


def _test_sets_note() -> str:
    """What the testing sets are, in the paper and in the demo cohort, and what follows."""
    return (
        "Testing sets: Internal = subjects left out of training, from the datasets the "
        "diffusion models were trained on (the paper: 15 subjects of Kirby-21 and OASIS3); "
        "External = subjects of a dataset never seen in training (the paper: 469 BLSA "
        'subjects). On the demo cohort both are synthetic (README, "The demo cohort"): an '
        "internal subject is a new random deformation of one of the two real heads the "
        "training subjects were made from, so the same two people the models learnt, and "
        "every external subject is a deformation of one third real head, a person never seen. "
        "The paper's Table 1 finding, DPM-refaced faces closer to the original than a "
        "population-average face on people the models never saw, needs models trained on "
        "many real people; the demo cannot reproduce it. On the demo, a DPM advantage on the "
        "internal set shows faces recalled from training, and the external set tests a single "
        "unseen face."
    )


def _population_note(summary: pd.DataFrame) -> str:
    images = summary.loc[summary["image_type"] == "population_average", "image"]
    names = sorted({n for joined in images.dropna() for n in str(joined).split("+") if n})
    made_by = f" (here: {', '.join(names)})" if names else ""
    return (
        f"Population average: the original face replaced by a population-average face{made_by}; "
        "the paper used mri_reface. DPMs: the diffusion refacing models applied to the defaced "
        "image of the same row."
    )


def _tests_note(tests: pd.DataFrame, metrics: Iterable[str], table1: bool) -> str:
    used = tests.loc[tests["metric"].isin(list(metrics)), "method"].value_counts()
    counts = ", ".join(f"{method} ({count})" for method, count in used.items()) or "none"
    which = (
        "The paper's Table 1 reports population average vs DPMs; the two defaced columns are added."
        if table1
        else "The paper compares these two images in its text (section 4), without a test."
    )
    return (
        "Median difference: the median over subjects of the paired difference, first image "
        "minus second, in the table's units, with its 95% percentile bootstrap CI over "
        "subjects; it shows which way and how far the images differ, where a "
        "p-value does not. p: two-sided Wilcoxon signed-rank test over the same pairs (SciPy; "
        "zero differences dropped, Wilcoxon's convention). Exact null distribution for at "
        "most 50 pairs without zero or tied differences, exhaustive sign-flip permutation for "
        "at most 13 pairs with ties, normal approximation otherwise; tests by method: "
        f"{counts}. With m non-zero differences no two-sided p can fall below 2^(1-m) (every "
        "difference of one sign): 0.125 for 4 pairs, 0.0625 for 5. Where that floor is not "
        'below 0.05, the cell says "too few pairs" with the floor instead of a p-value that '
        "could never have been significant (the p is in face_metrics_tests.tsv). " + which
    )


def _infinite_note(summary: pd.DataFrame, metrics: Iterable[str]) -> str:
    n_inf = int(summary.loc[summary["metric"].isin(list(metrics)), "n_infinite"].sum())
    return (
        "PSNR is infinite where an image equals the original inside the region (MSE = 0); such "
        f"values are left out of the mean and CI ({n_inf} in this table; n_infinite in the "
        "summary). PSNR = 10 log10(1 / MSE), intensities of both images divided by the "
        "original's 99.5th percentile inside its head mask (the same scale for both regions)."
    )


def _footnotes(
    name: str, summary: pd.DataFrame, tests: pd.DataFrame, n_resamples: int, seed: int
) -> list[str]:
    notes = [_values_note(n_resamples, seed)]
    if name.startswith("table1"):
        metric = "masd_symmetric_mm" if name.endswith("symmetric") else "masd_mm"
        notes += [_MASD_DIRECTION[metric], _tests_note(tests, [metric], table1=True)]
    elif name == "table2_psnr":
        psnr = ("psnr_head_db", "psnr_face_db")
        notes += [_m5_note(summary), _infinite_note(summary, psnr)]
        notes += [_tests_note(tests, psnr, table1=False)]
    else:
        ssim = "SSIM: Gaussian window (sigma 1.5 voxels), mean of the map in the region."
        notes += [_m5_note(summary), ssim]
        notes += [_tests_note(tests, ("ssim_head", "ssim_face"), table1=False)]
    return notes + [_population_note(summary), _test_sets_note()]


def _markdown_body(table: pd.DataFrame) -> str:
    """Markdown table with the testing-set label shown once per block, as in the paper."""
    shown = table.copy()
    repeated = shown["Testing set"].eq(shown["Testing set"].shift())
    shown.loc[repeated, "Testing set"] = ""
    # cells are already formatted: keep tabulate from re-parsing "1.000" or "3.1e-05" as numbers
    return shown.to_markdown(index=False, disable_numparse=True)


def table_markdown(
    name: str,
    table: pd.DataFrame,
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> str:
    """Title line, the table, and footnotes (bootstrap, test, regions, population average)."""
    notes = _footnotes(name, summary, tests, n_resamples, seed)
    no_better = _no_better_note(table)
    parts = [_TITLES[name], _markdown_body(table), *([no_better] if no_better else []), *notes]
    return "\n\n".join(parts) + "\n"


# --- writing ----------------------------------------------------------------------------------


def _check_out(out: Mapping[str, str]) -> None:
    """``summary`` and ``tests`` required; table keys optional; nothing else allowed."""
    allowed = {"summary", "tests", *TABLE_NAMES, *(f"{n}_md" for n in TABLE_NAMES)}
    unknown = sorted(set(out) - allowed)
    lacking = sorted({"summary", "tests"} - set(out))
    if unknown or lacking:
        raise ValueError(f"face-table outputs: unknown keys {unknown}, missing keys {lacking}")


def _write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


#: what a DPM cell carries when the attack behind it did not converge (see attack_notes)
NOT_CONVERGED_MARK = " [attack not converged]"


def mark_unconverged(table: pd.DataFrame, attack_notes: Mapping[str, str]) -> pd.DataFrame:
    """``table`` with :data:`NOT_CONVERGED_MARK` after every DPM cell (columns naming DPMs) of
    the rows of a defacer in ``attack_notes`` (defacer -> note; only unconverged ones)."""
    if not attack_notes:
        return table
    table = table.copy()
    dpm_columns = [c for c in table.columns if "DPM" in str(c)]
    defacer_column = next((c for c in table.columns if str(c).lower() == "defacer"), None)
    if defacer_column is None:
        return table
    rows = table[defacer_column].isin(list(attack_notes))
    for column in dpm_columns:
        table.loc[rows, column] = table.loc[rows, column].astype(str) + NOT_CONVERGED_MARK
    return table


def _attack_warning(attack_notes: Mapping[str, str]) -> str:
    """A bold line for the top of a table: which defacers' DPM results are no risk estimate."""
    notes = sorted(set(attack_notes.values()))
    defacers = ", ".join(sorted(attack_notes))
    return f"**DPM results of {defacers}: {'; '.join(notes)}** (see the learning curves)."


def write_face_tables(
    rows: pd.DataFrame,
    out: Mapping[str, str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    attack_notes: Mapping[str, str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Write the summary and tests TSVs and each requested table (``<name>`` TSV, ``<name>_md``).

    ``out`` maps ``summary``, ``tests`` and any of ``<name>`` / ``<name>_md`` for
    :data:`TABLE_NAMES` to paths; every file is written atomically. ``attack_notes``: defacer
    -> note for each defacer whose refacing models did not converge
    (:mod:`defaceaudit.reface.validation`): their DPM cells are marked
    (:func:`mark_unconverged`) and each Markdown table opens with the note. Returns the tables.
    """
    _check_out(out)
    attack_notes = dict(attack_notes or {})
    summary = summarise(rows, n_resamples=n_resamples, seed=seed)
    tests = paired_tests(rows, n_resamples=n_resamples, seed=seed)
    write_tsv(summary, out["summary"])
    write_tsv(tests, out["tests"])
    tables = {
        name: mark_unconverged(table, attack_notes)
        for name, table in paper_tables(summary, tests, rows).items()
    }
    for name, table in tables.items():
        if name in out:
            write_tsv(table, out[name])
        if f"{name}_md" in out:
            text = table_markdown(name, table, summary, tests, n_resamples=n_resamples, seed=seed)
            if attack_notes:
                title, _, rest = text.partition("\n\n")
                text = f"{title}\n\n{_attack_warning(attack_notes)}\n\n{rest}"
            _write_text(text, out[f"{name}_md"])
    return tables
