"""The face-recognition jobs of re-identification and the files each one reads, as plain
functions (tested without Snakemake; rules/face_recognition.smk calls them through
:class:`~defaceaudit.workflow.jobs.RunJobs`).

Face recognition runs for the subjects the surface re-identification ranks (test subjects with
a gallery image, in test sets with enough of them:
:func:`~defaceaudit.workflow.metrics_jobs.reidentification_plan`) when
``metrics.face_recognition.enabled`` is true. Per subject, one job renders all of its images
and one embeds them (a change to one subject's images reruns that subject's two jobs only);
one job matches all subjects.
"""

from __future__ import annotations

from defaceaudit import paths
from defaceaudit.cohort.load import Cohort
from defaceaudit.metrics.recognizer import RecognizerSettings, model_path
from defaceaudit.workflow.metrics_jobs import (
    ReidentificationPlan,
    compared_images,
    face_panel_subjects,
)
from defaceaudit.workflow.metrics_plan import MetricPlan


def recognizer_settings(config: dict) -> RecognizerSettings:
    """The recognizer of a validated config (checked at DAG time by
    :func:`~defaceaudit.workflow.metrics_plan.metric_plan`)."""
    return RecognizerSettings.from_config(config["metrics"]["face_recognition"])


def face_recognition_subjects(plan: MetricPlan, reid: ReidentificationPlan) -> list[str]:
    """The subjects rendered and matched: the re-identification subjects when face recognition
    runs, else none."""
    return reid.subjects() if plan.face_recognition else []


def face_view_images(cohort: Cohort, plan: MetricPlan, subject: str) -> dict[str, str]:
    """``label -> T1w`` of every image of ``subject`` that is rendered: ``original`` (the
    prepared image), ``gallery`` (its independent acquisition) and every compared image
    (``<image_type>__<image>``, an image shared by several defacers once)."""
    images = {
        "original": paths.prepared_files(subject)["t1w"],
        "gallery": str(cohort.subjects[subject].gallery_t1w),
    }
    for defacer in plan.removing:
        for image_type, entry in compared_images(plan, defacer, subject).items():
            images.setdefault(f"{image_type}__{entry['image']}", entry["t1w"])
    return images


def face_embedding_inputs(subject: str, settings: RecognizerSettings) -> dict[str, str]:
    """The renderings of ``subject`` and, for an ONNX recognizer, its model file (a new model
    reruns the embeddings)."""
    files = {"renderings": paths.face_view_files(subject)["renderings"]}
    model = model_path(settings)
    if model is not None:
        files["model"] = model
    return files


def face_embedding_sets(
    cohort: Cohort, plan: MetricPlan, reid: ReidentificationPlan
) -> dict[str, dict[str, str]]:
    """``test set -> {subject -> embeddings}`` for match_face_embeddings."""
    chosen = set(face_recognition_subjects(plan, reid))
    return {
        split: {s: paths.face_view_files(s)["embeddings"] for s in members if s in chosen}
        for split, members in reid.gallery.items()
        if chosen
    }


def face_recognition_summary(plan: MetricPlan, reid: ReidentificationPlan) -> dict[str, str]:
    """The face-recognition summary and Markdown that reidentify_faces merges (none when face
    recognition does not run)."""
    if not face_recognition_subjects(plan, reid):
        return {}
    return {
        "face_recognition_summary": paths.FACE_RECOGNITION["summary"],
        "face_recognition_markdown": paths.FACE_RECOGNITION["markdown"],
    }


def face_view_sheet_subjects(
    cohort: Cohort, plan: MetricPlan, reid: ReidentificationPlan, n_subjects: int
) -> list[str]:
    """The subjects whose renderings the report shows (the face panels' subjects that are
    rendered)."""
    chosen = set(face_recognition_subjects(plan, reid))
    return [s for s in face_panel_subjects(cohort, n_subjects) if s in chosen]


def face_recognition_targets(
    cohort: Cohort, plan: MetricPlan, reid: ReidentificationPlan, n_panel_subjects: int
) -> list[str]:
    """Every subject's renderings and embeddings, the matcher's tables and the report's
    example renderings (nothing when face recognition does not run)."""
    subjects = face_recognition_subjects(plan, reid)
    if not subjects:
        return []
    targets = list(paths.FACE_RECOGNITION.values())
    for subject in subjects:
        targets += paths.face_view_files(subject).values()
    for subject in face_view_sheet_subjects(cohort, plan, reid, n_panel_subjects):
        targets.append(paths.face_view_sheet(subject))
    return targets
