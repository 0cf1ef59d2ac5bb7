"""All face-metric rows in one table, the paper's Tables 1-3, and one HTML page of the tables."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from defaceaudit.face_tables import read_face_metrics, write_face_tables
from defaceaudit.metrics.face_rows import COLUMNS
from defaceaudit.tables import atomic_path, write_tsv


def tables_page(markdown_files: list[str | os.PathLike], title: str) -> str:
    """A self-contained HTML page showing Markdown tables as preformatted text (no renderer
    needed; the report embeds it as is)."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"]
    parts.append(f"<body><h1>{html.escape(title)}</h1>")
    for path in markdown_files:
        with open(path, encoding="utf-8") as handle:
            parts.append(f"<pre>{html.escape(handle.read())}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def aggregate_face_metrics(
    row_files: list[str | os.PathLike],
    out_rows: str | os.PathLike,
    out_tables: dict[str, str | os.PathLike],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Concatenate the per-job rows, write them and the tables."""
    rows = read_face_metrics(row_files)
    rows = rows[list(COLUMNS)].sort_values(["test_set", "defacer", "subject", "image_type"])
    write_tsv(rows, out_rows)
    write_face_tables(rows, out_tables, n_resamples=n_resamples, seed=seed)
    return rows


def aggregate_available_rows(
    row_files: list[str | os.PathLike],
    out_rows: str | os.PathLike,
    out_tables: dict[str, str | os.PathLike],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[str]:
    """After a run with failed jobs (``--keep-going``): the tables of the rows that exist, each
    Markdown table marked PARTIAL with the row files it lacks. Returns the missing files (nothing
    is written when no row file exists). The workflow writes them under results/partial/
    (:func:`defaceaudit.paths.partial_file`), never over the aggregate rule's own outputs.
    """
    present = [f for f in row_files if Path(f).exists()]
    missing = [str(f) for f in row_files if not Path(f).exists()]
    if not present or not missing:
        return missing
    aggregate_face_metrics(present, out_rows, out_tables, n_resamples=n_resamples, seed=seed)
    note = (
        f"\nPARTIAL: {len(missing)} of {len(row_files)} subject x defacer jobs have no rows "
        f"(failed or not run; see results/logs/compute_face_metrics/ and the QC table): "
        + ", ".join(Path(m).name for m in missing)
        + "\n"
    )
    for key, path in out_tables.items():
        if key.endswith("_md"):
            text = Path(path).read_text(encoding="utf-8")
            with atomic_path(path) as tmp:
                tmp.write_text(text + note, encoding="utf-8")
    return missing


def write_tables_page(
    markdown_files: list[str | os.PathLike], out_html: str | os.PathLike, title: str
) -> None:
    """Write :func:`tables_page` of ``markdown_files`` atomically."""
    with atomic_path(out_html) as tmp:
        tmp.write_text(tables_page(markdown_files, title), encoding="utf-8")
