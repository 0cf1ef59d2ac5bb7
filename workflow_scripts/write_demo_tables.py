"""Snakemake adapter: BIDS tables of one demo dataset (demo.build)."""

from defaceaudit.demo.build import write_tables
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    write_tables,
    subjects=snakemake.params.subjects,
    dataset=snakemake.wildcards.dataset,
    out_dir=snakemake.params.root,
    seed=snakemake.params.seed,
)
