"""Snakemake adapter: pydeface's template and face mask (defacers.templates)."""

from defaceaudit.deface.templates import fetch_face_template
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    fetch_face_template,
    out_template=snakemake.output.template,
    out_facemask=snakemake.output.facemask,
    cache_dir=snakemake.config["demo"]["cache_dir"],
)
