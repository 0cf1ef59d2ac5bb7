"""Snakemake adapter: train one ResNet10 of the radiodensity study (radiodensity.train)."""

from defaceaudit.radiodensity.train import train_radiodensity
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    train_radiodensity,
    crop_files=dict(zip(snakemake.params.subjects, snakemake.input.crops, strict=True)),
    image_type=snakemake.wildcards.image_type,
    targets_tsv=snakemake.input.targets,
    body_part=snakemake.wildcards.body_part,
    splits=None,  # each subject's split from the targets table
    settings={**snakemake.params.settings, "device": snakemake.config["radiodensity"]["device"]},
    out_predictions=snakemake.output.predictions,
    out_history=snakemake.output.history,
    out_model=snakemake.output.model,
)
