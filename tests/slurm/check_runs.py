"""Checks of the real SLURM test (run_slurm_test.sh).

``jobs``: from SLURM's own records (``scontrol show job --details --oneliner``, kept for
MinJobAge after a job ends) and the plugin's sbatch calls in Snakemake's ``--verbose`` log: every
submitted job has a record and completed with exit code 0; the jobs of profiles/slurm's GPU rules
asked for and were allocated a GPU in the GPU partition (one at a time: the test node has one),
every other job neither, in the CPU partition; memory and time limit are the rules' own (each
job's resources as Snakemake lists them in the log), CPUs per GPU the profile's set-resources;
every group of the profile ran as group jobs.

``compare``: the outputs of two runs of the same workflow and config (SLURM and local).

``master``: the Snakemake process of a run of hundreds of trivial jobs through SLURM
(benchmarks/bench_scheduler.py's JSON line) stayed bounded: all jobs ran, few live threads, little
CPU per job, a prompt exit.
"""

from __future__ import annotations

import argparse
import re
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+)")  # group ids: uuids
SBATCH_CALL = re.compile(r"sbatch call: (sbatch .*)")
COMMENT = re.compile(r"^rule_(?P<name>.+?)(?:_wildcards_(?P<wildcards>.*))?$")
JOB_ID = re.compile(r"^\s*jobid: (\d+)$")
RESOURCES = re.compile(r"^\s*resources: (.*)$")


def parse_scontrol(text: str) -> list[dict[str, str]]:
    """One dict per job of ``scontrol show job --oneliner`` (fields are KEY=VALUE, no spaces
    inside the values read here)."""
    jobs = []
    for line in text.splitlines():
        if line.startswith("JobId="):
            jobs.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    return jobs


def gpu_fields(record: dict[str, str]) -> tuple[bool, bool]:
    """Whether the job asked for a GPU (TresPerJob or TresPerNode) and whether it was allocated
    one (JOB_GRES=gpu:N in `scontrol show job --details`; without an accounting database TRES
    does not list GPUs)."""
    asked = any("gpu" in record.get(k, "") for k in ("TresPerJob", "TresPerNode"))
    return asked, "gpu" in record.get("JOB_GRES", "")


def overlapping(records: list[dict[str, str]]) -> list[str]:
    """Pairs of jobs that ran at the same time (StartTime/EndTime, ISO with seconds)."""
    spans = sorted((r["StartTime"], r["EndTime"], r["JobId"]) for r in records)
    return [f"{a[2]} and {b[2]}" for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]


def read_profile(profile: Path) -> tuple[set[str], dict[str, set[str]]]:
    """From profiles/slurm: its GPU rules (set-resources entries with cpus_per_gpu) and its
    groups (group -> member rules)."""
    import yaml

    settings = yaml.safe_load(profile.read_text())
    entries = settings.get("set-resources", {})
    gpu_rules = {rule for rule, res in entries.items() if "cpus_per_gpu" in (res or {})}
    groups: dict[str, set[str]] = {}
    for rule, group in settings.get("groups", {}).items():
        groups.setdefault(group, set()).add(rule)
    return gpu_rules, groups


def profile_cpus_per_gpu(profile: Path, rule: str) -> int | None:
    """The profile's CPUs per GPU of a rule (None: not a GPU rule of the profile). The profile
    states no memory or runtime: those are the rules'."""
    import yaml

    entries = yaml.safe_load(profile.read_text()).get("set-resources", {}).get(rule) or {}
    return int(entries["cpus_per_gpu"]) if "cpus_per_gpu" in entries else None


def logged_resources(log: str) -> dict[str, list[dict[str, int]]]:
    """Snakemake job id -> the ``mem_mb`` and ``runtime`` of each listing of the job in
    Snakemake's log (``jobid: N`` ... ``resources: ...``): the rules' resources at the job's
    attempt, as Snakemake evaluated them and passed them to the plugin."""
    found: dict[str, list[dict[str, int]]] = {}
    job_id = None
    for line in log.splitlines():
        if match := JOB_ID.match(line):
            job_id = match[1]
        elif (match := RESOURCES.match(line)) and job_id is not None:
            values = dict(kv.split("=", 1) for kv in match[1].split(", ") if "=" in kv)
            found.setdefault(job_id, []).append(
                {k: int(values[k]) for k in ("mem_mb", "runtime") if values.get(k, "").isdigit()}
            )
            job_id = None
    return found


