"""What ``rule all`` builds: every per-subject output and the aggregates, as plain paths."""

from __future__ import annotations

from defaceaudit import paths
from defaceaudit.cohort.load import Cohort
from defaceaudit.workflow.metrics_plan import MetricPlan
from defaceaudit.workflow.radiodensity_plan import RadiodensityPlan


def demo_targets(cohort: Cohort) -> list[str]:
    """The demo BIDS datasets' tables (their images come in through the prepare stage)."""
    datasets = sorted({p.dataset for p in cohort.demo.values()})
    return [paths.demo_table(d, name) for d in datasets for name in paths.DEMO_TABLES]


def deface_targets(cohort: Cohort, defacers: dict[str, str]) -> list[str]:
    """Every subject x defacer output, each defacer's dataset_description.json, and the QC
    table and summary."""
    targets = [paths.QC_TABLE, paths.QC_SUMMARY, paths.QC_SUMMARY_MD] if defacers else []
    targets += [paths.deface_dataset_description(d) for d in defacers]
    for subject in cohort.subjects:
        for defacer in defacers:
            targets += paths.defaced_files(defacer, subject).values()
    return targets


def radiodensity_outputs(cohort: Cohort, plan: RadiodensityPlan) -> list[str]:
    """Every subject's face crops, every model's outputs, the Spearman tables and the figure."""
    targets = [paths.RADIODENSITY_TARGETS, *paths.RADIODENSITY_TABLES.values()]
    targets.append(paths.RADIODENSITY_FIGURE)
    for subject in cohort.subjects:
        targets += paths.radiodensity_crop_files(subject).values()
    for image_type, body_part in plan.models():
        targets += paths.radiodensity_model_files(image_type, body_part).values()
    return targets


def all_targets(
    cohort: Cohort,
    defacers: dict[str, str] | None = None,
    metric_plan: MetricPlan | None = None,
    n_panel_subjects: int = 2,
    radiodensity: RadiodensityPlan | None = None,
) -> list[str]:
    """Sorted, de-duplicated list of every final output of a run on ``cohort``.

    ``defacers``: ``{defacer: backend}`` (workflow.deface_plan.defacer_plan); none -> no
    deface stage. ``metric_plan``: (workflow.metrics_plan.metric_plan); none -> no metrics stage.
    ``n_panel_subjects``: test subjects per split whose faces are rendered side by side.
    ``radiodensity``: (workflow.radiodensity_plan.radiodensity_plan); none -> no radiodensity
    study.
    """
    from defaceaudit.workflow.face_recognition_jobs import face_recognition_targets
    from defaceaudit.workflow.metrics_jobs import metric_targets, reidentification_plan

    targets = [paths.COHORT_TABLE, *demo_targets(cohort)]
    for subject in cohort.subjects:
        targets += paths.prepared_files(subject).values()
    targets += deface_targets(cohort, defacers or {})
    if metric_plan is not None:
        targets += metric_targets(cohort, metric_plan, n_panel_subjects)
        targets += face_recognition_targets(
            cohort, metric_plan, reidentification_plan(cohort, metric_plan), n_panel_subjects
        )
    if radiodensity is not None:
        targets += radiodensity_outputs(cohort, radiodensity)
    return sorted(set(targets))
