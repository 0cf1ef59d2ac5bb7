"""Snakemake adapter: one synthetic demo subject from its base head (demo.build)."""

from defaceaudit.cohort.demo.build import synthesize_demo_subject
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    synthesize_demo_subject,
    base_t1w=snakemake.input.t1w,
    base_brain=snakemake.input.brain_mask,
    base_head=snakemake.input.head_mask,
    subject=snakemake.params.subject,
    synth=snakemake.params.synth,
    out_t1w=snakemake.output.t1w,
    out_brain=snakemake.output.brain_mask,
)
