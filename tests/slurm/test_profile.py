"""profiles/slurm against the rules, by dry-runs (no cluster needed; the real SLURM run is
run_slurm_test.sh): memory and runtime are stated once, in the rules, growing with the attempt,
and the profile states none of its own (site and GPU keys only); every rule asking for a GPU
has a GPU entry; partitions and account come from the environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, copy_workflow

sys.path.insert(0, str(REPO / "benchmarks"))
from benchlib import declared_threads  # noqa: E402 - the rules' threads, one parser

pytestmark = pytest.mark.workflow

PROFILE = REPO / "profiles" / "slurm"
BIN = Path(sys.executable).parent
SITE_VARIABLES = (
    "DEFACEAUDIT_SLURM_PARTITION",
    "DEFACEAUDIT_SLURM_GPU_PARTITION",
    "DEFACEAUDIT_SLURM_ACCOUNT",
)
SCENARIOS = (None, REPO / "tests" / "configs" / "containers.yaml")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


def run(workdir: Path, *args: str, site: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if k not in SITE_VARIABLES}
    env.update(site or {}, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def dry_run_resources(workdir: Path, *args: str, site=None) -> dict[str, list[dict[str, str]]]:
    """Rule -> the resources of each of its jobs, from a dry-run's job listing."""
    done = run(workdir, "--dry-run", *args, site=site)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in done.stdout.splitlines():
        if match := re.match(r"\s*(?:local)?rule (\w+):$", line):
            rule = match[1]
        elif (match := re.match(r"\s*resources: (.*)$", line)) and rule:
            jobs.setdefault(rule, []).append(dict(kv.split("=", 1) for kv in match[1].split(", ")))
            rule = None
    return jobs


def profile_settings() -> dict:
    return yaml.safe_load((PROFILE / "profile.yaml").read_text())


def profile_entries() -> dict[str, dict]:
    return profile_settings()["set-resources"]


def keys_within(value: object) -> set[str]:
    """Every mapping key in ``value``, at any depth (inside YTE's ``?if`` blocks too)."""
    if isinstance(value, dict):
        return set(value).union(*(keys_within(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_within(v) for v in value))
    return set()


def profile_without_apptainer(folder: Path) -> Path:
    """profiles/slurm minus its apptainer lines: a dry-run of container rules with
    `--sdm apptainer` fails where apptainer is not installed."""
    lines = (PROFILE / "profile.yaml").read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("software-deployment", "apptainer"))]
    folder.mkdir()
    (folder / "profile.yaml").write_text("".join(kept))
    return folder


#: what the profile may set per job: site keys and GPU keys (memory, runtime and threads are
#: the rules')
SITE_AND_GPU_KEYS = {"slurm_partition", "slurm_account", "slurm_extra", "cpus_per_gpu"}


def test_the_profile_states_no_memory_or_runtime_of_its_own():
    settings = profile_settings()
    for section in ("default-resources", "set-resources"):
        keys = keys_within(settings[section]) - set(profile_entries())
        keys = {k for k in keys if not k.startswith("?")}  # YTE conditions
        assert keys <= SITE_AND_GPU_KEYS, (
            f"profiles/slurm {section} sets {keys - SITE_AND_GPU_KEYS}"
        )
    assert settings["retries"] >= 1  # the rules' resources grow with the attempt


def test_rules_state_memory_and_runtime_per_attempt():
    # every mem_mb and runtime of rules/*.smk grows with the attempt: per_attempt(N), or the
    # refacing training's memory sized from its images (times the attempt)
    scaled = re.compile(r"per_attempt\(\d+\)|JOBS\.reface_training_mem_mb\([12]\)")
    found = 0
    for path in sorted((REPO / "rules").glob("*.smk")):
        for line in path.read_text().splitlines():
            if match := re.match(r"\s+(mem_mb|runtime)=(.*),$", line):
                found += 1
                assert scaled.fullmatch(match[2]), f"{path.name}: {line.strip()} is not per attempt"
    assert found


