"""Subjects of a TSV manifest (subject, t1w, split, age, sex; optional dataset, brain_mask and
gallery_t1w), paths relative to the manifest's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from defaceaudit.cohort.subject import (
    LABEL_RULE,
    MANIFEST_COLUMNS,
    SPLIT_RULE,
    SPLITS,
    Subject,
    absolute_path,
    clash_reason,
    input_error,
    is_label,
    parse_age,
    parse_sex,
    read_tsv_cells,
)


def _manifest_file(value: str, base: Path, column: str, where: str, who: str) -> Path:
    if not value:
        raise input_error(f"{where}: {who} has an empty {column}")
    file = absolute_path(value, base)
    if not file.is_file():
        raise input_error(f"{where}: {who} {column} file not found: {file}")
    return file


def _manifest_row(row: pd.Series, manifest: Path, default_dataset: str) -> Subject:
    """One manifest row as a Subject (paths relative to the manifest's folder)."""
    line = row["_line"]
    raw = row["subject"]
    label = raw.removeprefix("sub-")
    where = f"manifest {manifest} line {line}"
    who = f"subject {label}"
    if not is_label(label):
        raise input_error(
            f"{where}: invalid subject id {raw!r} ({LABEL_RULE}, optional sub- prefix)"
        )
    split = row["split"]
    if split not in SPLITS:
        raise input_error(f"{where}: {who} has unknown split {split!r} ({SPLIT_RULE})")
    base = manifest.parent
    mask_value = row.get("brain_mask", "")
    gallery_value = row.get("gallery_t1w", "")
    t1w = _manifest_file(row["t1w"], base, "t1w", where, who)
    gallery = (
        _manifest_file(gallery_value, base, "gallery_t1w", where, who) if gallery_value else None
    )
    if gallery == t1w:
        raise input_error(
            f"{where}: {who} has its own t1w as gallery_t1w; the gallery must be another "
            "acquisition of the subject (or leave the cell empty)"
        )
    return Subject(
        subject=label,
        t1w=t1w,
        split=split,
        age=parse_age(row["age"], where, who),
        sex=parse_sex(row["sex"], where, who),
        dataset=row.get("dataset", "") or default_dataset,
        brain_mask=_manifest_file(mask_value, base, "brain_mask", where, who)
        if mask_value
        else None,
        gallery_t1w=gallery,
    )


def read_manifest(path: str | os.PathLike[str]) -> list[Subject]:
    """Subjects listed in a TSV manifest, in file order.

    Columns ``subject, t1w, split, age, sex`` are required (age in years); ``dataset``
    (default: the manifest file stem), ``brain_mask`` and ``gallery_t1w`` (an independent
    acquisition of the subject, its re-identification gallery image) are optional. Relative
    paths are relative to the manifest's folder; a ``sub-`` prefix on the subject is stripped.
    """
    manifest = absolute_path(path)
    where = f"manifest {manifest}"
    frame = read_tsv_cells(manifest, where, MANIFEST_COLUMNS)
    if frame.empty:
        raise input_error(f"{where}: no subjects (the manifest has a header but no rows)")
    subjects: list[Subject] = []
    seen: dict[str, tuple[Subject, int]] = {}
    for _, row in frame.iterrows():
        subject = _manifest_row(row, manifest, manifest.stem)
        line = int(row["_line"])
        if subject.subject in seen:
            first, first_line = seen[subject.subject]
            problem = clash_reason(first, subject)
            raise input_error(f"{where} line {line}: {problem} (first on line {first_line})")
        seen[subject.subject] = (subject, line)
        subjects.append(subject)
    return subjects
