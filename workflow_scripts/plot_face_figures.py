"""Snakemake adapter: the face-metric, QC and re-identification figures (report_figures)."""

from defaceaudit.report_figures import write_figures
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    write_figures,
    summary=snakemake.input.summary,
    rows=snakemake.input.rows,
    qc=snakemake.input.qc,
    reidentification=snakemake.input.reidentification,
    out=dict(snakemake.output.items()),
)
