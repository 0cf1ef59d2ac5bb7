"""Snakemake adapter: a refacing model pair's learning curve and convergence verdict
(reface.validation)."""

from defaceaudit.reface.validation import validate_refacing
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    validate_refacing,
    model=snakemake.wildcards.model,
    stage1=snakemake.input.stage1,
    stage2=snakemake.input.stage2,
    pairs=snakemake.params.pairs,
    sampling=snakemake.params.sampling,
    outputs=dict(snakemake.output.items()),
    device=snakemake.config["reface"]["device"],
)
