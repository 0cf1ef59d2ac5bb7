"""CPU, threads and exit delay of the Snakemake process itself in a real run of N trivial jobs.

    python benchmarks/bench_scheduler.py [--jobs N [N ...]] [--json] [--plain] [--cores C]
                                         [--plain-up-to N] [--save-reference] [--reference FILE]
                                         [--chain K] [--extra "FLAGS"] [--timeout S]
                                         [--workdir DIR]
    python benchmarks/bench_scheduler.py --share [--interval S] -- COMMAND [ARG ...]

A real run (not a dry-run), in a fresh temporary folder, of N independent jobs of one rule
(``echo {wildcards.i} > out/{i}.txt``) plus a local ``all`` rule, with the Snakemake set-up of
the project: the workflow hooks the repository's Snakefile installs (the calls of the
functions it imports from ``defaceaudit.*``, copied from it) and the Snakemake flags of ``make
demo`` (read from the Makefile, ``--cores`` as given here: 2 by default). Measured, of the
Snakemake process alone (the *master*; the jobs' shells are not counted):

- ``master_cpu_s``: its CPU seconds, user + system, written by the process itself at exit
  (``os.times()``), start-up and DAG included; ``master_cpu_ms_per_job`` = that / N;
  ``startup_cpu_s``: its CPU seconds when the scheduler starts (imports, parsing, the DAG;
  about 1 s, most of the ms per job at 500 jobs) and ``run_cpu_ms_per_job`` = the rest / N;
- ``peak_threads``: its most live threads (``/proc/PID/stat``, sampled every 20 ms);
  ``threads_started``: Python threads it started (counted in the process);
- ``wall_s``: start to exit; ``exit_delay_s``: the newest output file's modification time to
  the process's exit (the last job's bookkeeping, the ``all`` rule and shutting down).

``--chain K`` runs the jobs in chains of K, each chain one group job (a cluster job), and
``--extra`` adds Snakemake flags: tests/slurm/run_slurm_test.sh runs hundreds of jobs through
``--profile profiles/slurm`` so. ``--workdir DIR`` runs in DIR/N and keeps it.

``--plain`` runs the same with plain Snakemake: ``DEFACEAUDIT_SCHEDULER_PATCH=0`` (the
scheduler left as Snakemake ships it, defaceaudit.workflow.scheduler_patch) and ``make demo``'s
flags without ``--scheduler`` (Snakemake's default ILP selector), as the project ran before.

With ``--jobs`` each size runs once and prints one JSON line (with ``--json`` the last line is
one JSON object for the last size). Without ``--jobs``: N = 500, 2000, 8000 and 15,000 with the
project's set-up, and plain Snakemake up to ``--plain-up-to`` jobs (2000 by default: plain
Snakemake's cost grows with the square of N, hours at 15,000), printed beside the committed
reference (benchmarks/reference/scheduler.json, written by ``--save-reference``). Goals (issue
"The Snakemake master process must stay cheap and bounded"): at 3000 jobs at most 5 ms of
master CPU per job and 32 live threads, ms per job within 2x from 500 to 15,000 jobs, a prompt
exit. Other work on the machine inflates every figure; the load average is recorded.

``--share -- COMMAND`` runs COMMAND (e.g. ``make demo``) and reports the CPU of each Snakemake
process in it (a process running ``snakemake`` itself, not one of its jobs; read from
``/proc/PID/stat`` every ``--interval`` seconds, so the last interval of each may be missed):
per process its own CPU, its jobs' (the children it waited for, with theirs) and its share of
the two (``share_percent``: the master's share of its run), and the CPU of the whole command
with all its descendants (from the operating system when it ends). ``make demo`` runs two:
the pipeline, then ``--report`` (all of it the master's own work).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).parent / "reference" / "scheduler.json"
SIZES = (500, 2000, 8000, 15000)
#: plain Snakemake only up to this many jobs by default (quadratic: hours at 15,000)
PLAIN_UP_TO = 2000
#: seconds one run may take before it is reported as failed
RUN_TIMEOUT_S = 3600
#: the project's opt-out of its scheduler patch (defaceaudit.workflow.scheduler_patch.OPT_OUT)
OPT_OUT = "DEFACEAUDIT_SCHEDULER_PATCH"
#: the goals of the issue, checked below the table
GOAL_MS_PER_JOB = 5.0
GOAL_THREADS = 32
GOAL_SPREAD = 2.0
GOAL_EXIT_S = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NAN = float("nan")

#: ``snakemake`` with its CPU time when the scheduler starts (the DAG built) and at exit (after
#: Python has waited for its non-daemon threads), and the Python threads it started, written to
#: a file at exit
RUNNER = r"""
import atexit, json, os, sys, threading
record, marks = os.environ.pop("BENCH_SCHEDULER_RECORD"), {"threads_started": 0}
_start = threading.Thread.start
def start(self, *args, **kwargs):
    marks["threads_started"] += 1
    return _start(self, *args, **kwargs)
