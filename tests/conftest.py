"""Shared fixtures, and the helpers that run the workflow in a temporary copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from synthetic import synthetic_head

from defaceaudit import paths

REPO = Path(__file__).resolve().parents[1]
#: refacing settings of the tiny real runs: the demo's networks, few steps (plumbing only)
FAST_REFACE = {
    "stage1": {"training": {"steps": 6, "checkpoint_every": 3, "log_every": 3}},
    "stage2": {"training": {"steps": 6, "checkpoint_every": 3, "log_every": 3}},
    "sampling": {"steps": 2},
}
#: the tiny demo run: 2 train, 1 internal-test and 1 external-test subject at 4 mm. Two training
#: subjects cannot fit the radiodensity mixed model (test_workflow_radiodensity.py covers it).
TINY_DEMO_CONFIG = {
    "demo": {"n_train": 2, "n_internal_test": 1, "n_external_test": 1, "voxel_size_mm": 4.0},
    "reface": FAST_REFACE,
    "radiodensity": {"enabled": False},
}
BIN = Path(sys.executable).parent


@pytest.fixture
def head_and_brain():
    """A 4 mm synthetic head image and its brain mask (see synthetic.synthetic_head)."""
    return synthetic_head()


def copy_workflow(dest: Path) -> Path:
    """A copy of this checkout's workflow in ``dest`` with an empty results folder; returns
    ``dest``."""
    return paths.copy_workflow(REPO, dest)


def copy_run(src: Path, dest: Path) -> Path:
    """A copy of a finished run (workflow, results/ and Snakemake's .snakemake/ records) that
    Snakemake sees as up to date: file modification times are kept, as Snakemake compares them
    to decide what to rerun. Returns ``dest``."""
    shutil.copytree(src, dest, symlinks=True)  # copy2: contents, modes and mtimes
    return dest


def run_snakemake(workdir: Path, *args: str, config: dict | None = None, timeout=900):
    """Run the venv's snakemake in ``workdir`` (a copy of the workflow); returns the process."""
    cmd = [str(BIN / "snakemake"), "--directory", str(workdir), *args]
    if config is not None:
        path = workdir / "test_config.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


@dataclass(frozen=True)
class TinyRun:
    """A finished tiny demo run. Treat ``path`` as read-only: a test that runs or changes
    anything works on its own ``copy_run`` of it, so tests do not see each other's changes."""

    path: Path
    config: dict
    process: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_demo_run(tmp_path_factory) -> TinyRun:
    """The whole pipeline on the tiny demo cohort (TINY_DEMO_CONFIG), run once per test session
    and shared: on two cores it takes several minutes. Tests assert its return code."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_demo_run"))
    done = run_snakemake(workdir, "--cores", "2", config=TINY_DEMO_CONFIG, timeout=1800)
    return TinyRun(workdir, TINY_DEMO_CONFIG, done)
