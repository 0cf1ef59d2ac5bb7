"""The refacing jobs of a run and the files each reads, as plain functions (tested without
Snakemake; rules/reface.smk calls them)."""

from __future__ import annotations

from defaceaudit import paths
from defaceaudit.cohort.load import Cohort
from defaceaudit.reface.sizing import stage_multiple
from defaceaudit.workflow.metrics_plan import MetricPlan


def model_for(defacer: str) -> str:
    """The model pair that refaces ``defacer``'s output."""
    return "skullstrip" if defacer == "skullstrip" else "face"


def refaced_defacers(plan: MetricPlan) -> list[str]:
    """Face-removing defacers whose test images are refaced (all of them)."""
    return list(plan.removing)


def models_needed(plan: MetricPlan) -> list[str]:
    return sorted({model_for(d) for d in refaced_defacers(plan)}, key=paths.REFACE_MODELS.index)


def validation_subjects(cohort: Cohort, held_out: int) -> list[str]:
    """The train subjects held out of refacing training to validate the models on (the
    convergence guard, :mod:`defaceaudit.reface.validation`): the last ``held_out`` of the
    train split in cohort order (on the demo, whose train subjects alternate between its two
    internal heads, one of each for 2), never all of them (one at least stays to train on)."""
    train = cohort.ids("train")
    count = max(0, min(int(held_out), len(train) - 1))
    return train[len(train) - count :] if count else []


def training_subjects(cohort: Cohort, held_out: int) -> list[str]:
    """The train subjects the refacing models train on: the train split less
    :func:`validation_subjects`."""
    validation = set(validation_subjects(cohort, held_out))
    return [s for s in cohort.ids("train") if s not in validation]


def training_pairs(
    cohort: Cohort, plan: MetricPlan, model: str, held_out: int = 0
) -> list[tuple[str, str]]:
    """``(original, defaced)`` of every training subject (:func:`training_subjects`) x defacer
    of a model, defacer by defacer (each prepared original once per defacer)."""
    return [
        (paths.prepared_files(subject)["t1w"], paths.defaced_files(defacer, subject)["t1w"])
        for defacer in refaced_defacers(plan)
        if model_for(defacer) == model
        for subject in training_subjects(cohort, held_out)
    ]


def validation_inputs(
    cohort: Cohort, plan: MetricPlan, model: str, held_out: int
) -> dict[str, list[str]]:
    """The files a model's validation reads (Snakemake input): its two checkpoints, and for
    each validation subject x defacer of the model (:func:`validation_pairs`' order) the
    original, its head mask and the defaced image."""
    pairs = validation_pairs(cohort, plan, model, held_out)
    return {
        "stage1": paths.reface_checkpoint(model, 1),
        "stage2": paths.reface_checkpoint(model, 2),
        "originals": [p["original"] for p in pairs],
        "head_masks": [p["head_mask"] for p in pairs],
        "defaced": [p["defaced"] for p in pairs],
    }


def validation_pairs(cohort: Cohort, plan: MetricPlan, model: str, held_out: int) -> list[dict]:
    """``{"subject", "defacer", "original", "head_mask", "defaced"}`` of every validation
    subject x defacer of a model, defacer by defacer."""
    return [
        {
            "subject": subject,
            "defacer": defacer,
            "original": paths.prepared_files(subject)["t1w"],
            "head_mask": paths.prepared_files(subject)["head_mask"],
            "defaced": paths.defaced_files(defacer, subject)["t1w"],
        }
        for defacer in refaced_defacers(plan)
        if model_for(defacer) == model
        for subject in validation_subjects(cohort, held_out)
    ]


def training_inputs(
    cohort: Cohort, plan: MetricPlan, model: str, held_out: int = 0
) -> dict[str, list[str]]:
    """The files a model's training reads (Snakemake input), each once:
    ``{"originals": [...], "defaced": [...]}``, the defaced images in :func:`training_pairs`'
    order; :func:`training_pair_index` pairs them again. (Listing each original once per defacer
    made the input lists longer, and Snakemake scans a job's whole input list each time a
    sampling job asks for its checkpoint: a cost growing as train x test subjects.)"""
    pairs = training_pairs(cohort, plan, model, held_out)
    return {
        "originals": list(dict.fromkeys(original for original, _ in pairs)),
        "defaced": [defaced for _, defaced in pairs],
    }


def training_pair_index(
    cohort: Cohort, plan: MetricPlan, model: str, held_out: int = 0
) -> list[int]:
    """For each defaced image of :func:`training_inputs`, the index of its original there."""
    originals = training_inputs(cohort, plan, model, held_out)["originals"]
    position = {original: i for i, original in enumerate(originals)}
    pairs = training_pairs(cohort, plan, model, held_out)
    return [position[original] for original, _ in pairs]


def training_settings(reface: dict, stage: int) -> dict:
    """The part of the resolved ``reface`` config section that training stage ``stage`` (1 or 2)
    reads: the noise schedule, the downsampling factor, this stage's network and training
    settings, the other stage's size multiple only (the padded grid is a multiple of both
    networks' multiples: :func:`~defaceaudit.reface.sizing.grid_multiples`) and, for stage
    2, the slab crop.

    The training rules pass this, not the whole section, as their params: Snakemake reruns a job
    whose params changed, and a new sampling setting, device, or the other stage's training
    settings or widths must not retrain a model (100k steps at paper scale)."""
    key = f"stage{stage}"
    other = f"stage{3 - stage}"
    settings = {
        "schedule": reface["schedule"],
        "downsample_factor": reface["downsample_factor"],
        "envelope_mm": reface["envelope_mm"],
        "attack": reface["attack"],
        "validation": {"snapshots": reface["validation"]["snapshots"]},
        key: {"network": reface[key]["network"], "training": reface[key]["training"]},
        other: {"size_multiple": stage_multiple(reface[other])},
    }
    if stage == 2:
        settings["slab_patch"] = reface["slab_patch"]
    return settings


def verdict_files(plan: MetricPlan) -> dict[str, str]:
    """``{"verdict__<defacer>": path}``: the convergence verdict of the models that reface each
    defacer's images (Snakemake input of the tables and face panels, which mark the DPM
    results of an attack that did not converge); empty when nothing is refaced."""
    if not plan.refaced:
        return {}
    return {
        f"verdict__{defacer}": paths.reface_validation_files(model_for(defacer))["verdict"]
        for defacer in refaced_defacers(plan)
    }


def verdicts_by_defacer(inputs: dict[str, str]) -> dict[str, str]:
    """The :func:`verdict_files` among a job's named inputs, as ``{defacer: path}``."""
    prefix = "verdict__"
    return {k.removeprefix(prefix): v for k, v in inputs.items() if k.startswith(prefix)}


def sample_inputs(defacer: str, subject: str) -> dict[str, str]:
    """What sampling reads: the defaced image and the model pair, nothing derived from the
    original (the defacer's removed-region mask is "removed where the original had tissue")."""
    model = model_for(defacer)
    return {
        "defaced": paths.defaced_files(defacer, subject)["t1w"],
        "stage1": paths.reface_checkpoint(model, 1),
        "stage2": paths.reface_checkpoint(model, 2),
    }


def reface_targets(cohort: Cohort, plan: MetricPlan, test_subjects: list[str]) -> list[str]:
    targets = [paths.reface_checkpoint(m, s) for m in models_needed(plan) for s in (1, 2)]
    for model in models_needed(plan):
        targets += paths.reface_validation_files(model).values()
    for subject in test_subjects:
        for defacer in refaced_defacers(plan):
            targets += paths.refaced_files(defacer, subject).values()
    return targets