def minutes(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    h, m, _s = (int(x) for x in clock.split(":"))
    return (int(days) if days else 0) * 1440 + h * 60 + m


def resource_problems(
    record: dict[str, str], rule: str, profile: Path, logged: list[dict[str, int]]
) -> list[str]:
    """Whether SLURM's record holds the memory and time limit Snakemake listed for the job
    (``logged``: :func:`logged_resources` of its job id; the rule's at that attempt) and the
    profile's CPUs per GPU of the rule."""
    got = {
        "mem_mb": int(record.get("MinMemoryNode", "0M").rstrip("M")),
        "runtime": minutes(record.get("TimeLimit", "0:0:0")),
    }
    job = f"{rule} job {record['JobId']}"
    problems = []
    cpus = re.search(r"gpu:(\d+)", record.get("CpusPerTres", ""))
    want_cpus = profile_cpus_per_gpu(profile, rule)
    if (int(cpus[1]) if cpus else None) != want_cpus:
        problems.append(f"{job}: CpusPerTres {record.get('CpusPerTres')}, profile {want_cpus}")
    wanted = [want for want in logged if want]
    if not wanted:
        problems.append(f"{job}: no mem_mb or runtime in Snakemake's listing of the job")
    elif not any(all(got[k] == v for k, v in want.items()) for want in wanted):
        problems.append(f"{job}: {got} is not the rule's {wanted[-1]} (Snakemake's log)")
    return problems


def group_of(name: str, groups: dict[str, set[str]]) -> str | None:
    """The group whose job a comment name is: Snakemake names a group job
    `<group id>_<its rules, sorted, joined by _>`, the group id being the profile's group name
    with its wildcards filled in (`subject-{subject}` -> `subject-tr01`; BIDS labels are
    alphanumeric)."""
    for group, members in groups.items():
        group_id = re.sub(r"\\\{\w+\\\}", "[A-Za-z0-9]+", re.escape(group))
        for n in range(1, len(members) + 1):
            for rules in combinations(sorted(members), n):
                if re.fullmatch(f"{group_id}_{re.escape('_'.join(rules))}", name):
                    return group
    return None


def check_jobs(args: argparse.Namespace) -> list[str]:
    args.gpu_rules, groups = read_profile(Path(args.profile))
    missing_required = set(args.require_gpu_rules) - args.gpu_rules
    if missing_required:
        return [f"{args.profile} has no GPU entry for {sorted(missing_required)}"]
    records = parse_scontrol(Path(args.scontrol).read_text())
    log = Path(args.snakemake_log).read_text()
    snakemake_id = {slurm_id: job_id for job_id, slurm_id in SUBMITTED.findall(log)}
    submitted = set(snakemake_id)
    resources = logged_resources(log)
    calls = SBATCH_CALL.findall(log)
    problems = []
    if not submitted:
        return [f"no job submissions in {args.snakemake_log}"]
    by_id = {r["JobId"]: r for r in records}
    missing = sorted(submitted - set(by_id), key=int)
    if missing:
        problems.append(f"submitted jobs without a SLURM record: {missing}")

    seen_rules: dict[str, int] = {}
    seen_groups: dict[str, int] = {}
    for slurm_id in sorted(submitted & set(by_id), key=int):
        record = by_id[slurm_id]
        match = COMMENT.match(record.get("Comment", ""))
        if not match:
            problems.append(f"job {slurm_id}: no rule in its comment {record.get('Comment')!r}")
            continue
        name = match["name"]
        state, exit_code = record.get("JobState"), record.get("ExitCode")
        if state != "COMPLETED" or exit_code != "0:0":
            problems.append(f"job {slurm_id} ({name}): {state}, exit code {exit_code}")
        gpu_rule = name in args.gpu_rules
        group = group_of(name, groups)
        if group is not None:
            seen_groups[group] = seen_groups.get(group, 0) + 1
            if groups[group] & args.gpu_rules:
                problems.append(f"group {group} holds a GPU rule")
        else:
            seen_rules[name] = seen_rules.get(name, 0) + 1
            logged = resources.get(snakemake_id[slurm_id], [])
            problems += resource_problems(record, name, Path(args.profile), logged)
        want_partition = args.gpu_partition if gpu_rule else args.cpu_partition
        if gpu_fields(record) != (gpu_rule, gpu_rule):
            problems.append(
                f"job {slurm_id} ({name}): GPU {'missing' if gpu_rule else 'given'} "
                f"(TresPerJob={record.get('TresPerJob')}, JOB_GRES={record.get('JOB_GRES')})"
            )
        if record.get("Partition") != want_partition:
            problems.append(
                f"job {slurm_id} ({name}): partition {record.get('Partition')}, "
                f"expected {want_partition}"
            )
    # The test node has one GPU: jobs holding it must have run one after another.
    gpu_jobs = [r for r in records if r["JobId"] in submitted and gpu_fields(r)[1]]
    for pair in overlapping(gpu_jobs):
        problems.append(f"GPU jobs {pair} ran at the same time on the node's one GPU")
    for rule in args.require_gpu_rules:
        if not seen_rules.get(rule):
            problems.append(f"no SLURM job of GPU rule {rule}")
    for group in groups:
        if not seen_groups.get(group):
            problems.append(f"no group job of group {group}")

    # the plugin's side: the sbatch command lines it ran
    for call in calls:
        match = re.search(r"--comment (\S+)", call)
        name = COMMENT.match(match[1].strip("'")) if match else None
        if name is None:
            problems.append(f"sbatch call without a rule comment: {call[:200]}")
            continue
        gpu_rule = name["name"] in args.gpu_rules
        if ("--gpus=1" in call) != gpu_rule:
            problems.append(f"sbatch call of {name['name']}: --gpus=1 expected {gpu_rule}")
        if gpu_rule and "--cpus-per-gpu=" not in call:
            problems.append(f"sbatch call of {name['name']} without --cpus-per-gpu")
        if re.search(r"--gpus\b(?!=1)|--gres", call) and not gpu_rule:
            problems.append(f"sbatch call of {name['name']} asks for a GPU")
    if len(calls) != len(submitted):
        problems.append(f"{len(calls)} sbatch calls logged for {len(submitted)} submissions")

    print(
        f"SLURM records: {len(submitted)} jobs, all checked; "
        + ", ".join(f"{rule} x{n}" for rule, n in sorted(seen_rules.items()))
        + "; group jobs: "
        + ", ".join(f"{group} x{n}" for group, n in sorted(seen_groups.items()))
    )
    for slurm_id in sorted(submitted & set(by_id), key=int):
        record = by_id[slurm_id]
        print(
            f"  {slurm_id:>4} {record.get('Partition', '?'):4} {record.get('JobState', '?'):9} "
            f"TRES={record.get('TRES', '?'):40} JOB_GRES={record.get('JOB_GRES', '?'):7} "
            f"{record.get('Comment', '?')}"
        )
    return problems


# ----------------------------------------------------------------------------- master
def check_master(args: argparse.Namespace) -> list[str]:
    """The bounds of the Snakemake process in bench_scheduler.py's last JSON line."""
    import json

    lines = [x for x in Path(args.bench_output).read_text().splitlines() if x.startswith("{")]
    if not lines:
        return [f"no JSON line in {args.bench_output}"]
    row = json.loads(lines[-1])
    if "error" in row:
        return [f"the run of {row.get('jobs')} trivial jobs failed: {row['error']}"]
    print(
        f"Snakemake process, {row['jobs']} trivial jobs through SLURM ({row['flags']}): "
        f"{row['master_cpu_s']:.1f} CPU s ({row['master_cpu_ms_per_job']:.1f} ms/job), "
        f"{row['peak_threads']} threads at most, {row['threads_started']} started, "
        f"{row['wall_s']:.0f} s, exit {row['exit_delay_s']:.1f} s after the last job"
    )
    problems = []
    if row["jobs"] != args.jobs:
        problems.append(f"{row['jobs']} jobs ran, not {args.jobs}")
    if row["peak_threads"] > args.max_threads:
        problems.append(f"{row['peak_threads']} live threads (at most {args.max_threads})")
    if row["master_cpu_ms_per_job"] > args.max_ms_per_job:
        problems.append(
            f"{row['master_cpu_ms_per_job']:.1f} ms of CPU per job (at most {args.max_ms_per_job})"
        )
    if row["exit_delay_s"] > args.max_exit_delay:
        problems.append(
            f"exit {row['exit_delay_s']:.1f} s after the last job (at most {args.max_exit_delay})"
        )
    return problems


# ----------------------------------------------------------------------------- compare
#: Sidecar keys that differ between any two runs: wall-clock seconds of the job.
TIMING_KEYS = {"seconds"}
#: Relative tolerance for numbers and voxels. On the development machine every output of the two
#: runs (demo images, prepared images, defaced images after registration, checkpoints, refaced
#: images, metric tables) was byte-identical; the tolerance only absorbs last-bit differences
#: where a cluster gives a job other CPUs (threads) than the local run.
RTOL = 1e-6


def output_files(root: Path) -> set[str]:
    """Every output under results/, relative to it (logs and benchmarks hold timings)."""
    results = root / "results"
    return {
        str(p.relative_to(results))
        for p in results.rglob("*")
        if p.is_file() and p.relative_to(results).parts[0] not in ("logs", "benchmarks")
    }


def json_without_run(path: Path, root: Path) -> object:
    """A sidecar with its timings dropped and the run's working directory replaced."""
    import json

    text = path.read_text().replace(str(root.resolve()), "<workdir>")
    data = json.loads(text)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in TIMING_KEYS}
    return data


