"""Regression targets of the radiodensity study (paper section 3.2, eq. 2) and subject splits.

For each body part a linear mixed-effects model ``y_ij = b0 + b_age Age_ij + b_sex Sex_i + r_i +
e_ij`` (random intercept ``r_i`` per subject) is fitted on the training subjects' rows; the target
is the observed radiodensity minus the model's fixed-effects prediction (eq. 2), z-scored with the
mean and SD of the training residuals. Radiodensity in Hounsfield units (HU), age in years.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from defaceaudit.errors import DefaceAuditError

__all__ = [
    "MIN_TRAIN_SUBJECTS",
    "SPLITS",
    "TARGET_COLUMNS",
    "assign_subject_splits",
    "lme_residual_targets",
    "subject_uniform",
]

log = logging.getLogger(__name__)

#: Split names, in the order their fractions are stacked on [0, 1).
SPLITS = ("train", "validation", "test")
#: Fewest training subjects (with a radiodensity value) a body part's model is fitted on: three
#: fixed effects plus a random-intercept variance need more subjects than parameters.
MIN_TRAIN_SUBJECTS = 4
#: Columns of :func:`lme_residual_targets`' long table.
TARGET_COLUMNS = (
    "participant_id",
    "visit",
    "age",
    "sex",
    "body_part",
    "y_hu",
    "fixed_hu",
    "residual_hu",
    "target",
)
#: Formula of eq. 2's fixed effects; ``female`` is 1 for sex "F", 0 for "M".
FORMULA = "y ~ age + female"


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DefaceAuditError(
            f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, frame))}"
        )


def _with_sex(phenotype: pd.DataFrame, participants: pd.DataFrame) -> pd.DataFrame:
    """Phenotype rows with the subject's sex ("M"/"F") and ``female`` (0/1) joined."""
    sexes = participants[["participant_id", "sex"]].copy()
    sexes["participant_id"] = sexes["participant_id"].astype(str)
    duplicated = sexes["participant_id"][sexes["participant_id"].duplicated()]
    if len(duplicated):
        raise DefaceAuditError(f"participants table lists {duplicated.iloc[0]} more than once")
    table = phenotype.copy()
    table["participant_id"] = table["participant_id"].astype(str)
    table = table.merge(sexes, on="participant_id", how="left", validate="many_to_one")
    bad = table.loc[~table["sex"].isin(["M", "F"]), ["participant_id", "sex"]]
    if len(bad):
        subject, value = bad.iloc[0]
        what = "no sex" if pd.isna(value) else f"sex {value!r} (not 'M' or 'F')"
        raise DefaceAuditError(
            f"{subject}: {what} in the participants table; eq. 2 needs each subject's sex"
        )
    table["female"] = (table["sex"] == "F").astype(float)
    return table


def lme_residual_targets(
    phenotype: pd.DataFrame,
    participants: pd.DataFrame,
    body_parts: Sequence[str],
    train_subjects: Collection[str],
) -> pd.DataFrame:
    """Age- and sex-adjusted radiodensity targets (eq. 2), one row per visit and body part.

    ``phenotype``: one row per visit with ``participant_id``, ``visit``, ``age`` (years) and
    ``<part>_hu`` (HU) for each of ``body_parts``; ``participants``: ``participant_id``, ``sex``
    ("M"/"F"). For each part, statsmodels ``MixedLM`` (``y ~ age + female``, random intercept per
    ``participant_id``, REML) is fitted on the rows of ``train_subjects`` only; ``fixed_hu`` is
    its fixed-effects prediction (``predict()``: no random intercept) for every row,
    ``residual_hu = y_hu - fixed_hu`` (eq. 2) and ``target = (residual_hu - m) / s`` with ``m``,
    ``s`` the mean and SD (ddof 1) of the training rows' residuals. Rows whose ``<part>_hu`` is
    missing are left out of that part.

    Returns a long table with :data:`TARGET_COLUMNS` (body parts in the given order, rows in
    phenotype order). Raises :class:`DefaceAuditError` for missing columns, subjects without a
    valid sex, fewer than :data:`MIN_TRAIN_SUBJECTS` training subjects with values, or training
    subjects all of one sex.
    """
    parts = list(body_parts)
    _require(
        phenotype,
        ["participant_id", "visit", "age", *[f"{p}_hu" for p in parts]],
        "phenotype table",
    )
    _require(participants, ["participant_id", "sex"], "participants table")
    table = _with_sex(phenotype, participants)
    train = set(map(str, train_subjects))
    frames = []
    for part in parts:
        column = f"{part}_hu"
        rows = table.loc[table[column].notna()].copy()
        rows["y"] = rows[column].astype(float)
        fit_rows = rows.loc[rows["participant_id"].isin(train)]
        n_subjects = fit_rows["participant_id"].nunique()
        if n_subjects < MIN_TRAIN_SUBJECTS:
            raise DefaceAuditError(
                f"{column}: {n_subjects} training subject(s) with a value; the mixed model "
                f"needs at least {MIN_TRAIN_SUBJECTS}"
            )
        if fit_rows["female"].nunique() < 2:
            raise DefaceAuditError(
                f"{column}: all training subjects have sex {fit_rows['sex'].iloc[0]!r}; "
                "the sex effect of eq. 2 cannot be estimated"
            )
        model = smf.mixedlm(FORMULA, fit_rows, groups=fit_rows["participant_id"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = model.fit(reml=True)
        for warning in caught:
            log.warning("%s mixed model: %s", column, warning.message)
        fixed = np.asarray(result.predict(rows), dtype=float)
        residual = rows["y"].to_numpy() - fixed
        in_train = rows["participant_id"].isin(train).to_numpy()
        mean, sd = residual[in_train].mean(), residual[in_train].std(ddof=1)
        log.info(
            "%s: fixed effects %s, group variance %.3g HU^2, training residual mean %.3g SD %.3g",
            column,
            {k: round(float(v), 4) for k, v in result.fe_params.items()},
            float(np.asarray(result.cov_re)[0, 0]),
            mean,
            sd,
        )
        frames.append(
            pd.DataFrame(
                {
                    "participant_id": rows["participant_id"].to_numpy(),
                    "visit": rows["visit"].to_numpy(),
                    "age": rows["age"].to_numpy(dtype=float),
                    "sex": rows["sex"].to_numpy(),
                    "body_part": part,
                    "y_hu": rows["y"].to_numpy(),
                    "fixed_hu": fixed,
                    "residual_hu": residual,
                    "target": (residual - mean) / sd,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=list(TARGET_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(TARGET_COLUMNS)]


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
            counts = pd.Series(splits).value_counts()
            donors = [s for s in subjects if counts[splits[s]] >= 2]

            def distance(s: str, k: int = k) -> float:
                return max(lower[k] - u[s], u[s] - upper[k], 0.0)

            moved = min(donors, key=lambda s: (distance(s), s))
            log.info("split %s was empty: %s moved there from %s", name, moved, splits[moved])
            splits[moved] = name
    return splits


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
