"""Report figures: face-metric summaries (paper Tables 1-3), defacing QC and re-identification.

Each ``plot_*`` function takes a pandas DataFrame (or the path of a TSV with ``n/a`` for missing
values) and writes one PNG atomically (:func:`defaceaudit.tables.atomic_path`). Figures are drawn
on matplotlib's Agg canvas without pyplot, so no global figure state is touched and nothing opens
a window. Missing data never raise: an empty frame, an absent image type or test set, or a NaN
confidence bound gives a figure that says what is missing in a note at its foot.

Input frames (column names as the metric and statistics stages write them):

* **summary** (long): ``test_set, defacer, metric, image_type, n, mean, ci_low, ci_high`` with
  ``metric`` in :data:`MASD_METRICS` / :data:`SIMILARITY_METRICS` and ``ci_*`` the 95% bootstrap
  percentile interval of the mean;
* **per-subject** (wide): ``subject, test_set, defacer, image_type`` plus one column per metric;
* **QC table**: ``defacer, subject, status`` (raw codes of :data:`defaceaudit.deface.qc.STATUSES`
  or their
  report labels), ``brain_altered_fraction``, ``face_surface_intact_fraction``;
* **re-identification**: ``test_set, image_type, defacer, rank1_rate, rank1_ci_low,
  rank1_ci_high, rank5_rate, rank5_ci_low, rank5_ci_high, chance_rank1, chance_rank5`` (rates in
  0..1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from defaceaudit.stats.bootstrap import MIN_PERCENTILE_N, few_for_percentile
from defaceaudit.tables import atomic_path, read_tsv

__all__ = [
    "IMAGE_TYPE_LABELS",
    "MASD_METRICS",
    "SIMILARITY_METRICS",
    "TEST_SET_LABELS",
    "plot_masd",
    "plot_qc",
    "plot_reidentification",
    "plot_similarity",
    "small_sample_note",
]

#: Image types in plotting order, with their legend labels.
IMAGE_TYPE_LABELS = {
    "original": "original",
    "defaced": "defaced",
    "population_average": "population average",
    "dpm_refaced": "DPM-refaced",
}
#: Test sets in plotting order, with their panel labels.
TEST_SET_LABELS = {"internal_test": "internal test set", "external_test": "external test set"}
#: MASD metrics (rows of :func:`plot_masd`) and their axis labels.
MASD_METRICS = {
    "masd_mm": "MASD, other face → original (mm)",
    "masd_symmetric_mm": "MASD, symmetric (mm)",
}
#: Similarity metrics (rows of :func:`plot_similarity`) and their axis labels.
SIMILARITY_METRICS = {
    "ssim_head": "SSIM, whole head",
    "ssim_face": "SSIM, face area",
    "psnr_head_db": "PSNR, whole head (dB)",
    "psnr_face_db": "PSNR, face area (dB)",
}
#: QC outcomes in stacking order: raw status code -> report label (as in defaceaudit.deface.qc).
QC_STATUS_LABELS = {
    "success": "Success",
    "failure_I": "Failure I",
    "failure_II": "Failure II",
    "failure": "Failure (identical/empty)",
    "job_failed": "Job failed",
}
_QC_COLOURS = {
    "Success": "#4c9a2a",
    "Failure I": "#e69f00",
    "Failure II": "#c0392b",
    "Failure (identical/empty)": "#8e6bbf",
    "Job failed": "#7f7f7f",
}
_SUMMARY_COLUMNS = ("test_set", "defacer", "metric", "image_type", "mean", "ci_low", "ci_high")
_REID_COLUMNS = ("test_set", "defacer", "image_type")
#: Dodge: the image types of one defacer share this fraction of the unit x spacing.
_GROUP_WIDTH = 0.75
_NO_DEFACER = "(no defacer)"


# --------------------------------------------------------------------------------- helpers
def _as_frame(data: pd.DataFrame | str | os.PathLike | None) -> pd.DataFrame:
    if data is None:
        return pd.DataFrame()
    if isinstance(data, pd.DataFrame):
        return data.copy()
    return read_tsv(data, "table", empty_ok=True)


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Empty frames pass (missing data); a frame with rows must have ``columns``."""
    if frame.empty:
        return pd.DataFrame(columns=list(dict.fromkeys([*columns, *frame.columns])))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} table lacks columns {missing}; it has {list(frame.columns)}")
    return frame