@pytest.mark.parametrize("scenario", SCENARIOS, ids=["default", "containers"])
def test_jobs_get_the_rules_resources_and_gpu_rules_have_entries(workdir, scenario):
    config = ["--configfile", str(scenario)] if scenario else []
    profile = PROFILE
    if scenario and not shutil.which("apptainer"):
        profile = profile_without_apptainer(workdir / "profile_no_apptainer")
    plain = dry_run_resources(workdir, *config)
    profiled = dry_run_resources(workdir, "--profile", str(profile), *config)
    entries = profile_entries()
    for rule, jobs in plain.items():
        declared = {k: jobs[0][k] for k in ("mem_mb", "runtime") if k in jobs[0]}
        if not declared:
            continue  # a local rule: runs on the submit host
        assert set(declared) == {"mem_mb", "runtime"}, f"{rule} declares only {declared}"
        # the profile changes neither (a value sized from the job's inputs stays <TBD>)
        for plain_job, job in zip(jobs, profiled[rule], strict=True):
            assert {k: job[k] for k in declared} == {k: plain_job[k] for k in declared}
        if jobs[0].get("gpu"):
            assert "cpus_per_gpu" in entries.get(rule, {}), f"GPU rule {rule} has no GPU entry"
            assert all(
                job["cpus_per_gpu"] == str(entries[rule]["cpus_per_gpu"]) for job in profiled[rule]
            )
            # the CPUs a GPU job gets are the threads it runs on (none left idle)
            threads = declared_threads()[rule]
            assert entries[rule]["cpus_per_gpu"] == threads, f"{rule}: cpus_per_gpu != threads"
        else:
            assert "cpus_per_gpu" not in entries.get(rule, {}), f"{rule} asks for no GPU"


def test_partitions_and_account_come_from_the_environment(workdir):
    entries = profile_entries()
    gpu_rules = {rule for rule, res in entries.items() if "cpus_per_gpu" in res}
    site = {
        "DEFACEAUDIT_SLURM_PARTITION": "short",
        "DEFACEAUDIT_SLURM_GPU_PARTITION": "gpu-a100",
        "DEFACEAUDIT_SLURM_ACCOUNT": "lab42",
    }
    jobs = dry_run_resources(workdir, "--profile", str(PROFILE), site=site)
    assert gpu_rules & set(jobs)
    for rule, rule_jobs in jobs.items():
        for job in rule_jobs:
            assert job["slurm_partition"] == ("gpu-a100" if rule in gpu_rules else "short")
            assert job["slurm_account"] == "lab42"

    # GPU partition unset: the GPU jobs go to the partition; nothing set: the cluster's defaults
    site = {"DEFACEAUDIT_SLURM_PARTITION": "all"}  # also a Python builtin's name
    jobs = dry_run_resources(workdir, "--profile", str(PROFILE), site=site)
    assert {job["slurm_partition"] for rule_jobs in jobs.values() for job in rule_jobs} == {"all"}
    jobs = dry_run_resources(workdir, "--profile", str(PROFILE))
    for rule_jobs in jobs.values():
        for job in rule_jobs:
            assert "slurm_partition" not in job and "slurm_account" not in job


def test_failed_jobs_are_retried_with_more_memory_and_time(tmp_path):
    # a rule named like a GPU rule of the workflow, with its resources stated as the rules state
    # them, failing twice: the profile's retries resubmit it with more (run with the local
    # executor, so no cluster is needed)
    (tmp_path / "Snakefile").write_text(
        "from defaceaudit.workflow.resources import per_attempt\n"
        "rule sample_refaced:\n"
        "    output: 'done'\n"
        "    resources: gpu=1, mem_mb=per_attempt(1000), runtime=per_attempt(10)\n"
        "    shell: 'echo {resources.mem_mb} {resources.runtime} >> seen;"
        " test $(wc -l < seen) -ge 3 && touch {output}'\n"
    )
    done = run(tmp_path, "--profile", str(PROFILE), "--executor", "local", "--cores", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "seen").read_text().splitlines() == ["1000 10", "2000 20", "3000 30"]
