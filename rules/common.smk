# Helpers only: the cohort, and input/params functions that look subjects up in it.
import errno
import os
import shutil

from defaceaudit import paths
from defaceaudit.cohort import plan_run
from defaceaudit.config import canonical, validate_config
from defaceaudit.defacers import containers
from defaceaudit.defacers import jobs as deface_jobs
from defaceaudit.defacers.plan import with_backend
from defaceaudit.demo.synth import synth_config
from defaceaudit.diffusion import jobs as reface_jobs
from defaceaudit.errors import DefaceAuditError
from defaceaudit.inputs import cohort_frame
from defaceaudit.metrics import jobs as metric_jobs
from defaceaudit.paths import benchmark_file, log_file
from defaceaudit.radiodensity.plan import image_files
from defaceaudit.targets import prepared_files

try:
    # Snakemake's validate() against the packaged schema, defaults filled; then the cohort and
    # every stage's plan, as `defaceaudit check-inputs` and `targets` build them
    validate_config(config)
    RUN = plan_run(config)
except DefaceAuditError as err:
    # One line naming the file or subject, instead of a traceback.
    raise WorkflowError(str(err)) from None
COHORT = RUN.cohort
DEFACERS = RUN.defacers
RADIODENSITY_PLAN = RUN.radiodensity
# Face metrics: which defacers give table rows and which fills the population-average column.
METRIC_PLAN = RUN.metrics
# Re-identification: the test subjects with a gallery image, and the face region's defacers.
REID_PLAN = metric_jobs.reidentification_plan(COHORT, METRIC_PLAN)


def prepare_inputs(wildcards):
    """The subject's T1w and, where the cohort provides one, its brain mask."""
    subject = COHORT.subjects[wildcards.subject]
    files = {"t1w": str(subject.t1w)}
    if subject.brain_mask is not None:
        files["brain_mask"] = str(subject.brain_mask)
    return files


def demo_base_inputs(wildcards):
    """The base head (and its brain mask) a demo subject is synthesised from."""
    base = COHORT.demo[wildcards.subject].base
    return {
        "t1w": paths.demo_base_file(base, "T1w"),
        "brain_mask": paths.demo_base_file(base, "brain_mask"),
        "head_mask": paths.demo_base_file(base, "head_mask"),
    }


def demo_subject_params(wildcards):
    return COHORT.demo[wildcards.subject].as_params()


def demo_gallery_config():
    return config["demo"]["gallery"]


def demo_dataset_subjects(wildcards):
    return [p.as_params() for p in COHORT.demo.values() if p.dataset == wildcards.dataset]


def demo_dataset_root(wildcards):
    return paths.demo_table(wildcards.dataset, "")


def cohort_records(wildcards):
    return cohort_frame(COHORT.subjects.values()).to_dict(orient="records")


def defacer_pattern(backend):
    """Wildcard regex of the defacers run with ``backend`` (one that never matches if none)."""
    names = with_backend(DEFACERS, backend)
    return "|".join(names) if names else "(?!x)x"


def native_deface_inputs(wildcards):
    return deface_jobs.native_inputs(wildcards.defacer, wildcards.subject)


def native_deface_params(wildcards):
    return deface_jobs.native_params(wildcards.defacer, config["deface"])


def average_head_inputs(wildcards):
    """The average face depends on the training split only."""
    return {
        "template": paths.FACE_TEMPLATE["template"],
        "t1w": [prepared_files(s)["t1w"] for s in COHORT.ids("train")],
    }


def qc_records(wildcards):
    return deface_jobs.qc_records(COHORT, DEFACERS)


def expected_qc_records(wildcards=None):
    return deface_jobs.expected_qc_records(COHORT, DEFACERS)


#: work folder of a container defacer, inside the job's shadow folder (deleted after the job)
CONTAINER_WORK = "work"


def fsl_deface_shell(wildcards, input, output):
    return containers.fsl_deface_command(input.t1w, output.t1w, output.removed)


def mri_deface_shell(wildcards, input, output):
    atlas_dir = config["deface"]["mri_deface_atlas_dir"]
    return containers.mri_deface_command(input.t1w, output.t1w, atlas_dir)


