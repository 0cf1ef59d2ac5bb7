"""Atomic writers for tables and JSON sidecars (a reader never sees a half-written file), and a
table reader whose errors name the file."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from defaceaudit.errors import DefaceAuditError


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a hidden temporary path beside ``path``; move it over ``path`` on success.

    Parent folders are created; on an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_tsv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Tab-separated, no index, missing values as BIDS ``n/a``."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a")


def write_json(data: dict, path: str | os.PathLike) -> None:
    """Indented JSON with a final newline."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_tsv(
    path: str | os.PathLike,
    what: str,
    columns: Sequence[str] = (),
    *,
    dtype: Mapping[str, type] | None = None,
    error: type[DefaceAuditError] = DefaceAuditError,
    empty_ok: bool = False,
) -> pd.DataFrame:
    """The table at ``path`` (tab-separated, header line; ``n/a`` and pandas' other NA strings
    read as missing; ``dtype`` per column as in :func:`pandas.read_csv`), checked to have
    ``columns``. A missing, unreadable, empty or malformed file, or a missing column, raises
    ``error`` (default :class:`DefaceAuditError`) naming ``path`` and ``what`` (e.g.
    ``"phenotype table"``); with ``empty_ok`` and no ``columns`` required, an empty file (a
    stage with nothing to report) reads as a table without rows or columns instead."""
    try:
        frame = pd.read_csv(path, sep="\t", na_values=["n/a"], dtype=dtype)
    except pd.errors.EmptyDataError as err:
        if empty_ok and not columns:
            return pd.DataFrame()
        raise error(f"{path}: cannot read the {what} (the file is empty)") from err
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise error(f"{path}: cannot read the {what} ({reason})") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(f"{path}: the {what} has no column(s) {', '.join(missing)}")
    return frame