threading.Thread.start = start
from snakemake.scheduling import job_scheduler
_schedule = job_scheduler.JobScheduler.schedule
def schedule(self):
    times = os.times()
    marks.setdefault("startup_cpu_s", times.user + times.system)
    return _schedule(self)
job_scheduler.JobScheduler.schedule = schedule
def write():
    times = os.times()
    with open(record, "w") as out:
        json.dump({**marks, "user_s": times.user, "system_s": times.system}, out)
atexit.register(write)
from snakemake.cli import main
sys.argv[0] = "snakemake"
sys.exit(main())
"""

#: the same jobs in chains of ``chain`` (job k of chain c needs job k - 1), each chain one group
#: (one cluster job): how tests/slurm/run_slurm_test.sh passes hundreds of jobs through SLURM
#: with few submissions
CHAINED_RULES = """
rule all:
    input:
        expand("out/{{c}}/{{k}}.txt", c=range({chains}), k=[{chain} - 1]),
    localrule: True


rule one:
    input:
        lambda w: [f"out/{{w.c}}/{{int(w.k) - 1}}.txt"] if int(w.k) else [],
    output:
        "out/{{c}}/{{k}}.txt",
    group:
        "chain-{{c}}"
    shell:
        "echo {{wildcards.c}} {{wildcards.k}} > {{output}}"
"""

TRIVIAL_RULES = """
rule all:
    input:
        expand("out/{i}.txt", i=range(int(config["n_jobs"]))),
    localrule: True


rule one:
    output:
        "out/{i}.txt",
    shell:
        "echo {wildcards.i} > {output}"
