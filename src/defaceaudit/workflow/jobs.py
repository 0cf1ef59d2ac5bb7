"""What the rules look up in a run's plan: every input, params, shell and wildcard-pattern
function of rules/*.smk, as the methods of one object built from the run's plan
(``JOBS = RunJobs(plan_run(config), config)`` in rules/common.smk).

A method a rule names as an input or params function takes ``wildcards`` (and, for shell
commands, ``input`` and ``output``) and returns paths or values; the planning itself lives in
the stage modules beside this one (:mod:`.deface_jobs`, :mod:`.reface_jobs`,
:mod:`.metrics_jobs`, :mod:`.radiodensity_plan`). Nothing here opens an image.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil

from defaceaudit import paths
from defaceaudit.cohort import cohort_frame
from defaceaudit.deface import containers
from defaceaudit.workflow import deface_jobs, reface_jobs
from defaceaudit.workflow import face_recognition_jobs as face_jobs
from defaceaudit.workflow import metrics_jobs as metric_jobs
from defaceaudit.workflow.deface_plan import freesurfer_license, with_backend
from defaceaudit.workflow.plan import RunPlan
from defaceaudit.workflow.radiodensity_plan import image_files

#: work folder of a container defacer, inside the job's shadow folder (deleted after the job)
CONTAINER_WORK = "work"


class RunJobs:
    """The run's lookups for the rules. ``run``: :func:`~defaceaudit.workflow.plan.plan_run`'s
    plan; ``config``: the validated config it was planned from."""

    def __init__(self, run: RunPlan, config: dict) -> None:
        self.run = run
        self.config = config
        self.cohort = run.cohort
        self.defacers = run.defacers
        self.radiodensity = run.radiodensity
        #: face metrics: which defacers give table rows, which fills the population average
        self.metrics = run.metrics
        #: re-identification: test subjects with a gallery image, the face region's defacers
        self.reid = metric_jobs.reidentification_plan(run.cohort, run.metrics)
        #: train subjects held out of refacing training for its convergence guard
        self.held_out = config["reface"]["validation"]["subjects"]

    def prepare_inputs(self, wildcards):
        """The subject's T1w and, where the cohort provides one, its brain mask."""
        subject = self.cohort.subjects[wildcards.subject]
        files = {"t1w": str(subject.t1w)}
        if subject.brain_mask is not None:
            files["brain_mask"] = str(subject.brain_mask)
        return files

    def demo_base_inputs(self, wildcards):
        """The base head (and its brain mask) a demo subject is synthesised from."""
        base = self.cohort.demo[wildcards.subject].base
        return {
            "t1w": paths.demo_base_file(base, "T1w"),
            "brain_mask": paths.demo_base_file(base, "brain_mask"),
            "head_mask": paths.demo_base_file(base, "head_mask"),
        }

    def demo_subject_params(self, wildcards):
        return self.cohort.demo[wildcards.subject].as_params()

    def demo_gallery_config(self):
        return self.config["demo"]["gallery"]

    def demo_dataset_subjects(self, wildcards):
        return [p.as_params() for p in self.cohort.demo.values() if p.dataset == wildcards.dataset]

    def demo_dataset_root(self, wildcards):
        return paths.demo_table(wildcards.dataset, "")

    def cohort_records(self, wildcards):
        return cohort_frame(self.cohort.subjects.values()).to_dict(orient="records")

    def defacer_pattern(self, backend=None):
        """Wildcard regex of the defacers run with ``backend`` (None: every backend; one that
        never matches if none)."""
        names = with_backend(self.defacers, backend) if backend else list(self.defacers)
        return "|".join(names) if names else "(?!x)x"

    def native_deface_inputs(self, wildcards):
        return deface_jobs.native_inputs(wildcards.defacer, wildcards.subject)

    def native_deface_params(self, wildcards):
        return deface_jobs.native_params(wildcards.defacer, self.config["deface"])

    def average_head_inputs(self, wildcards):
        """The average face depends on the training split only."""
        return {
            "template": paths.FACE_TEMPLATE["template"],
            "t1w": [paths.prepared_files(s)["t1w"] for s in self.cohort.ids("train")],
        }

    def qc_records(self, wildcards):
        return deface_jobs.qc_records(self.cohort, self.defacers)

    def expected_qc_records(self, wildcards=None):
        return deface_jobs.expected_qc_records(self.cohort, self.defacers)

    def fsl_deface_shell(self, wildcards, input, output):
        return containers.fsl_deface_command(input.t1w, output.t1w, output.removed)

    def mri_deface_shell(self, wildcards, input, output):
        atlas_dir = self.config["deface"]["mri_deface_atlas_dir"]
        return containers.mri_deface_command(input.t1w, output.t1w, atlas_dir)

    def pydeface_shell(self, wildcards, input, output):
        cost = self.config["deface"]["pydeface_cost"]
        return containers.pydeface_command(
            input.t1w, output.t1w, output.removed, CONTAINER_WORK, cost
        )

    def quickshear_shell(self, wildcards, input, output):
        buffer = self.config["deface"]["quickshear_buffer"]
        return containers.quickshear_command(input.t1w, input.brain_mask, output.t1w, buffer)

    def mri_reface_shell(self, wildcards, input, output):
        return containers.mri_reface_command(
            input.t1w, output.t1w, CONTAINER_WORK, f"{CONTAINER_WORK}/mcr_cache"
        )

    def mideface_shell(self, wildcards, input, output, threads):
        deface = self.config["deface"]
        return containers.mideface_command(
            input.t1w,
            output.t1w,
            output.removed,
            CONTAINER_WORK,
            freesurfer_license(deface),
            threads=threads,
            ears=deface["mideface_ears"],
            samseg=deface["mideface_samseg"],
        )

    def afni_refacer2_shell(self, wildcards, input, output):
        deface = self.config["deface"]
        return containers.afni_refacer2_command(
            input.t1w,
            output.t1w,
            CONTAINER_WORK,
            shell=deface["afni_refacer2_shell"],
            mode=deface["afni_refacer2_mode"],
        )

    def quoted_shell(self, defacer):
        """A params function giving ``defacer``'s container command quoted for the shell: the
        job writes it to its ``command`` output, which the sidecar records."""
        method = getattr(self, f"{defacer}_shell")

        def quoted(wildcards, input, output, threads):
            extra = {"threads": threads} if defacer == "mideface" else {}
            return shlex.quote(method(wildcards, input, output, **extra))

        return quoted

    def deface_description_params(self, wildcards):
        """Backend and image of a defacer, for its dataset_description.json."""
        backend = self.defacers[wildcards.defacer]
        image = self.config["deface"]["containers"].get(wildcards.defacer)
        return {"backend": backend, "image": image if backend == "container" else None}

    def container_finalize_inputs(self, wildcards):
        return deface_jobs.container_finalize_inputs(wildcards.defacer, wildcards.subject)

    def container_image(self, wildcards):
        return self.config["deface"]["containers"][wildcards.defacer]

    def container_params(self, wildcards):
        return deface_jobs.container_params(wildcards.defacer, self.config["deface"])

    def metric_defacer_pattern(self):
        return "|".join(self.metrics.removing) if self.metrics.removing else "(?!x)x"

    def subject_split(self, wildcards):
        return self.cohort.subjects[wildcards.subject].split

    def face_metric_inputs(self, wildcards):
        return metric_jobs.face_metric_inputs(self.metrics, wildcards.defacer, wildcards.subject)

    def face_metric_images(self, wildcards):
        return metric_jobs.compared_images(self.metrics, wildcards.defacer, wildcards.subject)

    def face_metric_probes(self, wildcards):
        return metric_jobs.face_metric_probe_types(
            self.reid, self.metrics, wildcards.defacer, wildcards.subject
        )

    def reface_verdicts(self, wildcards):
        return reface_jobs.verdict_files(self.metrics)

    def face_metric_rows(self, wildcards):
        return [
            paths.face_metric_files(d, s)["rows"]
            for d, s in metric_jobs.metric_jobs(self.cohort, self.metrics)
        ]

    def gallery_subject_pattern(self):
        """Wildcard regex of the subjects with a gallery face (one that never matches if none)."""
        subjects = self.reid.subjects()
        return "|".join(subjects) if subjects else "(?!x)x"

    def gallery_alignment_inputs(self, wildcards):
        return metric_jobs.gallery_alignment_inputs(self.cohort, wildcards.subject)

    def face_region_inputs(self, wildcards):
        return metric_jobs.face_region_inputs(self.reid)

    def face_region_subjects(self, wildcards):
        return metric_jobs.face_region_subjects(self.reid)

    def reidentification_files(self, wildcards):
        """The surface matcher's inputs and the face-recognition matcher's summary."""
        files = metric_jobs.reidentification_inputs(self.cohort, self.metrics, self.reid)
        return {**files, **face_jobs.face_recognition_summary(self.metrics, self.reid)}

    def reidentification_gallery(self, wildcards):
        return metric_jobs.reidentification_gallery(self.reid)

    def reidentification_probe_list(self, wildcards):
        return metric_jobs.reidentification_probes(self.cohort, self.metrics, self.reid)

    def reidentification_region(self, wildcards):
        return paths.FACE_REGION if self.reid.gallery else None

    def reidentification_notes(self, wildcards):
        return list(self.reid.notes)

    def face_recognition_subject_pattern(self):
        """Wildcard regex of the subjects whose faces are rendered (never matches if none)."""
        subjects = face_jobs.face_recognition_subjects(self.metrics, self.reid)
        return "|".join(subjects) if subjects else "(?!x)x"

    def face_view_inputs(self, wildcards):
        return face_jobs.face_view_images(self.cohort, self.metrics, wildcards.subject)

    def face_embedding_inputs(self, wildcards):
        settings = face_jobs.recognizer_settings(self.config)
        return face_jobs.face_embedding_inputs(wildcards.subject, settings)

    def face_recognizer(self, wildcards):
        return face_jobs.recognizer_settings(self.config).as_params()

    def face_recognizer_label(self, wildcards):
        return face_jobs.recognizer_settings(self.config).label()

    def face_embedding_sets(self, wildcards):
        return face_jobs.face_embedding_sets(self.cohort, self.metrics, self.reid)

    def face_embedding_files(self, wildcards):
        return [f for s in self.face_embedding_sets(wildcards).values() for f in s.values()]

    def face_panel_inputs(self, wildcards):
        return metric_jobs.face_panel_inputs(self.metrics, wildcards.subject)

    def face_panel_columns(self, wildcards):
        return metric_jobs.face_panel_columns(self.metrics, wildcards.subject)

    def reface_training_mem_mb(self, stage):
        """The ``mem_mb`` resource of a refacing training stage: its estimated peak host memory
        from the training images' headers (``defaceaudit.reface.sizing``), times the attempt.
        Snakemake evaluates it once the images exist (it reads their headers)."""

        def mem_mb(wildcards, input, attempt):
            from defaceaudit.reface.sizing import training_job_mb

            for path in (*input.originals, *input.defaced):
                if not os.path.exists(path):  # Snakemake asks again once the inputs exist
                    raise FileNotFoundError(errno.ENOENT, "not built yet", path)
            need = training_job_mb(input.originals, input.defaced, self.config["reface"], stage)
            return need * attempt

        return mem_mb

    def reface_training_inputs(self, wildcards):
        return reface_jobs.training_inputs(
            self.cohort, self.metrics, wildcards.model, self.held_out
        )

    def reface_training_pair_index(self, wildcards):
        return reface_jobs.training_pair_index(
            self.cohort, self.metrics, wildcards.model, self.held_out
        )

    def reface_validation_inputs(self, wildcards):
        return reface_jobs.validation_inputs(
            self.cohort, self.metrics, wildcards.model, self.held_out
        )

    def reface_validation_pairs(self, wildcards):
        return reface_jobs.validation_pairs(
            self.cohort, self.metrics, wildcards.model, self.held_out
        )

    def reface_sample_inputs(self, wildcards):
        return reface_jobs.sample_inputs(wildcards.defacer, wildcards.subject)

    def radiodensity_template(self):
        return self.config["radiodensity"]["template"] or paths.FACE_TEMPLATE["template"]

    def radiodensity_images(self, wildcards):
        return image_files(wildcards.subject, self.radiodensity.image_types)

    def radiodensity_crop_inputs(self, wildcards):
        """The prepared original and brain mask, every defacer's output, and the template."""
        prepared = paths.prepared_files(wildcards.subject)
        return {
            "t1w": prepared["t1w"],
            "brain_mask": prepared["brain_mask"],
            "images": list(self.radiodensity_images(wildcards).values()),
            "template": self.radiodensity_template(),
        }

    def radiodensity_phenotype(self, wildcards):
        return list(self.radiodensity.phenotype)

    def radiodensity_pattern(self, key):
        """Wildcard regex of the plan's image types or body parts (never matches without a plan)."""
        if self.radiodensity is None:
            return "(?!x)x"
        return "|".join(getattr(self.radiodensity, key))

    def radiodensity_training_inputs(self, wildcards):
        """Every subject's face crops (in cohort order) and the targets table."""
        return {
            "crops": [paths.radiodensity_crop_files(s)["crops"] for s in self.cohort.subjects],
            "targets": paths.RADIODENSITY_TARGETS,
        }

    def radiodensity_predictions(self, wildcards):
        return [
            paths.radiodensity_model_files(i, p)["predictions"]
            for i, p in self.radiodensity.models()
        ]

    def radiodensity_markdown(self):
        """The Spearman table, for the tables page (none without the study)."""
        return [paths.RADIODENSITY_TABLES["markdown"]] if self.radiodensity else []

    def on_failure(self):
        """The QC table with each failed deface job and its error, and the face tables of the rows
        that are current (none of their inputs newer or gone), marked PARTIAL, under
        results/partial/ (see README, 'Defacers')."""
        # imported here: scipy.stats (face tables) adds about half a second to every Snakemake start
        from defaceaudit.deface.qc_report import write_qc_table
        from defaceaudit.metrics.aggregate import aggregate_available_rows

        partial = paths.partial_file
        if self.defacers:
            qc_files = (paths.QC_TABLE, paths.QC_SUMMARY, paths.QC_SUMMARY_MD)
            write_qc_table(self.expected_qc_records(), *map(partial, qc_files))
            print(f"QC table with the failed jobs: {partial(paths.QC_TABLE)}")
        row_inputs = metric_jobs.face_metric_row_inputs(self.cohort, self.metrics)
        left_out = aggregate_available_rows(
            list(row_inputs),
            partial(paths.FACE_METRICS),
            {key: partial(path) for key, path in paths.FACE_TABLES.items()},
            inputs=row_inputs,
            n_resamples=self.config["metrics"]["n_bootstrap"],
            seed=self.config["metrics"]["seed"],
        )
        if left_out:
            print(
                f"PARTIAL face tables ({len(left_out)} jobs without current rows): "
                f"{partial(paths.FACE_METRICS)}"
            )

    def clear_partial(self):
        """Remove the previous failed run's stand-ins (results/partial/) as a run starts."""
        shutil.rmtree(paths.PARTIAL, ignore_errors=True)
