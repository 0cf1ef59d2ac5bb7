"""The merged cohort: one entry per subject (clashes refused), in split order, and its table
(``results/cohort/subjects.tsv``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import pandas as pd

from defaceaudit.cohort.subject import (
    FRAME_COLUMNS,
    SPLIT_RULE,
    SPLITS,
    Subject,
    clash_reason,
    input_error,
)


def _split_index(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)


def _sort_key(subject: Subject) -> tuple[int, str]:
    return (_split_index(subject.split), subject.subject)


def check_cohort(subjects: Sequence[Subject]) -> list[Subject]:
    """The merged cohort sorted by (split order in SPLITS, subject); InputError if it is wrong.

    Rejects an empty cohort, unknown splits and a subject id that appears twice (in two
    splits, or twice in the same split), naming both T1w files.
    """
    if not subjects:
        raise input_error("cohort: no subjects (configure at least one BIDS dataset or manifest)")
    seen: dict[str, Subject] = {}
    for subject in subjects:
        if subject.split not in SPLITS:
            raise input_error(
                f"cohort: subject {subject.subject} ({subject.t1w}) has unknown split "
                f"{subject.split!r} ({SPLIT_RULE})"
            )
        first = seen.get(subject.subject)
        if first is not None:
            raise input_error(
                f"cohort: {clash_reason(first, subject)}: {first.t1w} and {subject.t1w} "
                "(use subject_prefix to tell datasets apart)"
            )
        seen[subject.subject] = subject
    return sorted(subjects, key=_sort_key)


def cohort_frame(subjects: Iterable[Subject]) -> pd.DataFrame:
    """One row per subject, columns :data:`FRAME_COLUMNS`; paths as strings (``""`` for none).

    Sorted by split order in SPLITS, then subject. ``age`` is a float in years.
    """
    rows = [
        {
            "subject": s.subject,
            "t1w": str(s.t1w),
            "split": s.split,
            "age": float(s.age),
            "sex": s.sex,
            "dataset": s.dataset,
            "brain_mask": str(s.brain_mask) if s.brain_mask is not None else "",
            "gallery_t1w": str(s.gallery_t1w) if s.gallery_t1w is not None else "",
        }
        for s in sorted(subjects, key=_sort_key)
    ]
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    return frame.astype({"age": float}).reset_index(drop=True)


def write_cohort_table(records: Sequence[dict], path: str | os.PathLike[str]) -> None:
    """Write cohort rows (``cohort_frame(...).to_dict("records")``) as a TSV, atomically."""
    from defaceaudit.tables import write_tsv

    write_tsv(pd.DataFrame(records, columns=list(FRAME_COLUMNS)), path)
