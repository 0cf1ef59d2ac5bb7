"""Snakemake adapter: face metrics of one test subject and defacer (metrics.face_rows)."""

from defaceaudit.metrics.face_rows import compute_face_metrics
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    compute_face_metrics,
    subject=snakemake.wildcards.subject,
    test_set=snakemake.params.test_set,
    defacer=snakemake.wildcards.defacer,
    prepared={"t1w": snakemake.input.t1w, "head_mask": snakemake.input.head_mask},
    images=snakemake.params.images,
    template=snakemake.input.template,
    out_rows=snakemake.output.rows,
    out_faces=snakemake.output.faces,
    seed=snakemake.params.seed,
    probes=tuple(snakemake.params.probes),
)
