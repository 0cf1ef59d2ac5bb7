"""Snakemake adapter: the cohort table, one row per subject (inputs.write_cohort_table)."""

from defaceaudit.cohort import write_cohort_table
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    write_cohort_table,
    records=snakemake.params.records,
    path=snakemake.output[0],
)
