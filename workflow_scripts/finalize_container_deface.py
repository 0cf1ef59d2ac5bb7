"""Snakemake adapter: finalise a container defacer's output (deface.finalize_container_deface)."""

from defaceaudit.deface.run import finalize_container_deface
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    finalize_container_deface,
    defacer=snakemake.wildcards.defacer,
    prepared={k: snakemake.input[k] for k in ("t1w", "head_mask", "brain_mask")},
    raw=snakemake.input.raw,
    raw_removed=snakemake.input.get("raw_removed"),
    benchmark=snakemake.input.benchmark,
    command_file=snakemake.input.command,
    outputs=dict(snakemake.output.items()),
    image=snakemake.params.image,
    params=snakemake.params.params,
    qc_params=snakemake.params.qc,
)
