"""Snakemake adapter: QC table and per-defacer summary (qc_report.write_qc_table)."""

from defaceaudit.deface.qc_report import write_qc_table
from defaceaudit.workflow.run_step import run_step

run_step(
    snakemake.log[0],
    write_qc_table,
    expected=snakemake.params.expected,
    table_path=snakemake.output.table,
    summary_path=snakemake.output.summary,
    markdown_path=snakemake.output.markdown,
)
