"""Snakemake adapter: the faces in one subject's renderings, found and embedded
(metrics.face_recognition)."""

from defaceaudit.metrics.face_recognition import embed_face_views
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    embed_face_views,
    renderings=snakemake.input.renderings,
    out_embeddings=snakemake.output.embeddings,
    recognizer=snakemake.params.recognizer,
)
