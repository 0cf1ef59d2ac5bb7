"""Drivers of the report's figures: read the stage tables, call :mod:`defaceaudit.figures` and
:mod:`defaceaudit.face_panels`."""

from __future__ import annotations

import os

import pandas as pd

from defaceaudit import figures
from defaceaudit.face_panels import render_face_panel

#: column labels of the face renderings, in the paper's order (Figure 3)
PANEL_LABELS = {
    "defaced": "defaced",
    "population_average": "population average",
    "dpm_refaced": "DPM-refaced",
}


def _read(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


def write_figures(
    summary: str | os.PathLike,
    rows: str | os.PathLike,
    qc: str | os.PathLike,
    reidentification: str | os.PathLike,
    out: dict[str, str | os.PathLike],
) -> None:
    """The four stage figures (``out`` keys masd, similarity, qc, reidentification)."""
    summary_frame = _read(summary)
    figures.plot_masd(summary_frame, out["masd"], rows=_read(rows))
    figures.plot_similarity(summary_frame, out["similarity"])
    figures.plot_qc(_read(qc), out["qc"])
    figures.plot_reidentification(_read(reidentification), out["reidentification"])


def write_face_panel(
    subject: str,
    original: str | os.PathLike,
    columns: dict[str, dict[str, str]],
    row_files: list[str | os.PathLike],
    out_png: str | os.PathLike,
) -> None:
    """Renderings of one subject: a row per defacer (original, defaced, population average,
    DPM-refaced), each labelled with its MASD to the original (other -> original)."""
    rows = pd.concat([_read(p) for p in row_files], ignore_index=True)
    masd = {(r.defacer, r.image_type): r.masd_mm for r in rows.itertuples()}
    panel = []
    for defacer, images in columns.items():
        cells = [("original", original)]
        for kind, label in PANEL_LABELS.items():
            value = masd.get((defacer, kind))
            text = label if value is None or pd.isna(value) else f"{label}\nMASD {value:.2f} mm"
            cells.append((text, images.get(kind)))
        panel.append((defacer, cells))
    render_face_panel(panel, out_png, title=f"sub-{subject}: faces (identifiable: keep private)")
