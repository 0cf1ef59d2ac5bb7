"""Snakemake adapter: the face-metric, QC and re-identification figures (report_figures)."""

from defaceaudit.report.face_figures import plot_face_figures
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    plot_face_figures,
    summary=snakemake.input.summary,
    rows=snakemake.input.rows,
    qc=snakemake.input.qc,
    reidentification=snakemake.input.reidentification,
    out=dict(snakemake.output.items()),
)
