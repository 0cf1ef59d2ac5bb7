"""Snakemake adapter: fetch one real base head and its ROBEX brain mask (demo.build)."""

from defaceaudit.cohort.demo.build import fetch_demo_base
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    fetch_demo_base,
    name=snakemake.wildcards.base,
    out_t1w=snakemake.output.t1w,
    out_brain=snakemake.output.brain_mask,
    out_head=snakemake.output.head_mask,
    cache_dir=snakemake.config["demo"]["cache_dir"],
)