def _ordered(values: pd.Series, preferred: Sequence[str]) -> list[str]:
    """Distinct non-null values: those in ``preferred`` first in its order, then the rest."""
    present = list(dict.fromkeys(str(v) for v in values.dropna()))
    return [p for p in preferred if p in present] + [v for v in present if v not in preferred]


def _palette(image_types: Sequence[str]) -> dict[str, tuple]:
    """One fixed colour per known image type, so colours agree across figures."""
    colours = sns.color_palette("colorblind", 10)
    fixed = {"original": colours[7], "defaced": colours[3], "population_average": colours[0]}
    fixed["dpm_refaced"] = colours[2]
    spare = iter(c for c in colours if c not in fixed.values())
    return {t: fixed[t] if t in fixed else next(spare, colours[-1]) for t in image_types}


def _offsets(n: int) -> np.ndarray:
    """x offsets of ``n`` dodged series around a group centre."""
    if n <= 1:
        return np.zeros(max(n, 1))
    step = _GROUP_WIDTH / n
    return (np.arange(n) - (n - 1) / 2) * step


def _set_defacer_ticks(ax: Axes, defacers: Sequence[str], rotate_above: int) -> None:
    """Defacer names under the groups; slanted when more than ``rotate_above`` would collide."""
    if len(defacers) > rotate_above:
        ax.set_xticks(
            range(len(defacers)), defacers, rotation=30, ha="right", rotation_mode="anchor"
        )
    else:
        ax.set_xticks(range(len(defacers)), defacers)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


@contextlib.contextmanager
def _seeded_global_numpy(seed: int):
    """Seed NumPy's global generator for the block and restore its state afterwards.

    seaborn's stripplot jitters with ``np.random.uniform`` and takes no generator; without a
    seed every rerun writes a different PNG (and a different checksum in the report).
    """
    state = np.random.get_state()  # noqa: NPY002 (the legacy global is what seaborn uses)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _empty_panel(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _finish(fig: Figure, out_png: str | os.PathLike, title: str, notes: Sequence[str]) -> None:
    """Title, notes at the foot, and an atomic PNG write."""
    fig.suptitle(title, fontsize=12)
    if notes:
        text = "\n".join(f"Note: {n}" for n in dict.fromkeys(notes))
        fig.supxlabel(text, fontsize=8, x=0.01, ha="left", color="0.25")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")


def _interval_panel(
    ax: Axes,
    frame: pd.DataFrame,
    value: str,
    low: str,
    high: str,
    defacers: Sequence[str],
    image_types: Sequence[str],
    palette: dict[str, tuple],
    points: pd.DataFrame | None = None,
    point_value: str | None = None,
) -> list[str]:
    """Draw value with [low, high] error bars per defacer (x) and image type (dodged colour).

    ``points`` (optional) holds one row per subject with ``defacer``, ``image_type`` and the
    column ``point_value``: drawn as faint jittered dots behind the means. Returns notes on what
    could not be drawn (NaN means, NaN intervals).
    """
    notes: list[str] = []
    offsets = dict(zip(image_types, _offsets(len(image_types)), strict=True))
    jitter_width = 0.35 * _GROUP_WIDTH / max(len(image_types), 1)
    rng = np.random.default_rng(0)  # jitter only: fixed so reruns give the same PNG
    for xi, defacer in enumerate(defacers):
        for image_type in image_types:
            x = xi + offsets[image_type]
            colour = palette[image_type]
            if points is not None and point_value in points.columns:
                sel = points[(points["defacer"] == defacer) & (points["image_type"] == image_type)]
                ys = pd.to_numeric(sel[point_value], errors="coerce").dropna().to_numpy()
                if ys.size:
                    xs = x + rng.uniform(-jitter_width, jitter_width, ys.size)
                    ax.scatter(xs, ys, s=9, color=colour, alpha=0.35, linewidths=0, zorder=1)
            rows = frame[(frame["defacer"] == defacer) & (frame["image_type"] == image_type)]
            if rows.empty:
                continue
            row = rows.iloc[0]
            mean = pd.to_numeric(row[value], errors="coerce")
            lo = pd.to_numeric(row[low], errors="coerce")
            hi = pd.to_numeric(row[high], errors="coerce")
            if not np.isfinite(mean):
                notes.append(f"no value for {defacer} / {IMAGE_TYPE_LABELS.get(image_type)}")
                continue
            if np.isfinite(lo) and np.isfinite(hi):
                yerr = np.array([[max(mean - lo, 0.0)], [max(hi - mean, 0.0)]])
                marker_face = colour
            else:
                yerr = None
                marker_face = "white"  # hollow marker: mean without a confidence interval
                notes.append("hollow markers: mean without a 95% CI (CI not available)")
            ax.errorbar(
                [x],
                [mean],
                yerr=yerr,
                fmt="o",
                color=colour,
                markerfacecolor=marker_face,
                markersize=6,
                capsize=3,
                elinewidth=1.4,
                zorder=3,
            )
    _set_defacer_ticks(ax, defacers, rotate_above=4)
    ax.set_xlim(-0.6, len(defacers) - 0.4)
    ax.grid(axis="y", color="0.9", zorder=0)
    ax.set_axisbelow(True)
    return notes


