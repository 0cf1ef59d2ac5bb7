"""File names of every output: BIDS-derivatives style, built in one place.

``stage_file("prepare", "01", "prepared", "T1w")`` ->
``results/prepare/sub-01/anat/sub-01_desc-prepared_T1w.nii.gz``. Pass ``"{subject}"`` as the
subject to get the Snakemake pattern of the same file.
"""

from __future__ import annotations

RESULTS = "results"
DEMO_ROOT = f"{RESULTS}/demo"
DEMO_BIDS = f"{DEMO_ROOT}/bids"
#: demo BIDS dataset -> folder; train and internal test share one dataset, as in the paper
DEMO_DATASETS = ("internal", "external")


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


def demo_table(dataset: str, name: str) -> str:
    """``name``: participants.tsv, phenotype/ct_muscle.tsv, dataset_description.json, ..."""
    return f"{DEMO_BIDS}/{dataset}/{name}"


DEMO_TABLES = (
    "dataset_description.json",
    "participants.tsv",
    "phenotype/ct_muscle.tsv",
    "derivatives/generative_model/latents.tsv",
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
    """Raw output of a container tool, before finalising (removed after use)."""
    root = f"{RESULTS}/deface/{defacer}/raw/sub-{subject}"
    return {"t1w": f"{root}_T1w.nii.gz", "removed": f"{root}_removed.nii.gz"}


FACE_TEMPLATE = {
    "template": f"{RESULTS}/deface/templates/pydeface_mean_reg2mean.nii.gz",
    "facemask": f"{RESULTS}/deface/templates/pydeface_facemask.nii.gz",
}
AVERAGE_HEAD = f"{RESULTS}/deface/avgface/average_head.nii.gz"
QC_TABLE = f"{RESULTS}/deface/qc_table.tsv"
QC_SUMMARY = f"{RESULTS}/deface/qc_summary.tsv"
QC_SUMMARY_MD = f"{RESULTS}/deface/qc_summary.md"
