# The real defacers in their Apptainer images (deface.defacers: <tool>: container). Each writes
# a raw output that finalize_container_deface turns into the stage's outputs. A rule exists
# only when its tool is selected with the container backend (it needs an image). Each runs in
# a shadow folder that Snakemake deletes afterwards: the tools' work files (staged copies of the
# original head, registration matrices, the MATLAB runtime cache) and stray files written to the
# working folder (mri_deface's log) never stay beside the results.


if "fsl_deface" in with_backend(JOBS.defacers, "container"):

    rule deface_container_fsl_deface:
        input:
            t1w=paths.prepared_files("{subject}")["t1w"],
        output:
            t1w=temp(paths.container_raw("fsl_deface", "{subject}")["t1w"]),
            removed=temp(paths.container_raw("fsl_deface", "{subject}")["removed"]),
            command=temp(paths.container_raw("fsl_deface", "{subject}")["command"]),
        log:
            log_file("deface_container_fsl_deface"),
        benchmark:
            benchmark_file("deface_container_fsl_deface")
        shadow:
            "minimal"
        container:
            config["deface"]["containers"]["fsl_deface"]
        resources:
            mem_mb=per_attempt(4000),
            runtime=per_attempt(30),
        params:
            command=JOBS.fsl_deface_shell,
            shown=JOBS.quoted_shell("fsl_deface"),
            image=config["deface"]["containers"]["fsl_deface"],
        shell:
            "( echo 'image: {params.image}'; printf '%s\\n' {params.shown} > {output.command};"
            " {params.command} ) > {log} 2>&1"


if "mri_deface" in with_backend(JOBS.defacers, "container"):

    rule deface_container_mri_deface:
        input:
            t1w=paths.prepared_files("{subject}")["t1w"],
        output:
            t1w=temp(paths.container_raw("mri_deface", "{subject}")["t1w"]),
            command=temp(paths.container_raw("mri_deface", "{subject}")["command"]),
        log:
            log_file("deface_container_mri_deface"),
        benchmark:
            benchmark_file("deface_container_mri_deface")
        shadow:
            "minimal"
        container:
            config["deface"]["containers"]["mri_deface"]
        resources:
            mem_mb=per_attempt(4000),
            runtime=per_attempt(30),
        params:
            command=JOBS.mri_deface_shell,
            shown=JOBS.quoted_shell("mri_deface"),
            image=config["deface"]["containers"]["mri_deface"],
        shell:
            "( echo 'image: {params.image}'; printf '%s\\n' {params.shown} > {output.command};"
            " {params.command} ) > {log} 2>&1"


if "pydeface" in with_backend(JOBS.defacers, "container"):

    rule deface_container_pydeface:
        input:
            t1w=paths.prepared_files("{subject}")["t1w"],
        output:
            t1w=temp(paths.container_raw("pydeface", "{subject}")["t1w"]),
            removed=temp(paths.container_raw("pydeface", "{subject}")["removed"]),
            command=temp(paths.container_raw("pydeface", "{subject}")["command"]),
        log:
            log_file("deface_container_pydeface"),
        benchmark:
            benchmark_file("deface_container_pydeface")
        shadow:
            "minimal"
        container:
            config["deface"]["containers"]["pydeface"]
        resources:
            mem_mb=per_attempt(4000),
            runtime=per_attempt(30),
        params:
            command=JOBS.pydeface_shell,
            shown=JOBS.quoted_shell("pydeface"),
            image=config["deface"]["containers"]["pydeface"],
        shell:
            "( echo 'image: {params.image}'; printf '%s\\n' {params.shown} > {output.command};"
            " {params.command} ) > {log} 2>&1"


