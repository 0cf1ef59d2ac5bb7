"""Snakemake adapter: train stage 2 of a refacing model pair (reface.refacing).

Each original is an input once; ``params.pair_index`` gives, for each defaced image, the index
of its original (workflow.reface_jobs.training_pair_index).
"""

from defaceaudit.reface.refacing import train_stage2
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    train_stage2,
    originals=[snakemake.input.originals[i] for i in snakemake.params.pair_index],
    defaced=list(snakemake.input.defaced),
    config=snakemake.params.config,
    checkpoint=snakemake.output[0],
    device=snakemake.config["reface"]["device"],
)
