# Figures and the Snakemake report: `snakemake --report results/report.html` collects every
# output marked report() below, with its caption from rules/captions/.


rule plot_face_figures:
    input:
        summary=paths.FACE_TABLES["summary"],
        rows=paths.FACE_METRICS,
        qc=paths.QC_TABLE,
        reidentification=paths.REIDENTIFICATION["summary"],
    output:
        masd=report(
            paths.FIGURE_FILES["masd"],
            caption="captions/masd.rst",
            category="Face metrics",
        ),
        similarity=report(
            paths.FIGURE_FILES["similarity"],
            caption="captions/similarity.rst",
            category="Face metrics",
        ),
        qc=report(paths.FIGURE_FILES["qc"], caption="captions/qc.rst", category="Defacing QC"),
        reidentification=report(
            paths.FIGURE_FILES["reidentification"],
            caption="captions/reidentification.rst",
            category="Re-identification",
        ),
    log:
        log_file("plot_face_figures", "all"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    script:
        "../workflow_scripts/plot_face_figures.py"


rule render_face_panel:
    input:
        unpack(JOBS.face_panel_inputs),
        unpack(JOBS.reface_verdicts),
    output:
        report(
            paths.face_panel_file("{subject}"),
            caption="captions/face_panels.rst",
            category="Face renderings",
        ),
    log:
        log_file("render_face_panel"),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(10),
    params:
        columns=JOBS.face_panel_columns,
    script:
        "../workflow_scripts/render_face_panel.py"


rule write_tables_page:
    input:
        paths.QC_SUMMARY_MD,
        *[paths.FACE_TABLES[f"{name}_md"] for name in paths.FACE_TABLE_NAMES],
        paths.REIDENTIFICATION["markdown"],
        *JOBS.radiodensity_markdown(),
    output:
        report(paths.FACE_TABLES_HTML, caption="captions/tables.rst", category="Tables"),
    log:
        log_file("write_tables_page", "all"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    script:
        "../workflow_scripts/write_tables_page.py"


onerror:
    # With --keep-going a failed job leaves the aggregates without some inputs, so their rules
    # cannot run: write what the finished jobs allow, each table saying what it lacks.
    JOBS.on_failure()