"""


def project_hooks(snakefile: Path = REPO / "Snakefile") -> tuple[list[str], list[str], list[str]]:
    """The Snakefile's imports from ``defaceaudit.workflow.snakemake_hooks`` (the functions
    that change the Snakemake process), its top-level calls of them and the calls in its
    ``onstart`` block, as source lines."""
    text = snakefile.read_text()
    pattern = r"^from defaceaudit\.workflow\.snakemake_hooks import (?:\([^)]*\)|[^\n]*)"
    imports = re.findall(pattern, text, re.M)
    names = {
        name.strip()
        for line in imports
        for name in line.split(" import ", 1)[1].strip("()\n ").replace("\n", ",").split(",")
        if name.strip()
    }
    calls = re.compile(rf"^({'|'.join(map(re.escape, sorted(names)))})\(.*\)\s*(#.*)?$")
    top, onstart, block = [], [], None
    for line in text.splitlines():
        if re.match(r"^\S", line):
            block = line.rstrip(":") if line.endswith(":") else None
        found = calls.match(line.strip())
        if not found:
            continue
        if block == "onstart" and line.startswith(" "):
            onstart.append(found[0].split("#")[0].strip())
        elif not line.startswith(" "):
            top.append(found[0].split("#")[0].strip())
    return imports, top, onstart


def bench_snakefile(n_jobs: int, chain: int = 1) -> str:
    """The trivial workflow with the project's hooks (the same for plain Snakemake: the opt-out
    environment variable then turns the scheduler patch off); ``chain`` > 1: in chains."""
    imports, top, onstart = project_hooks()
    lines = [*imports, *top, "", "", "onstart:", *(f"    {call}" for call in onstart or ["pass"])]
    if chain > 1:
        if n_jobs % chain:
            raise ValueError(f"{n_jobs} jobs do not make chains of {chain}")
        rules = CHAINED_RULES.format(chains=n_jobs // chain, chain=chain)
    else:
        rules = TRIVIAL_RULES
    return "\n".join(lines) + "\n\n" + rules


def demo_flags(makefile: Path = REPO / "Makefile") -> list[str]:
    """The Snakemake flags of ``make demo``'s run (its first ``snakemake`` line), with
    ``$(CORES)`` left as ``{cores}``."""
    text = makefile.read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", text, re.M)
    if not recipe:
        raise SystemExit("bench_scheduler: no demo target in the Makefile")
    line = next(row for row in recipe[1].splitlines() if "snakemake" in row)
    flags = shlex.split(line.split("snakemake", 1)[1])
    return [flag.replace("$(CORES)", "{cores}") for flag in flags]


def without_scheduler(flags: list[str]) -> list[str]:
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag == "--scheduler":
            skip = True
        elif not flag.startswith("--scheduler="):
            out.append(flag)
    return out


def read_stat(pid: int) -> tuple[float, int, float] | None:
    """CPU seconds (user + system) of ``pid`` itself, its live threads, and the CPU seconds of
    its children that it has waited for (with theirs)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17, num_threads 20
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    children = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return own, int(fields[17]), children


def run_trivial(
    n_jobs: int,
    plain: bool = False,
    cores: int = 2,
    extra_flags: list[str] | None = None,
    chain: int = 1,
    timeout: float = RUN_TIMEOUT_S,
    workdir: Path | None = None,
) -> dict:
    """One real run of ``n_jobs`` trivial jobs (in chains of ``chain``, with ``extra_flags``
    after ``make demo``'s, killed after ``timeout`` seconds) in a temporary folder, or in
    ``workdir`` (created, then kept); returns the figures (module docstring)."""
    flags = [f.format(cores=cores) for f in demo_flags()]
    if plain:
        flags = without_scheduler(flags)
    flags += extra_flags or []
    env = {**os.environ}
    if plain:
        env[OPT_OUT] = "0"
    else:
        env.pop(OPT_OUT, None)
    row: dict = {
        "jobs": n_jobs,
        "setup": "plain" if plain else "defaceaudit",
        "flags": " ".join(flags),
        "chain": chain,
        "load_1min_before": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="bench_scheduler_") as tmp:
        work = Path(tmp) if workdir is None else Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        (work / "Snakefile").write_text(bench_snakefile(n_jobs, chain))
        record = work / "master.json"
        env["BENCH_SCHEDULER_RECORD"] = str(record)
        cmd = [sys.executable, "-c", RUNNER, *flags, "--config", f"n_jobs={n_jobs}"]
        peak, last_cpu = 0, 0.0
        with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=err, env=env)
            deadline = start + timeout
            try:
                while proc.poll() is None:
                    sample = read_stat(proc.pid)
                    if sample:
                        last_cpu, peak = sample[0], max(peak, sample[1])
                    if time.perf_counter() > deadline:
                        return {**row, "error": f"timed out after {timeout:.0f} s"}
                    time.sleep(0.02)
            finally:
                if proc.poll() is None:  # timed out or interrupted: Snakemake cancels its jobs
                    proc.terminate()
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            end_wall, end = time.time(), time.perf_counter()
        if proc.returncode != 0:
            lines = (work / "stderr.txt").read_text().strip().splitlines() or ["no output"]
            error = next((x for x in lines if "Error" in x), lines[-1])
            return {**row, "error": f"exit {proc.returncode}: {error}"}
        outputs = [Path(d, f) for d, _, files in os.walk(work / "out") for f in files]
        if len(outputs) != n_jobs:
            return {**row, "error": f"{len(outputs)} outputs of {n_jobs}"}
        last_output = max(path.stat().st_mtime for path in outputs)
        master = json.loads(record.read_text()) if record.exists() else {}
        cpu = master["user_s"] + master["system_s"] if master else last_cpu
        from snakemake import __version__ as snakemake_version

        startup = master.get("startup_cpu_s", 0.0)
        return {
            **row,
            "master_cpu_s": round(cpu, 3),
            "master_cpu_ms_per_job": round(1000 * cpu / n_jobs, 3),
            "startup_cpu_s": round(startup, 3),
            "run_cpu_ms_per_job": round(1000 * (cpu - startup) / n_jobs, 3),
            "peak_threads": peak,
            "threads_started": master.get("threads_started"),
            "wall_s": round(end - start, 3),
            "exit_delay_s": round(end_wall - last_output, 3),
            "snakemake": snakemake_version,
        }