def close_values(a: object, b: object) -> bool:
    """Equal JSON values, numbers within RTOL."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_values(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close_values(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(np.isclose(a, b, rtol=RTOL, atol=0.0, equal_nan=True))
    return a == b


def close_arrays(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if not np.issubdtype(a.dtype, np.number):
        return bool(np.array_equal(a, b))
    scale = float(np.nanmax(np.abs(a))) if a.size else 0.0
    return bool(np.allclose(a, b, rtol=RTOL, atol=RTOL * scale, equal_nan=True))


def close_tables(fa: Path, fb: Path) -> bool:
    import pandas as pd

    ta, tb = pd.read_csv(fa, sep="\t"), pd.read_csv(fb, sep="\t")
    if list(ta.columns) != list(tb.columns) or ta.shape != tb.shape:
        return False
    numeric = ta.select_dtypes("number").columns
    text = [c for c in ta.columns if c not in numeric]
    return ta[text].equals(tb[text]) and all(  # column by column: each on its own scale
        close_arrays(ta[c].to_numpy(float), tb[c].to_numpy(float)) for c in numeric
    )


def close_files(rel: str, a: Path, b: Path) -> bool:
    """Whether one output of the two runs agrees (its bytes differ)."""
    import nibabel as nib

    fa, fb = a / "results" / rel, b / "results" / rel
    if rel.endswith(".json"):
        return close_values(json_without_run(fa, a), json_without_run(fb, b))
    if rel.endswith(".tsv"):
        return close_tables(fa, fb)
    if rel.endswith((".nii", ".nii.gz")):
        ia, ib = nib.load(fa), nib.load(fb)
        return np.allclose(ia.affine, ib.affine) and close_arrays(
            np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
        )
    if rel.endswith(".npz"):
        with np.load(fa) as za, np.load(fb) as zb:
            return za.files == zb.files and all(close_arrays(za[k], zb[k]) for k in za.files)
    return False  # checkpoints, Markdown, HTML: no tolerance to apply


def compare(args: argparse.Namespace) -> list[str]:
    a, b = Path(args.first), Path(args.second)
    files_a, files_b = output_files(a), output_files(b)
    problems = []
    if not files_a:
        problems.append(f"no outputs under {a}/results")
    if files_a != files_b:
        problems.append(
            f"different outputs: only in {a.name}: {sorted(files_a - files_b)[:10]}; "
            f"only in {b.name}: {sorted(files_b - files_a)[:10]}"
        )
    counts = {
        "byte-identical": 0,
        "sidecars equal but for timings and paths": 0,
        "equal within tolerance": 0,
        "figures not compared": 0,
    }
    for rel in sorted(files_a & files_b):
        fa, fb = a / "results" / rel, b / "results" / rel
        if fa.read_bytes() == fb.read_bytes():
            counts["byte-identical"] += 1
        elif rel.endswith(".png"):
            # rendered figures: seaborn's strip-plot jitter is not seeded (figures.plot_qc)
            counts["figures not compared"] += 1
            print(f"  not compared (figure): {rel}")
        elif close_files(rel, a, b):
            kind = "sidecars equal but for timings and paths" if rel.endswith(".json") else ""
            counts[kind or "equal within tolerance"] += 1
        else:
            problems.append(f"{rel} differs between {a.name} and {b.name}")
    print(
        f"outputs of {a.name} and {b.name}: {len(files_a | files_b)} files, "
        + ", ".join(f"{n} {what}" for what, n in counts.items())
        + f" (relative tolerance {RTOL})"
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    jobs = sub.add_parser("jobs", help="check SLURM's records of the jobs")
    jobs.add_argument("scontrol", help="output of `scontrol show job --details --oneliner`")
    jobs.add_argument("snakemake_log", help="Snakemake's --verbose output of the SLURM run")
    jobs.add_argument("--profile", required=True, help="profiles/slurm/profile.yaml")
    jobs.add_argument(
        "--require-gpu-rules", nargs="+", required=True, help="GPU rules the run must have"
    )
    jobs.add_argument("--gpu-partition", required=True)
    jobs.add_argument("--cpu-partition", required=True)
    both = sub.add_parser("compare", help="compare the outputs of two runs")
    both.add_argument("first", help="working directory of the first run")
    both.add_argument("second", help="working directory of the second run")
    master = sub.add_parser("master", help="check the Snakemake process of a scheduler run")
    master.add_argument("bench_output", help="output of bench_scheduler.py --json")
    master.add_argument("--jobs", type=int, required=True, help="trivial jobs expected")
    master.add_argument("--max-threads", type=int, required=True)
    master.add_argument("--max-ms-per-job", type=float, required=True)
    master.add_argument("--max-exit-delay", type=float, required=True, help="seconds")
    args = parser.parse_args(argv)
    checks = {"jobs": check_jobs, "compare": compare, "master": check_master}
    problems = checks[args.command](args)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
