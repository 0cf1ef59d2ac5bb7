"""All face-metric rows in one table, the paper's Tables 1-3, and one HTML page of the tables."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from defaceaudit.metrics.face_rows import COLUMNS
from defaceaudit.metrics.face_tables import read_face_metrics, write_face_tables
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
    verdicts: Mapping[str, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Concatenate the per-job rows, write them and the tables. ``verdicts``: defacer -> the
    verdict JSON of the refacing models that refaced its images
    (:func:`defaceaudit.reface.validation.validate_refacing`); a defacer whose models did
    not converge gets its DPM cells marked (:func:`attack_notes`)."""
    rows = read_face_metrics(row_files)
    rows = rows[list(COLUMNS)].sort_values(["test_set", "defacer", "subject", "image_type"])
    write_tsv(rows, out_rows)
    write_face_tables(
        rows,
        out_tables,
        n_resamples=n_resamples,
        seed=seed,
        attack_notes=attack_notes(verdicts or {}),
    )
    return rows


def attack_notes(verdicts: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """defacer -> the verdict's note, for each defacer whose verdict JSON (defacer -> path)
    says the refacing attack did not converge."""
    notes = {}
    for defacer, path in verdicts.items():
        verdict = json.loads(Path(path).read_text())
        if not verdict.get("converged"):
            notes[defacer] = verdict.get("note") or "attack not converged"
    return notes


def out_of_date(path: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> bool:
    """Whether the existing file ``path`` is older than one of ``inputs`` or one of them is
    gone: Snakemake's test of an outdated output by modification time (Snakemake also reruns
    for changed params or code, which no file shows)."""
    made = Path(path).stat().st_mtime
    for source in inputs:
        source = Path(source)
        if not source.exists() or source.stat().st_mtime > made:
            return True
    return False


def aggregate_available_rows(
    row_files: list[str | os.PathLike],
    out_rows: str | os.PathLike,
    out_tables: dict[str, str | os.PathLike],
    *,
    inputs: Mapping[str, Iterable[str | os.PathLike]] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[str]:
    """After a run with failed jobs (``--keep-going``): the tables of the rows that are current,
    each Markdown table marked PARTIAL with the row files it leaves out. A row file is left out
    when it does not exist (its job failed or never ran) or, given ``inputs`` (row file ->
    the files its job read), when it is older than one of them (:func:`out_of_date`: rows of
    an earlier run whose job did not run again this time, e.g. after its deface job failed).
    Returns the row files left out (nothing is written when no row file is current). The
    workflow writes them under results/partial/ (:func:`defaceaudit.paths.partial_file`), never
    over the aggregate rule's own outputs.
    """
    inputs = inputs or {}
    current, left_out = [], []
    for row_file in row_files:
        path = Path(row_file)
        if path.exists() and not out_of_date(path, inputs.get(str(row_file), ())):
            current.append(row_file)
        else:
            left_out.append(str(row_file))
    if not current or not left_out:
        return left_out
    aggregate_face_metrics(current, out_rows, out_tables, n_resamples=n_resamples, seed=seed)
    note = (
        f"\nPARTIAL: {len(left_out)} of {len(row_files)} subject x defacer jobs have no current "
        "rows (failed, not run, or older than their inputs; see "
        "results/logs/compute_face_metrics/ and the QC table): "
        + ", ".join(Path(m).name for m in left_out)
        + "\n"
    )
    for key, path in out_tables.items():
        if key.endswith("_md"):
            text = Path(path).read_text(encoding="utf-8")
            with atomic_path(path) as tmp:
                tmp.write_text(text + note, encoding="utf-8")
    return left_out


def write_tables_page(
    markdown_files: list[str | os.PathLike], out_html: str | os.PathLike, title: str
) -> None:
    """Write :func:`tables_page` of ``markdown_files`` atomically."""
    with atomic_path(out_html) as tmp:
        tmp.write_text(tables_page(markdown_files, title), encoding="utf-8")