def _legend(fig: Figure, image_types: Sequence[str], palette: dict, extra=()) -> None:
    handles = [
        Line2D([], [], marker="o", color=palette[t], linestyle="none", markersize=6)
        for t in image_types
    ]
    labels = [IMAGE_TYPE_LABELS.get(t, t) for t in image_types]
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title="image type", frameon=False)


def small_sample_note(n_values: pd.Series) -> str | None:
    """A figure note when any interval rests on fewer than 10 subjects (``n`` of the summary,
    or ``n_probes``): a percentile bootstrap CI on so few is too narrow. None otherwise."""
    n = pd.to_numeric(pd.Series(n_values), errors="coerce").dropna().astype(int)
    few = n[[few_for_percentile(v) for v in n]]
    if few.empty:
        return None
    return (
        f"bars over fewer than {MIN_PERCENTILE_N} subjects (here down to n = {few.min()}): "
        "percentile CIs too narrow, read them as rough ranges"
    )


def _panel_title(test_set: str, n_values: pd.Series) -> str:
    label = TEST_SET_LABELS.get(test_set, test_set)
    n = pd.to_numeric(n_values, errors="coerce").dropna()
    return f"{label} (n = {int(n.max())})" if len(n) else label


def _metric_grid(
    summary: pd.DataFrame,
    metrics: dict[str, str],
    out_png: str | os.PathLike,
    title: str,
    per_subject: pd.DataFrame | str | os.PathLike | None,
) -> None:
    """Rows = metrics, columns = test sets; mean and 95% CI per defacer and image type."""
    summary = _require(_as_frame(summary), _SUMMARY_COLUMNS, "summary")
    summary = summary[summary["metric"].isin(list(metrics))].copy()
    summary["defacer"] = summary["defacer"].fillna(_NO_DEFACER)
    points = _as_frame(per_subject)
    if not points.empty:
        points = _require(points, ("test_set", "defacer", "image_type"), "per-subject")
        points["defacer"] = points["defacer"].fillna(_NO_DEFACER)
    test_sets = _ordered(summary["test_set"], list(TEST_SET_LABELS)) or list(TEST_SET_LABELS)
    image_types = _ordered(summary["image_type"], list(IMAGE_TYPE_LABELS))
    defacers = _ordered(summary["defacer"], [])
    palette = _palette(image_types)
    notes: list[str] = []
    if summary.empty:
        notes.append("no summary rows for these metrics (nothing computed yet?)")
    for wanted in TEST_SET_LABELS:
        if not summary.empty and wanted not in test_sets:
            notes.append(f"no rows for the {TEST_SET_LABELS[wanted]}")
    for wanted in ("defaced", "population_average", "dpm_refaced"):
        if not summary.empty and wanted not in image_types:
            notes.append(f"image type '{IMAGE_TYPE_LABELS[wanted]}' not available")

    fig = _new_figure(3.2 + 3.0 * len(test_sets), 0.9 + 2.7 * len(metrics))
    axes = fig.subplots(len(metrics), len(test_sets), squeeze=False, sharey="row")
    for r, (metric, ylabel) in enumerate(metrics.items()):
        for c, test_set in enumerate(test_sets):
            ax = axes[r, c]
            panel = summary[(summary["metric"] == metric) & (summary["test_set"] == test_set)]
            if r == 0:
                ax.set_title(_panel_title(test_set, panel.get("n", pd.Series(dtype=float))))
            if c == 0:
                ax.set_ylabel(ylabel, fontsize=9)
            if panel.empty:
                _empty_panel(ax, "no data")
                continue
            pts = None
            if not points.empty and metric in points.columns:
                pts = points[points["test_set"] == test_set]
            notes += _interval_panel(
                ax, panel, "mean", "ci_low", "ci_high", defacers, image_types, palette, pts, metric
            )
            if metric.startswith("ssim"):
                ax.axhline(1.0, color="0.6", linewidth=0.8, linestyle=":")
            if metric.startswith("masd"):
                ax.set_ylim(bottom=0.0)  # a distance: keep zero (identical faces) in view
    if not points.empty and not summary.empty:
        notes.append("faint dots: individual subjects; markers and bars: mean and 95% CI")
    elif not summary.empty:
        notes.append("markers and bars: mean and 95% bootstrap CI")
    few = small_sample_note(summary.get("n", pd.Series(dtype=float)))
    if few:
        notes.append(few)
    _legend(fig, image_types, palette)
    _finish(fig, out_png, title, notes)


