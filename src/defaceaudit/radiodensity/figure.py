"""Figure 6 analog: bootstrap distributions of Spearman's rho per body part and image type.

Drawn on matplotlib's Agg canvas without pyplot (no global state, no window), like
:mod:`defaceaudit.report.figures`, and written atomically.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from defaceaudit.tables import atomic_path

__all__ = ["difference_mark", "plot_radiodensity", "significance_stars"]

#: the mark of an image type whose paired difference to the reference has this CI side
_MARKS = {-1: "lower", 1: "higher", 0: "ns"}


def significance_stars(p: float) -> str:
    """The paper's marks: ``****`` p <= 1e-4, ``***`` <= 1e-3, ``**`` <= 0.01, ``*`` <= 0.05,
    ``ns`` otherwise; empty for NaN (the reference image type). Not drawn: the paper put them
    on a Wilcoxon p over bootstrap replicates, which shrinks with the number of resamples
    (see :func:`difference_mark`)."""
    if not np.isfinite(p):
        return ""
    for stars, level in (("****", 1e-4), ("***", 1e-3), ("**", 1e-2), ("*", 0.05)):
        if p <= level:
            return stars
    return "ns"


def difference_mark(low: float, high: float) -> str:
    """The figure's mark from the 95 % CI of the paired rho difference to the reference:
    ``lower`` (CI below 0), ``higher`` (above 0), ``ns`` (the CI holds 0); empty when there
    is no CI (the reference itself, or no rho)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return _MARKS[1 if low > 0 else -1 if high < 0 else 0]


def plot_radiodensity(
    table: pd.DataFrame, boot_long: pd.DataFrame, out_png: str | os.PathLike
) -> None:
    """One panel per body part: box plots of each image type's bootstrap rho (whiskers at the
    2.5th/97.5th percentiles, i.e. the 95% CI), the rho over the test subjects as a diamond,
    a zero line, and above each box how it compares with the reference (each panel's first
    image type, as in :func:`~.evaluate.radiodensity_table`'s order), read off the CI of the
    paired difference (:func:`difference_mark`; not the paper's replicate Wilcoxon stars).
    ``table`` and ``boot_long`` are that function's outputs. Writes ``out_png`` atomically;
    empty inputs give a figure saying so.
    """
    parts = list(dict.fromkeys(table["body_part"])) if len(table) else []
    fig = Figure(figsize=(max(5.5, 3.6 * max(1, len(parts))), 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(parts)), sharey=True, squeeze=False)[0]
    if not parts:
        axes[0].text(0.5, 0.5, "no radiodensity results", ha="center", va="center")
        axes[0].set_axis_off()
    palette = sns.color_palette("colorblind", 10)
    for ax, part in zip(axes, parts, strict=False):
        rows = table.loc[table["body_part"] == part].reset_index(drop=True)
        types = list(rows["image_type"])
        colours = {t: palette[7] if i == 0 else palette[i % 10] for i, t in enumerate(types)}
        boot = boot_long.loc[(boot_long["body_part"] == part) & boot_long["rho"].notna()]
        data = [boot.loc[boot["image_type"] == t, "rho"].to_numpy() for t in types]
        if any(d.size for d in data):
            boxes = ax.boxplot(
                data,
                positions=range(len(types)),
                whis=(2.5, 97.5),
                showfliers=False,
                widths=0.6,
                patch_artist=True,
                medianprops={"color": "0.15"},
            )
            for patch, t in zip(boxes["boxes"], types, strict=True):
                patch.set_facecolor(colours[t])
        ax.scatter(range(len(types)), rows["rho"], marker="D", color="black", s=18, zorder=5)
        for i, rho in enumerate(rows["rho"]):
            if not np.isfinite(rho):  # constant predictions: nothing of the face was left
                ax.text(i, 0.02, "no rho:\nno face\nleft", ha="center", va="bottom", fontsize=7)
        ax.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
        top = np.nanmax(np.append(rows["ci_high"].to_numpy(dtype=float), 0.0))
        bounds = zip(rows["diff_ci_low"], rows["diff_ci_high"], strict=True)
        for i, (low, high) in enumerate(bounds):
            mark = difference_mark(float(low), float(high))
            ax.text(i, top + 0.05, mark, ha="center", fontsize=8)
        ax.set_xticks(range(len(types)), types, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_title(part)
        ax.set_xlabel("")
        ax.set_ylabel("Spearman's rho (bootstrap)")
    fig.suptitle(
        "Muscle radiodensity residuals from facial voxels\n"
        "marks: 95% CI of the rho difference to the first image type\n"
        "below 0: lower, above 0: higher, holding 0: ns",
        fontsize=9,
    )
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
