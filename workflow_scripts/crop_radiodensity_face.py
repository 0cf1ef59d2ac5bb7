"""Snakemake adapter: one subject's face crops in template space (radiodensity.crop)."""

from defaceaudit.radiodensity.crop import crop_radiodensity_face
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    crop_radiodensity_face,
    original=snakemake.input.t1w,
    brain_mask=snakemake.input.brain_mask,
    images=dict(snakemake.params.images),
    template=snakemake.input.template,
    shape=tuple(snakemake.params.shape),
    voxel_mm=snakemake.params.voxel_mm,
    out_crops=snakemake.output.crops,
    out_transform=snakemake.output.transform,
    seed=snakemake.params.seed,
)
