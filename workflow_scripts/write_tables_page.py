"""Snakemake adapter: every table of the run on one HTML page (metrics.aggregate)."""

from defaceaudit.metrics.aggregate import write_tables_page
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    write_tables_page,
    markdown_files=list(snakemake.input),
    out_html=snakemake.output[0],
    title=(
        "defaceaudit: defacing QC, face metrics (Tables 1-3), re-identification and the "
        "radiodensity study"
    ),
)