def pydeface_shell(wildcards, input, output):
    cost = config["deface"]["pydeface_cost"]
    return containers.pydeface_command(input.t1w, output.t1w, output.removed, CONTAINER_WORK, cost)


def quickshear_shell(wildcards, input, output):
    buffer = config["deface"]["quickshear_buffer"]
    return containers.quickshear_command(input.t1w, input.brain_mask, output.t1w, buffer)


def mri_reface_shell(wildcards, input, output):
    return containers.mri_reface_command(
        input.t1w, output.t1w, CONTAINER_WORK, f"{CONTAINER_WORK}/mcr_cache"
    )


def container_finalize_inputs(wildcards):
    return deface_jobs.container_finalize_inputs(wildcards.defacer, wildcards.subject)


def container_image(wildcards):
    return config["deface"]["containers"][wildcards.defacer]


def container_params(wildcards):
    return deface_jobs.container_params(wildcards.defacer, config["deface"])


def metric_defacer_pattern():
    return "|".join(METRIC_PLAN.removing) if METRIC_PLAN.removing else "(?!x)x"


def subject_split(wildcards):
    return COHORT.subjects[wildcards.subject].split


def face_metric_inputs(wildcards):
    return metric_jobs.face_metric_inputs(METRIC_PLAN, wildcards.defacer, wildcards.subject)


def face_metric_images(wildcards):
    return metric_jobs.compared_images(METRIC_PLAN, wildcards.defacer, wildcards.subject)


def face_metric_probes(wildcards):
    return metric_jobs.face_metric_probe_types(
        REID_PLAN, METRIC_PLAN, wildcards.defacer, wildcards.subject
    )


def reface_verdicts(wildcards):
    return reface_jobs.verdict_files(METRIC_PLAN)


def face_metric_rows(wildcards):
    return [
        paths.face_metric_files(d, s)["rows"]
        for d, s in metric_jobs.metric_jobs(COHORT, METRIC_PLAN)
    ]


def gallery_subject_pattern():
    """Wildcard regex of the subjects with a gallery face (one that never matches if none)."""
    subjects = REID_PLAN.subjects()
    return "|".join(subjects) if subjects else "(?!x)x"


def gallery_alignment_inputs(wildcards):
    return metric_jobs.gallery_alignment_inputs(COHORT, wildcards.subject)


def face_region_inputs(wildcards):
    return metric_jobs.face_region_inputs(REID_PLAN)


def face_region_subjects(wildcards):
    return metric_jobs.face_region_subjects(REID_PLAN)


def reidentification_files(wildcards):
    return metric_jobs.reidentification_inputs(COHORT, METRIC_PLAN, REID_PLAN)


def reidentification_gallery(wildcards):
    return metric_jobs.reidentification_gallery(REID_PLAN)


def reidentification_probe_list(wildcards):
    return metric_jobs.reidentification_probes(COHORT, METRIC_PLAN, REID_PLAN)


def reidentification_region(wildcards):
    return paths.FACE_REGION if REID_PLAN.gallery else None


def reidentification_notes(wildcards):
    return list(REID_PLAN.notes)


def face_panel_inputs(wildcards):
    return metric_jobs.face_panel_inputs(METRIC_PLAN, wildcards.subject)


def face_panel_columns(wildcards):
    return metric_jobs.face_panel_columns(METRIC_PLAN, wildcards.subject)


def on_failure():
    """The QC table with each failed deface job and its error, and the face tables of the rows
    that are current (none of their inputs newer or gone), marked PARTIAL, under
    results/partial/ (see README, 'Defacers')."""
    # imported here: scipy.stats (face tables) adds about half a second to every Snakemake start
    from defaceaudit.metrics.aggregate import aggregate_available_rows
    from defaceaudit.qc_report import write_qc_tables

    partial = paths.partial_file
    if DEFACERS:
        qc_files = (paths.QC_TABLE, paths.QC_SUMMARY, paths.QC_SUMMARY_MD)
        write_qc_tables(expected_qc_records(), *map(partial, qc_files))
        print(f"QC table with the failed jobs: {partial(paths.QC_TABLE)}")
    row_inputs = metric_jobs.face_metric_row_inputs(COHORT, METRIC_PLAN)
    left_out = aggregate_available_rows(
        list(row_inputs),
        partial(paths.FACE_METRICS),
        {key: partial(path) for key, path in paths.FACE_TABLES.items()},
        inputs=row_inputs,
        n_resamples=config["metrics"]["n_bootstrap"],
        seed=config["metrics"]["seed"],
    )
    if left_out:
        print(
            f"PARTIAL face tables ({len(left_out)} jobs without current rows): "
            f"{partial(paths.FACE_METRICS)}"
        )


