"""Atomic writes of the pipeline's tables (defaceaudit.tables)."""

import pandas as pd
import pytest

from defaceaudit.tables import atomic_path, read_tsv, write_tsv


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "table.tsv"
    write_tsv(pd.DataFrame({"a": [1, None]}), path)
    assert path.read_text() == "a\n1.0\nn/a\n"
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_text("half a tab")
        raise RuntimeError("disk full")
    assert path.read_text() == "a\n1.0\nn/a\n"  # the old content, untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.tsv"]
    assert read_tsv(path, "table")["a"].isna().tolist() == [False, True]
