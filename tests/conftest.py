"""Shared fixtures. The helpers they use, and that tests import, are in helpers.py."""

from __future__ import annotations

import pytest
from helpers import TINY_DEMO_CONFIG, TinyRun, copy_workflow, run_snakemake
from synthetic import synthetic_head


@pytest.fixture
def head_and_brain():
    """A 4 mm synthetic head image and its brain mask (see synthetic.synthetic_head)."""
    return synthetic_head()


@pytest.fixture
def workdir(tmp_path):
    """A copy of the workflow in the test's temporary folder (helpers.copy_workflow)."""
    return copy_workflow(tmp_path)


@pytest.fixture(scope="session")
def tiny_demo_run(tmp_path_factory) -> TinyRun:
    """The whole pipeline on the tiny demo cohort (helpers.TINY_DEMO_CONFIG), run once per test
    session and shared: on two cores it takes several minutes. Tests assert its return code."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_demo_run"))
    done = run_snakemake(workdir, "--cores", "2", config=TINY_DEMO_CONFIG, timeout=1800)
    return TinyRun(workdir, TINY_DEMO_CONFIG, done)
