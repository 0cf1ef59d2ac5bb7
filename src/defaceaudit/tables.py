"""Atomic writers for tables and JSON sidecars: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


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
