"""The QC table over all subjects and defacers, including jobs that failed (no QC record)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from defaceaudit.qc import qc_summary, qc_table
from defaceaudit.tables import atomic_path, write_tsv


def failure_reason(logs: list[str]) -> str:
    """The first ERROR line of the job's logs (the one-line message), else a pointer to them."""
    lines = [
        line
        for log in logs
        if Path(log).exists()
        for line in Path(log).read_text(errors="replace").splitlines()
    ]
    logged = [line.split(" ERROR ", 1)[1] for line in lines if " ERROR " in line]
    other = [line for line in lines if "rror" in line]  # a container tool's own stderr
    found = logged or other
    return found[0].strip()[:300] if found else f"no output; see {', '.join(logs)}"


def collect_qc(expected: list[dict]) -> pd.DataFrame:
    """One row per expected (defacer, subject): its QC record, or status job_failed + error."""
    records = []
    for job in expected:
        base = {"defacer": job["defacer"], "subject": job["subject"], "backend": job["backend"]}
        qc = Path(job["qc"])
        if qc.exists():
            records.append({**base, **json.loads(qc.read_text())})
        else:
            records.append({**base, "status": "job_failed", "error": failure_reason(job["logs"])})
    return qc_table(records)


def write_qc_tables(
    expected: list[dict],
    table_path: str | os.PathLike,
    summary_path: str | os.PathLike,
    markdown_path: str | os.PathLike,
) -> pd.DataFrame:
    """Write the per-job QC table and the per-defacer summary (TSV, and Markdown for people)."""
    table = collect_qc(expected)
    write_tsv(table, table_path)
    summary = qc_summary(table).reset_index()
    write_tsv(summary, summary_path)
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(summary.to_markdown(index=False) + "\n")
    return table
