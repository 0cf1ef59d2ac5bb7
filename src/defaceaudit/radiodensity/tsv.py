"""Reading the radiodensity study's tab-separated tables with one-line errors naming the file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd

from defaceaudit.errors import DefaceAuditError

__all__ = ["read_tsv"]


def read_tsv(
    path: str | os.PathLike,
    what: str,
    columns: Sequence[str] = (),
    *,
    dtype: Mapping[str, type] | None = None,
    error: type[DefaceAuditError] = DefaceAuditError,
) -> pd.DataFrame:
    """The table at ``path`` (tab-separated, header line; ``n/a`` and pandas' other NA strings
    read as missing; ``dtype`` per column as in :func:`pandas.read_csv`), checked to have
    ``columns``. A missing, unreadable, empty or malformed file, or a missing column, raises
    ``error`` (default :class:`DefaceAuditError`) naming ``path`` and ``what`` (e.g.
    ``"phenotype table"``)."""
    try:
        frame = pd.read_csv(path, sep="\t", na_values=["n/a"], dtype=dtype)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise error(f"{path}: cannot read the {what} ({reason})") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(f"{path}: the {what} has no column(s) {', '.join(missing)}")
    return frame
