"""Keep the scheduling work of the Snakemake process bounded on large real runs.

Snakemake 9 (read in 9.27.1: ``snakemake/scheduling/job_scheduler.py``, ``snakemake/jobs.py``)
does, in the process that runs a workflow (the *master*), work that grows with the number of
jobs at every scheduling pass, and it runs more passes the more jobs have finished:

1. **Self-renewing wake-ups** (snakemake/snakemake#3804). After each pass that selected jobs,
   ``JobScheduler.schedule`` calls ``_schedule_reevalutation(timespan)`` for the job rate limiter
   (``--max-jobs-per-timespan``, 100/1s by default, always set from the command line): a new
   non-daemon :class:`threading.Timer` that wakes the scheduler a second later. That wake-up
   is itself a pass that starts another timer, and every finished job adds one more such
   chain: after k finished jobs about k passes a second run while ready jobs wait, each
   starting a thread. With a long timespan the process waits for its timers at exit.
2. **Every ready job at every pass.** Each pass resets the parameters and resources of *every*
   ready job, checks them, looks up the size of every input of every ready job (a file-system
   query each), lists every job still to run (``remaining_jobs``, the whole DAG) and hands all
   of it to the job selector; the ILP selector writes and solves a problem with one variable
   per ready job. When thousands of jobs are ready (a cohort's per-subject steps), a pass
   costs milliseconds per ready job, and a run costs passes x ready jobs: quadratic.
3. **An aggregating job's inputs, pairwise.** ``Job.prepare`` asks
   ``is_pipe_or_service_input`` of each input, and each call walks all the job's
   dependencies: an ``all`` rule of N inputs costs N^2 / 2 lookups (a minute at 15,000).

:func:`bound_scheduler_work` replaces these methods, each a drop-in replacement that could go
upstream as it is (the originals are kept in ``_ORIGINAL``):

* ``JobScheduler._schedule_reevalutation`` (:func:`schedule_reevaluation`): at most one
  pending wake-up per scheduler, a daemon timer; a request for a later wake-up than the
  pending one is dropped (the earlier pass requests its own), an earlier one replaces it. The
  timer clears itself *before* it wakes the scheduler, so the pass it causes always schedules
  the next one (the rate limiter's wake-ups never stop while jobs wait).
  ``JobScheduler.schedule`` (:func:`schedule`) cancels the pending timer when it returns.
* ``JobScheduler.open_jobs`` (the jobs a pass considers, :func:`open_jobs`): the DAG's ready
  jobs are kept in a :class:`ReadyJobs` set (``JobScheduler.__init__``, :func:`scheduler_init`;
  requeued when the DAG recomputes priorities) that also queues them by rule (group jobs by
  their rules), highest priority first, then in the order they became ready. A pass considers,
  of each rule, at most as many jobs as it could start (:func:`jobs_startable`: the free cores,
  the free ``--jobs`` slots and the rate limit), so the work of a pass depends on the number
  of rules and free slots, not on the number of ready jobs. Where the jobs of a rule ask for
  the same resources, every job the selector would pick by priority is among them; among
  jobs of one rule and priority the ones ready first go first (upstream breaks such ties by
  input size). Not used for dry-runs, which run all ready jobs at once.
* ``JobScheduler.remaining_jobs`` (:func:`remaining_jobs`): the same list, built only when read
  (the greedy selector never reads it; the ILP selector does, for its temporary-file terms).
* ``Job.prepare`` and ``Job.is_pipe_or_service_input`` (:func:`prepare`): a job's pipe and
  service inputs collected in one walk (:func:`pipe_or_service_inputs`).

Together with the greedy selector (``--scheduler greedy``: ``make demo`` and profiles/slurm
set it; with the ILP selector the Snakefile logs :data:`GREEDY_HINT`), the master's CPU per job
stays flat as the run grows (benchmarks/bench_scheduler.py). The ILP selector still starts a
solver process at every pass and reads every remaining job.

Opt out with ``DEFACEAUDIT_SCHEDULER_PATCH=0`` in the environment. Snakemake versions outside
:data:`SUPPORTED` or without the methods replaced here are left as they are (a warning says
so): check the replacements against a new Snakemake before widening it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

#: environment variable: ``0`` (or ``false``, ``no``, ``off``) leaves Snakemake as it is
OPT_OUT = "DEFACEAUDIT_SCHEDULER_PATCH"
#: the Snakemake versions whose ``JobScheduler`` this replaces methods of: [from, to)
SUPPORTED = ((9, 27), (10, 0))
#: at most this many jobs of one rule per pass, however many slots are free
MAX_PER_RULE = 1000
#: what the Snakefile prints when the ILP selector runs a real run
GREEDY_HINT = (
    "defaceaudit: the ILP job selector solves a problem per scheduling pass; "
    "--scheduler greedy (as `make demo` and profiles/slurm use) costs the Snakemake "
    "process far less CPU per job"
)
_PATCHED = "_defaceaudit_bounded"

log = logging.getLogger(__name__)


class ReadyJobs(set):
    """The DAG's set of ready jobs, also queued by rule: highest priority first, then in the
    order they became ready.

    Additions (``add``, ``update``, ``|=``) are queued at once; removals (``remove``,
    ``discard``, ``-=``, ...) only leave a stale queue entry behind, dropped when it reaches
    the front of its queue. A job added again after its removal (a retried job) gets a new
    entry. :meth:`window` reads the queues.
    """

    def __init__(self, jobs: Iterable[Any] = ()) -> None:
        super().__init__()
        #: rule key -> heap of (-priority, sequence number, job)
        self._queues: dict[Any, list[tuple[int, int, Any]]] = {}
        #: job -> sequence number of its live queue entry
        self._entry: dict[Any, int] = {}
        self._counter = itertools.count()
        self.update(jobs)

    def add(self, job: Any) -> None:
        if not set.__contains__(self, job):
            set.add(self, job)
            self._push(job)

    def update(self, *iterables: Iterable[Any]) -> None:
        for jobs in iterables:
            for job in jobs:
                self.add(job)

    def __ior__(self, other: Iterable[Any]) -> ReadyJobs:
        self.update(other)
        return self

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        other = set(other)
        added = other - self
        set.symmetric_difference_update(self, other)
        for job in added:
            self._push(job)

    def __ixor__(self, other: Iterable[Any]) -> ReadyJobs:
        self.symmetric_difference_update(other)
        return self

    def clear(self) -> None:
        set.clear(self)
        self._queues.clear()
        self._entry.clear()

    def reprioritize(self) -> None:
        """Queue every job again at its current priority (after the DAG recomputed them)."""
        jobs = list(self)
        self.clear()
        self.update(jobs)

    def _push(self, job: Any) -> None:
        seq = next(self._counter)
        self._entry[job] = seq
        queue = self._queues.setdefault(rule_key(job), [])
        heapq.heappush(queue, (-job.priority, seq, job))

    def window(self, per_rule: int) -> list[Any]:
        """Of each rule, the ``per_rule`` (at least 1) first ready jobs in queue order.

        A job at the front of a queue whose priority changed since it was queued is queued
        again at its new priority (:meth:`reprioritize` requeues all of them). Costs
        O(rules x per_rule x log(ready jobs)), plus the stale entries it drops.
        """
        per_rule = max(1, per_rule)
        chosen: list[Any] = []
        for key in list(self._queues):
            queue = self._queues[key]
            taken: list[tuple[int, int, Any]] = []
            while queue and len(taken) < per_rule:
                entry = heapq.heappop(queue)
                neg_priority, seq, job = entry
                if self._entry.get(job) != seq or not set.__contains__(self, job):
                    if self._entry.get(job) == seq:
                        del self._entry[job]  # removed from the set: forget it
                    continue
                if -neg_priority != job.priority:
                    self._push(job)  # re-queued at its current priority
                    continue
                taken.append(entry)
            for entry in taken:
                heapq.heappush(queue, entry)
            if not queue:
                del self._queues[key]
            chosen.extend(job for _, _, job in taken)
        return chosen


def rule_key(job: Any) -> Any:
    """The queue a ready job belongs to: its rule's name, or for a group job the names of its
    jobs' rules (jobs of one rule mostly ask for the same resources)."""
    if job.is_group():
        return ("group", *sorted({member.rule.name for member in job.jobs}))
    return job.rule.name