# ------------------------------------------------------------------------------ public API
def plot_masd(
    summary: pd.DataFrame | str | os.PathLike,
    out_png: str | os.PathLike,
    rows: pd.DataFrame | str | os.PathLike | None = None,
) -> None:
    """MASD to the original face (paper Table 1): mean and 95% CI per defacer and image type.

    Panel rows: ``masd_mm`` (every vertex of the other face to its nearest vertex of the
    original) and ``masd_symmetric_mm``; columns: test sets. ``rows``
    (optional, wide per-subject metrics) adds one faint dot per subject. Lower is closer to the
    original face. Writes ``out_png`` atomically.
    """
    _metric_grid(summary, MASD_METRICS, out_png, "Face surface distance to the original", rows)


def plot_similarity(
    summary: pd.DataFrame | str | os.PathLike,
    out_png: str | os.PathLike,
    rows: pd.DataFrame | str | os.PathLike | None = None,
) -> None:
    """SSIM and PSNR to the original, whole head and face area (paper Tables 2 and 3).

    Panel rows: ``ssim_head``, ``ssim_face``, ``psnr_head_db``, ``psnr_face_db``; columns: test
    sets; mean and 95% CI per defacer (x) and image type (colour); ``rows`` (optional, wide
    per-subject metrics) adds one faint dot per subject. Higher
    is more similar. Writes ``out_png`` atomically.
    """
    _metric_grid(summary, SIMILARITY_METRICS, out_png, "Image similarity to the original", rows)


def _qc_label(status: object) -> str:
    if not isinstance(status, str) or not status:
        return "unknown"
    return QC_STATUS_LABELS.get(status, status)


