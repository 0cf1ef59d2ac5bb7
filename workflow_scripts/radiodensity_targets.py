"""Snakemake adapter: residual targets and study splits
(radiodensity.study.radiodensity_targets)."""

from defaceaudit.radiodensity.study import radiodensity_targets
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    radiodensity_targets,
    phenotype=list(snakemake.input.phenotype),
    cohort_table=snakemake.input.cohort,
    body_parts=list(snakemake.params.body_parts),
    split=dict(snakemake.params.split),
    out_targets=snakemake.output[0],
)
