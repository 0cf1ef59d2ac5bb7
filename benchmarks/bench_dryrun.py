"""Seconds and peak memory of a Snakemake dry-run as the cohort grows, beside a reference run.

    python benchmarks/bench_dryrun.py [--save-reference] [--reference FILE]
                                      [--subjects 100 300 664 2000] [--config FILE]
                                      [--workflow DIR]

Each size is the paper-scale scenario (tests/configs/paper_scale.yaml: five container defacers
and skull-stripping, refacing, the radiodensity study) with the demo cohort scaled in the
paper's proportions (180 train : 15 internal test : 469 external test), dry-run once
(``snakemake -n``, stdout to a file) in a fresh temporary copy of the workflow, so nothing under
the repository's results/ is touched. Columns: jobs in the DAG, wall-clock seconds, CPU seconds
of the Snakemake process (user + system; less inflated than the wall clock by other work on the
machine), peak memory (the process's maximum resident set) and wall milliseconds per job. Below
the table: a least-squares line through (subjects, seconds), with its slope (seconds per
subject), intercept and R^2, for this run and the reference. Goal: 20 s or less at 664
subjects on 2 cores, linear growth. ``--workflow`` dry-runs another checkout (for example one
before a change); the package imported is always the installed one.

The reference (benchmarks/reference/dryrun.json, written with ``--save-reference``) is the
last saved run (the current code on a quiet machine); README, "Inspecting the pipeline", has
the figures of each issue-7 step. The
machine's CPUs and load average are recorded, since other work on the machine slows every row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from defaceaudit.paths import copy_workflow

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).parent / "reference" / "dryrun.json"
CONFIG = REPO / "tests" / "configs" / "paper_scale.yaml"
#: the paper's cohort: 180 train, 15 internal test, 469 external test subjects
PAPER = {"n_train": 180, "n_internal_test": 15, "n_external_test": 469}
SIZES = (100, 300, 664, 2000)
#: the config schema caps each demo split at 999 subjects (the generator has no such limit): a
#: larger size runs with a copy of the schema whose caps are raised, nothing else changed
SPLIT_CAP = 999
#: ``snakemake`` itself, with the schema replaced when a path is given first
RUNNER = r"""
import sys
schema = sys.argv.pop(1)
if schema:
    import defaceaudit.config
    defaceaudit.config.schema_path = lambda: schema
from snakemake.cli import main
sys.argv[0] = "snakemake"
sys.exit(main())
"""


def scaled_demo(n_subjects: int) -> dict[str, int]:
    """The demo cohort's split sizes for ``n_subjects`` in the paper's proportions."""
    total = sum(PAPER.values())
    n_train = max(1, round(n_subjects * PAPER["n_train"] / total))
    n_internal = max(1, round(n_subjects * PAPER["n_internal_test"] / total))
    return {
        "n_train": n_train,
        "n_internal_test": n_internal,
        "n_external_test": n_subjects - n_train - n_internal,
    }


def uncapped_schema(folder: Path) -> Path:
    """A copy of the config schema without the demo's per-split cap."""
    from defaceaudit.config import schema_path

    schema = yaml.safe_load(Path(schema_path()).read_text())
    for split in PAPER:
        schema["properties"]["demo"]["properties"][split]["maximum"] = 10**6
    path = folder / "config.schema.yaml"
    path.write_text(yaml.safe_dump(schema, sort_keys=False))
    return path


