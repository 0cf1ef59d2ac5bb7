"""Snakemake adapter: a defacer's dataset_description.json (deface.provenance)."""

from defaceaudit.deface.provenance import describe_defaced_dataset
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    describe_defaced_dataset,
    defacer=snakemake.wildcards.defacer,
    out=snakemake.output[0],
    **snakemake.params.provenance,
)