# ------------------------------------------------------------------------------- --share
def process_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                argv = [a.decode(errors="replace") for a in cmdline.read().split(b"\0") if a]
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (ppid, argv)
    return table


def is_snakemake_master(argv: list[str]) -> bool:
    """A process running the ``snakemake`` command (``snakemake ...`` or ``python
    .../bin/snakemake ...``), not a job it started (a shell, a script, ``python -m``)."""
    heads = argv[:2] if argv and os.path.basename(argv[0]).startswith("python") else argv[:1]
    return any(os.path.basename(arg) == "snakemake" for arg in heads)


def share(command: list[str], interval: float) -> dict:
    """Run ``command``; the CPU seconds of its Snakemake processes and of everything."""
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    masters: dict[int, dict] = {}
    while True:
        table = process_table()
        tree, frontier = {proc.pid}, [proc.pid]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        for pid in tree:
            argv = table.get(pid, (0, []))[1]
            if is_snakemake_master(argv):
                sample = read_stat(pid)
                if sample:
                    seen = masters.setdefault(pid, {"command": " ".join(argv)[:200]})
                    seen["cpu_s"], seen["jobs_cpu_s"] = sample[0], sample[2]
                    seen["peak_threads"] = max(seen.get("peak_threads", 0), sample[1])
                    run = sample[0] + sample[2]
                    seen["share_percent"] = round(100 * sample[0] / run, 2) if run else None
        try:
            _, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            status, usage = 0, None
        if _ != 0:
            break
        time.sleep(interval)
    total = usage.ru_utime + usage.ru_stime
    master_cpu = sum(m.get("cpu_s", 0.0) for m in masters.values())
    return {
        "command": " ".join(command),
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.perf_counter() - start, 1),
        "total_cpu_s": round(total, 1),
        "master_cpu_s": round(master_cpu, 1),
        "master_share_percent": round(100 * master_cpu / total, 2) if total else None,
        "masters": list(masters.values()),
    }


# ------------------------------------------------------------------------------- the table
HEADS = ("ms/job", "run ms", "CPU s", "threads", "wall s", "exit s")


def cells(row: dict | None) -> str:
    if not row:
        return " ".join(f"{'-':>8}" for _ in HEADS)
    if "error" in row:
        return f"{'failed: ' + row['error'][:60]:<53}"
    return (
        f"{row['master_cpu_ms_per_job']:>8.2f} {row.get('run_cpu_ms_per_job', NAN):>8.2f} "
        f"{row['master_cpu_s']:>8.1f} "
        f"{row['peak_threads']:>8d} {row['wall_s']:>8.1f} {row['exit_delay_s']:>8.2f}"
    )


