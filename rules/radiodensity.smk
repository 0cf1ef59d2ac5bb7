# The radiodensity study (paper section 3, Figure 6): every original registered affinely to a
# whole-head template, face crops of all its images, one ResNet10 per image type and body part
# predicting CT muscle radiodensity residuals, Spearman's rho with bootstrap CIs.


rule crop_radiodensity_face:
    input:
        unpack(JOBS.radiodensity_crop_inputs),
    output:
        **paths.radiodensity_crop_files("{subject}"),
    log:
        log_file("crop_radiodensity_face"),
    benchmark:
        benchmark_file("crop_radiodensity_face")
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(20),
    params:
        images=JOBS.radiodensity_images,
        shape=config["radiodensity"]["crop_shape"],
        voxel_mm=config["radiodensity"]["voxel_mm"],
        seed=config["radiodensity"]["seed"],
    script:
        "../workflow_scripts/crop_radiodensity_face.py"


rule radiodensity_targets:
    input:
        phenotype=JOBS.radiodensity_phenotype,
        cohort=paths.COHORT_TABLE,
    output:
        paths.RADIODENSITY_TARGETS,
    log:
        log_file("radiodensity_targets", "all"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        body_parts=config["radiodensity"]["body_parts"],
        split=config["radiodensity"]["split"],
    script:
        "../workflow_scripts/radiodensity_targets.py"


rule train_radiodensity:
    input:
        unpack(JOBS.radiodensity_training_inputs),
    output:
        **paths.radiodensity_model_files("{image_type}", "{body_part}"),
    log:
        log_file("train_radiodensity", "{image_type}_{body_part}"),
    benchmark:
        benchmark_file("train_radiodensity", "{image_type}_{body_part}")
    wildcard_constraints:
        image_type=JOBS.radiodensity_pattern("image_types"),
        body_part=JOBS.radiodensity_pattern("body_parts"),
    conda:
        "../envs/defaceaudit.yaml"
    # one thread: 18 small independent models (see sample_refaced)
    threads: 1
    resources:
        gpu=1,
        mem_mb=per_attempt(8000),
        runtime=per_attempt(120),
    # the device comes from the config in the script: moving the study to a GPU does not retrain
    params:
        subjects=list(JOBS.cohort.subjects),
        settings=canonical(config["radiodensity"]["training"]),
    script:
        "../workflow_scripts/train_radiodensity.py"


rule evaluate_radiodensity:
    input:
        predictions=JOBS.radiodensity_predictions,
    output:
        table=paths.RADIODENSITY_TABLES["table"],
        markdown=paths.RADIODENSITY_TABLES["markdown"],
        bootstrap=paths.RADIODENSITY_TABLES["bootstrap"],
        predictions=paths.RADIODENSITY_TABLES["predictions"],
        figure=report(
            paths.RADIODENSITY_FIGURE,
            caption="captions/radiodensity.rst",
            category="Radiodensity",
        ),
    log:
        log_file("evaluate_radiodensity", "all"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        n_bootstrap=config["radiodensity"]["n_bootstrap"],
        seed=config["radiodensity"]["seed"],
    script:
        "../workflow_scripts/evaluate_radiodensity.py"
