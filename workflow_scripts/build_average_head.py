"""Snakemake adapter: the training split's average head (defacers.templates)."""

from defaceaudit.deface.templates import build_average_head
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    build_average_head,
    t1w=list(snakemake.input.t1w),
    template=snakemake.input.template,
    out=snakemake.output[0],
    workers=snakemake.threads,
)
