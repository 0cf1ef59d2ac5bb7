"""Snakemake adapter: one subject's images rendered as face photographs
(metrics.face_recognition)."""

from defaceaudit.metrics.face_recognition import render_face_views
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    render_face_views,
    images=dict(snakemake.input.items()),
    out_renderings=snakemake.output.renderings,
)
