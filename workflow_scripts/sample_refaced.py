"""Snakemake adapter: reface one test subject's defaced image (diffusion.refacing)."""

from defaceaudit.reface.refacing import sample_refaced
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    sample_refaced,
    defaced=snakemake.input.defaced,
    stage1=snakemake.input.stage1,
    stage2=snakemake.input.stage2,
    outputs=dict(snakemake.output.items()),
    sampling=snakemake.params.sampling,
    device=snakemake.config["reface"]["device"],
)