def print_table(rows: list[dict], reference: dict) -> None:
    ours = {r["jobs"]: r for r in rows if r["setup"] == "defaceaudit"}
    plain = {r["jobs"]: r for r in rows if r["setup"] == "plain"}
    old = {r["jobs"]: r for r in reference.get("rows", []) if r.get("setup") == "defaceaudit"}
    head = " ".join(f"{h:>8}" for h in HEADS)
    print("\nThe Snakemake process in a real run of N trivial jobs (run ms: without start-up)")
    print(f"{'':>6} {'defaceaudit (this run)':^53} | {'plain Snakemake':^53} | {'reference':^53}")
    print(f"{'jobs':>6} {head} | {head} | {head}")
    for n in sorted(set(ours) | set(plain)):
        print(f"{n:>6} {cells(ours.get(n))} | {cells(plain.get(n))} | {cells(old.get(n))}")
    good = [r for r in ours.values() if "error" not in r]
    if not good:
        return
    per_job = [r["master_cpu_ms_per_job"] for r in good]
    spread = max(per_job) / min(per_job)
    run_per_job = [r["run_cpu_ms_per_job"] for r in good]
    worst_threads = max(r["peak_threads"] for r in good)
    worst_exit = max(r["exit_delay_s"] for r in good)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    print(
        f"goals: <= {GOAL_MS_PER_JOB} ms/job: {verdict(max(per_job) <= GOAL_MS_PER_JOB)} "
        f"(max {max(per_job):.2f}); <= {GOAL_THREADS} threads: "
        f"{verdict(worst_threads <= GOAL_THREADS)} (max {worst_threads}); "
        f"ms/job within {GOAL_SPREAD}x over the sizes: {verdict(spread <= GOAL_SPREAD)} "
        f"({spread:.2f}x; without start-up {min(run_per_job):.2f}-{max(run_per_job):.2f} ms, "
        f"{max(run_per_job) / min(run_per_job):.2f}x); "
        f"exit within {GOAL_EXIT_S} s of the last job: "
        f"{verdict(worst_exit <= GOAL_EXIT_S)} (max {worst_exit:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", help="sizes to run (default: the table)")
    parser.add_argument("--json", action="store_true", help="last line: the last run's JSON")
    parser.add_argument("--plain", action="store_true", help="plain Snakemake (with --jobs)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--chain", type=int, default=1, help="jobs in grouped chains of this")
    parser.add_argument("--extra", default="", help="more Snakemake flags (one string)")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S, help="seconds per run")
    parser.add_argument("--workdir", type=Path, help="run here and keep it (one size only)")
    parser.add_argument("--plain-up-to", type=int, default=PLAIN_UP_TO)
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--save-reference", action="store_true")
    parser.add_argument("--share", action="store_true", help="measure COMMAND (after --)")
    parser.add_argument("--interval", type=float, default=0.5, help="--share: seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.share:
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("--share needs a command after --")
        result = share(command, args.interval)
        print(json.dumps(result))
        sys.exit(result["exit_code"])
    if args.jobs:
        rows = []
        for n in args.jobs:
            rows.append(
                run_trivial(
                    n,
                    plain=args.plain,
                    cores=args.cores,
                    extra_flags=shlex.split(args.extra),
                    chain=args.chain,
                    timeout=args.timeout,
                    workdir=args.workdir / str(n) if args.workdir else None,
                )
            )
            if not args.json or n != args.jobs[-1]:
                print(json.dumps(rows[-1]), flush=True)
        if args.json:
            print(json.dumps(rows[-1]))
        sys.exit(1 if any("error" in r for r in rows) else 0)
    rows = []
    for n in SIZES:
        rows.append(run_trivial(n, cores=args.cores))
        print(json.dumps(rows[-1]), flush=True)
        if n <= args.plain_up_to:
            rows.append(run_trivial(n, plain=True, cores=args.cores))
            print(json.dumps(rows[-1]), flush=True)
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; --cores {args.cores}")
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    print_table(rows, reference)
    if args.save_reference:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        cpu = ""
        if Path("/proc/cpuinfo").exists():
            names = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x]
            cpu = names[0].split(":", 1)[1].strip() if names else ""
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
        result = {
            "commit": commit,
            "date": time.strftime("%Y-%m-%d"),
            "cpu": cpu,
            "cpus": len(os.sched_getaffinity(0)),
            "rows": rows,
        }
        args.reference.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nreference written: {args.reference}")


if __name__ == "__main__":
    main()
