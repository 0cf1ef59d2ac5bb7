"""Regression targets of the radiodensity study (paper section 3.2, eq. 2) and subject splits.

For each body part a linear mixed-effects model ``y_ij = b0 + b_age Age_ij + b_sex Sex_i + r_i +
e_ij`` (random intercept ``r_i`` per subject) is fitted on the training subjects' rows; the target
is the observed radiodensity minus the model's fixed-effects prediction (eq. 2), z-scored with the
mean and SD of the training residuals. Radiodensity in Hounsfield units (HU), age in years.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from defaceaudit.errors import DefaceAuditError
from defaceaudit.radiodensity.splits import MIN_TRAIN_SUBJECTS

__all__ = ["TARGET_COLUMNS", "lme_residual_targets"]

log = logging.getLogger(__name__)

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
