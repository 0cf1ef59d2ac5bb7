"""Snakemake adapter: one native defacer on one subject (deface.deface_native)."""

from defaceaudit.deface.run import deface_native
from defaceaudit.workflow.run_step import run_step

inputs = dict(snakemake.input.items())
run_step(
    snakemake.log[0],
    deface_native,
    defacer=snakemake.wildcards.defacer,
    prepared={k: inputs.pop(k) for k in ("t1w", "head_mask", "brain_mask")},
    outputs=dict(snakemake.output.items()),
    extra={**inputs, **snakemake.params.extra},
    qc_params=snakemake.params.qc,
)