def plot_qc(qc_table: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Defacing outcomes per defacer (Gao et al. 2023 failure classes) and the QC measures.

    Panels: (1) stacked bar of outcome counts per defacer (Success, Failure I = face left,
    Failure II = brain removed, identical/empty output, job failed), counts written on the bars;
    (2) strip of ``brain_altered_fraction`` per defacer, coloured by outcome, with the Failure II
    threshold (column ``brain_threshold``, if present) dashed; (3) the same for
    ``face_surface_intact_fraction`` and the Failure I threshold (``face_threshold``), when the
    column exists. Fractions in percent; the brain fraction on a symmetric-log axis (0 stays
    visible, 0.1% and 5% are apart). Writes ``out_png`` atomically.
    """
    table = _require(_as_frame(qc_table), ("defacer", "status"), "QC")
    table["defacer"] = table["defacer"].fillna(_NO_DEFACER).astype(str)
    table["outcome"] = [_qc_label(s) for s in table["status"]]
    defacers = _ordered(table["defacer"], [])
    outcomes = _ordered(table["outcome"], list(_QC_COLOURS))
    colours = {o: _QC_COLOURS.get(o, "#333333") for o in outcomes}
    strips = [
        (col, thr, label)
        for col, thr, label in (
            ("brain_altered_fraction", "brain_threshold", "brain voxels altered"),
            ("face_surface_intact_fraction", "face_threshold", "facial surface left intact"),
        )
        if col in table.columns or col == "brain_altered_fraction"
    ]
    notes: list[str] = []
    fig = _new_figure(2.0 + 1.6 * max(len(defacers), 2) * (1 + len(strips)) / 2, 4.4)
    axes = fig.subplots(1, 1 + len(strips), squeeze=False)[0]

    ax = axes[0]
    ax.set_title("outcome per defacer", fontsize=10)
    if table.empty:
        _empty_panel(ax, "no QC records")
        notes.append("QC table is empty (no defacing jobs recorded)")
    else:
        counts = pd.crosstab(table["defacer"], table["outcome"]).reindex(
            index=defacers, columns=outcomes, fill_value=0
        )
        bottom = np.zeros(len(defacers))
        for outcome in outcomes:
            heights = counts[outcome].to_numpy(dtype=float)
            bars = ax.bar(
                range(len(defacers)), heights, bottom=bottom, color=colours[outcome], width=0.7
            )
            labels = [f"{int(h)}" if h > 0 else "" for h in heights]
            ax.bar_label(bars, labels=labels, label_type="center", fontsize=8, color="white")
            bottom += heights
        _set_defacer_ticks(ax, defacers, rotate_above=2)
        ax.set_ylabel("images")
        ax.set_ylim(0, max(bottom.max(), 1) * 1.05)
        ax.yaxis.get_major_locator().set_params(integer=True)

    percent = FuncFormatter(lambda v, _: f"{100 * v:g}%")
    for ax, (column, threshold, label) in zip(axes[1:], strips, strict=True):
        ax.set_title(label, fontsize=10)
        values = table.assign(
            value=pd.to_numeric(
                table.get(column, pd.Series(np.nan, index=table.index)), errors="coerce"
            )
        )
        values = values[np.isfinite(values["value"])]
        if values.empty:
            _empty_panel(ax, f"no {column} values")
            continue
        with _seeded_global_numpy(0):  # seaborn jitters with np.random: same PNG on reruns
            sns.stripplot(
                data=values,
                x="defacer",
                y="value",
                hue="outcome",
                order=defacers,
                hue_order=[o for o in outcomes if o in set(values["outcome"])],
                palette=colours,
                ax=ax,
                size=5,
                alpha=0.8,
                jitter=0.2,
                legend=False,
            )
        if threshold in table.columns:
            thr = pd.to_numeric(table[threshold], errors="coerce").dropna()
            if len(thr):
                ax.axhline(float(thr.median()), color="0.3", linestyle="--", linewidth=1)
        if column == "brain_altered_fraction":
            # Failure II starts at 1%: a log scale separates 0.1% from 5%; symlog keeps 0
            ax.set_yscale("symlog", linthresh=1e-3, linscale=0.5)
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(percent)
        ax.set_xlabel("")
        ax.set_ylabel("fraction (%)")
        _set_defacer_ticks(ax, defacers, rotate_above=2)
        ax.grid(axis="y", color="0.9")
        ax.set_axisbelow(True)
    no_output = int((table["outcome"] == "Job failed").sum()) if len(table) else 0
    if no_output:
        notes.append(f"{no_output} failed job(s) have no QC measures and appear only in the bars")
    handles = [Patch(color=colours[o]) for o in outcomes]
    labels = list(outcomes)
    if any(t in table.columns for _, t, _ in strips):
        handles.append(Line2D([], [], color="0.3", linestyle="--"))
        labels.append("failure threshold")
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title="outcome", frameon=False)
    _finish(fig, out_png, "Defacing quality control", notes)


def plot_reidentification(
    reid: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike
) -> None:
    """Face re-identification rates with 95% CIs per defacer (x) and image type (colour).

    Panel rows: rank-1 and rank-5 identification rates (a probe counts as identified when its own
    original face is among the 1 or 5 gallery faces nearest to it), per matcher where a
    ``matcher`` column names several (``surface``, ``face_recognition``); columns: test sets. The
    chance rate (``chance_rank1``/``chance_rank5``, k / gallery size) is drawn as a dashed
    segment per defacer. Rates in percent. A table with ``image`` but no ``defacer`` column (as
    :func:`defaceaudit.metrics.reidentify.summarise_ranks` groups) is plotted per image instead.
    Writes ``out_png`` atomically.
    """
    reid = _as_frame(reid)
    if "defacer" not in reid.columns and "image" in reid.columns:
        # summaries grouped by the producing image (defaceaudit.metrics.reidentify) have no
        # defacer column: the image name (defacer or refacer) then labels the x axis
        reid = reid.assign(defacer=reid["image"])
    reid = _require(reid, _REID_COLUMNS, "re-identification")
    reid["defacer"] = reid["defacer"].fillna(_NO_DEFACER)
    test_sets = _ordered(reid["test_set"], list(TEST_SET_LABELS)) or list(TEST_SET_LABELS)
    image_types = _ordered(reid["image_type"], list(IMAGE_TYPE_LABELS))
    defacers = _ordered(reid["defacer"], [])
    palette = _palette(image_types)
    notes: list[str] = []
    if reid.empty:
        notes.append("no re-identification results (nothing computed yet?)")
    # rank-k is reported only where k is under half the gallery: no empty row for the others
    matchers = list(dict.fromkeys(reid["matcher"].dropna())) if "matcher" in reid.columns else []
    subsets = [(m, reid[reid["matcher"] == m]) for m in matchers] or [("", reid)]
    panel_rows = [
        (matcher, k, subset)
        for matcher, subset in subsets
        for k in (1, 5)
        if k == 1 or (f"rank{k}_rate" in subset.columns and subset[f"rank{k}_rate"].notna().any())
    ]
    fig = _new_figure(3.2 + 3.0 * len(test_sets), 0.9 + 2.7 * len(panel_rows))
    axes = fig.subplots(len(panel_rows), len(test_sets), squeeze=False, sharey=True)
    percent = FuncFormatter(lambda v, _: f"{100 * v:g}%")
    drew_chance = False
    for r, (matcher, k, subset) in enumerate(panel_rows):
        rate, low, high, chance = (
            f"rank{k}_rate",
            f"rank{k}_ci_low",
            f"rank{k}_ci_high",
            f"chance_rank{k}",
        )
        for c, test_set in enumerate(test_sets):
            ax = axes[r, c]
            panel = subset[subset["test_set"] == test_set]
            if r == 0:
                ax.set_title(_panel_title(test_set, panel.get("n_probes", pd.Series())))
            if c == 0:
                by = f"{matcher.replace('_', ' ')}\n" if len(matchers) > 1 else ""
                ax.set_ylabel(f"{by}rank-{k} identification rate", fontsize=9)
            if panel.empty or rate not in panel.columns:
                _empty_panel(ax, "no data")
                continue
            for col in (low, high, chance):
                if col not in panel.columns:
                    panel = panel.assign(**{col: np.nan})
            notes += _interval_panel(ax, panel, rate, low, high, defacers, image_types, palette)
            for xi, defacer in enumerate(defacers):
                levels = pd.to_numeric(
                    panel.loc[panel["defacer"] == defacer, chance], errors="coerce"
                ).dropna()
                if len(levels):
                    half = _GROUP_WIDTH / 2 + 0.05
                    ax.hlines(
                        float(levels.max()), xi - half, xi + half, colors="0.3", linestyles="--"
                    )
                    drew_chance = True
            ax.set_ylim(-0.03, 1.05)
            ax.yaxis.set_major_formatter(percent)
    extra = [(Line2D([], [], color="0.3", linestyle="--"), "chance")] if drew_chance else []
    if not reid.empty and not drew_chance:
        notes.append("chance level not available")
    if not reid.empty:
        notes.append("markers and bars: identification rate and 95% CI")
        few = small_sample_note(reid.get("n_probes", pd.Series(dtype=float)))
        if few:
            notes.append(few)
    _legend(fig, image_types, palette, extra)
    _finish(fig, out_png, "Face re-identification", notes)