def clear_partial():
    """Remove the previous failed run's stand-ins (results/partial/) as a run starts."""
    shutil.rmtree(paths.PARTIAL, ignore_errors=True)


def reface_training_mem_mb(stage):
    """The ``mem_mb`` resource of a refacing training stage: its estimated peak host memory
    from the training images' headers (``defaceaudit.diffusion.sizing``), times the attempt.
    Snakemake evaluates it once the images exist (it reads their headers)."""

    def mem_mb(wildcards, input, attempt):
        from defaceaudit.diffusion.sizing import training_job_mb

        for path in (*input.originals, *input.defaced):
            if not os.path.exists(path):  # Snakemake asks again once the inputs exist
                raise FileNotFoundError(errno.ENOENT, "not built yet", path)
        need = training_job_mb(input.originals, input.defaced, config["reface"], stage)
        return need * attempt

    return mem_mb


#: train subjects held out of refacing training for its convergence guard
REFACE_HELD_OUT = config["reface"]["validation"]["subjects"]


def reface_training_inputs(wildcards):
    return reface_jobs.training_inputs(COHORT, METRIC_PLAN, wildcards.model, REFACE_HELD_OUT)


def reface_training_pair_index(wildcards):
    return reface_jobs.training_pair_index(COHORT, METRIC_PLAN, wildcards.model, REFACE_HELD_OUT)


def reface_validation_inputs(wildcards):
    return reface_jobs.validation_inputs(COHORT, METRIC_PLAN, wildcards.model, REFACE_HELD_OUT)


def reface_validation_pairs(wildcards):
    return reface_jobs.validation_pairs(COHORT, METRIC_PLAN, wildcards.model, REFACE_HELD_OUT)


def reface_sample_inputs(wildcards):
    return reface_jobs.sample_inputs(wildcards.defacer, wildcards.subject)


def radiodensity_template():
    return config["radiodensity"]["template"] or paths.FACE_TEMPLATE["template"]


def radiodensity_images(wildcards):
    return image_files(wildcards.subject, RADIODENSITY_PLAN.image_types)


def radiodensity_crop_inputs(wildcards):
    """The prepared original and brain mask, every defacer's output, and the template."""
    prepared = prepared_files(wildcards.subject)
    return {
        "t1w": prepared["t1w"],
        "brain_mask": prepared["brain_mask"],
        "images": list(radiodensity_images(wildcards).values()),
        "template": radiodensity_template(),
    }


def radiodensity_phenotype(wildcards):
    return list(RADIODENSITY_PLAN.phenotype)


def radiodensity_pattern(key):
    """Wildcard regex of the plan's image types or body parts (never matches without a plan)."""
    if RADIODENSITY_PLAN is None:
        return "(?!x)x"
    return "|".join(getattr(RADIODENSITY_PLAN, key))


def radiodensity_training_inputs(wildcards):
    """Every subject's face crops (in cohort order) and the targets table."""
    return {
        "crops": [paths.radiodensity_crop_files(s)["crops"] for s in COHORT.subjects],
        "targets": paths.RADIODENSITY_TARGETS,
    }


def radiodensity_predictions(wildcards):
    return [
        paths.radiodensity_model_files(i, p)["predictions"] for i, p in RADIODENSITY_PLAN.models()
    ]


def radiodensity_markdown():
    """The Spearman table, for the tables page (none without the study)."""
    return [paths.RADIODENSITY_TABLES["markdown"]] if RADIODENSITY_PLAN else []