def jobs_startable(scheduler: Any) -> int:
    """An upper bound on the jobs one pass of ``scheduler`` can start: its free cores and free
    job slots (``--jobs`` of a cluster run), and its rate limit (``--max-jobs-per-timespan``),
    whichever is smallest; at most :data:`MAX_PER_RULE`."""
    limits = [MAX_PER_RULE]
    for name in ("_cores", "_nodes"):
        free = scheduler.resources.get(name)
        if isinstance(free, int) and free < sys.maxsize:
            limits.append(max(free, 0))
    limiter = getattr(scheduler, "job_rate_limiter", None)
    if limiter is not None:
        limits.append(limiter.max_jobs)
    return max(1, min(limits))


class LazyJobs(Sequence):
    """A list of jobs built by ``build`` the first time it is read."""

    def __init__(self, build: Callable[[], list[Any]]) -> None:
        self._build = build
        self._jobs: list[Any] | None = None

    def _list(self) -> list[Any]:
        if self._jobs is None:
            self._jobs = list(self._build())
        return self._jobs

    def __getitem__(self, index):  # noqa: ANN001 - Sequence's signature
        return self._list()[index]

    def __len__(self) -> int:
        return len(self._list())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._list())

    def __contains__(self, job: object) -> bool:
        return job in self._list()

    @property
    def built(self) -> bool:
        """Whether the list has been built (read)."""
        return self._jobs is not None


