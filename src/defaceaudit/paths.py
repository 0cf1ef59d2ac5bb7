"""File names of every output: BIDS-derivatives style, built in one place.

``stage_file("prepare", "01", "prepared", "T1w")`` ->
``results/prepare/sub-01/anat/sub-01_desc-prepared_T1w.nii.gz``. Pass ``"{subject}"`` as the
subject to get the Snakemake pattern of the same file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

RESULTS = "results"
#: what a working copy of the workflow needs, relative to the Snakefile's folder (the tests and
#: benchmarks run the workflow in temporary copies: :func:`copy_workflow`)
WORKFLOW_FILES = ("Snakefile", "rules", "workflow_scripts", "envs", "config.yaml")
DEMO_ROOT = f"{RESULTS}/demo"
#: what a run with failed jobs could build of its aggregates (the onerror handler): kept apart
#: from the aggregates' own outputs, which only their rules write (Snakemake keeps no record of
#: a file written outside a job, so a stand-in there would never be rebuilt); emptied when the
#: next run starts
PARTIAL = f"{RESULTS}/partial"
DEMO_BIDS = f"{DEMO_ROOT}/bids"
#: demo BIDS dataset -> folder; train and internal test share one dataset, as in the paper
DEMO_DATASETS = ("internal", "external")


def partial_file(path: str) -> str:
    """Where the onerror handler writes its stand-in for the aggregate output ``path``:
    ``results/deface/qc_table.tsv`` -> ``results/partial/deface/qc_table.tsv``."""
    prefix = f"{RESULTS}/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not under {RESULTS}/")
    return f"{PARTIAL}/{path[len(prefix) :]}"


def log_file(rule_name: str, key: str = "{subject}") -> str:
    """The log of one job of ``rule_name``: ``results/logs/<rule>/<key>.log`` (``key``: the
    job's wildcards, a Snakemake pattern by default)."""
    return f"{RESULTS}/logs/{rule_name}/{key}.log"


def benchmark_file(rule_name: str, key: str = "{subject}") -> str:
    """Snakemake's benchmark record of one job: ``results/benchmarks/<rule>/<key>.tsv``."""
    return f"{RESULTS}/benchmarks/{rule_name}/{key}.tsv"


def stage_file(stage: str, subject: str, desc: str, suffix: str, ext: str = ".nii.gz") -> str:
    """Path of one per-subject output of a pipeline stage (relative to the working directory)."""
    return f"{RESULTS}/{stage}/sub-{subject}/anat/sub-{subject}_desc-{desc}_{suffix}{ext}"


def demo_base_file(base: str, kind: str) -> str:
    """``kind``: "T1w" (the real head, RAS), "brain_mask" (ROBEX) or "head_mask" (Otsu)."""
    name = (
        f"{base}_T1w.nii.gz" if kind == "T1w" else f"{base}_desc-{kind.split('_')[0]}_mask.nii.gz"
    )
    return f"{DEMO_ROOT}/bases/{name}"


def demo_t1w(dataset: str, subject: str) -> str:
    return f"{DEMO_BIDS}/{dataset}/sub-{subject}/anat/sub-{subject}_T1w.nii.gz"


def demo_brain_mask(dataset: str, subject: str) -> str:
    return (
        f"{DEMO_BIDS}/{dataset}/derivatives/brainmask/sub-{subject}/anat/"
        f"sub-{subject}_desc-brain_mask.nii.gz"
    )


#: the demo's second session of each test subject (the re-identification gallery): one more
#: BIDS dataset, as a user's gallery dataset would be
DEMO_GALLERY = f"{DEMO_BIDS}/retest"


def demo_gallery_t1w(subject: str) -> str:
    return f"{DEMO_GALLERY}/sub-{subject}/anat/sub-{subject}_T1w.nii.gz"


def demo_table(dataset: str, name: str) -> str:
    """``name``: participants.tsv, phenotype/ct_muscle.tsv, dataset_description.json, ..."""
    return f"{DEMO_BIDS}/{dataset}/{name}"


#: every file ``demo.build.write_demo_tables`` writes per dataset (all declared: none is left behind
#: untracked)
DEMO_TABLES = (
    "dataset_description.json",
    "participants.tsv",
    "participants.json",
    "phenotype/ct_muscle.tsv",
    "phenotype/ct_muscle.json",
    "derivatives/generative_model/latents.tsv",
    "derivatives/generative_model/phenotype_model.json",
)
COHORT_TABLE = f"{RESULTS}/cohort/subjects.tsv"


def desc_label(defacer: str) -> str:
    """BIDS ``desc`` label of a defacer: letters and digits only (fsl_deface -> fsldeface)."""
    return defacer.replace("_", "")


def defaced_files(defacer: str, subject: str, desc: str | None = None) -> dict[str, str]:
    """Outputs of one subject and defacer (pass ``"{defacer}", "{subject}", "{desc}"`` for the
    Snakemake pattern)."""
    desc = desc_label(defacer) if desc is None else desc
    stage = f"deface/{defacer}"
    return {
        "t1w": stage_file(stage, subject, desc, "T1w"),
        "sidecar": stage_file(stage, subject, desc, "T1w", ".json"),
        "removed": stage_file(stage, subject, f"{desc}removed", "mask"),
        "qc": stage_file(stage, subject, desc, "qc", ".json"),
        "png": f"{RESULTS}/{stage}/sub-{subject}/figures/sub-{subject}_desc-{desc}_qc.png",
    }


def container_raw(defacer: str, subject: str) -> dict[str, str]:
    """Raw output of a container tool, before finalising (removed after use): the image, the
    tool's own mask (for the tools that write one) and the exact command the job ran."""
    root = f"{RESULTS}/deface/{defacer}/raw/sub-{subject}"
    return {
        "t1w": f"{root}_T1w.nii.gz",
        "removed": f"{root}_removed.nii.gz",
        "command": f"{root}_command.txt",
    }


def deface_dataset_description(defacer: str) -> str:
    """BIDS ``dataset_description.json`` of one defacer's derivative folder (``GeneratedBy``)."""
    return f"{RESULTS}/deface/{defacer}/dataset_description.json"


FACE_TEMPLATE = {
    "template": f"{RESULTS}/deface/templates/pydeface_mean_reg2mean.nii.gz",
    "facemask": f"{RESULTS}/deface/templates/pydeface_facemask.nii.gz",
}
AVERAGE_HEAD = f"{RESULTS}/deface/avgface/average_head.nii.gz"
QC_TABLE = f"{RESULTS}/deface/qc_table.tsv"
QC_SUMMARY = f"{RESULTS}/deface/qc_summary.tsv"
QC_SUMMARY_MD = f"{RESULTS}/deface/qc_summary.md"


# Face metrics (paper section 2.3) and what is built from them.
METRICS = f"{RESULTS}/metrics"


def face_metric_files(defacer: str, subject: str, desc: str | None = None) -> dict[str, str]:
    """Per test subject and defacer: metric rows (TSV) and the face surfaces of every image
    compared, in template space (npz, for re-identification)."""
    desc = desc_label(defacer) if desc is None else desc
    stage = f"metrics/{defacer}"
    return {
        "rows": stage_file(stage, subject, desc, "facemetrics", ".tsv"),
        "faces": stage_file(stage, subject, desc, "faces", ".npz"),
    }


def template_alignment_files(subject: str) -> dict[str, str]:
    """Per test subject: rigid transform to the face template (JSON) and the original's face
    surface in template space (npz)."""
    return {
        "transform": stage_file("metrics/template", subject, "template", "xfm", ".json"),
        "faces": stage_file("metrics/template", subject, "original", "faces", ".npz"),
    }


def gallery_alignment_files(subject: str) -> dict[str, str]:
    """Per test subject with a gallery image: its rigid transform to the face template (JSON)
    and the gallery face in template space (npz)."""
    return {
        "transform": stage_file("metrics/gallery", subject, "template", "xfm", ".json"),
        "faces": stage_file("metrics/gallery", subject, "gallery", "faces", ".npz"),
    }


#: the face region re-identification compares (template space) and its sidecar
FACE_REGION = {
    "mask": f"{METRICS}/reidentification_face_region.nii.gz",
    "sidecar": f"{METRICS}/reidentification_face_region.json",
}
FACE_METRICS = f"{METRICS}/face_metrics.tsv"
#: paper tables (TSV and Markdown) and the machine-readable summary and tests
FACE_TABLE_NAMES = ("table1_masd", "table1_masd_symmetric", "table2_psnr", "table3_ssim")
FACE_TABLES = {
    "summary": f"{METRICS}/face_metrics_summary.tsv",
    "tests": f"{METRICS}/face_metrics_tests.tsv",
    **{name: f"{METRICS}/{name}.tsv" for name in FACE_TABLE_NAMES},
    **{f"{name}_md": f"{METRICS}/{name}.md" for name in FACE_TABLE_NAMES},
}
#: every table of the stage in one HTML page (the Snakemake report shows it)
FACE_TABLES_HTML = f"{METRICS}/face_tables.html"
REIDENTIFICATION = {
    "ranks": f"{METRICS}/reidentification_ranks.tsv",
    "summary": f"{METRICS}/reidentification.tsv",
    "markdown": f"{METRICS}/reidentification.md",
}


def face_view_files(subject: str) -> dict[str, str]:
    """Per re-identified test subject: its images rendered as face photographs (npz; real
    faces: never commit them) and the faces a recognizer found and embedded in them (npz)."""
    stage = "metrics/face_recognition"
    return {
        "renderings": stage_file(stage, subject, "views", "faces", ".npz"),
        "embeddings": stage_file(stage, subject, "views", "embeddings", ".npz"),
    }


#: re-identification by a face recognizer on the renderings: ranks, summary (its rows join
#: REIDENTIFICATION's summary) and Markdown
FACE_RECOGNITION = {
    "ranks": f"{METRICS}/face_recognition_ranks.tsv",
    "summary": f"{METRICS}/face_recognition.tsv",
    "markdown": f"{METRICS}/face_recognition.md",
}
FIGURES = f"{RESULTS}/figures"
FIGURE_FILES = {
    "masd": f"{FIGURES}/face_masd.png",
    "similarity": f"{FIGURES}/face_similarity.png",
    "qc": f"{FIGURES}/deface_qc.png",
    "reidentification": f"{FIGURES}/reidentification.png",
}


def face_panel_file(subject: str) -> str:
    """Side-by-side face renderings of one test subject (paper Figures 3 and 4)."""
    return f"{FIGURES}/faces/sub-{subject}_faces.png"


def face_view_sheet(subject: str) -> str:
    """The face-recognition renderings of one test subject, with the faces found (PRIVATE:
    identifiable faces, in the report only)."""
    return f"{FIGURES}/faces/sub-{subject}_recognition.png"


REPORT = f"{RESULTS}/report.html"


# Refacing (paper section 2.1): model pairs trained on the train split, refaced test images.
REFACE = f"{RESULTS}/reface"
#: model pairs: "face" (every face-removing defacer but skull-stripping) and "skullstrip"
REFACE_MODELS = ("face", "skullstrip")


def reface_checkpoint(model: str, stage: int | str) -> str:
    """Final checkpoint of one stage of a model pair (a resume file sits beside it)."""
    return f"{REFACE}/models/{model}/stage{stage}.pt"


def reface_validation_files(model: str) -> dict[str, str]:
    """A model pair's learning curve on held-out training subjects (TSV), its convergence
    verdict (JSON) and the curve's figure (PNG)."""
    folder = f"{REFACE}/validation"
    return {
        "curve": f"{folder}/{model}_learning_curve.tsv",
        "verdict": f"{folder}/{model}_verdict.json",
        "figure": f"{folder}/{model}_learning_curve.png",
    }


def refaced_files(defacer: str, subject: str, desc: str | None = None) -> dict[str, str]:
    """The DPM-refaced image of ``subject`` from ``defacer``'s output, the mask of the voxels
    the cascade generated, and a sidecar."""
    desc = f"dpm{desc_label(defacer) if desc is None else desc}"
    stage = f"reface/dpm/{defacer}"
    return {
        "t1w": stage_file(stage, subject, desc, "T1w"),
        "removed": stage_file(stage, subject, f"{desc}generated", "mask"),
        "sidecar": stage_file(stage, subject, desc, "T1w", ".json"),
    }


# Radiodensity study (paper section 3): facial voxels -> CT muscle radiodensity residuals.
RADIODENSITY = f"{RESULTS}/radiodensity"


def radiodensity_crop_files(subject: str) -> dict[str, str]:
    """Per subject: the face crops of every image type in template space (npz, one array per
    image type) and the affine transform to the template (JSON)."""
    return {
        "crops": stage_file("radiodensity", subject, "face", "crops", ".npz"),
        "transform": stage_file("radiodensity", subject, "template", "xfm", ".json"),
    }


#: long table of residual targets (eq. 2) with each subject's study split
RADIODENSITY_TARGETS = f"{RADIODENSITY}/targets.tsv"


def radiodensity_model_files(image_type: str, body_part: str) -> dict[str, str]:
    """One model's predictions (every row, with its split), training history and weights."""
    root = f"{RADIODENSITY}/models/{image_type}_{body_part}"
    return {
        "predictions": f"{root}/predictions.tsv",
        "history": f"{root}/history.tsv",
        "model": f"{root}/model.pt",
    }


RADIODENSITY_TABLES = {
    "table": f"{RADIODENSITY}/spearman.tsv",
    "markdown": f"{RADIODENSITY}/spearman.md",
    "bootstrap": f"{RADIODENSITY}/spearman_bootstrap.tsv",
    "predictions": f"{RADIODENSITY}/predictions.tsv",
}
RADIODENSITY_FIGURE = f"{FIGURES}/radiodensity.png"


def copy_workflow(source: str | Path, dest: str | Path) -> Path:
    """Copy :data:`WORKFLOW_FILES` from the workflow folder ``source`` into ``dest`` (created if
    missing) with an empty ``results/``; returns ``dest`` as a :class:`~pathlib.Path`."""
    source, dest = Path(source), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name)
        else:
            shutil.copy2(source / name, dest / name)
    (dest / RESULTS).mkdir()
    return dest


def prepared_files(subject: str) -> dict[str, str]:
    """The prepare stage's outputs of one subject, by name (t1w, head_mask, brain_mask, report)."""
    return {
        "t1w": stage_file("prepare", subject, "prepared", "T1w"),
        "head_mask": stage_file("prepare", subject, "head", "mask"),
        "brain_mask": stage_file("prepare", subject, "brain", "mask"),
        "summary": stage_file("prepare", subject, "prepared", "T1w", ".json"),
    }
