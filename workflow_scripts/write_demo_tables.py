"""Snakemake adapter: BIDS tables of one demo dataset (demo.build)."""

from defaceaudit.cohort.demo.build import write_demo_tables
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    write_demo_tables,
    subjects=snakemake.params.subjects,
    dataset=snakemake.wildcards.dataset,
    out_dir=snakemake.params.root,
    seed=snakemake.params.seed,
)
