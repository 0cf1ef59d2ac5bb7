"""Snakemake adapter: one subject's face-recognition renderings for the report (PRIVATE)."""

from defaceaudit.report.face_views import plot_face_views
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    plot_face_views,
    renderings=snakemake.input.renderings,
    embeddings=snakemake.input.embeddings,
    out_png=snakemake.output[0],
    subject=snakemake.wildcards.subject,
)