def snakemake_version() -> tuple[int, int]:
    """Major and minor version of the installed Snakemake ((0, 0) if unreadable)."""
    try:
        from snakemake import __version__
    except ImportError:  # pragma: no cover - no Snakemake
        return (0, 0)
    parts = []
    for part in __version__.split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits) if digits else 0)
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def opted_out() -> bool:
    """Whether :data:`OPT_OUT` turns the patch off."""
    return os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off")


#: JobScheduler attributes replaced (the last two are properties), and Job methods
SCHEDULER_METHODS = ("__init__", "schedule", "_schedule_reevalutation")
SCHEDULER_PROPERTIES = ("open_jobs", "remaining_jobs")
JOB_METHODS = ("prepare", "is_pipe_or_service_input")
#: the originals of the replaced attributes (filled when installed), by "Class.name"
_ORIGINAL: dict[str, Any] = {}


def unsupported(version: tuple[int, int], scheduler_class: type, job_class: type) -> str | None:
    """Why this Snakemake cannot be patched (None: it can)."""
    if not SUPPORTED[0] <= version < SUPPORTED[1]:
        return (
            f"Snakemake {version[0]}.{version[1]} is not in {SUPPORTED[0][0]}.{SUPPORTED[0][1]}"
            f" up to {SUPPORTED[1][0]}.{SUPPORTED[1][1]}"
        )
    members = vars(scheduler_class)
    missing = [n for n in SCHEDULER_METHODS if not callable(members.get(n))]
    missing += [n for n in SCHEDULER_PROPERTIES if not isinstance(members.get(n), property)]
    missing += [n for n in JOB_METHODS if not callable(vars(job_class).get(n))]
    if missing:
        return f"its scheduler or jobs lack {', '.join(missing)}"
    return None


def bound_scheduler_work() -> bool:
    """Replace the ``JobScheduler`` and ``Job`` methods described in this module's docstring;
    returns whether they are (now or already) the replacements.

    Does nothing, and returns False, when :data:`OPT_OUT` is ``0``, and for a Snakemake
    outside :data:`SUPPORTED` or one that lacks a replaced method (with a warning: the run then
    works, at Snakemake's own cost). Calling it again changes nothing.
    """
    if opted_out():
        return False
    try:
        from snakemake.jobs import Job
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:  # pragma: no cover - no Snakemake
        return False
    if getattr(JobScheduler, _PATCHED, False):
        return True
    reason = unsupported(snakemake_version(), JobScheduler, Job)
    if reason:
        log.warning(
            "defaceaudit: Snakemake's scheduler left as it is (%s); the Snakemake process may "
            "use much CPU and many threads on large runs",
            reason,
        )
        return False
    members = vars(JobScheduler)
    for name in SCHEDULER_METHODS:
        _ORIGINAL[f"JobScheduler.{name}"] = members[name]
    for name in SCHEDULER_PROPERTIES:
        _ORIGINAL[f"JobScheduler.{name}"] = members[name].fget
    for name in JOB_METHODS:
        _ORIGINAL[f"Job.{name}"] = vars(Job)[name]
    replacements = {
        JobScheduler: {
            "__init__": scheduler_init,
            "schedule": schedule,
            "_schedule_reevalutation": schedule_reevaluation,
            "open_jobs": property(open_jobs, doc=open_jobs.__doc__),
            "remaining_jobs": property(remaining_jobs, doc=remaining_jobs.__doc__),
        },
        Job: {"prepare": prepare, "is_pipe_or_service_input": is_pipe_or_service_input},
    }
    for cls, methods in replacements.items():
        for name, method in methods.items():
            setattr(cls, name, method)
    setattr(JobScheduler, _PATCHED, True)
    return True


# --------------------------------------------------------------------------------------------
# The replacements. Each takes the instance as ``self``, as the method it replaces.


