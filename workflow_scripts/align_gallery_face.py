"""Snakemake adapter: a gallery image's face in template space (metrics.template_space)."""

from defaceaudit.metrics.template_space import align_gallery_face
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    align_gallery_face,
    t1w=snakemake.input.t1w,
    template=snakemake.input.template,
    out_transform=snakemake.output.transform,
    out_faces=snakemake.output.faces,
    seed=snakemake.params.seed,
)
