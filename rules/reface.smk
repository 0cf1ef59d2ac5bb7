# Refacing (paper section 2.1): a cascade of DDIM models trained on the train split only (one
# pair for every face-removing defacer, one for skull-stripped inputs), sampled per test subject
# and defacer. GPU rules: resources gpu=1 on a cluster; `reface.device` picks the device.


rule train_stage1:
    input:
        unpack(JOBS.reface_training_inputs),
    output:
        paths.reface_checkpoint("{model}", 1),
    log:
        log_file("train_stage1", "{model}"),
    benchmark:
        benchmark_file("train_stage1", "{model}")
    # first in line once its inputs exist: every sampling job, and after them every metric
    # job, waits for the two stages
    priority: 10
    conda:
        "../envs/defaceaudit.yaml"
    # one thread: the demo's networks train no faster on two CPU threads than on one
    # (benchmarks/bench_refacing.py under OMP_NUM_THREADS=1 and 2), and a second thread held
    # for minutes would keep the defacing jobs off the other core; raise it with --set-threads
    threads: 1
    # host memory from the images' size (stage 1 at paper scale: about 5 GB)
    resources:
        gpu=1,
        mem_mb=JOBS.reface_training_mem_mb(1),
        runtime=per_attempt(240),
    # only what this stage's training reads (a changed param reruns the job); the device comes
    # from the config in the script: moving a run to a GPU does not retrain
    params:
        pair_index=JOBS.reface_training_pair_index,
        config=canonical(reface_jobs.training_settings(config["reface"], 1)),
    script:
        "../workflow_scripts/train_stage1.py"


rule train_stage2:
    input:
        unpack(JOBS.reface_training_inputs),
    output:
        paths.reface_checkpoint("{model}", 2),
    log:
        log_file("train_stage2", "{model}"),
    benchmark:
        benchmark_file("train_stage2", "{model}")
    # first in line once its inputs exist: every sampling job, and after them every metric
    # job, waits for the two stages
    priority: 10
    conda:
        "../envs/defaceaudit.yaml"
    # one thread, as train_stage1
    threads: 1
    # host memory from the images' size (stage 2 at paper scale: about 31 GB)
    resources:
        gpu=1,
        mem_mb=JOBS.reface_training_mem_mb(2),
        runtime=per_attempt(480),
    # only what this stage's training reads (a changed param reruns the job); the device comes
    # from the config in the script: moving a run to a GPU does not retrain
    params:
        pair_index=JOBS.reface_training_pair_index,
        config=canonical(reface_jobs.training_settings(config["reface"], 2)),
    script:
        "../workflow_scripts/train_stage2.py"


rule sample_refaced:
    input:
        unpack(JOBS.reface_sample_inputs),
    output:
        **paths.refaced_files("{defacer}", "{subject}", "{desc}"),
    log:
        log_file("sample_refaced", "{defacer}_{subject}_{desc}"),
    benchmark:
        benchmark_file("sample_refaced", "{defacer}_{subject}_{desc}")
    wildcard_constraints:
        defacer=JOBS.metric_defacer_pattern(),
    conda:
        "../envs/defaceaudit.yaml"
    # one thread: sampling jobs are many and independent; on a CPU two one-thread jobs do
    # 40 % more work than one two-thread job (README, "Quick start"); a GPU job's CPU count
    # comes from the profile (cpus_per_gpu)
    threads: 1
    resources:
        gpu=1,
        mem_mb=per_attempt(8000),
        runtime=per_attempt(30),
    # the device comes from the config in the script: moving a run to a GPU does not resample
    params:
        sampling=canonical(config["reface"]["sampling"]),
    script:
        "../workflow_scripts/sample_refaced.py"


rule validate_refacing:
    input:
        unpack(JOBS.reface_validation_inputs),
    output:
        curve=paths.reface_validation_files("{model}")["curve"],
        verdict=paths.reface_validation_files("{model}")["verdict"],
        figure=report(
            paths.reface_validation_files("{model}")["figure"],
            caption="captions/learning_curve.rst",
            category="Refacing attack",
            labels={"model": "{model}"},
        ),
    log:
        log_file("validate_refacing", "{model}"),
    benchmark:
        benchmark_file("validate_refacing", "{model}")
    # the DPM results wait for its verdict (the tables say whether the attack converged)
    priority: 5
    conda:
        "../envs/defaceaudit.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=per_attempt(8000),
        runtime=per_attempt(60),
    # the validation pairs as the job sees them; the sampling settings of the test subjects
    params:
        pairs=JOBS.reface_validation_pairs,
        sampling=canonical(config["reface"]["sampling"]),
    script:
        "../workflow_scripts/validate_refacing.py"
