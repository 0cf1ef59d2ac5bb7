"""Snakemake adapter: one subject's face crops in template space (radiodensity.crop)."""

from defaceaudit.radiodensity.crop import subject_face_crops
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    subject_face_crops,
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
