"""The QC table over all subjects and defacers, including jobs that failed (no QC record)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from defaceaudit.deface.qc import qc_summary, qc_table
from defaceaudit.tables import atomic_path, write_tsv


def _logged_error(logs: list[str], *, tool_output: bool = True) -> str | None:
    """The first ERROR line of ``logs`` (a job's one-line message), else, with
    ``tool_output``, any line with "rror" (a container tool's own stderr), else None."""
    lines = [
        line
        for log in logs
        if Path(log).exists()
        for line in Path(log).read_text(errors="replace").splitlines()
    ]
    found = [line.split(" ERROR ", 1)[1] for line in lines if " ERROR " in line]
    if not found and tool_output:
        found = [line for line in lines if "rror" in line]
    return found[0].strip()[:300] if found else None


def failure_reason(
    logs: list[str], upstream: list[str] = (), upstream_errors: dict | None = None
) -> str:
    """Why a job has no output: the first error in its own ``logs``; when none of them exists
    (the job never ran), the first error logged by the ``upstream`` jobs it waited for (such as
    its subject's prepare_subject; only their ERROR lines: they are this package's jobs); else
    a pointer to the logs. ``upstream_errors`` caches those per log across jobs."""
    error = _logged_error(logs)
    if error is not None:
        return error
    if any(Path(log).exists() for log in logs):
        return f"no output; see {', '.join(logs)}"
    cache = {} if upstream_errors is None else upstream_errors
    for log in upstream:
        if log not in cache:
            cache[log] = _logged_error([log], tool_output=False)
        if cache[log] is not None:
            return f"not run: {cache[log]} (see {log})"
    return f"not run; see {', '.join([*logs, *upstream])}"


def collect_qc(expected: list[dict]) -> pd.DataFrame:
    """One row per expected (defacer, subject): its QC record, or status job_failed + error
    (:func:`failure_reason` over the job's ``logs`` and ``upstream_logs``; each upstream log is
    read once)."""
    records = []
    upstream_errors: dict[str, str | None] = {}
    for job in expected:
        base = {"defacer": job["defacer"], "subject": job["subject"], "backend": job["backend"]}
        qc = Path(job["qc"])
        if qc.exists():
            records.append({**base, **json.loads(qc.read_text())})
        else:
            upstream = job.get("upstream_logs", [])
            reason = failure_reason(job["logs"], upstream, upstream_errors)
            records.append({**base, "status": "job_failed", "error": reason})
    return qc_table(records)


def write_qc_table(
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
