"""The face-metric jobs of a run and the files each one reads, as plain functions (tested
without Snakemake; rules/metrics.smk calls them)."""

from __future__ import annotations

from defaceaudit import paths
from defaceaudit.cohort import Cohort
from defaceaudit.metrics.plan import TEST_SPLITS, MetricPlan
from defaceaudit.targets import prepared_files


def test_subjects(cohort: Cohort) -> list[str]:
    """Subjects of the internal and external test splits, in cohort order."""
    return [s for s in cohort.ids() if cohort.subjects[s].split in TEST_SPLITS]


def metric_jobs(cohort: Cohort, plan: MetricPlan) -> list[tuple[str, str]]:
    """``(defacer, subject)`` of every compute_face_metrics job."""
    return [(d, s) for s in test_subjects(cohort) for d in plan.removing]


def compared_images(plan: MetricPlan, defacer: str, subject: str) -> dict[str, dict]:
    """``image_type -> {"image", "t1w", "removed"}`` compared with ``subject``'s original for
    the row of ``defacer``: the defaced image and, when they run, the population average and
    the DPM-refaced image."""
    images = {}
    for kind, producer in (("defaced", defacer), ("population_average", plan.population_average)):
        if producer is not None:
            files = paths.defaced_files(producer, subject)
            images[kind] = {"image": producer, "t1w": files["t1w"], "removed": files["removed"]}
    if plan.refaced:
        files = paths.refaced_files(defacer, subject)
        images["dpm_refaced"] = {
            "image": f"dpm_{defacer}",
            "t1w": files["t1w"],
            "removed": files["removed"],
        }
    return images


def probe_types(plan: MetricPlan, defacer: str) -> tuple[str, ...]:
    """Image types of ``defacer``'s row whose faces go to re-identification: the population
    average, the same image in every row of a subject, only in the first row."""
    kinds = ("defaced", "dpm_refaced")
    if plan.removing and defacer == plan.removing[0]:
        kinds += ("population_average",)
    return kinds


def face_metric_inputs(plan: MetricPlan, defacer: str, subject: str) -> dict[str, str]:
    """Every file compute_face_metrics reads, by name (Snakemake input)."""
    prepared = prepared_files(subject)
    files = {"t1w": prepared["t1w"], "head_mask": prepared["head_mask"]}
    for kind, entry in compared_images(plan, defacer, subject).items():
        files[f"{kind}_t1w"] = entry["t1w"]
        files[f"{kind}_removed"] = entry["removed"]
    files["template"] = paths.FACE_TEMPLATE["template"]
    return files


def face_metric_row_inputs(cohort: Cohort, plan: MetricPlan) -> dict[str, list[str]]:
    """The rows file of every compute_face_metrics job -> the files that job reads (what tells
    an earlier run's rows from current ones after a failed run)."""
    return {
        paths.face_metric_files(d, s)["rows"]: list(face_metric_inputs(plan, d, s).values())
        for d, s in metric_jobs(cohort, plan)
    }


def reidentification_inputs(cohort: Cohort, plan: MetricPlan) -> dict[str, list[str]]:
    """Gallery faces (every test subject's original) and probe faces (every metric job)."""
    return {
        "gallery": [f for g in reidentification_gallery(cohort).values() for f in g.values()],
        "probes": [paths.face_metric_files(d, s)["faces"] for d, s in metric_jobs(cohort, plan)],
    }


def reidentification_gallery(cohort: Cohort) -> dict[str, dict[str, str]]:
    """``test split -> {subject -> original face in template space}``: each probe is ranked
    among the subjects of its own test split."""
    gallery: dict[str, dict[str, str]] = {}
    for s in test_subjects(cohort):
        faces = paths.template_alignment_files(s)["faces"]
        gallery.setdefault(cohort.subjects[s].split, {})[s] = faces
    return gallery


def reidentification_probes(cohort: Cohort, plan: MetricPlan) -> list[dict]:
    return [
        {
            "subject": s,
            "test_set": cohort.subjects[s].split,
            "defacer": d,
            "faces": paths.face_metric_files(d, s)["faces"],
        }
        for d, s in metric_jobs(cohort, plan)
    ]


def face_panel_subjects(cohort: Cohort, n_subjects: int) -> list[str]:
    """The first ``n_subjects`` subjects of each test split (faces rendered side by side)."""
    chosen = []
    for split in TEST_SPLITS:
        chosen += [s for s in test_subjects(cohort) if cohort.subjects[s].split == split][
            :n_subjects
        ]
    return chosen


def metric_targets(cohort: Cohort, plan: MetricPlan, n_panel_subjects: int) -> list[str]:
    """Every output of the metrics stage (nothing when there is no test subject or no row)."""
    jobs = metric_jobs(cohort, plan)
    if not jobs:
        return []
    targets = [paths.FACE_METRICS, *paths.FACE_TABLES.values(), paths.FACE_TABLES_HTML]
    targets += [*paths.REIDENTIFICATION.values(), *paths.FIGURE_FILES.values()]
    for defacer, subject in jobs:
        targets += paths.face_metric_files(defacer, subject).values()
    targets += [paths.face_panel_file(s) for s in face_panel_subjects(cohort, n_panel_subjects)]
    if plan.refaced:
        from defaceaudit.diffusion.jobs import reface_targets

        targets += reface_targets(cohort, plan, test_subjects(cohort))
    return targets


def face_panel_inputs(plan: MetricPlan, subject: str) -> dict[str, str]:
    """Files of render_face_panel: the original, every compared image, the metric rows."""
    files = {"original": prepared_files(subject)["t1w"]}
    for defacer in plan.removing:
        for kind, entry in compared_images(plan, defacer, subject).items():
            files[f"{defacer}__{kind}"] = entry["t1w"]
        files[f"{defacer}__rows"] = paths.face_metric_files(defacer, subject)["rows"]
    return files


def face_panel_columns(plan: MetricPlan, subject: str) -> dict[str, dict[str, str]]:
    """``defacer -> {image_type: t1w}``: one row of renderings per defacer (Figures 3, 4)."""
    return {
        d: {k: e["t1w"] for k, e in compared_images(plan, d, subject).items()}
        for d in plan.removing
    }
