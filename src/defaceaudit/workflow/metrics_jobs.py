"""The face-metric jobs of a run and the files each one reads, as plain functions (tested
without Snakemake; rules/metrics.smk calls them)."""

from __future__ import annotations

from dataclasses import dataclass

from defaceaudit import paths
from defaceaudit.cohort.load import Cohort
from defaceaudit.workflow.metrics_plan import TEST_SPLITS, MetricPlan

#: gallery faces a test set needs: rank-1 is reported only below half the gallery
#: (:func:`defaceaudit.metrics.reidentify.reported_rank`), so 1 < N / 2
MIN_GALLERY = 3
#: defacers whose removed region is not the face: skull-stripping removes the whole scalp and
#: forehead, which would bring back the surface defacing leaves untouched
NOT_FACE_REGION = ("skullstrip",)


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


@dataclass(frozen=True)
class ReidentificationPlan:
    """``gallery``: test set -> its subjects with a gallery image (each probe is ranked among
    them); ``region_defacers``: the defacers whose removed regions make the face region;
    ``notes``: why a test set, or the whole test, is left out (empty when all run)."""

    gallery: dict[str, tuple[str, ...]]
    region_defacers: tuple[str, ...]
    notes: tuple[str, ...]

    def subjects(self) -> list[str]:
        """Every subject in a gallery, test set by test set."""
        return [s for members in self.gallery.values() for s in members]


def face_region_defacers(plan: MetricPlan) -> tuple[str, ...]:
    """The defacers whose removed regions make the face region: every face-removing defacer but
    :data:`NOT_FACE_REGION`, and the population-average refacer (its replaced region)."""
    chosen = [d for d in plan.removing if d not in NOT_FACE_REGION]
    if plan.population_average is not None:
        chosen.append(plan.population_average)
    return tuple(chosen)


def reidentification_plan(cohort: Cohort, plan: MetricPlan) -> ReidentificationPlan:
    """Which test subjects re-identification ranks, from their gallery images (an independent
    acquisition each: ``Subject.gallery_t1w``). A test set runs with at least
    :data:`MIN_GALLERY` of them; without a face-removing defacer there is no face region and
    the test is off."""
    region = face_region_defacers(plan)
    if not metric_jobs(cohort, plan):
        return ReidentificationPlan({}, region, ("no face metrics to re-identify from",))
    if not region:
        note = (
            "off: no configured defacer removes the face (skull-stripping alone removes the "
            "scalp too), so there is no face region to compare"
        )
        return ReidentificationPlan({}, region, (note,))
    gallery, notes = {}, []
    for split in TEST_SPLITS:
        members = [s for s in test_subjects(cohort) if cohort.subjects[s].split == split]
        if not members:
            continue
        with_image = tuple(s for s in members if cohort.subjects[s].gallery_t1w is not None)
        if len(with_image) >= MIN_GALLERY:
            gallery[split] = with_image
            if len(with_image) < len(members):
                notes.append(
                    f"{split}: {len(members) - len(with_image)} of {len(members)} subjects have "
                    "no gallery image and are not re-identified"
                )
        else:
            notes.append(
                f"{split}: off: {len(with_image)} of its {len(members)} subjects have a gallery "
                f"image (an independent acquisition: a second BIDS session or run, a gallery "
                f"dataset, or the demo's second session), at least {MIN_GALLERY} needed"
            )
    return ReidentificationPlan(gallery, region, tuple(notes))


def face_metric_inputs(plan: MetricPlan, defacer: str, subject: str) -> dict[str, str]:
    """Every file compute_face_metrics reads, by name (Snakemake input)."""
    prepared = paths.prepared_files(subject)
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


def face_metric_probe_types(
    reid: ReidentificationPlan, plan: MetricPlan, defacer: str, subject: str
) -> tuple[str, ...]:
    """The image types whose faces compute_face_metrics registers to the template for
    re-identification: none for a subject outside every gallery (nothing to rank it against)."""
    if subject not in reid.subjects():
        return ()
    return probe_types(plan, defacer)


