# Re-identification by face recognition (metrics.face_recognition): each re-identified test
# subject's images rendered as face photographs and embedded by a face recognizer, one job per
# subject each; the embeddings matched against the gallery's in one job, whose rows join
# reidentification.tsv (rule reidentify_faces).


rule render_face_views:
    input:
        unpack(JOBS.face_view_inputs),
    output:
        renderings=paths.face_view_files("{subject}")["renderings"],
    log:
        log_file("render_face_views"),
    benchmark:
        benchmark_file("render_face_views")
    wildcard_constraints:
        subject=JOBS.face_recognition_subject_pattern(),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    script:
        "../workflow_scripts/render_face_views.py"


rule embed_face_views:
    input:
        unpack(JOBS.face_embedding_inputs),
    output:
        embeddings=paths.face_view_files("{subject}")["embeddings"],
    log:
        log_file("embed_face_views"),
    benchmark:
        benchmark_file("embed_face_views")
    wildcard_constraints:
        subject=JOBS.face_recognition_subject_pattern(),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    params:
        recognizer=JOBS.face_recognizer,
    script:
        "../workflow_scripts/embed_face_views.py"


rule match_face_embeddings:
    input:
        JOBS.face_embedding_files,
    output:
        **paths.FACE_RECOGNITION,
    log:
        log_file("match_face_embeddings", "all"),
    localrule: True
    conda:
        "../envs/defaceaudit.yaml"
    params:
        embeddings=JOBS.face_embedding_sets,
        recognizer=JOBS.face_recognizer_label,
        n_bootstrap=config["metrics"]["n_bootstrap"],
        seed=config["metrics"]["seed"],
    script:
        "../workflow_scripts/match_face_embeddings.py"


rule plot_face_views:
    input:
        renderings=rules.render_face_views.output.renderings,
        embeddings=rules.embed_face_views.output.embeddings,
    output:
        report(
            paths.face_view_sheet("{subject}"),
            caption="captions/face_views.rst",
            category="Re-identification",
            subcategory="Face renderings (PRIVATE)",
        ),
    log:
        log_file("plot_face_views"),
    wildcard_constraints:
        subject=JOBS.face_recognition_subject_pattern(),
    conda:
        "../envs/defaceaudit.yaml"
    resources:
        mem_mb=per_attempt(1000),
        runtime=per_attempt(5),
    script:
        "../workflow_scripts/plot_face_views.py"
