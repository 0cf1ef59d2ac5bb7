"""Snakemake adapter: Spearman table, bootstrap and figure (radiodensity.study)."""

from defaceaudit.radiodensity.study import evaluate_radiodensity
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    evaluate_radiodensity,
    prediction_files=list(snakemake.input.predictions),
    out_table=snakemake.output.table,
    out_markdown=snakemake.output.markdown,
    out_bootstrap=snakemake.output.bootstrap,
    out_predictions=snakemake.output.predictions,
    out_figure=snakemake.output.figure,
    n_resamples=snakemake.params.n_bootstrap,
    seed=snakemake.params.seed,
)
