"""What the torch benchmarks share: a child process per case, its peak memory, the side-by-side
table against a reference run, and the merged reference file.

Each case runs in a fresh interpreter (``<script> --child <json spec>``) so that its peak
resident memory (VmHWM, not inherited across exec, unlike ``ru_maxrss``) is its own. The child
prints one JSON object as its last stdout line; a failed child becomes ``{"error": last line}``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

NAN = float("nan")


def import_torch(bench: str, module: str, hint: str, gpu: bool, also: tuple[str, ...] = ()):
    """Import torch, ``module`` (the package part a benchmark needs, e.g. MONAI behind it) and
    the modules ``also`` (what those import only when called, such as MONAI's einops) and
    return torch; exit 2 with a message naming ``bench`` when one is missing (``hint`` says what
    to install), or when ``gpu`` is asked for and no CUDA device is available."""
    import importlib

    try:
        import torch

        for name in (module, *also):
            importlib.import_module(name)
    except ImportError as err:
        print(f"{bench}: {err}; {hint}", file=sys.stderr)
        sys.exit(2)
    if gpu and not torch.cuda.is_available():
        print(
            f"{bench}: --gpu needs a CUDA device and none is available "
            f"(torch {torch.__version__}); run without --gpu for the CPU benchmark",
            file=sys.stderr,
        )
        sys.exit(2)
    return torch


def host_peak_mb() -> float:
    """Peak resident memory of this process (VmHWM, MiB)."""
    with open("/proc/self/status") as status:
        kib = [line for line in status if line.startswith("VmHWM")][0].split()[1]
    return int(kib) / 1024


def job_allocator() -> str:
    """Set up this child's memory allocator as a workflow job's is
    (:func:`defaceaudit.allocator.keep_freed_memory`; ``DEFACEAUDIT_MALLOC_TUNING=0`` keeps
    glibc's defaults, to compare): ``"tuned"`` or ``"default"``, recorded in the row."""
    from defaceaudit.allocator import keep_freed_memory

    return "tuned" if keep_freed_memory() else "default"


def memory_fields(cuda: bool) -> dict:
    """``peak_mb`` (CUDA max allocated on a GPU, else the host's), on a GPU also
    ``gpu_reserved_mb`` (the caching allocator's peak reserve: what the process held from the
    device, fragmentation included), ``host_peak_mb``, the load average (other work on the
    machine inflates every time) and the device name."""
    import torch

    host = host_peak_mb()
    fields = {
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else host,
        "host_peak_mb": host,
        "load_average": round(os.getloadavg()[0], 2),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }
    if cuda:
        fields["gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return fields


@functools.cache
def declared_threads() -> dict[str, int]:
    """Rule -> the ``threads:`` it declares in rules/*.smk (1 where it declares none; a
    dry-run's job listing does not print threads), read once. A ``threads:`` that is not a
    plain number raises ValueError rather than counting as 1. tests/slurm/test_profile.py
    checks the profile's CPUs per GPU against these."""
    import re

    threads = {}
    for path in sorted((Path(__file__).resolve().parents[1] / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.M):
            if name := re.match(r"rule (\w+):", block):
                found = re.search(r"^    threads:\s*(.*)$", block, re.M)
                if found and not found[1].strip().isdigit():
                    raise ValueError(f"{path}: rule {name[1]} threads {found[1]!r} is no number")
                threads[name[1]] = int(found[1]) if found else 1
    return threads


def rule_threads(rule: str) -> int:
    """The threads a workflow rule declares (:func:`declared_threads`). A case that stands for
    a rule's job runs on that many threads, as Snakemake runs the job (it sets
    ``OMP_NUM_THREADS``, and so torch's thread count, to the rule's threads)."""
    threads = declared_threads()
    if rule not in threads:
        raise KeyError(f"no rule {rule} in rules/*.smk")
    return threads[rule]


#: seconds one case may run before it is reported as failed (a hung child must not hang the run)
CHILD_TIMEOUT_S = 3600


def run_child(
    script: str | Path, spec: dict, error_key: str | None = None, timeout: float = CHILD_TIMEOUT_S
) -> dict:
    """Run ``script --child spec`` with the repository's ``src`` importable (and, when ``spec``
    has ``threads``, ``OMP_NUM_THREADS`` set to them, as Snakemake sets it for a job); returns
    the parsed last stdout line, or ``{"error": ...}`` (nested under ``error_key`` when given,
    for children that return several rows) when it fails or outlives ``timeout`` seconds."""
    src = Path(__file__).resolve().parents[1] / "src"
    paths = [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    if "threads" in spec:
        env["OMP_NUM_THREADS"] = str(int(spec["threads"]))
    try:
        done = subprocess.run(
            [sys.executable, str(script), "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        error = {"error": f"timed out after {timeout:.0f} s"}
        return error if error_key is None else {error_key: error}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        error = {"error": lines[-1]}
        return error if error_key is None else {error_key: error}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table_header(width: int) -> str:
    return f"{'case':<{width}} {'seconds':>9} {'peak MB':>9} | {'ref s':>8} {'ref MB':>8}"


def table_row(key: str, row: dict, reference: dict, width: int) -> str:
    """One line: this run's seconds and peak MB beside the reference run's (nan if absent)."""
    if "error" in row:
        return f"{key:<{width}} failed: {row['error'][:120]}"
    ref = reference.get(key, {})
    return (
        f"{key:<{width}} {row['seconds']:>9.2f} {row['peak_mb']:>9.0f} | "
        f"{ref.get('seconds', NAN):>8.2f} {ref.get('peak_mb', NAN):>8.0f}"
    )


def load_reference(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def provenance() -> dict:
    """Where a reference run came from: the commit, the date, the machine and the versions."""
    import platform
    import time

    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line for line in lines if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else ""
    return {
        "commit": commit or "unknown",
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def save_merged(path: Path, results: dict) -> None:
    """Write ``results`` into the JSON at ``path``, keeping its other cases (e.g. GPU rows) and
    never replacing a good row with a failed one; each saved row's ``_meta`` records the run
    it came from (rows of other runs keep theirs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = provenance()
    good = {k: {**v, "_meta": meta} for k, v in results.items() if "error" not in v}
    failed = sorted(set(results) - set(good))
    if failed:
        print(f"not saved (failed): {', '.join(failed)}", file=sys.stderr)
    merged = load_reference(path)
    merged.update(good)
    path.write_text(json.dumps(merged, indent=2, allow_nan=False) + "\n")