def gallery_alignment_inputs(cohort: Cohort, subject: str) -> dict[str, str]:
    """The files align_gallery_face reads: the subject's gallery image and the template."""
    gallery = cohort.subjects[subject].gallery_t1w
    if gallery is None:
        raise ValueError(f"subject {subject} has no gallery image")
    return {"t1w": str(gallery), "template": paths.FACE_TEMPLATE["template"]}


def face_region_subjects(reid: ReidentificationPlan) -> dict[str, dict]:
    """``subject -> {"transform", "removed": [...]}`` for build_face_region: every gallery
    subject's rigid transform to the template and the regions the region defacers removed."""
    return {
        s: {
            "transform": paths.template_alignment_files(s)["transform"],
            "removed": [paths.defaced_files(d, s)["removed"] for d in reid.region_defacers],
        }
        for s in reid.subjects()
    }


def face_region_inputs(reid: ReidentificationPlan) -> dict[str, list[str] | str]:
    """Every file build_face_region reads, by name (Snakemake input)."""
    subjects = face_region_subjects(reid)
    return {
        "transforms": [f["transform"] for f in subjects.values()],
        "removed": [m for f in subjects.values() for m in f["removed"]],
        "template": paths.FACE_TEMPLATE["template"],
    }


def reidentification_inputs(
    cohort: Cohort, plan: MetricPlan, reid: ReidentificationPlan
) -> dict[str, list[str]]:
    """Gallery faces, the originals' faces (the ceiling), the probe faces of every metric job
    of a gallery subject, and the face region (nothing when the test is off)."""
    if not reid.gallery:
        return {}
    return {
        "gallery": [f for g in reidentification_gallery(reid).values() for f in g.values()],
        "probes": [p["faces"] for p in reidentification_probes(cohort, plan, reid)],
        **paths.FACE_REGION,
    }


def reidentification_gallery(reid: ReidentificationPlan) -> dict[str, dict[str, str]]:
    """``test split -> {subject -> gallery face in template space}``: each probe is ranked
    among the gallery faces of its own test split."""
    return {
        split: {s: paths.gallery_alignment_files(s)["faces"] for s in members}
        for split, members in reid.gallery.items()
    }


def reidentification_probes(
    cohort: Cohort, plan: MetricPlan, reid: ReidentificationPlan
) -> list[dict]:
    """``{"subject", "test_set", "faces"}`` of every probe file: each gallery subject's original
    (registered on its own: the ceiling), then its metric jobs' faces."""
    chosen = set(reid.subjects())
    originals = [
        {
            "subject": s,
            "test_set": cohort.subjects[s].split,
            "faces": paths.template_alignment_files(s)["faces"],
        }
        for s in reid.subjects()
    ]
    return originals + [
        {
            "subject": s,
            "test_set": cohort.subjects[s].split,
            "faces": paths.face_metric_files(d, s)["faces"],
        }
        for d, s in metric_jobs(cohort, plan)
        if s in chosen
    ]


def reidentification_targets(reid: ReidentificationPlan) -> list[str]:
    """The gallery faces, the originals' faces and the face region (besides the tables, which
    are always built)."""
    if not reid.gallery:
        return []
    targets = list(paths.FACE_REGION.values())
    for subject in reid.subjects():
        targets += paths.gallery_alignment_files(subject).values()
        targets += paths.template_alignment_files(subject).values()
    return targets


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
    targets += reidentification_targets(reidentification_plan(cohort, plan))
    for defacer, subject in jobs:
        targets += paths.face_metric_files(defacer, subject).values()
    targets += [paths.face_panel_file(s) for s in face_panel_subjects(cohort, n_panel_subjects)]
    if plan.refaced:
        from defaceaudit.workflow.reface_jobs import reface_targets

        targets += reface_targets(cohort, plan, test_subjects(cohort))
    return targets


def face_panel_inputs(plan: MetricPlan, subject: str) -> dict[str, str]:
    """Files of render_face_panel: the original, every compared image, the metric rows."""
    files = {"original": paths.prepared_files(subject)["t1w"]}
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
