"""What reruns when something changes, each guarantee checked on a copy of the shared tiny demo
run (the fixture ``tiny_demo_run`` of conftest.py):

1. new content in one test subject's T1w reruns only that subject's jobs and the aggregates;
2. a changed metric parameter reruns metric jobs and aggregates only;
3. new content in a training subject's T1w retrains both refacing stages and resamples every test
   subject (expected: the models, and the average head of avgface, depend on the whole training
   split);
4. an added subject adds only its own jobs and the aggregates;
5. a changed sampling setting resamples without retraining, a changed stage-2 training setting
   retrains stage 2 only, and a changed device reruns nothing.

Snakemake decides what to rerun from file modification times and its records in .snakemake/
(params, input set, code), so each scenario changes one thing in its own copy of the finished
run and asks ``snakemake --dry-run`` for the exact set of jobs it would run. Scenarios 1 and 4
then run those jobs and check, from modification times, that no other subject's file was
rewritten and that nothing is left to do.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import copy_run, run_snakemake

from defaceaudit import paths

pytestmark = [pytest.mark.workflow, pytest.mark.network]

#: subject ids of the tiny run (helpers.TINY_DEMO_CONFIG), and the one scenario 4 adds
SUBJECTS = ("tr01", "tr02", "in01", "ex01", "ex02")
#: jobs over the whole cohort (or a whole demo dataset): they rerun whenever what they gather
#: changes. No subject wildcard.
AGGREGATE_RULES = frozenset(
    {
        "write_cohort_table",
        "write_demo_tables",
        "write_qc_table",
        "aggregate_face_metrics",
        "reidentify_faces",
        "plot_face_figures",
        "write_tables_page",
        "all",
    }
)
#: the aggregates downstream of the face metrics
METRIC_AGGREGATES = frozenset(
    {"aggregate_face_metrics", "reidentify_faces", "plot_face_figures", "write_tables_page", "all"}
)
#: the aggregates downstream of a subject's images (the cohort and demo tables are not: they are
#: written from the cohort plan, not from images)
IMAGE_AGGREGATES = METRIC_AGGREGATES | {"write_qc_table"}
#: the same in this module's tiny run: one subject per test split is too few to rank among a
#: gallery (re-identification needs 3), so reidentify_faces reads no image and stays
TINY_IMAGE_AGGREGATES = IMAGE_AGGREGATES - {"reidentify_faces"}
#: jobs built from the whole training split
TRAINING_RULES = frozenset({"build_average_head", "train_stage1", "train_stage2"})
#: the per-subject jobs of the metrics stage (metrics.smk, report.smk)
METRIC_RULES = frozenset({"align_face_to_template", "compute_face_metrics", "render_face_panel"})
#: files the aggregate jobs write (their declared outputs; their logs and benchmarks are
#: recognised by folder in ``aggregate_file``)
AGGREGATE_FILES = frozenset(
    [
        paths.COHORT_TABLE,
        paths.QC_TABLE,
        paths.QC_SUMMARY,
        paths.QC_SUMMARY_MD,
        paths.FACE_METRICS,
        paths.FACE_TABLES_HTML,
        *paths.FACE_TABLES.values(),
        *paths.REIDENTIFICATION.values(),
        *paths.FIGURE_FILES.values(),
        *(paths.demo_table(d, name) for d in paths.DEMO_DATASETS for name in paths.DEMO_TABLES),
    ]
)


@dataclass(frozen=True)
class Job:
    """One job of a dry-run: its rule and wildcards (sorted ``(name, value)`` pairs)."""

    rule: str
    wildcards: tuple[tuple[str, str], ...] = ()

    @property
    def subject(self) -> str | None:
        return dict(self.wildcards).get("subject")

    def __repr__(self) -> str:
        return f"{self.rule}({', '.join(f'{k}={v}' for k, v in self.wildcards)})"


def job(rule: str, **wildcards: str) -> Job:
    return Job(rule, tuple(sorted(wildcards.items())))


def dry_run(workdir: Path, config: dict, *args: str) -> dict[Job, str]:
    """The jobs ``snakemake --dry-run`` would run in ``workdir`` (every job with --forceall),
    each with Snakemake's reason for running it (for failure messages).

    Each job is printed as a block opened by ``rule NAME:`` (``localrule``, ``checkpoint``),
    with a ``wildcards:`` line when the rule has wildcards and a ``reason:`` line; the count is
    checked against the "Job stats" total so that no block is missed.
    """
    done = run_snakemake(workdir, "--dry-run", *args, config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    blocks = []  # [rule, wildcards, reason] per job, in the order printed
    for line in done.stdout.splitlines():
        opened = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if opened:
            blocks.append([opened[1], (), ""])
        elif not blocks or not line.startswith("    "):
            continue
        elif line.startswith("    wildcards: "):
            pairs = (w.split("=", 1) for w in line.split(": ", 1)[1].split(", "))
            blocks[-1][1] = tuple(sorted((k, v) for k, v in pairs))
        elif line.startswith("    reason: "):
            blocks[-1][2] = line.strip()
    jobs = {Job(rule, wildcards): reason for rule, wildcards, reason in blocks}
    if not jobs:
        assert "Nothing to be done" in done.stdout, done.stdout[-3000:]
        return {}
    total = re.search(r"^total\s+(\d+)$", done.stdout, re.M)
    assert total and int(total[1]) == len(blocks) == len(jobs), done.stdout[-3000:]
    return jobs


def assert_jobs(planned: dict[Job, str], expected: set[Job]) -> None:
    """``planned`` (from dry_run) is exactly ``expected``; says why each unexpected job runs."""
    extra, missing = set(planned) - expected, expected - set(planned)
    why = "\n".join(f"  {j!r}: {planned[j][:300]}" for j in sorted(extra, key=repr))
    assert not extra and not missing, (
        f"unexpected jobs:\n{why}\nexpected but not planned: {sorted(missing, key=repr)}"
    )


def aggregates(rules: frozenset[str], dataset: str | None = None) -> set[Job]:
    """The jobs of aggregate ``rules``; write_demo_tables' only for the demo ``dataset``."""
    assert rules <= AGGREGATE_RULES
    return {job(r, dataset=dataset) if r == "write_demo_tables" else job(r) for r in rules}


