"""The cohort a run works on, from the validated config: demo plan, BIDS datasets or manifest;
and :func:`plan_run`, everything a run builds (the cohort and the plans of its stages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from defaceaudit import paths
from defaceaudit.demo.plan import DemoSubject, plan_demo_cohort
from defaceaudit.errors import DefaceAuditError, InputError
from defaceaudit.inputs import Subject, check_cohort, read_bids_dataset, read_manifest
from defaceaudit.metrics.plan import POPULATION_AVERAGE_REFACERS, TEST_SPLITS
from defaceaudit.radiodensity.splits import MIN_TRAIN_SUBJECTS, study_splits

if TYPE_CHECKING:
    from defaceaudit.metrics.plan import MetricPlan
    from defaceaudit.radiodensity.plan import RadiodensityPlan


@dataclass(frozen=True)
class Cohort:
    """Subjects by id, in split order; ``demo`` holds the plan when the cohort is synthetic."""

    subjects: dict[str, Subject]
    demo: dict[str, DemoSubject] = field(default_factory=dict)

    def ids(self, split: str | None = None) -> list[str]:
        return [s for s, sub in self.subjects.items() if split in (None, sub.split)]


def load_cohort(config: dict) -> Cohort:
    """Read and check the cohort named by ``config["input"]`` (raises InputError, one line).

    ``config`` is a whole validated config: the ``reface`` and ``deface`` sections say whether
    the cohort needs train subjects (:func:`check_train_split`).
    """
    source = config["input"]["source"]
    if source == "demo":
        return demo_cohort(config["demo"])
    if source == "bids":
        subjects = []
        for entry in config["input"]["bids"]:
            options = {k: v for k, v in entry.items() if k not in ("path", "role")}
            subjects += read_bids_dataset(entry["path"], entry["role"], **options)
    else:
        subjects = read_manifest(config["input"]["manifest"])
    cohort = Cohort({s.subject: s for s in check_cohort(subjects)})
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


def demo_cohort(demo: dict) -> Cohort:
    """Subjects of the demo cohort; their files are outputs of the demo rules (relative paths).

    With ``demo.gallery.enabled``, each test subject has a second synthetic session (its
    re-identification gallery image, :func:`defaceaudit.demo.build.build_gallery_image`)."""
    plan = plan_demo_cohort(
        demo["n_train"],
        demo["n_internal_test"],
        demo["n_external_test"],
        demo["seed"],
        demo["face_tissue_sd_mm"],
    )
    subjects = [
        Subject(
            subject=p.subject,
            t1w=Path(paths.demo_t1w(p.dataset, p.subject)),
            split=p.split,
            age=p.age,
            sex=p.sex,
            dataset=f"demo-{p.dataset}",
            brain_mask=Path(paths.demo_brain_mask(p.dataset, p.subject)),
            gallery_t1w=Path(paths.demo_gallery_t1w(p.subject))
            if demo["gallery"]["enabled"] and p.split in TEST_SPLITS
            else None,
        )
        for p in plan
    ]
    return Cohort({s.subject: s for s in subjects}, {p.subject: p for p in plan})


# --------------------------------------------------------------------------------------------
# the whole run


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
        from defaceaudit.targets import all_targets

        return all_targets(
            self.cohort, self.defacers, self.metrics, self.n_panel_subjects, self.radiodensity
        )


def plan_run(config: dict) -> RunPlan:
    """The cohort and every stage's plan for a validated ``config``, then
    :func:`check_radiodensity_split` (InputError, one line). The workflow (rules/common.smk) and
    the ``check-inputs`` and ``targets`` commands all plan a run with this."""
    # imported here: these modules import Cohort from this one
    from defaceaudit.defacers.plan import defacer_plan
    from defaceaudit.metrics.plan import metric_plan
    from defaceaudit.radiodensity.plan import radiodensity_plan

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
