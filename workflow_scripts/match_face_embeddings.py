"""Snakemake adapter: face-recognition ranks and rates (metrics.face_recognition)."""

from defaceaudit.metrics.face_recognition import match_face_embeddings
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    match_face_embeddings,
    embeddings=snakemake.params.embeddings,
    out=dict(snakemake.output.items()),
    recognizer=snakemake.params.recognizer,
    n_resamples=snakemake.params.n_bootstrap,
    seed=snakemake.params.seed,
)
