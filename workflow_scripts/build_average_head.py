"""Snakemake adapter: the training split's average head (defacers.templates)."""

from defaceaudit.defacers.templates import build_average_head_file
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    build_average_head_file,
    t1w=list(snakemake.input.t1w),
    template=snakemake.input.template,
    out=snakemake.output[0],
    workers=snakemake.threads,
)
