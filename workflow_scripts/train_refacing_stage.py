"""Snakemake adapter: train one stage of a refacing model pair (diffusion.refacing).

Each original is an input once; ``params.pair_index`` gives, for each defaced image, the index
of its original (diffusion.jobs.training_pair_index).
"""

from defaceaudit.diffusion.refacing import train_refacing_stage
from defaceaudit.workflow import run_step

run_step(
    snakemake.log[0],
    train_refacing_stage,
    stage=1 if snakemake.rule == "train_stage1" else 2,
    originals=[snakemake.input.originals[i] for i in snakemake.params.pair_index],
    defaced=list(snakemake.input.defaced),
    config=snakemake.params.config,
    checkpoint=snakemake.output[0],
    device=snakemake.config["reface"]["device"],
)
