"""Snakemake adapter: residual targets and study splits (radiodensity.study.write_targets)."""

from defaceaudit.radiodensity.study import write_targets
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    write_targets,
    phenotype=list(snakemake.input.phenotype),
    cohort_table=snakemake.input.cohort,
    body_parts=list(snakemake.params.body_parts),
    split=dict(snakemake.params.split),
    out_targets=snakemake.output[0],
)
