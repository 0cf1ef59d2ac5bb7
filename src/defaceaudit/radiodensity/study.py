"""File-level steps of the radiodensity study that the workflow runs once per cohort.

* :func:`radiodensity_targets`: the phenotype tables and the cohort's age and sex -> the long table
  of
  residual targets (eq. 2) with every subject's study split (``results/radiodensity/targets.tsv``).
* :func:`evaluate_radiodensity`: every model's predictions -> the Spearman table with bootstrap CIs
  and Wilcoxon tests against the original (TSV and Markdown), the bootstrap replicates and the
  Figure 6 analog.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import pandas as pd

from defaceaudit.errors import InputError
from defaceaudit.radiodensity import ORIGINAL
from defaceaudit.radiodensity.evaluate import radiodensity_table, write_radiodensity_tables
from defaceaudit.radiodensity.figure import plot_radiodensity
from defaceaudit.radiodensity.splits import study_splits
from defaceaudit.radiodensity.targets import lme_residual_targets
from defaceaudit.tables import read_tsv, write_tsv

log = logging.getLogger(__name__)

#: participant ids stay strings ("sub-001", not a number)
ID = {"participant_id": str}


def radiodensity_targets(
    phenotype: Sequence[str | os.PathLike],
    cohort_table: str | os.PathLike,
    body_parts: Sequence[str],
    split: Mapping,
    out_targets: str | os.PathLike,
) -> pd.DataFrame:
    """Residual targets of every cohort subject with phenotype rows, with its study split.

    ``phenotype``: TSVs with participant_id (``sub-<subject>``), visit, age and ``<part>_hu``;
    rows of subjects outside the cohort are dropped (logged). ``cohort_table``: the cohort's
    subjects.tsv (subject, sex, ...). ``split``: fractions ``train``, ``validation``, ``test``
    and ``seed`` (:func:`~defaceaudit.radiodensity.splits.study_splits`, exact
    sizes: subjects ranked by a hash of their id fill the splits in order). The mixed
    model is fitted on the train split only. Writes and returns the long table of
    :func:`~defaceaudit.radiodensity.targets.lme_residual_targets` plus ``subject`` and
    ``split`` columns.
    """
    tables = [
        read_tsv(p, "phenotype table", ["participant_id"], dtype=ID, error=InputError)
        for p in phenotype
    ]
    table = pd.concat(tables, ignore_index=True)
    cohort = read_tsv(
        cohort_table, "cohort table", ["subject", "sex"], dtype={"subject": str}, error=InputError
    )
    participants = pd.DataFrame(
        {"participant_id": "sub-" + cohort["subject"], "sex": cohort["sex"]}
    )
    outside = sorted(set(table["participant_id"]) - set(participants["participant_id"]))
    if outside:
        log.warning("%d phenotype subjects are not in the cohort: %s", len(outside), outside)
        table = table[~table["participant_id"].isin(outside)]
    subjects = sorted(table["participant_id"].unique())
    splits = study_splits(subjects, split)
    train = [s for s in subjects if splits[s] == "train"]
    targets = lme_residual_targets(table, participants, body_parts, train)
    targets.insert(0, "subject", targets["participant_id"].str.removeprefix("sub-"))
    targets["split"] = targets["participant_id"].map(splits)
    counts = targets.drop_duplicates("participant_id")["split"].value_counts().to_dict()
    log.info("radiodensity subjects per split: %s", counts)
    write_tsv(targets, out_targets)
    return targets


def evaluate_radiodensity(
    prediction_files: Sequence[str | os.PathLike],
    out_table: str | os.PathLike,
    out_markdown: str | os.PathLike,
    out_bootstrap: str | os.PathLike,
    out_predictions: str | os.PathLike,
    out_figure: str | os.PathLike,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Spearman's rho of every model on the test split, with bootstrap CIs and Wilcoxon tests
    of each image type's replicates against the original's (paper Figure 6)."""
    columns = ["participant_id", "body_part", "image_type", "target", "prediction"]
    predictions = pd.concat(
        [read_tsv(p, "predictions table", columns, dtype=ID) for p in prediction_files],
        ignore_index=True,
    )
    write_tsv(predictions, out_predictions)
    table, boot = radiodensity_table(
        predictions, reference=ORIGINAL, n_resamples=n_resamples, seed=seed
    )
    write_radiodensity_tables(table, out_table, out_markdown)
    write_tsv(boot, out_bootstrap)
    plot_radiodensity(table, boot, out_figure)
    return table
