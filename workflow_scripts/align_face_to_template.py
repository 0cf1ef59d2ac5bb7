"""Snakemake adapter: rigid registration to the face template (metrics.template_space)."""

from defaceaudit.metrics.template_space import align_face_to_template
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    align_face_to_template,
    t1w=snakemake.input.t1w,
    head_mask=snakemake.input.head_mask,
    template=snakemake.input.template,
    out_transform=snakemake.output.transform,
    out_faces=snakemake.output.faces,
    seed=snakemake.params.seed,
)
