"""Snapshots of the DAG, per config scenario, so that a change of the jobs is a reviewed change.

- ``tests/snapshots/rulegraph*.mmd``: ``snakemake --rulegraph mermaid-js``, canonical (nodes
  named by rule, edges sorted, no colours: Snakemake's edge order changes from run to run);
- ``tests/snapshots/jobs_<scenario>.json``: jobs per rule, outputs per rule, the number of
  output files and the sha256 of their sorted list, from a dry-run;
- ``tests/snapshots/targets_<scenario>.tsv``: that sorted list (``path<TAB>rule``, one line per
  output file of every job), for the scenarios where it is small (paper scale: 4 MB, so its JSON
  only). ``snakemake --summary | tail -n +2 | cut -f1,3 | LC_ALL=C sort`` gives the same list.

Each scenario is dry-run once, in a temporary copy of the workflow. After an intended change of
the DAG, regenerate and review the diff:

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_dag_snapshots.py
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import REPO, copy_workflow, job_counts, run_snakemake

pytestmark = pytest.mark.workflow

SNAPSHOTS = REPO / "tests" / "snapshots"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"
REGENERATE = "UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_dag_snapshots.py"
#: scenario -> config file on top of config.yaml (None: the demo, config.yaml alone)
SCENARIOS = {
    "demo": None,
    "containers": "tests/configs/containers.yaml",
    "paper_scale": "tests/configs/paper_scale.yaml",
}
#: scenarios whose whole sorted output list is committed (paper_scale's is 43,073 lines, 4 MB)
FULL_LISTS = ("demo", "containers")
#: container defacer -> its rule
CONTAINER_RULES = {
    tool: f"deface_container_{tool}"
    for tool in ("fsl_deface", "mri_deface", "pydeface", "quickshear", "mri_reface")
}
#: container defacer -> the tool its command calls
TOOL_CALLS = {
    "fsl_deface": "fsl_deface",
    "mri_deface": "mri_deface",
    "pydeface": "pydeface",
    "quickshear": "quickshear",
    "mri_reface": "run_mri_reface.sh",
}
JOB_START = re.compile(r"^(?:local)?rule (\w+):$")


def n_subjects(config: dict) -> int:
    return sum(
        config["demo"][f"n_{split}"] for split in ("train", "internal_test", "external_test")
    )


def scenario_workdir(tmp_path: Path, scenario: str) -> tuple[Path, list[str]]:
    """A copy of the workflow (as test_workflow's ``workdir``) and the scenario's CLI options."""
    copy_workflow(tmp_path)
    config = SCENARIOS[scenario]
    if config is None:
        return tmp_path, []
    shutil.copy2(REPO / config, tmp_path / Path(config).name)
    return tmp_path, ["--configfile", Path(config).name]


def parse_dry_run(stdout: str) -> list[dict]:
    """Every job of a dry-run (``--printshellcmds``): ``{"rule", "output": [...], "shell"}``."""
    jobs: list[dict] = []
    for line in stdout.splitlines():
        start = JOB_START.match(line)
        if start:
            jobs.append({"rule": start[1], "output": [], "shell": None})
        elif jobs and line.startswith("    output: "):
            jobs[-1]["output"] = line[len("    output: ") :].split(", ")
        elif jobs and line.startswith("Shell command: "):
            jobs[-1]["shell"] = line[len("Shell command: ") :]
    return jobs


def target_lines(jobs: list[dict]) -> list[str]:
    """``path<TAB>rule`` of every output file of every job, sorted."""
    return sorted(f"{path}\t{job['rule']}" for job in jobs for path in job["output"])


def job_summary(jobs: list[dict], lines: list[str]) -> dict:
    text = "".join(f"{line}\n" for line in lines)
    return {
        "jobs": dict(sorted(Counter(j["rule"] for j in jobs).items())),
        "outputs_per_rule": dict(sorted(Counter(line.split("\t")[1] for line in lines).items())),
        "n_outputs": len(lines),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def compare(path: Path, current: str, what: str) -> None:
    """Fail with a diff and the regeneration command when ``current`` differs from ``path``."""
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(current)
        return
    assert path.exists(), f"no snapshot {path.relative_to(REPO)}; create it: {REGENERATE}"
    committed = path.read_text()
    if committed == current:
        return
    diff = difflib.unified_diff(
        committed.splitlines(), current.splitlines(), "committed", "current", lineterm="", n=1
    )
    shown = list(diff)
    more = f"\n... ({len(shown) - 60} more diff lines)" if len(shown) > 60 else ""
    pytest.fail(
        f"{what} changed: {path.relative_to(REPO)} is out of date.\n"
        + "\n".join(shown[:60])
        + more
        + f"\nIf the change is intended, regenerate the snapshots and commit them:\n  {REGENERATE}",
        pytrace=False,
    )


@pytest.fixture(scope="module", params=list(SCENARIOS))
def dry_run(request, tmp_path_factory):
    """``(scenario, jobs, stdout)`` of ``snakemake -n --printshellcmds`` (once per scenario)."""
    scenario = request.param
    workdir, options = scenario_workdir(tmp_path_factory.mktemp(scenario), scenario)
    done = run_snakemake(workdir, "--dry-run", "--printshellcmds", *options, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = parse_dry_run(done.stdout)
    stats = {rule: n for rule, n in job_counts(done.stdout).items() if rule != "total"}
    assert dict(Counter(j["rule"] for j in jobs)) == stats  # every job parsed
    return scenario, jobs, done.stdout


def canonical_rulegraph(mermaid: str) -> str:
    """Snakemake's mermaid rule graph with nodes named by rule, edges sorted, no styles."""
    names = dict(re.findall(r"^\s*(id\d+)\[(\w+)\]\s*$", mermaid, re.M))
    assert names, mermaid[-2000:]
    edges = {
        (names[a], names[b]) for a, b in re.findall(r"^\s*(id\d+) --> (id\d+)\s*$", mermaid, re.M)
    }
    lines = ["---", "title: rule graph", "---", f"%% regenerate: {REGENERATE}", "flowchart TB"]
    lines += [f"\t{name}" for name in sorted(names.values())]
    lines += [f"\t{a} --> {b}" for a, b in sorted(edges)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("scenario", ["demo", "containers"])
def test_rule_graph_matches_snapshot(tmp_path, scenario):
    workdir, options = scenario_workdir(tmp_path, scenario)
    done = run_snakemake(workdir, "--rulegraph", "mermaid-js", *options, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    name = "rulegraph.mmd" if scenario == "demo" else f"rulegraph_{scenario}.mmd"
    compare(SNAPSHOTS / name, canonical_rulegraph(done.stdout), f"the rule graph ({scenario})")


def test_job_list_matches_snapshot(dry_run):
    scenario, jobs, _ = dry_run
    lines = target_lines(jobs)
    summary = {"config": SCENARIOS[scenario] or "config.yaml", **job_summary(jobs, lines)}
    if scenario in FULL_LISTS:
        text = "".join(f"{line}\n" for line in lines)
        compare(SNAPSHOTS / f"targets_{scenario}.tsv", text, f"the job outputs ({scenario})")
    compare(
        SNAPSHOTS / f"jobs_{scenario}.json",
        json.dumps(summary, indent=2) + "\n",
        f"the jobs ({scenario})",
    )


def test_paper_scale_has_the_paper_cohort_and_the_pinned_images():
    scenario = yaml.safe_load((REPO / SCENARIOS["paper_scale"]).read_text())
    pinned = yaml.safe_load((REPO / SCENARIOS["containers"]).read_text())
    assert n_subjects(scenario) == 664
    assert scenario["deface"]["containers"] == pinned["deface"]["containers"]


def test_paper_scale_container_jobs_carry_their_pinned_images(dry_run):
    """Every container job of the paper-scale dry-run names its pinned image, once per subject
    (containers.yaml: test_workflow.py::test_container_backends_dry_run_with_image_and_command_
    per_subject checks the command of each of its 4 subjects)."""
    scenario, jobs, _ = dry_run
    if scenario != "paper_scale":
        pytest.skip("paper scale only (the dry-run fixture is shared by scenario)")
    config = yaml.safe_load((REPO / SCENARIOS[scenario]).read_text())
    images = config["deface"]["containers"]
    n = n_subjects(config)
    for tool, rule in CONTAINER_RULES.items():
        mine = [j for j in jobs if j["rule"] == rule]
        subjects = {re.search(r"/raw/sub-(\w+)_T1w", j["output"][0])[1] for j in mine}
        assert len(mine) == len(subjects) == n, (tool, len(mine), len(subjects))
        for job in mine:
            assert job["shell"].startswith(f"( echo 'image: {images[tool]}';"), job["shell"]
            assert f"{TOOL_CALLS[tool]} " in job["shell"], job["shell"]
        others = {
            j["rule"] for j in jobs if j["rule"] != rule and images[tool] in (j["shell"] or "")
        }
        assert not others, (tool, others)
    finalized = [j for j in jobs if j["rule"] == "finalize_container_deface"]
    assert len(finalized) == len(CONTAINER_RULES) * n
    assert len([j for j in jobs if j["rule"] == "deface_native"]) == n  # skullstrip
