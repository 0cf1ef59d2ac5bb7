# The demo cohort (input.source: demo) and the cohort table of every run.


rule fetch_demo_base:
    output:
        t1w=paths.demo_base_file("{base}", "T1w"),
        brain_mask=paths.demo_base_file("{base}", "brain_mask"),
        head_mask=paths.demo_base_file("{base}", "head_mask"),
    log:
        log_file("fetch_demo_base", "{base}"),
    benchmark:
        benchmark_file("fetch_demo_base", "{base}")
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    # the cache folder is read from the config in the script: moving the cache (the same
    # verified files) must not rewrite the bases and so rerun every subject
    script:
        "../workflow_scripts/fetch_demo_base.py"


rule synthesize_demo_subject:
    input:
        unpack(JOBS.demo_base_inputs),
    output:
        t1w=paths.demo_t1w("{dataset}", "{subject}"),
        brain_mask=paths.demo_brain_mask("{dataset}", "{subject}"),
    log:
        log_file("synthesize_demo_subject", "{dataset}_{subject}"),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        # 1.8 GB measured at 1 mm, the finest demo grid the schema allows
        mem_mb=per_attempt(3000),
        runtime=per_attempt(10),
    params:
        subject=JOBS.demo_subject_params,
        synth=synth_config(config["demo"]),
    script:
        "../workflow_scripts/synthesize_demo_subject.py"


rule synthesize_demo_gallery:
    input:
        unpack(JOBS.demo_base_inputs),
    output:
        t1w=paths.demo_gallery_t1w("{subject}"),
    log:
        log_file("synthesize_demo_gallery"),
    wildcard_constraints:
        subject=JOBS.gallery_subject_pattern(),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(10),
    params:
        subject=JOBS.demo_subject_params,
        synth=synth_config(config["demo"]),
        gallery=JOBS.demo_gallery_config(),
    script:
        "../workflow_scripts/synthesize_demo_gallery.py"


rule write_demo_tables:
    output:
        [paths.demo_table("{dataset}", name) for name in paths.DEMO_TABLES],
    log:
        log_file("write_demo_tables", "{dataset}"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        subjects=JOBS.demo_dataset_subjects,
        seed=config["demo"]["seed"],
        root=JOBS.demo_dataset_root,
    script:
        "../workflow_scripts/write_demo_tables.py"


rule write_cohort_table:
    output:
        paths.COHORT_TABLE,
    log:
        log_file("write_cohort_table", "cohort"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        records=JOBS.cohort_records,
    script:
        "../workflow_scripts/write_cohort_table.py"
