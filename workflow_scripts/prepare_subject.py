"""Snakemake adapter: validate, reorient and mask one subject's T1w (prepare)."""

from defaceaudit.prepare.subject import prepare_subject
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    prepare_subject,
    t1w_path=snakemake.input.t1w,
    brain_mask_path=snakemake.input.get("brain_mask"),
    outputs=dict(snakemake.output.items()),
)