def rewrite_t1w(workdir: Path, dataset: str, subject: str) -> None:
    """New content in a demo subject's T1w: the same image, voxel values 1 % brighter."""
    path = workdir / paths.demo_t1w(dataset, subject)
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
    nib.save(nib.Nifti1Image((data * 1.01).astype(data.dtype), image.affine, image.header), path)


def modification_times(workdir: Path) -> dict[str, int]:
    """``results/...`` path -> modification time (ns) of every file under results/."""
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime_ns
        for p in (workdir / paths.RESULTS).rglob("*")
        if p.is_file()
    }


def subject_of(path: str) -> str | None:
    """The subject a file belongs to, from its path (``sub-in01``, ``.../quickshear_in01_...``)."""
    found = {s for s in SUBJECTS if re.search(rf"(?<![A-Za-z0-9]){s}(?![0-9])", path)}
    assert len(found) <= 1, path
    return found.pop() if found else None


def aggregate_file(path: str) -> bool:
    """Whether ``path`` is written by an aggregate job: a declared output, its log or
    benchmark."""
    parts = Path(path).parts
    if parts[1] in ("logs", "benchmarks") and parts[2] in AGGREGATE_RULES:
        return True
    return path in AGGREGATE_FILES


def run_and_check_rewrites(workdir: Path, config: dict, subject: str) -> None:
    """Run the planned jobs, then check from modification times that every file written is
    ``subject``'s or an aggregate's, that ``subject``'s files were written, that no file was
    removed, and that a second dry-run has nothing to do."""
    before = modification_times(workdir)
    done = run_snakemake(workdir, "--cores", "2", config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    after = modification_times(workdir)

    assert set(before) <= set(after), sorted(set(before) - set(after))
    written = {p for p, t in after.items() if before.get(p) != t}
    others = sorted(p for p in written if subject_of(p) not in (None, subject))
    assert not others, f"files of other subjects rewritten: {others}"
    shared = sorted(p for p in written if subject_of(p) is None and not aggregate_file(p))
    assert not shared, f"files of no subject rewritten by non-aggregate jobs: {shared}"
    own = paths.stage_file("prepare", subject, "prepared", "T1w")
    assert own in written and paths.FACE_METRICS in written

    assert dry_run(workdir, config) == {}


@pytest.fixture
def finished_run(tiny_demo_run, tmp_path) -> tuple[Path, dict]:
    """This test's own copy of the shared tiny run, and its config (a copy, free to change)."""
    assert tiny_demo_run.process.returncode == 0, tiny_demo_run.process.stderr[-3000:]
    workdir = copy_run(tiny_demo_run.path, tmp_path / "run")
    config = copy.deepcopy(tiny_demo_run.config)
    assert dry_run(workdir, config) == {}  # the copy is up to date
    return workdir, config


def test_changed_test_subject_reruns_only_its_jobs_and_the_aggregates(finished_run):
    workdir, config = finished_run
    every_job = set(dry_run(workdir, config, "--forceall"))
    rewrite_t1w(workdir, "internal", "in01")

    planned = dry_run(workdir, config)
    # every job of in01 from prepare on (its synthesis made the T1w: not downstream of it)
    own = {j for j in every_job if j.subject == "in01" and j.rule != "synthesize_demo_subject"}
    assert {j.rule for j in own} >= {"prepare_subject", "deface_native", "sample_refaced"}
    assert_jobs(planned, own | aggregates(TINY_IMAGE_AGGREGATES))

    run_and_check_rewrites(workdir, config, "in01")


@pytest.mark.parametrize(
    ("parameter", "value", "per_subject_rules"),
    [
        # the seed of the rigid registration to the face template and of the bootstrap
        ("seed", 1, METRIC_RULES),
        # bootstrap resamples: the tables and re-identification only
        ("n_bootstrap", 200, frozenset()),
    ],
    ids=["seed", "n_bootstrap"],
)
def test_changed_metric_parameter_reruns_only_metrics_and_aggregates(
    finished_run, parameter, value, per_subject_rules
):
    workdir, config = finished_run
    every_job = set(dry_run(workdir, config, "--forceall"))
    config.setdefault("metrics", {})[parameter] = value

    planned = dry_run(workdir, config)
    metric_jobs = {j for j in every_job if j.rule in per_subject_rules}
    assert_jobs(planned, metric_jobs | aggregates(METRIC_AGGREGATES))


def test_changed_training_subject_retrains_and_resamples_every_test_subject(finished_run):
    workdir, config = finished_run
    every_job = set(dry_run(workdir, config, "--forceall"))
    rewrite_t1w(workdir, "internal", "tr01")

    planned = dry_run(workdir, config)
    own = {j for j in every_job if j.subject == "tr01" and j.rule != "synthesize_demo_subject"}
    # expected, and documented: the refacing models and the average head (avgface) are built
    # from the whole training split, so every test subject is resampled, re-defaced by avgface
    # (the population-average column) and measured again
    resampled = TRAINING_RULES | {
        "sample_refaced",
        "validate_refacing",
        "compute_face_metrics",
        "render_face_panel",
    }
    whole_split = {
        j
        for j in every_job
        if j.rule in resampled
        or (j.rule == "deface_native" and dict(j.wildcards)["defacer"] == "avgface")
    }
    assert {j.rule for j in whole_split} >= TRAINING_RULES | {"sample_refaced"}
    assert_jobs(planned, own | whole_split | aggregates(TINY_IMAGE_AGGREGATES))
    # what does not depend on the training split stays: the other subjects' preparation and
    # their other defacers (the tiny run aligns no face to the template: re-identification is
    # off with one subject per test split)
    untouched = every_job - set(planned)
    assert {j.rule for j in untouched} >= {"prepare_subject", "deface_native"}


@pytest.mark.parametrize(
    ("setting", "value", "retrained"),
    [
        (("sampling", "steps"), 3, frozenset()),
        (("stage2", "training", "steps"), 4, frozenset({"train_stage2"})),
        # other widths, the same levels (size multiple): stage 1 reads only that multiple
        (("stage2", "network", "channels"), [8, 8, 16], frozenset({"train_stage2"})),
        (("device",), "cpu", None),
    ],
    ids=["sampling_steps", "stage2_training_steps", "stage2_widths", "device"],
)
def test_changed_refacing_setting_retrains_only_what_reads_it(
    finished_run, setting, value, retrained
):
    workdir, config = finished_run
    every_job = set(dry_run(workdir, config, "--forceall"))
    section = config.setdefault("reface", {})
    for key in setting[:-1]:
        section = section.setdefault(key, {})
    section[setting[-1]] = value

    planned = dry_run(workdir, config)
    if retrained is None:  # where the models run is not what they are
        assert planned == {}
        return
    # the changed jobs, every sampling job after them (the validation samples too), and what
    # measures the refaced images
    sampled = {"sample_refaced", "validate_refacing"}
    changed = {j for j in every_job if j.rule in retrained | sampled}
    assert {j.rule for j in planned} - METRIC_RULES - METRIC_AGGREGATES <= {
        j.rule for j in changed
    }, sorted(planned, key=repr)
    assert changed <= set(planned)
    assert not {j for j in planned if j.rule in TRAINING_RULES - retrained}


def test_added_subject_adds_only_its_jobs_and_the_aggregates(finished_run):
    workdir, config = finished_run
    config["demo"]["n_external_test"] = 2  # adds ex02

    planned = dry_run(workdir, config)
    every_job = set(dry_run(workdir, config, "--forceall"))
    new = {j for j in every_job if j.subject == "ex02"}
    assert {j.rule for j in new} >= {"synthesize_demo_subject", "prepare_subject"}
    expected = new | aggregates(AGGREGATE_RULES, dataset="external")
    assert_jobs(planned, expected)

    run_and_check_rewrites(workdir, config, "ex02")
