"""Snakemake adapter: side-by-side face renderings of one test subject (report_figures)."""

from defaceaudit.report.face_figures import render_face_panel
from defaceaudit.workflow.reface_jobs import verdicts_by_defacer
from defaceaudit.workflow.run_step import run_step

inputs = dict(snakemake.input.items())
run_step(
    snakemake.log[0],
    render_face_panel,
    subject=snakemake.wildcards.subject,
    original=inputs["original"],
    columns=snakemake.params.columns,
    row_files=[v for k, v in inputs.items() if k.endswith("__rows")],
    out_png=snakemake.output[0],
    verdicts=verdicts_by_defacer(inputs),
)
