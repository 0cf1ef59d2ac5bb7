"""Where a finished run's time went: wall and CPU seconds per rule, summed over its jobs.

Reads Snakemake's benchmark files (``results/benchmarks/<rule>/*.tsv``, one per job of every
rule with a ``benchmark:``) and prints one line per rule, largest first, with the total. Quote
these figures beside a calibration run on the same machine (``python
benchmarks/bench_metrics.py``: its ``defaceaudit`` row against the committed reference), since
machines differ in speed.

    python benchmarks/demo_times.py [--results results] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd


def rule_times(results: Path) -> pd.DataFrame:
    """``rule, jobs, wall_s, cpu_s`` per rule (sums over its jobs' last benchmark rows)."""
    rows = []
    for folder in sorted((results / "benchmarks").iterdir()):
        if not folder.is_dir():
            continue
        wall = cpu = 0.0
        jobs = 0
        for tsv in folder.glob("*.tsv"):
            last = pd.read_csv(tsv, sep="\t").iloc[-1]
            wall += float(last["s"])
            cpu += float(last.get("cpu_time", float("nan")))
            jobs += 1
        rows.append({"rule": folder.name, "jobs": jobs, "wall_s": wall, "cpu_s": cpu})
    frame = pd.DataFrame(rows, columns=["rule", "jobs", "wall_s", "cpu_s"])
    return frame.sort_values("wall_s", ascending=False, ignore_index=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--json", action="store_true", help="last line: the table as JSON")
    args = parser.parse_args(argv)
    if not (args.results / "benchmarks").is_dir():
        print(f"{args.results}/benchmarks: no benchmark files (run the pipeline first)")
        return 1
    times = rule_times(args.results)
    print(times.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(
        f"total: {times['jobs'].sum()} jobs, {times['wall_s'].sum():.0f} s of job wall time, "
        f"{times['cpu_s'].sum():.0f} s of job CPU"
    )
    if args.json:
        print(json.dumps(times.round(1).to_dict(orient="records")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
