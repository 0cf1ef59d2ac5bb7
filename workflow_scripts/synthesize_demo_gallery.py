"""Snakemake adapter: a demo test subject's second session, its gallery image (demo.build)."""

from defaceaudit.cohort.demo.build import synthesize_demo_gallery
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    synthesize_demo_gallery,
    base_t1w=snakemake.input.t1w,
    base_brain=snakemake.input.brain_mask,
    base_head=snakemake.input.head_mask,
    subject=snakemake.params.subject,
    synth=snakemake.params.synth,
    gallery=snakemake.params.gallery,
    out_t1w=snakemake.output.t1w,
)
