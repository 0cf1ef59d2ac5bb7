# Deface: one job per subject and defacer. Native backends run here; container backends run the
# real tool in its image, then the same finalising step (sidecar, masks, QC, PNG) as native.


rule fetch_face_template:
    output:
        **paths.FACE_TEMPLATE,
    log:
        log_file("fetch_face_template", "pydeface"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    # the cache folder comes from the config in the script (moving it reruns nothing)
    script:
        "../workflow_scripts/fetch_face_template.py"


rule build_average_head:
    input:
        unpack(JOBS.average_head_inputs),
    output:
        paths.AVERAGE_HEAD,
    log:
        log_file("build_average_head", "train"),
    benchmark:
        benchmark_file("build_average_head", "train")
    # first in line once its inputs exist: every avgface job waits for it
    priority: 10
    conda:
        "../envs/defaceaudit.yaml"
    # one registration per thread (on the demo nothing else is ready while it runs)
    threads: 4
    resources:
        mem_mb=per_attempt(6000),
        runtime=per_attempt(60),
    script:
        "../workflow_scripts/build_average_head.py"


rule deface_native:
    input:
        unpack(JOBS.native_deface_inputs),
    output:
        **paths.defaced_files("{defacer}", "{subject}", "{desc}"),
    log:
        log_file("deface_native", "{defacer}_{subject}_{desc}"),
    benchmark:
        benchmark_file("deface_native", "{defacer}_{subject}_{desc}")
    wildcard_constraints:
        defacer=JOBS.defacer_pattern("native"),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(20),
    params:
        extra=JOBS.native_deface_params,
        qc=canonical(config["deface"]["qc"]),
    script:
        "../workflow_scripts/deface_native.py"


rule finalize_container_deface:
    input:
        unpack(JOBS.container_finalize_inputs),
    output:
        **paths.defaced_files("{defacer}", "{subject}", "{desc}"),
    log:
        log_file("finalize_container_deface", "{defacer}_{subject}_{desc}"),
    wildcard_constraints:
        defacer=JOBS.defacer_pattern("container"),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(10),
    params:
        image=JOBS.container_image,
        params=JOBS.container_params,
        qc=canonical(config["deface"]["qc"]),
    script:
        "../workflow_scripts/finalize_container_deface.py"


rule describe_defaced_dataset:
    output:
        paths.deface_dataset_description("{defacer}"),
    log:
        log_file("describe_defaced_dataset", "{defacer}"),
    wildcard_constraints:
        defacer=JOBS.defacer_pattern(),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        provenance=JOBS.deface_description_params,
    script:
        "../workflow_scripts/describe_defaced_dataset.py"


rule write_qc_table:
    input:
        JOBS.qc_records,
    output:
        table=paths.QC_TABLE,
        summary=paths.QC_SUMMARY,
        markdown=paths.QC_SUMMARY_MD,
    log:
        log_file("write_qc_table", "all"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        expected=JOBS.expected_qc_records,
    script:
        "../workflow_scripts/write_qc_table.py"
