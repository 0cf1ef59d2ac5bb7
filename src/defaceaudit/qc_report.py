"""The QC table over all subjects and defacers, including jobs that failed (no QC record)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from defaceaudit.qc import qc_summary, qc_table
from defaceaudit.tables import atomic_path, write_tsv


def _logged_error(logs: list[str]) -> str | None:
    """The first ERROR line of ``logs`` (the one-line message), else any line with "rror" (a
    container tool's own stderr), else None."""
    lines = [
        line
        for log in logs
        if Path(log).exists()
        for line in Path(log).read_text(errors="replace").splitlines()
    ]
    logged = [line.split(" ERROR ", 1)[1] for line in lines if " ERROR " in line]
    other = [line for line in lines if "rror" in line]
    found = logged or other
    return found[0].strip()[:300] if found else None


def failure_reason(logs: list[str], upstream: list[str] = ()) -> str:
    """Why a job has no output: the first error in its own ``logs``; when none of them exists
    (the job never ran), the first error of the ``upstream`` jobs' logs it waited for (such as
    its subject's prepare_subject); else a pointer to the logs."""
    error = _logged_error(logs)
    if error is not None:
        return error
    if any(Path(log).exists() for log in logs):
        return f"no output; see {', '.join(logs)}"
    failed = [log for log in upstream if _logged_error([log]) is not None]
    if failed:
        return f"not run: {_logged_error(failed[:1])} (see {failed[0]})"
    return f"not run; see {', '.join([*logs, *upstream])}"


def collect_qc(expected: list[dict]) -> pd.DataFrame:
    """One row per expected (defacer, subject): its QC record, or status job_failed + error
    (:func:`failure_reason` over the job's ``logs`` and ``upstream_logs``)."""
    records = []
    for job in expected:
        base = {"defacer": job["defacer"], "subject": job["subject"], "backend": job["backend"]}
        qc = Path(job["qc"])
        if qc.exists():
            records.append({**base, **json.loads(qc.read_text())})
        else:
            reason = failure_reason(job["logs"], job.get("upstream_logs", []))
            records.append({**base, "status": "job_failed", "error": reason})
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
