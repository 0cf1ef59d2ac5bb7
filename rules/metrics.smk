# Face metrics of the test subjects (paper section 2.3): one job per subject and defacer, the
# paper's Tables 1-3 with bootstrap CIs and Wilcoxon tests, and re-identification.


rule align_face_to_template:
    input:
        t1w=paths.prepared_files("{subject}")["t1w"],
        head_mask=paths.prepared_files("{subject}")["head_mask"],
        template=paths.FACE_TEMPLATE["template"],
    output:
        **paths.template_alignment_files("{subject}"),
    log:
        log_file("align_face_to_template"),
    benchmark:
        benchmark_file("align_face_to_template")
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(20),
    params:
        seed=config["metrics"]["seed"],
    script:
        "../workflow_scripts/align_face_to_template.py"


rule align_gallery_face:
    input:
        unpack(JOBS.gallery_alignment_inputs),
    output:
        **paths.gallery_alignment_files("{subject}"),
    log:
        log_file("align_gallery_face"),
    benchmark:
        benchmark_file("align_gallery_face")
    wildcard_constraints:
        subject=JOBS.gallery_subject_pattern(),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(20),
    params:
        seed=config["metrics"]["seed"],
    script:
        "../workflow_scripts/align_gallery_face.py"


rule build_face_region:
    input:
        unpack(JOBS.face_region_inputs),
    output:
        mask=paths.FACE_REGION["mask"],
        sidecar=paths.FACE_REGION["sidecar"],
    log:
        log_file("build_face_region", "all"),
    benchmark:
        benchmark_file("build_face_region", "all")
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(20),
    params:
        subjects=JOBS.face_region_subjects,
        defacers=list(JOBS.reid.region_defacers),
        dilation_mm=config["metrics"]["reidentification_dilation_mm"],
    script:
        "../workflow_scripts/build_face_region.py"


rule compute_face_metrics:
    input:
        unpack(JOBS.face_metric_inputs),
    output:
        **paths.face_metric_files("{defacer}", "{subject}", "{desc}"),
    log:
        log_file("compute_face_metrics", "{defacer}_{subject}_{desc}"),
    benchmark:
        benchmark_file("compute_face_metrics", "{defacer}_{subject}_{desc}")
    wildcard_constraints:
        defacer=JOBS.metric_defacer_pattern(),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(6000),
        runtime=per_attempt(20),
    params:
        images=JOBS.face_metric_images,
        probes=JOBS.face_metric_probes,
        test_set=JOBS.subject_split,
        seed=config["metrics"]["seed"],
    script:
        "../workflow_scripts/compute_face_metrics.py"


rule aggregate_face_metrics:
    input:
        unpack(JOBS.reface_verdicts),
        rows=JOBS.face_metric_rows,
    output:
        **paths.FACE_TABLES,
        rows=paths.FACE_METRICS,
    log:
        log_file("aggregate_face_metrics", "all"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        n_bootstrap=config["metrics"]["n_bootstrap"],
        seed=config["metrics"]["seed"],
    script:
        "../workflow_scripts/aggregate_face_metrics.py"


rule reidentify_faces:
    input:
        unpack(JOBS.reidentification_files),
    output:
        **paths.REIDENTIFICATION,
    log:
        log_file("reidentify_faces", "all"),
    benchmark:
        benchmark_file("reidentify_faces", "all")
    conda:
        "../envs/defaceaudit.yaml"
    # nearest-neighbour queries in threads: probes x gallery faces grows as the square of the
    # test subjects (paper scale: about an hour of CPU, README "Face metrics")
    threads: 4
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(60),
    params:
        gallery=JOBS.reidentification_gallery,
        probes=JOBS.reidentification_probe_list,
        region=JOBS.reidentification_region,
        notes=JOBS.reidentification_notes,
        n_bootstrap=config["metrics"]["n_bootstrap"],
        seed=config["metrics"]["seed"],
        probe_vertices=config["metrics"]["reidentification_vertices"],
    script:
        "../workflow_scripts/reidentify_faces.py"
