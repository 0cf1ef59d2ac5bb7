"""Snakemake adapter: all metric rows, and Tables 1-3 (metrics.aggregate)."""

from defaceaudit.metrics.aggregate import aggregate_face_metrics
from defaceaudit.workflow.reface_jobs import verdicts_by_defacer
from defaceaudit.workflow.run_step import run_step

outputs = dict(snakemake.output.items())
run_step(
    snakemake.log[0],
    aggregate_face_metrics,
    row_files=list(snakemake.input.rows),
    out_rows=outputs.pop("rows"),
    out_tables=outputs,
    n_resamples=snakemake.params.n_bootstrap,
    seed=snakemake.params.seed,
    verdicts=verdicts_by_defacer(dict(snakemake.input.items())),
)
