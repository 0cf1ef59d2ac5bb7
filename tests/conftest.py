"""Shared fixtures."""

from pathlib import Path

import pytest
from synthetic import synthetic_head

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def head_and_brain():
    """A 4 mm synthetic head image and its brain mask (see synthetic.synthetic_head)."""
    return synthetic_head()
