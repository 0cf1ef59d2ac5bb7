"""The cohort a run works on, from the validated config: demo plan, BIDS datasets or manifest.

The value type :class:`Cohort` that every stage's planner takes; what a run builds from it is
planned in :mod:`defaceaudit.workflow.plan`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from defaceaudit import paths
from defaceaudit.cohort import Subject, check_cohort, read_bids_dataset, read_manifest
from defaceaudit.cohort.demo.plan import DemoSubject, plan_demo_cohort
from defaceaudit.cohort.subject import TEST_SPLITS


@dataclass(frozen=True)
class Cohort:
    """Subjects by id, in split order; ``demo`` holds the plan when the cohort is synthetic."""

    subjects: dict[str, Subject]
    demo: dict[str, DemoSubject] = field(default_factory=dict)

    def ids(self, split: str | None = None) -> list[str]:
        return [s for s, sub in self.subjects.items() if split in (None, sub.split)]


def read_cohort(config: dict) -> Cohort:
    """Read and check the cohort named by ``config["input"]`` (raises InputError, one line).

    ``config`` is a whole validated config. Whether the stages that learn from the train split
    have one is checked by :func:`defaceaudit.workflow.plan.load_cohort`.
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
    return Cohort({s.subject: s for s in check_cohort(subjects)})


def demo_cohort(demo: dict) -> Cohort:
    """Subjects of the demo cohort; their files are outputs of the demo rules (relative paths).

    With ``demo.gallery.enabled``, each test subject has a second synthetic session (its
    re-identification gallery image,
    :func:`defaceaudit.cohort.demo.build.synthesize_demo_gallery`)."""
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
