"""Shared fixtures. The helpers they use, and that tests import, are in helpers.py."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from helpers import TINY_DEMO_CONFIG, TinyRun, copy_workflow, run_snakemake
from synthetic import synthetic_head

from defaceaudit.prepare.subject import prepare_subject


@pytest.fixture
def head_and_brain():
    """A 4 mm synthetic head image and its brain mask (see synthetic.synthetic_head)."""
    return synthetic_head()


@pytest.fixture
def prepared(tmp_path):
    """A 4 mm synthetic head through prepare_subject: its t1w, head_mask and brain_mask files."""
    img, brain = synthetic_head()
    nib.save(img, tmp_path / "in.nii.gz")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), tmp_path / "mask.nii.gz")
    files = {k: tmp_path / f"{k}.nii.gz" for k in ("t1w", "head_mask", "brain_mask")}
    prepare_subject(
        tmp_path / "in.nii.gz", {**files, "summary": tmp_path / "s.json"}, tmp_path / "mask.nii.gz"
    )
    return files


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
