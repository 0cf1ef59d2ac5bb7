# Prepare: validate each T1w, reorient to RAS, head mask (Otsu + morphology), brain mask.


rule prepare_subject:
    input:
        unpack(JOBS.prepare_inputs),
    output:
        t1w=paths.prepared_files("{subject}")["t1w"],
        head_mask=paths.prepared_files("{subject}")["head_mask"],
        brain_mask=paths.prepared_files("{subject}")["brain_mask"],
        summary=paths.prepared_files("{subject}")["summary"],
    log:
        log_file("prepare_subject"),
    benchmark:
        benchmark_file("prepare_subject")
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(20),
    script:
        "../workflow_scripts/prepare_subject.py"
