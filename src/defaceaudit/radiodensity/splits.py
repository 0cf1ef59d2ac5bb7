"""Subjects into train, validation and test splits, deterministically per subject (and how
few training subjects a body part's model can be fitted on). Light: numpy only, so that the
workflow checks a cohort's split in the Snakemake process."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from defaceaudit.errors import DefaceAuditError

log = logging.getLogger(__name__)

#: Split names, in the order their fractions are stacked on [0, 1).
SPLITS = ("train", "validation", "test")
#: Fewest training subjects (with a radiodensity value) a body part's model is fitted on: three
#: fixed effects plus a random-intercept variance need more subjects than parameters.
MIN_TRAIN_SUBJECTS = 4


def subject_uniform(subject: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by ``(seed, subject)`` alone: the first 8 bytes of
    SHA-256 of ``"<seed>/<subject>"`` over 2**64 (stable across runs, platforms and Python
    versions, unlike ``hash()``)."""
    digest = hashlib.sha256(f"{int(seed)}/{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_subject_splits(
    subjects: Sequence[str],
    fractions: Mapping[str, float],
    seed: int,
    *,
    method: str = "hash",
) -> dict[str, str]:
    """Assign each subject to "train", "validation" or "test", deterministically per subject.

    ``fractions`` maps the three split names to non-negative fractions summing to 1. Subject
    ``s`` gets ``u = subject_uniform(s, seed)`` and the split whose interval of the cumulative
    fractions (stacked in :data:`SPLITS` order) holds ``u``: a subject's split depends only on
    its own name and the seed, so adding or removing subjects never moves another subject.

    Small cohorts: with at least 3 subjects every split with a positive fraction gets at least
    one subject. While one is empty, the subject whose ``u`` lies nearest to that split's
    interval, among the splits holding 2 or more subjects, is moved into it. Only such a repair
    can make a subject's split depend on the other subjects (adding a subject may undo it).

    ``method="quota"`` trades that stability for exact sizes: subjects sorted by ``u`` fill the
    splits in order with ``round(fraction * n)`` subjects each (largest remainders), so a
    24-subject cohort with fractions 0.5/0.17/0.33 always gets 12/4/8, where the hash thresholds
    give binomial sizes (seed 2025: 15/1/8; one validation subject makes early stopping noise).
    Adding a subject moves at most one subject across each boundary.

    Returns ``{subject: split}`` in the order of ``subjects``.
    """
    if set(fractions) != set(SPLITS):
        raise DefaceAuditError(
            f"split fractions must name exactly {', '.join(SPLITS)}; got {', '.join(fractions)}"
        )
    values = np.array([float(fractions[s]) for s in SPLITS])
    if np.any(values < 0) or not np.isclose(values.sum(), 1.0, atol=1e-6):
        raise DefaceAuditError(f"split fractions must be >= 0 and sum to 1; got {dict(fractions)}")
    subjects = [str(s) for s in subjects]
    if len(set(subjects)) != len(subjects):
        raise DefaceAuditError("assign_subject_splits: subject list has duplicates")
    upper = np.cumsum(values)
    upper[-1] = 1.0  # rounding must not leave a gap at the top
    lower = np.concatenate([[0.0], upper[:-1]])
    u = {s: subject_uniform(s, seed) for s in subjects}
    if method == "quota":
        return _quota_splits(subjects, values, u)
    if method != "hash":
        raise ValueError(f"method must be 'hash' or 'quota', got {method!r}")
    splits = {s: SPLITS[int(np.searchsorted(upper, u[s], side="right"))] for s in subjects}
    if len(subjects) >= 3:
        for k, name in enumerate(SPLITS):
            if values[k] <= 0 or name in splits.values():
                continue
            counts = Counter(splits.values())
            donors = [s for s in subjects if counts[splits[s]] >= 2]

            def distance(s: str, k: int = k) -> float:
                return max(lower[k] - u[s], u[s] - upper[k], 0.0)

            moved = min(donors, key=lambda s: (distance(s), s))
            log.info("split %s was empty: %s moved there from %s", name, moved, splits[moved])
            splits[moved] = name
    return splits


def study_splits(subjects: Sequence[str], split: Mapping) -> dict[str, str]:
    """The radiodensity study's split of ``subjects`` (participant ids) by the config's
    ``radiodensity.split`` section (fractions ``train``, ``validation``, ``test`` and ``seed``),
    with exact sizes (``method="quota"``: hash thresholds would leave a 24-subject cohort one
    validation subject). The one place the workflow's plan check and the study itself split.
    Returns ``{subject: split}`` in the order of ``subjects``."""
    fractions = {k: split[k] for k in SPLITS}
    return assign_subject_splits(subjects, fractions, int(split["seed"]), method="quota")


def _quota_splits(
    subjects: list[str], values: np.ndarray, u: Mapping[str, float]
) -> dict[str, str]:
    """Exact split sizes: largest-remainder rounding of ``values * n``, filled in order of ``u``
    (ties broken by name); with >= 3 subjects a positive fraction gets at least one subject."""
    n = len(subjects)
    raw = values * n
    sizes = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[k] += 1
    if n >= 3:
        for k in np.flatnonzero((values > 0) & (sizes == 0)):
            sizes[k] += 1
            sizes[int(np.argmax(sizes))] -= 1
    ordered = sorted(subjects, key=lambda s: (u[s], s))
    names = np.repeat(np.arange(len(SPLITS)), sizes)
    by_subject = {s: SPLITS[int(k)] for s, k in zip(ordered, names, strict=True)}
    return {s: by_subject[s] for s in subjects}
