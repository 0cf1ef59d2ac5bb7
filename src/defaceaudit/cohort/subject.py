"""The :class:`Subject` record of the cohort and the parsing of its fields (labels, ages, sex,
TSV cells), shared by the BIDS and manifest readers. Every error is one line
(:class:`~defaceaudit.errors.InputError`) naming the file or subject and the problem."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from defaceaudit.errors import InputError

SPLITS = ("train", "internal_test", "external_test")
#: splits that are measured (models and the average face come from the train split)
TEST_SPLITS = ("internal_test", "external_test")
SUBJECT_PATTERN = r"[A-Za-z0-9]+"  # a BIDS label, without the "sub-" prefix

MIN_AGE_YEARS = 0.0  # exclusive
MAX_AGE_YEARS = 120.0  # exclusive
MANIFEST_COLUMNS = ("subject", "t1w", "split", "age", "sex")
PARTICIPANTS_COLUMNS = ("participant_id", "age", "sex")
FRAME_COLUMNS = ("subject", "t1w", "split", "age", "sex", "dataset", "brain_mask", "gallery_t1w")

_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}
_MISSING = ("", "n/a")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
AGE_RULE = f"need a number of years between {MIN_AGE_YEARS:g} and {MAX_AGE_YEARS:g}"
SPLIT_RULE = f"need one of {', '.join(SPLITS)}"
LABEL_RULE = "need letters and digits only"
RUN_RULES = ("lowest", "highest")


@dataclass(frozen=True)
class Subject:
    """One subject of the cohort: its T1-weighted image, split and demographics."""

    subject: str  # label without "sub-", matches SUBJECT_PATTERN
    t1w: Path  # absolute path
    split: str  # one of SPLITS
    age: float  # years
    sex: str  # "M" or "F"
    dataset: str  # dataset name (for tables)
    brain_mask: Path | None = None  # absolute path of a provided brain mask, or None
    #: an independent acquisition of the subject (another session or run), absolute path: the
    #: re-identification gallery's face of a test subject (None: the subject is not in it)
    gallery_t1w: Path | None = None


def input_error(message: str) -> InputError:
    """An InputError whose message is guaranteed to be one line."""
    return InputError(message.replace("\r", "\\r").replace("\n", "\\n"))


def absolute_path(path: str | os.PathLike[str], base: Path | None = None) -> Path:
    """Absolute, normalised path (``~`` expanded; symlinks are kept, not resolved)."""
    p = Path(path).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    return Path(os.path.abspath(p))


def is_label(label: str) -> bool:
    """Whether ``label`` is a BIDS label (:data:`SUBJECT_PATTERN`: letters and digits)."""
    return re.fullmatch(SUBJECT_PATTERN, label) is not None


def parse_age(value: str, where: str, who: str) -> float:
    """Age in years from a table cell; 0 < age < 120, else InputError."""
    text = value.strip()
    if text.lower() in _MISSING:
        raise input_error(f"{where}: {who} has missing age {value!r} ({AGE_RULE})")
    try:
        age = float(text)
    except ValueError:
        raise input_error(f"{where}: {who} has invalid age {value!r} ({AGE_RULE})") from None
    if not MIN_AGE_YEARS < age < MAX_AGE_YEARS:  # also rejects nan and inf
        raise input_error(f"{where}: {who} has invalid age {value!r} ({AGE_RULE})")
    return age


def parse_sex(value: str, where: str, who: str) -> str:
    """``"M"`` or ``"F"`` from M/F/male/female in any case, else InputError."""
    sex = _SEX.get(value.strip().lower())
    if sex is None:
        raise input_error(f"{where}: {who} has invalid sex {value!r} (need M, F, male or female)")
    return sex


def read_tsv_cells(path: Path, where: str, required: Sequence[str]) -> pd.DataFrame:
    """All cells as stripped strings (no NA conversion); column ``_line`` is the 1-based line.

    Blank lines are dropped; header is line 1.
    """
    if not path.is_file():
        raise input_error(f"{where}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep="\t",
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                index_col=False,
                encoding="utf-8-sig",
            )
    except pd.errors.EmptyDataError:
        raise input_error(f"{where}: file is empty") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise input_error(f"{where}: not a readable tab-separated table ({reason})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise input_error(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(frame.columns) or 'none'}; need tab-separated columns "
            f"{', '.join(required)})"
        )
    frame = frame.fillna("").apply(lambda col: col.str.strip())
    frame["_line"] = range(2, len(frame) + 2)
    blank = (frame.drop(columns="_line") == "").all(axis=1)
    return frame.loc[~blank].reset_index(drop=True)


def clash_reason(first: Subject, second: Subject) -> str:
    """Why two entries with the same subject id cannot both be in the cohort."""
    if first.split != second.split:
        return f"subject {first.subject} is in two splits ({first.split}, {second.split})"
    return f"duplicate subject id {first.subject}"
