"""Snakemake adapter: reface one test subject's defaced image (diffusion.refacing)."""

from defaceaudit.diffusion.refacing import reface_subject
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    reface_subject,
    defaced=snakemake.input.defaced,
    stage1=snakemake.input.stage1,
    stage2=snakemake.input.stage2,
    outputs=dict(snakemake.output.items()),
    sampling=snakemake.params.sampling,
    device=snakemake.config["reface"]["device"],
)
