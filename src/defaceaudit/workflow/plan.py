"""Everything a run builds on a validated config: the cohort and the plans of its stages
(:func:`plan_run`), with the checks that need more than one stage's view of the cohort."""

from __future__ import annotations

from dataclasses import dataclass

from defaceaudit.cohort.load import Cohort, read_cohort
from defaceaudit.errors import DefaceAuditError, InputError
from defaceaudit.radiodensity.splits import MIN_TRAIN_SUBJECTS, study_splits
from defaceaudit.reface.sizing import check_reface_config
from defaceaudit.workflow.deface_plan import defacer_plan
from defaceaudit.workflow.metrics_plan import POPULATION_AVERAGE_REFACERS, MetricPlan, metric_plan
from defaceaudit.workflow.radiodensity_plan import RadiodensityPlan, radiodensity_plan
from defaceaudit.workflow.targets import all_targets


def load_cohort(config: dict) -> Cohort:
    """The cohort of ``config`` (:func:`~defaceaudit.cohort.load.read_cohort`), then
    :func:`check_train_split` (both raise InputError, one line)."""
    cohort = read_cohort(config)
    check_train_split(cohort, config)
    return cohort


def check_train_split(cohort: Cohort, config: dict) -> None:
    """InputError naming the config sections when a stage that learns from the train split
    runs on a cohort without train subjects: refacing (``reface.enabled`` with a face-removing
    defacer, whose models train on it) or the avgface defacer (whose average head it is)."""
    if cohort.ids("train"):
        return
    defacers = config["deface"]["defacers"]
    needs = []
    if config["reface"]["enabled"] and set(defacers) - set(POPULATION_AVERAGE_REFACERS):
        needs.append("reface.enabled is true (the refacing models train on them)")
    if "avgface" in defacers:
        needs.append("deface.defacers has avgface (its average head is built from them)")
    if needs:
        raise InputError(
            f"config input: the cohort has no train subjects, but {' and '.join(needs)}; give "
            "a BIDS dataset role: train (or manifest rows split train), or turn those off"
        )


@dataclass(frozen=True)
class RunPlan:
    """What a run on a validated config builds (the workflow's ``RUN``, rules/common.smk).

    ``defacers``: ``{defacer: backend}``; ``metrics``: the face-metric plan; ``radiodensity``:
    the study's plan, None when it does not run; ``n_panel_subjects``: test subjects per split
    whose faces are rendered side by side.
    """

    cohort: Cohort
    defacers: dict[str, str]
    metrics: MetricPlan
    radiodensity: RadiodensityPlan | None
    n_panel_subjects: int

    def targets(self) -> list[str]:
        """The input of ``rule all`` (the Snakefile's call): sorted output paths, relative to
        the working directory."""
        return all_targets(
            self.cohort, self.defacers, self.metrics, self.n_panel_subjects, self.radiodensity
        )


def plan_run(config: dict) -> RunPlan:
    """The cohort and every stage's plan for a validated ``config``: first the refacing keys
    that only fit together (:func:`~defaceaudit.reface.sizing.check_reface_config`), then
    :func:`check_radiodensity_split` (InputError, one line each). The workflow
    (rules/common.smk) and the ``check-inputs`` and ``targets`` commands all plan a run with
    this."""
    if config["reface"]["enabled"]:
        check_reface_config(config["reface"])
    cohort = load_cohort(config)
    defacers = defacer_plan(config["deface"])
    radiodensity = radiodensity_plan(cohort, defacers, config["radiodensity"])
    metrics = metric_plan(defacers, config["metrics"], config["reface"]["enabled"])
    check_radiodensity_split(cohort, radiodensity, config["radiodensity"]["split"])
    n_panel = config["metrics"]["face_panel_subjects"]
    return RunPlan(cohort, defacers, metrics, radiodensity, n_panel)


def check_radiodensity_split(cohort: Cohort, plan: RadiodensityPlan | None, split: dict) -> None:
    """InputError when the radiodensity study (``plan``; None: it does not run) would get too
    few training subjects even if every cohort subject had phenotype rows.

    The study splits its subjects by ``split`` (the config's ``radiodensity.split``) with
    :func:`~defaceaudit.radiodensity.splits.study_splits`, as ``radiodensity.study`` does, and
    fits each body part's mixed model on at least ``MIN_TRAIN_SUBJECTS`` of them.
    """
    if plan is None:
        return
    subjects = [f"sub-{s}" for s in cohort.subjects]  # the study's participant ids
    try:
        splits = study_splits(subjects, split)
    except DefaceAuditError as err:
        raise InputError(f"config radiodensity.split: {err}") from None
    n_train = list(splits.values()).count("train")
    if n_train < MIN_TRAIN_SUBJECTS:
        raise InputError(
            f"config radiodensity: its train split would hold {n_train} of the cohort's "
            f"{len(subjects)} subjects (radiodensity.split.train = {split['train']:g}); "
            f"each body part's mixed model needs at least {MIN_TRAIN_SUBJECTS} (add subjects, "
            "raise radiodensity.split.train, or set radiodensity.enabled: false)"
        )
