"""The Snakemake process's scheduling work stays bounded (defaceaudit.workflow.scheduler_patch).

Unit tests of the replacements on stand-in objects, and real runs of a trivial workflow through
the project's set-up (benchmarks/bench_scheduler.py): plain Snakemake shows the bug (one more
self-renewing wake-up thread per finished job, a long wait at exit with a long rate-limit
timespan), the patched one does not.
"""

from __future__ import annotations

import sys
import threading
import time
from types import SimpleNamespace

import pytest
from helpers import REPO

from defaceaudit.workflow import scheduler_patch as sp

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_scheduler  # noqa: E402 - the benchmark's runs, one implementation


class FakeJob:
    """What ReadyJobs reads of a job: its priority, rule and whether it is a group."""

    def __init__(self, rule: str, priority: int = 0, name: str = "") -> None:
        self.rule = SimpleNamespace(name=rule)
        self.priority = priority
        self.name = name or rule

    def is_group(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.name


class FakeGroup(FakeJob):
    def __init__(self, *members: FakeJob, priority: int = 0) -> None:
        super().__init__("group", priority)
        self.jobs = frozenset(members)

    def is_group(self) -> bool:
        return True


# ------------------------------------------------------------------------------ ReadyJobs
def test_window_takes_the_first_jobs_of_each_rule_by_priority_then_readiness():
    a = [FakeJob("a", name=f"a{i}") for i in range(5)]
    urgent = FakeJob("a", priority=10, name="a-urgent")
    b = [FakeJob("b", name=f"b{i}") for i in range(3)]
    ready = sp.ReadyJobs(a)
    ready.update(b)
    ready.add(urgent)
    assert len(ready) == 9 and set(ready) == {*a, *b, urgent}
    assert set(ready.window(2)) == {urgent, a[0], b[0], b[1]}
    assert set(ready.window(0)) == {urgent, b[0]}  # at least one of each rule
    assert set(ready.window(100)) == set(ready)  # asking twice changes nothing


def test_window_skips_removed_jobs_and_requeues_re_added_ones():
    jobs = [FakeJob("a", name=f"a{i}") for i in range(6)]
    ready = sp.ReadyJobs(jobs)
    ready -= {jobs[0], jobs[1]}  # started (register_running)
    ready.remove(jobs[2])
    ready.discard(jobs[3])
    assert ready.window(2) == [jobs[4], jobs[5]]
    ready.add(jobs[0])  # a retried job is ready again, queued behind the others
    assert ready.window(3) == [jobs[4], jobs[5], jobs[0]]
    ready |= {jobs[1]}
    assert set(ready.window(10)) == {jobs[0], jobs[1], jobs[4], jobs[5]}
    ready.clear()
    assert ready.window(5) == [] and not ready


def test_window_requeues_a_job_whose_priority_changed():
    low, other = FakeJob("a", name="low"), FakeJob("a", name="other")
    ready = sp.ReadyJobs([other, low])
    low.priority = 5
    ready.reprioritize()  # as the DAG's update_priority does once patched
    assert ready.window(1) == [low]
    low.priority = -1  # at the front of its queue: noticed without reprioritize
    assert ready.window(1) == [other]


def test_group_jobs_queue_by_their_rules():
    g1 = FakeGroup(FakeJob("x"), FakeJob("y"))
    g2 = FakeGroup(FakeJob("y"), FakeJob("x"))
    assert sp.rule_key(g1) == sp.rule_key(g2) == ("group", "x", "y")
    ready = sp.ReadyJobs([g1, g2, FakeJob("x")])
    assert len(ready.window(1)) == 2


def test_a_pass_considers_few_jobs_however_many_are_ready():
    ready = sp.ReadyJobs(FakeJob(f"rule{i % 7}", priority=i % 3) for i in range(20000))
    start = time.perf_counter()
    for _ in range(200):
        window = ready.window(2)
    per_pass = (time.perf_counter() - start) / 200
    assert len(window) == 14
    assert all(job.priority == 2 for job in window)
    assert per_pass < 0.005  # about 20 heap operations, not 20,000 jobs


def test_jobs_startable_is_the_tightest_limit():
    limiter = SimpleNamespace(max_jobs=100)
    local = SimpleNamespace(
        resources={"_cores": 2, "_nodes": sys.maxsize}, job_rate_limiter=limiter
    )
    assert sp.jobs_startable(local) == 2
    cluster = SimpleNamespace(
        resources={"_cores": sys.maxsize, "_nodes": 40}, job_rate_limiter=None
    )
    assert sp.jobs_startable(cluster) == 40
    busy = SimpleNamespace(resources={"_cores": 0}, job_rate_limiter=limiter)
    assert sp.jobs_startable(busy) == 1
    unlimited = SimpleNamespace(resources={}, job_rate_limiter=None)
    assert sp.jobs_startable(unlimited) == sp.MAX_PER_RULE


def test_remaining_jobs_are_listed_only_when_read():
    built = []
    lazy = sp.LazyJobs(lambda: built.append(1) or ["j1", "j2"])
    assert not lazy.built and not built
    assert list(lazy) == ["j1", "j2"] and len(lazy) == 2 and lazy[0] == "j1" and "j2" in lazy
    assert bool(lazy) and built == [1]


# ------------------------------------------------------------------------ wake-ups
def fake_scheduler() -> SimpleNamespace:
    return SimpleNamespace(
        _open_jobs=threading.Semaphore(0),
        _reevaluation_lock=threading.Lock(),
        _pending_reevaluation=None,
    )


def test_at_most_one_pending_wake_up_and_it_always_renews():
    scheduler = fake_scheduler()
    before = threading.active_count()
    for _ in range(50):  # 50 passes asking for a wake-up in a second: one timer
        sp.schedule_reevaluation(scheduler, 0.3)
    assert threading.active_count() - before == 1
    timer = scheduler._pending_reevaluation[1]
    assert timer.daemon  # never holds the process at exit
    assert scheduler._open_jobs.acquire(timeout=5)  # it woke the scheduler once
    assert not scheduler._open_jobs.acquire(timeout=0.5)
    assert scheduler._pending_reevaluation is None  # cleared before waking: the next pass...
    sp.schedule_reevaluation(scheduler, 0.1)  # ...asks again and gets a new one
    assert scheduler._open_jobs.acquire(timeout=5)


def test_an_earlier_wake_up_replaces_a_later_one():
    scheduler = fake_scheduler()
    sp.schedule_reevaluation(scheduler, 1000)  # e.g. --max-jobs-per-timespan 100000/1000s
    late = scheduler._pending_reevaluation[1]
    sp.schedule_reevaluation(scheduler, 0.1)
    assert scheduler._pending_reevaluation[1] is not late
    assert scheduler._open_jobs.acquire(timeout=5)
    late.join(timeout=5)
    assert not late.is_alive()  # cancelled


# ------------------------------------------------------------------ pipe and service inputs
class CountingSet(set):
    lookups = 0

    def __contains__(self, item: object) -> bool:
        CountingSet.lookups += 1
        return set.__contains__(self, item)


class Dep:
    def __init__(self, pipes: set[str]) -> None:
        self.pipe_or_service_output = CountingSet(pipes)


class AggregatingJob:
    """A job with one input from each of ``n_inputs`` dependencies, the last one a pipe."""

    def __init__(self, n_inputs: int) -> None:
        self.input = [f"in{i}" for i in range(n_inputs)]
        deps = {
            Dep({f} if i == n_inputs - 1 else set()): CountingSet({f})
            for i, f in enumerate(self.input)
        }
        self.dag = SimpleNamespace(dependencies={self: deps})


def test_pipe_inputs_found_in_one_walk_instead_of_one_per_input():
    from snakemake.jobs import Job

    original = vars(Job)["is_pipe_or_service_input"]
    original = sp._ORIGINAL.get("Job.is_pipe_or_service_input", original)
    job = AggregatingJob(400)
    CountingSet.lookups = 0
    expected = {f for f in job.input if original(job, f)}
    quadratic = CountingSet.lookups
    CountingSet.lookups = 0
    assert sp.pipe_or_service_inputs(job) == expected == {"in399"}
    assert quadratic > 400 * 399 / 2  # Snakemake's own: one walk per input
    assert CountingSet.lookups <= 2  # here: only dependencies that write pipes are looked in


# -------------------------------------------------------------------------- the guard
def test_version_guard():
    from snakemake.jobs import Job
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert sp.unsupported(sp.snakemake_version(), JobScheduler, Job) is None
    assert "not in" in sp.unsupported((10, 0), JobScheduler, Job)
    assert "not in" in sp.unsupported((9, 19), JobScheduler, Job)
    assert "lack" in sp.unsupported((9, 27), type("Other", (), {}), Job)


def test_opt_out(monkeypatch):
    from snakemake.scheduling.job_scheduler import JobScheduler

    patched_before = getattr(JobScheduler, sp._PATCHED, False)
    monkeypatch.setenv(sp.OPT_OUT, "0")
    assert sp.bound_scheduler_work() is False
    assert getattr(JobScheduler, sp._PATCHED, False) == patched_before


def test_the_benchmark_runs_the_snakefiles_hooks_and_make_demos_flags():
    imports, top, onstart = bench_scheduler.project_hooks()
    assert "install_hooks()" in top and "resume_full_collections()" in onstart
    assert any("defaceaudit.workflow.snakemake_hooks" in line for line in imports)
    flags = bench_scheduler.demo_flags()
    assert flags[flags.index("--scheduler") + 1] == "greedy"
    assert "--scheduler" not in bench_scheduler.without_scheduler(flags)


# ------------------------------------------------------------------------- real runs
#: jobs of the real runs: enough for plain Snakemake's wake-up threads to pile up
N_JOBS = 300


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    return {
        setup: bench_scheduler.run_trivial(N_JOBS, plain=setup == "plain")
        for setup in ("plain", "defaceaudit")
    }


@pytest.mark.workflow
def test_plain_snakemake_piles_up_wake_up_threads(runs):
    """The bug, reproduced: without the patch the process holds dozens of live threads (one
    self-renewing wake-up per finished job). If this fails, Snakemake fixed it upstream:
    check whether defaceaudit.workflow.scheduler_patch is still needed."""
    plain = runs["plain"]
    assert "error" not in plain, plain
    assert plain["peak_threads"] > 32, plain
    assert plain["threads_started"] > N_JOBS / 2, plain


@pytest.mark.workflow
def test_patched_snakemake_stays_bounded(runs):
    ours, plain = runs["defaceaudit"], runs["plain"]
    assert "error" not in ours, ours
    assert ours["peak_threads"] <= 12, ours
    assert ours["threads_started"] < N_JOBS / 5, ours
    assert ours["exit_delay_s"] < 5, ours
    assert ours["master_cpu_s"] < plain["master_cpu_s"], (ours, plain)


#: a rate-limit timespan long enough to see plain Snakemake wait for its timers at exit
LONG_TIMESPAN = ["--max-jobs-per-timespan", "1000/20s"]


@pytest.mark.workflow
@pytest.mark.parametrize("setup", ["plain", "defaceaudit"])
def test_exit_does_not_wait_for_wake_ups(setup):
    row = bench_scheduler.run_trivial(20, plain=setup == "plain", extra_flags=LONG_TIMESPAN)
    assert "error" not in row, row
    if setup == "plain":  # the bug: the process waits for its last timer (up to 20 s)
        assert row["exit_delay_s"] > 10, row
    else:
        assert row["exit_delay_s"] < 5, row


def test_share_finds_snakemake_processes_not_their_jobs():
    master = bench_scheduler.is_snakemake_master
    assert master(["/repo/.venv/bin/python3", "/repo/.venv/bin/snakemake", "--cores", "2"])
    assert master(["snakemake", "--report", "results/report.html"])
    assert not master(["/bin/bash", "-c", "set -euo pipefail; echo 1 > out/1.txt"])
    assert not master(["python", "-m", "snakemake", "--executor", "slurm-jobstep"])
    assert not master(["python", "/repo/.snakemake/scripts/tmpabc.snakemake_script.py"])


def test_install_replaces_the_methods_once(monkeypatch):
    """What the Snakefile does in every Snakemake process (and in-process API runs)."""
    from snakemake.jobs import Job
    from snakemake.scheduling.job_scheduler import JobScheduler

    monkeypatch.delenv(sp.OPT_OUT, raising=False)
    assert sp.bound_scheduler_work() is True
    assert JobScheduler._schedule_reevalutation is sp.schedule_reevaluation
    assert JobScheduler.open_jobs.fget is sp.open_jobs
    assert Job.is_pipe_or_service_input is sp.is_pipe_or_service_input
    originals = dict(sp._ORIGINAL)
    assert sp.bound_scheduler_work() is True  # again: nothing changes
    assert originals == sp._ORIGINAL
    assert originals["JobScheduler._schedule_reevalutation"] is not sp.schedule_reevaluation
