"""What the radiodensity study trains, decided once from the config (paper section 3).

One ResNet10 per image type x body part: the original and every configured defacer's output
(skull-stripping included), for abdomen, thigh and shin muscle radiodensity by default. Subjects
are split into train / validation / test for this study on their own (``radiodensity.split``):
the study asks what a model learns from faces, not how the refacing test subjects fare, so every
cohort subject with a phenotype row takes part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defaceaudit import paths
from defaceaudit.cohort.load import Cohort
from defaceaudit.errors import InputError
from defaceaudit.radiodensity import ORIGINAL


@dataclass(frozen=True)
class RadiodensityPlan:
    """``image_types``: ``original`` then the defacers, in config order; ``body_parts``: the
    phenotype columns ``<part>_hu`` predicted; ``phenotype``: the TSVs read (demo tables or the
    configured file)."""

    image_types: tuple[str, ...]
    body_parts: tuple[str, ...]
    phenotype: tuple[str, ...]

    def models(self) -> list[tuple[str, str]]:
        """Every (image type, body part) pair: one trained model each."""
        return [(i, p) for i in self.image_types for p in self.body_parts]


def switched_off(settings: dict) -> bool:
    """Whether the config's ``radiodensity`` section turns the study off (``enabled: false``)."""
    return settings["enabled"] in (False, "false")


def radiodensity_plan(
    cohort: Cohort, defacers: dict[str, str], settings: dict
) -> RadiodensityPlan | None:
    """The plan for the config's ``radiodensity`` section, or None when the study does not run.

    ``enabled``: ``auto`` runs the study when a phenotype table exists (the demo's, or
    ``phenotype``); ``true`` requires one (InputError otherwise); ``false`` never runs it.
    """
    enabled = settings["enabled"]
    if switched_off(settings):
        return None
    if settings.get("phenotype"):
        phenotype = (str(settings["phenotype"]),)
        if not Path(phenotype[0]).is_file():
            raise InputError(f"config radiodensity.phenotype: {phenotype[0]} not found")
    elif cohort.demo:
        datasets = sorted({p.dataset for p in cohort.demo.values()})
        phenotype = tuple(paths.demo_table(d, "phenotype/ct_muscle.tsv") for d in datasets)
    elif enabled is True or enabled == "true":
        raise InputError(
            "config radiodensity.enabled is true but radiodensity.phenotype names no table "
            "(a TSV with participant_id, visit, age and one <part>_hu column per body part)"
        )
    else:
        return None
    unknown = [d for d in settings.get("defacers") or [] if d not in defacers]
    if unknown:
        raise InputError(
            f"config radiodensity.defacers: {', '.join(unknown)} not among deface.defacers "
            f"({', '.join(defacers)})"
        )
    chosen = settings.get("defacers") or list(defacers)
    return RadiodensityPlan(
        image_types=(ORIGINAL, *chosen),
        body_parts=tuple(settings["body_parts"]),
        phenotype=phenotype,
    )


def image_files(subject: str, image_types: tuple[str, ...]) -> dict[str, str]:
    """The subject's image of every non-original image type (the defacers' outputs)."""
    return {t: paths.defaced_files(t, subject)["t1w"] for t in image_types if t != ORIGINAL}
