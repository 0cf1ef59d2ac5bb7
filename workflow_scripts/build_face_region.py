"""Snakemake adapter: the re-identification face region in template space
(metrics.template_space)."""

from defaceaudit.metrics.template_space import build_face_region
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    build_face_region,
    subjects=snakemake.params.subjects,
    template=snakemake.input.template,
    out_mask=snakemake.output.mask,
    out_sidecar=snakemake.output.sidecar,
    dilation_mm=snakemake.params.dilation_mm,
    defacers=snakemake.params.defacers,
)
