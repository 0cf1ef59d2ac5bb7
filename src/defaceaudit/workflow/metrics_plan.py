"""Which images the face metrics compare, decided once from the config (paper section 2.3).

Rows of Tables 1-3 are the defacers that REMOVE the face (quickshear, facemask, skullstrip and
the container tools fsl_deface, mri_deface, pydeface); the population-average refacer (avgface
natively, mri_reface in a container) is a column: it replaces the face instead of removing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from defaceaudit.cohort.subject import TEST_SPLITS
from defaceaudit.errors import InputError
from defaceaudit.metrics import IMAGE_TYPES
from defaceaudit.metrics.recognizer import RecognizerSettings

__all__ = ["IMAGE_TYPES", "POPULATION_AVERAGE_REFACERS", "TEST_SPLITS", "MetricPlan", "metric_plan"]

#: defacers that replace the face with a population average (a column, not a row, of Table 1)
POPULATION_AVERAGE_REFACERS = ("mri_reface", "avgface")


@dataclass(frozen=True)
class MetricPlan:
    """``removing``: defacers whose output is a table row; ``population_average``: the refacer
    whose output fills the population-average column (None: the column is n/a); ``refaced``:
    whether the diffusion models reface every row's defaced test images (the DPM column);
    ``face_recognition``: whether re-identification also matches rendered faces with a face
    recognizer (:mod:`defaceaudit.metrics.face_recognition`)."""

    removing: tuple[str, ...]
    population_average: str | None
    refaced: bool = False
    face_recognition: bool = False


def metric_plan(defacers: dict[str, str], metrics: dict, refaced: bool = False) -> MetricPlan:
    """The plan for ``defacers`` (``{defacer: backend}``) and the config's ``metrics`` section.

    ``metrics["population_average"]``: ``auto`` takes mri_reface when it runs, else avgface,
    else none; a named refacer must be among the defacers (InputError otherwise).
    ``metrics["face_recognition"]``: its recognizer is checked when it is enabled
    (:meth:`~defaceaudit.metrics.recognizer.RecognizerSettings.check`, InputError).
    """
    choice = metrics["population_average"]
    if choice == "auto":
        found = [d for d in POPULATION_AVERAGE_REFACERS if d in defacers]
        population = found[0] if found else None
    elif choice == "none":
        population = None
    elif choice not in defacers:
        raise InputError(
            f"config metrics.population_average: {choice} is not among deface.defacers "
            f"({', '.join(defacers)})"
        )
    else:
        population = choice
    removing = tuple(d for d in defacers if d not in POPULATION_AVERAGE_REFACERS)
    # the recognizer is checked here, at DAG time: a missing or unreadable model file is one
    # line, not a failed job (a section without "enabled", as in some tests: off)
    recognition = metrics.get("face_recognition") or {}
    face_recognition = bool(recognition.get("enabled", False))
    if face_recognition:
        RecognizerSettings.from_config(recognition).check()
    return MetricPlan(
        removing=removing,
        population_average=population,
        refaced=refaced,
        face_recognition=face_recognition,
    )
