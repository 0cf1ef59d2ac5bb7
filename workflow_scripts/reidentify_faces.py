"""Snakemake adapter: re-identification ranks and rates (metrics.reidentify)."""

from defaceaudit.metrics.reidentify import reidentify_faces
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    reidentify_faces,
    gallery=snakemake.params.gallery,
    probes=snakemake.params.probes,
    region=snakemake.params.region,
    notes=snakemake.params.notes,
    out=dict(snakemake.output.items()),
    n_resamples=snakemake.params.n_bootstrap,
    seed=snakemake.params.seed,
    probe_vertices=snakemake.params.probe_vertices,
    workers=snakemake.threads,
    face_recognition_summary=snakemake.input.get("face_recognition_summary"),
    face_recognition_markdown=snakemake.input.get("face_recognition_markdown"),
)
