"""Snakemake adapter: a demo test subject's second session, its gallery image (demo.build)."""

from defaceaudit.demo.build import build_gallery_image
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    build_gallery_image,
    base_t1w=snakemake.input.t1w,
    base_brain=snakemake.input.brain_mask,
    base_head=snakemake.input.head_mask,
    subject=snakemake.params.subject,
    synth=snakemake.params.synth,
    gallery=snakemake.params.gallery,
    out_t1w=snakemake.output.t1w,
)