def dry_run(workflow: Path, config: dict, n_subjects: int) -> dict:
    """One dry-run of ``config`` scaled to ``n_subjects``, in a fresh copy of ``workflow``."""
    with tempfile.TemporaryDirectory(prefix="bench_dryrun_") as tmp:
        workdir = copy_workflow(workflow, tmp)
        demo = scaled_demo(n_subjects)
        scenario = {**config, "demo": {**config.get("demo", {}), **demo}}
        (workdir / "scenario.yaml").write_text(yaml.safe_dump(scenario))
        schema = uncapped_schema(workdir) if max(demo.values()) > SPLIT_CAP else ""
        cmd = [sys.executable, "-c", RUNNER, str(schema), "-n", "--configfile", "scenario.yaml"]
        load = os.getloadavg()[0]
        with open(workdir / "stdout.txt", "w") as out, open(workdir / "stderr.txt", "w") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            output = (workdir / "stderr.txt").read_text() + (workdir / "stdout.txt").read_text()
            lines = [line for line in output.splitlines() if line.strip()] or ["no output"]
            error = next((line for line in lines if "Error" in line), lines[-1])
            return {"subjects": n_subjects, "error": f"exit {proc.returncode}: {error}"}
        total = re.search(r"^total\s+(\d+)$", (workdir / "stdout.txt").read_text(), re.M)
        return {
            "subjects": n_subjects,
            "jobs": int(total[1]) if total else None,
            "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024,  # kB on Linux
            "load_1min_before": load,
        }


def linear_fit(rows: list[dict], key: str) -> dict | None:
    """Least squares ``key = intercept + slope * subjects``: slope, intercept and R^2."""
    points = [(r["subjects"], r[key]) for r in rows if key in r]
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in points)
    ss_tot = sum((y - my) ** 2 for _, y in points)
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def print_table(rows: list[dict], reference: dict) -> None:
    old_rows = {r["subjects"]: r for r in reference.get("rows", []) if "error" not in r}
    heads = ("jobs", "wall s", "CPU s", "peak MB", "ms/job")
    print("\nDry-run per cohort size | the same from the committed reference run")
    print(
        f"{'subjects':>8} "
        + " ".join(f"{h:>8}" for h in heads)
        + " | "
        + " ".join(f"{h:>8}" for h in heads)
    )

    def cells(row: dict | None) -> str:
        if not row:
            return " ".join(f"{'-':>8}" for _ in heads)
        per_job = 1000 * row["wall_s"] / row["jobs"] if row.get("jobs") else float("nan")
        return (
            f"{row['jobs'] or 0:>8d} {row['wall_s']:>8.1f} {row['cpu_s']:>8.1f} "
            f"{row['peak_mb']:>8.0f} {per_job:>8.2f}"
        )

    for row in rows:
        if "error" in row:
            print(f"{row['subjects']:>8} failed: {row['error']}")
            continue
        print(f"{row['subjects']:>8} {cells(row)} | {cells(old_rows.get(row['subjects']))}")
    print("\nLinear fit over subjects: seconds = intercept + slope * subjects")
    for label, data in (("this run", rows), ("reference", list(old_rows.values()))):
        for key in ("wall_s", "cpu_s"):
            fit = linear_fit([r for r in data if "error" not in r], key)
            if fit:
                print(
                    f"{label:<10} {key:<7} {fit['slope']:.4f} s/subject, intercept "
                    f"{fit['intercept']:.1f} s, R^2 {fit['r2']:.4f}"
                )
    at_664 = [r for r in rows if r["subjects"] == 664 and "error" not in r]
    if at_664:
        verdict = "met" if at_664[0]["wall_s"] <= 20 else "not met"
        print(f"goal (<= 20 s at 664 subjects on 2 cores): {verdict} ({at_664[0]['wall_s']:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument(
        "--save-reference", action="store_true", help="write this run to --reference"
    )
    parser.add_argument("--subjects", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--config", type=Path, default=CONFIG, help="scenario on config.yaml")
    parser.add_argument("--workflow", type=Path, default=REPO, help="checkout to dry-run")
    args = parser.parse_args()
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    config = yaml.safe_load(args.config.read_text()) or {}
    rows = []
    for n in args.subjects:
        rows.append(dry_run(args.workflow, config, n))
        print(json.dumps(rows[-1]), flush=True)
    loads = ", ".join(f"{r['subjects']}: {r.get('load_1min_before', 0):.2f}" for r in rows)
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; load average before each run: {loads}")
    print_table(rows, reference)
    if args.save_reference:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "config": str(
                args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config
            ),
            "cpus": len(os.sched_getaffinity(0)),
            "rows": rows,
        }
        args.reference.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nreference written: {args.reference}")


if __name__ == "__main__":
    main()
