"""Drivers of the report's figures: read the stage tables, call :mod:`defaceaudit.report.figures`
and
:mod:`defaceaudit.report.face_panels`."""

from __future__ import annotations

import os

import pandas as pd

from defaceaudit.report import figures
from defaceaudit.report.face_panels import draw_face_panel
from defaceaudit.tables import read_tsv

#: column labels of the face renderings, in the paper's order (Figure 3)
PANEL_LABELS = {
    "defaced": "defaced",
    "population_average": "population average",
    "dpm_refaced": "DPM-refaced",
}


def plot_face_figures(
    summary: str | os.PathLike,
    rows: str | os.PathLike,
    qc: str | os.PathLike,
    reidentification: str | os.PathLike,
    out: dict[str, str | os.PathLike],
) -> None:
    """The four stage figures (``out`` keys masd, similarity, qc, reidentification)."""
    summary_frame = read_tsv(summary, "face metrics summary")
    figures.plot_masd(summary_frame, out["masd"], rows=read_tsv(rows, "face metrics table"))
    figures.plot_similarity(summary_frame, out["similarity"])
    figures.plot_qc(read_tsv(qc, "QC table"), out["qc"])
    reidentified = read_tsv(reidentification, "re-identification table", empty_ok=True)
    figures.plot_reidentification(reidentified, out["reidentification"])


def render_face_panel(
    subject: str,
    original: str | os.PathLike,
    columns: dict[str, dict[str, str]],
    row_files: list[str | os.PathLike],
    out_png: str | os.PathLike,
    verdicts: dict[str, str | os.PathLike] | None = None,
) -> None:
    """Renderings of one subject: a row per defacer (original, defaced, population average,
    DPM-refaced), each labelled with its MASD to the original (other -> original).
    ``verdicts``: defacer -> the refacing models' verdict JSON; the DPM cell of a defacer whose
    attack did not converge, and the title, say so
    (:func:`defaceaudit.metrics.aggregate.attack_notes`)."""
    from defaceaudit.metrics.aggregate import attack_notes

    unconverged = attack_notes(verdicts or {})
    rows = pd.concat([read_tsv(p, "face metrics rows") for p in row_files], ignore_index=True)
    masd = {(r.defacer, r.image_type): r.masd_mm for r in rows.itertuples()}
    panel = []
    for defacer, images in columns.items():
        cells = [("original", original)]
        for kind, label in PANEL_LABELS.items():
            value = masd.get((defacer, kind))
            text = label if value is None or pd.isna(value) else f"{label}\nMASD {value:.2f} mm"
            if kind == "dpm_refaced" and defacer in unconverged:
                text += "\nattack NOT converged"
            cells.append((text, images.get(kind)))
        panel.append((defacer, cells))
    title = f"sub-{subject}: faces (identifiable: keep private)"
    if unconverged:
        title += f"\nDPM-refaced of {', '.join(sorted(unconverged))}: " + next(
            iter(unconverged.values())
        )
    draw_face_panel(panel, out_png, title=title)