def scheduler_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """``JobScheduler.__init__``, then: no pending wake-up yet, and (not for a dry-run) the
    DAG's ready jobs queued by rule (:class:`ReadyJobs`); a hint when the ILP selector runs."""
    _ORIGINAL["JobScheduler.__init__"](self, *args, **kwargs)
    self._reevaluation_lock = threading.Lock()
    self._pending_reevaluation = None
    if self.dryrun:
        return
    dag = self.workflow.dag
    if not isinstance(dag._ready_jobs, ReadyJobs):
        dag._ready_jobs = ReadyJobs(dag._ready_jobs)
        update_priority = dag.update_priority

        def update_priority_and_queues() -> None:
            # A changed DAG (after a checkpoint) gets new priorities: requeue the ready jobs.
            update_priority()
            dag._ready_jobs.reprioritize()

        dag.update_priority = update_priority_and_queues
    if type(self._scheduler).__module__ == "snakemake.scheduling.milp":
        from snakemake.logging import logger

        logger.warning(GREEDY_HINT)


def schedule(self: Any) -> Any:
    """``JobScheduler.schedule``, then the pending wake-up cancelled."""
    try:
        return _ORIGINAL["JobScheduler.schedule"](self)
    finally:
        with self._reevaluation_lock:
            pending, self._pending_reevaluation = self._pending_reevaluation, None
        if pending is not None:
            pending[1].cancel()


def schedule_reevaluation(self: Any, delay: float) -> None:
    """Wake the scheduler (another pass) in ``delay`` seconds, unless a wake-up is already
    pending that comes no later; at most one pending wake-up, a daemon timer."""
    deadline = time.monotonic() + delay
    with self._reevaluation_lock:
        pending = self._pending_reevaluation
        if pending is not None:
            if pending[0] <= deadline:
                return  # the pending wake-up comes first; the pass it starts asks for the next
            pending[1].cancel()

        def wake() -> None:
            # Cleared before the scheduler wakes, so that the pass it starts asks again.
            with self._reevaluation_lock:
                current = self._pending_reevaluation
                if current is not None and current[1] is timer:
                    self._pending_reevaluation = None
            self._open_jobs.release()

        timer = threading.Timer(delay, wake)
        timer.daemon = True
        self._pending_reevaluation = (deadline, timer)
        timer.start()


def open_jobs(self: Any) -> list[Any]:
    """The ready jobs one scheduling pass considers: of each rule, as many as the pass could
    start, by priority (:meth:`ReadyJobs.window`); all of them for a dry-run."""
    ready = self.workflow.dag.ready_jobs
    if isinstance(ready, ReadyJobs):
        return ready.window(jobs_startable(self))
    return list(ready)


def remaining_jobs(self: Any) -> LazyJobs:
    """Jobs still to run (not running, finished or failed), listed when first read."""
    original = _ORIGINAL["JobScheduler.remaining_jobs"]
    return LazyJobs(lambda: original(self))


#: id of a job being prepared -> its inputs that are pipes or services
_PIPE_INPUTS: dict[int, frozenset] = {}


def pipe_or_service_inputs(job: Any) -> frozenset:
    """The inputs of ``job`` that a dependency writes as a pipe or service, in one walk over
    its dependencies (a file has one producer)."""
    return frozenset(
        f
        for dep, files in job.dag.dependencies[job].items()
        if dep.pipe_or_service_output
        for f in files
        if f in dep.pipe_or_service_output
    )


async def prepare(self: Any) -> Any:
    """``Job.prepare`` with the job's pipe and service inputs collected once.

    ``prepare`` asks :func:`is_pipe_or_service_input` of each input, which walks all the
    job's dependencies: quadratic in the inputs of an aggregating job (an ``all`` rule of
    15,000 inputs: about 10^8 set lookups, a minute of CPU). Upstream, ``prepare`` would
    compute its ``consider_local`` set with :func:`pipe_or_service_inputs`.
    """
    _PIPE_INPUTS[id(self)] = pipe_or_service_inputs(self)
    try:
        return await _ORIGINAL["Job.prepare"](self)
    finally:
        _PIPE_INPUTS.pop(id(self), None)


def is_pipe_or_service_input(self: Any, path: Any) -> bool:
    """``Job.is_pipe_or_service_input``: one set lookup while the job is prepared."""
    found = _PIPE_INPUTS.get(id(self))
    if found is None:
        return _ORIGINAL["Job.is_pipe_or_service_input"](self, path)
    return path in found
