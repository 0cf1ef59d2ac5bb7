"""The refacing jobs of a run and the files each reads, as plain functions (tested without
Snakemake; rules/refacing.smk calls them)."""

from __future__ import annotations

from defaceaudit import paths
from defaceaudit.cohort import Cohort
from defaceaudit.diffusion.sizing import stage_multiple
from defaceaudit.metrics.plan import MetricPlan
from defaceaudit.targets import prepared_files


def model_for(defacer: str) -> str:
    """The model pair that refaces ``defacer``'s output."""
    return "skullstrip" if defacer == "skullstrip" else "face"


def refaced_defacers(plan: MetricPlan) -> list[str]:
    """Face-removing defacers whose test images are refaced (all of them)."""
    return list(plan.removing)


def models_needed(plan: MetricPlan) -> list[str]:
    return sorted({model_for(d) for d in refaced_defacers(plan)}, key=paths.REFACE_MODELS.index)


def training_pairs(cohort: Cohort, plan: MetricPlan, model: str) -> list[tuple[str, str]]:
    """``(original, defaced)`` of every train subject x defacer of a model, defacer by defacer
    (each prepared original once per defacer)."""
    return [
        (prepared_files(subject)["t1w"], paths.defaced_files(defacer, subject)["t1w"])
        for defacer in refaced_defacers(plan)
        if model_for(defacer) == model
        for subject in cohort.ids("train")
    ]


def training_inputs(cohort: Cohort, plan: MetricPlan, model: str) -> dict[str, list[str]]:
    """The files a model's training reads (Snakemake input), each once:
    ``{"originals": [...], "defaced": [...]}``, the defaced images in :func:`training_pairs`'
    order; :func:`training_pair_index` pairs them again. (Listing each original once per defacer
    made the input lists longer, and Snakemake scans a job's whole input list each time a
    sampling job asks for its checkpoint: a cost growing as train x test subjects.)"""
    pairs = training_pairs(cohort, plan, model)
    return {
        "originals": list(dict.fromkeys(original for original, _ in pairs)),
        "defaced": [defaced for _, defaced in pairs],
    }


def training_pair_index(cohort: Cohort, plan: MetricPlan, model: str) -> list[int]:
    """For each defaced image of :func:`training_inputs`, the index of its original there."""
    originals = training_inputs(cohort, plan, model)["originals"]
    position = {original: i for i, original in enumerate(originals)}
    return [position[original] for original, _ in training_pairs(cohort, plan, model)]


def training_settings(reface: dict, stage: int) -> dict:
    """The part of the resolved ``reface`` config section that training stage ``stage`` (1 or 2)
    reads: the noise schedule, the downsampling factor, this stage's network and training
    settings, the other stage's size multiple only (the padded grid is a multiple of both
    networks' multiples: :func:`~defaceaudit.diffusion.sizing.grid_multiples`) and, for stage
    2, the slab crop.

    The training rules pass this, not the whole section, as their params: Snakemake reruns a job
    whose params changed, and a new sampling setting, device, or the other stage's training
    settings or widths must not retrain a model (100k steps at paper scale)."""
    key = f"stage{stage}"
    other = f"stage{3 - stage}"
    settings = {
        "schedule": reface["schedule"],
        "downsample_factor": reface["downsample_factor"],
        key: {"network": reface[key]["network"], "training": reface[key]["training"]},
        other: {"size_multiple": stage_multiple(reface[other])},
    }
    if stage == 2:
        settings["slab_patch"] = reface.get("slab_patch", 0)
    return settings


def sample_inputs(defacer: str, subject: str) -> dict[str, str]:
    defaced = paths.defaced_files(defacer, subject)
    model = model_for(defacer)
    return {
        "defaced": defaced["t1w"],
        "removed": defaced["removed"],
        "stage1": paths.reface_checkpoint(model, 1),
        "stage2": paths.reface_checkpoint(model, 2),
    }


def reface_targets(cohort: Cohort, plan: MetricPlan, test_subjects: list[str]) -> list[str]:
    targets = [paths.reface_checkpoint(m, s) for m in models_needed(plan) for s in (1, 2)]
    for subject in test_subjects:
        for defacer in refaced_defacers(plan):
            targets += paths.refaced_files(defacer, subject).values()
    return targets