if "quickshear" in with_backend(JOBS.defacers, "container"):

    rule deface_container_quickshear:
        input:
            t1w=paths.prepared_files("{subject}")["t1w"],
            brain_mask=paths.prepared_files("{subject}")["brain_mask"],
        output:
            t1w=temp(paths.container_raw("quickshear", "{subject}")["t1w"]),
            command=temp(paths.container_raw("quickshear", "{subject}")["command"]),
        log:
            log_file("deface_container_quickshear"),
        benchmark:
            benchmark_file("deface_container_quickshear")
        shadow:
            "minimal"
        container:
            config["deface"]["containers"]["quickshear"]
        resources:
            mem_mb=per_attempt(2000),
            runtime=per_attempt(10),
        params:
            command=JOBS.quickshear_shell,
            shown=JOBS.quoted_shell("quickshear"),
            image=config["deface"]["containers"]["quickshear"],
        shell:
            "( echo 'image: {params.image}'; printf '%s\\n' {params.shown} > {output.command};"
            " {params.command} ) > {log} 2>&1"


if "mri_reface" in with_backend(JOBS.defacers, "container"):

    rule deface_container_mri_reface:
        input:
            t1w=paths.prepared_files("{subject}")["t1w"],
        output:
            t1w=temp(paths.container_raw("mri_reface", "{subject}")["t1w"]),
            command=temp(paths.container_raw("mri_reface", "{subject}")["command"]),
        log:
            log_file("deface_container_mri_reface"),
        benchmark:
            benchmark_file("deface_container_mri_reface")
        shadow:
            "minimal"
        container:
            config["deface"]["containers"]["mri_reface"]
        resources:
            mem_mb=per_attempt(16000),
            runtime=per_attempt(90),
        params:
            command=JOBS.mri_reface_shell,
            shown=JOBS.quoted_shell("mri_reface"),
            image=config["deface"]["containers"]["mri_reface"],
        shell:
            "( echo 'image: {params.image}'; printf '%s\\n' {params.shown} > {output.command};"
            " {params.command} ) > {log} 2>&1"


if "mideface" in with_backend(JOBS.defacers, "container"):
    # Snakemake has no per-rule bind: the licence file is bound read-only, at its own path, for
    # every container job of the run (FS_LICENSE names it in mideface's command).
    workflow.deployment_settings.apptainer_args = license_bind(
        workflow.deployment_settings.apptainer_args,
        freesurfer_license(config["deface"]),
    )

    rule deface_container_mideface:
        input:
            t1w=paths.prepared_files("{subject}")["t1w"],
        output:
            t1w=temp(paths.container_raw("mideface", "{subject}")["t1w"]),
            removed=temp(paths.container_raw("mideface", "{subject}")["removed"]),
            command=temp(paths.container_raw("mideface", "{subject}")["command"]),
        log:
            log_file("deface_container_mideface"),
        benchmark:
            benchmark_file("deface_container_mideface")
        shadow:
            "minimal"
        container:
            config["deface"]["containers"]["mideface"]
        # SAMSEG's brain exclusion mask: about 14 GB and 20-40 min per image
        threads: 4
        resources:
            mem_mb=per_attempt(16000),
            runtime=per_attempt(90),
        params:
            command=JOBS.mideface_shell,
            shown=JOBS.quoted_shell("mideface"),
            image=config["deface"]["containers"]["mideface"],
        shell:
            "( echo 'image: {params.image}'; printf '%s\\n' {params.shown} > {output.command};"
            " {params.command} ) > {log} 2>&1"


if "afni_refacer2" in with_backend(JOBS.defacers, "container"):

    rule deface_container_afni_refacer2:
        input:
            t1w=paths.prepared_files("{subject}")["t1w"],
        output:
            t1w=temp(paths.container_raw("afni_refacer2", "{subject}")["t1w"]),
            command=temp(paths.container_raw("afni_refacer2", "{subject}")["command"]),
        log:
            log_file("deface_container_afni_refacer2"),
        benchmark:
            benchmark_file("deface_container_afni_refacer2")
        shadow:
            "minimal"
        container:
            config["deface"]["containers"]["afni_refacer2"]
        resources:
            mem_mb=per_attempt(4000),
            runtime=per_attempt(30),
        params:
            command=JOBS.afni_refacer2_shell,
            shown=JOBS.quoted_shell("afni_refacer2"),
            image=config["deface"]["containers"]["afni_refacer2"],
        shell:
            "( echo 'image: {params.image}'; printf '%s\\n' {params.shown} > {output.command};"
            " {params.command} ) > {log} 2>&1"
