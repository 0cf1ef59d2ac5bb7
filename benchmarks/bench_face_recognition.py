"""Seconds per subject of face-recognition re-identification: rendering and embedding.

    python benchmarks/bench_face_recognition.py [--results DIR] [--subject ID]
        [--reference benchmarks/reference/face_recognition.json] [--save FILE]

Rows (each in a fresh subprocess on one thread, as the workflow runs the jobs):

* ``baseline``: Python with the package's face-recognition modules and dlib imported, nothing
  run (its seconds are the import time, its memory the floor);
* ``synthetic 3mm render``: one synthetic head (``tests/synthetic_faces.py``, 3 mm voxels)
  rendered in the five default views
  (:func:`defaceaudit.imaging.face_views.render_views`, head mask included): seconds per image;
* ``synthetic 3mm embed``: dlib's detector, landmarks and ResNet embedding on those five views
  (:meth:`defaceaudit.metrics.recognizer.FaceRecognizer.find`), the models loaded once before
  the clock starts: seconds per image;
* ``demo subject``: with a finished demo under ``--results`` (default ``results/``), one test
  subject (``--subject``, default the first with a gallery image) through the workflow's two
  per-subject jobs, :func:`~defaceaudit.metrics.face_recognition.render_face_views` and
  :func:`~defaceaudit.metrics.face_recognition.embed_face_views` (models loaded), over all its
  images (original, gallery, every defaced, population-average and DPM-refaced image that
  exists): seconds per subject, with the number of images and how many had a face. Real faces:
  the renderings go to a temporary folder and are deleted.

The goal: at most about 2 s per face and view on 2 cores (the issue), so under 10 s per image of
five views. Printed beside a reference run (the committed JSON of an earlier run);
``--save FILE`` merges this run's rows into FILE. Times depend on the machine: quote them with
the calibration row of ``python benchmarks/bench_metrics.py --rows defaceaudit`` (its ratio to
``benchmarks/reference/metrics.json``), run on the same machine.
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

ROOT = Path(__file__).resolve().parents[1]
VOXEL_MM = 3.0


def _memory() -> dict:
    return {
        "peak_mb": benchlib.host_peak_mb(),
        "load_average": round(os.getloadavg()[0], 2),
        "device": "cpu",
    }


def _demo_images(results: Path, subject: str | None) -> tuple[str, dict[str, str]] | None:
    """One demo test subject's images (label -> path) in a finished run under ``results``."""
    import pandas as pd

    table = results / "cohort" / "subjects.tsv"
    if not table.exists():
        return None
    cohort = pd.read_csv(table, sep="\t", keep_default_na=False)
    if "gallery_t1w" not in cohort.columns:
        return None
    rows = cohort[(cohort["gallery_t1w"] != "") & cohort["split"].str.endswith("_test")]
    if subject is not None:
        rows = rows[rows["subject"] == subject]
    if rows.empty:
        return None
    row = rows.iloc[0]
    s = row["subject"]
    base = results.parent
    images = {
        "original": results / f"prepare/sub-{s}/anat/sub-{s}_desc-prepared_T1w.nii.gz",
        "gallery": base / row["gallery_t1w"],
    }
    for folder in sorted((results / "deface").glob(f"*/sub-{s}/anat")):
        defacer = folder.parts[-3]
        kind = "population_average" if defacer in ("avgface", "mri_reface") else "defaced"
        images[f"{kind}__{defacer}"] = next(folder.glob("*_T1w.nii.gz"), None)
    for folder in sorted((results / "reface" / "dpm").glob(f"*/sub-{s}/anat")):
        images[f"dpm_refaced__dpm_{folder.parts[-3]}"] = next(folder.glob("*_T1w.nii.gz"), None)
    return s, {k: str(v) for k, v in images.items() if v is not None and Path(v).exists()}


def child(spec: dict) -> dict:
    start = time.perf_counter()
    import dlib  # noqa: F401  (the baseline's import cost)
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from defaceaudit.imaging.face_views import DEFAULT_VIEWS, render_views
    from defaceaudit.metrics import face_recognition as fr
    from defaceaudit.metrics.recognizer import RecognizerSettings, load_recognizer

    if spec["case"] == "baseline":
        return {"seconds": time.perf_counter() - start}
    if spec["case"] in ("render", "embed"):
        from synthetic_faces import face_head

        img = face_head(voxel_mm=VOXEL_MM)
        data = np.asarray(img.dataobj, dtype=np.float32)
        t0 = time.perf_counter()
        views = render_views(data, img.affine, DEFAULT_VIEWS)
        render_s = time.perf_counter() - t0
        if spec["case"] == "render":
            return {"seconds": render_s, "views": len(views), "grid": list(data.shape)}
        recognizer = load_recognizer(RecognizerSettings())
        t0 = time.perf_counter()
        found = sum(recognizer.find(image) is not None for image in views.values())
        return {"seconds": time.perf_counter() - t0, "views": len(views), "faces": found}
    # one demo subject through the two per-subject jobs' functions
    subject, images = _demo_images(Path(spec["results"]), spec.get("subject"))
    with tempfile.TemporaryDirectory() as tmp:
        renderings, embeddings = Path(tmp) / "faces.npz", Path(tmp) / "embeddings.npz"
        t0 = time.perf_counter()
        fr.render_face_views(images, renderings)
        render_s = time.perf_counter() - t0
        found = fr.embed_face_views(renderings, embeddings, RecognizerSettings())
        total = time.perf_counter() - t0
    return {
        "seconds": total,
        "render_seconds": render_s,
        "subject": subject,
        "images": len(images),
        "views": len(DEFAULT_VIEWS),
        "images_with_face": sum(n > 0 for n in found.values()),
    }


def child_main(arg: str) -> None:
    import logging

    logging.disable(logging.INFO)
    spec = json.loads(arg)
    malloc = benchlib.job_allocator()
    row = child(spec)
    row.update(_memory(), malloc=malloc)
    print(json.dumps(row))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path(__file__).parent / "reference" / "face_recognition.json",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--subject", default=None)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    threads = benchlib.rule_threads("render_face_views")
    cases = [
        ("baseline", {"case": "baseline", "threads": threads}),
        ("synthetic 3mm render (5 views), per image", {"case": "render", "threads": threads}),
        ("synthetic 3mm embed (5 views), per image", {"case": "embed", "threads": threads}),
    ]
    demo = _demo_images(args.results.resolve(), args.subject)
    if demo is None:
        print(f"no finished demo under {args.results}: the demo row is left out")
    else:
        spec = {"case": "demo", "results": str(args.results.resolve()), "subject": demo[0]}
        cases.append(("demo subject render+embed, per subject", {**spec, "threads": threads}))
    reference = benchlib.load_reference(args.reference)
    results = {name: benchlib.run_child(__file__, spec) for name, spec in cases}
    width = 44
    print(benchlib.table_header(width))
    for key, row in results.items():
        print(benchlib.table_row(key, row, reference, width))
    row = results.get("demo subject render+embed, per subject", {})
    if "images" in row:
        per_view = row["seconds"] / (row["images"] * row["views"])
        print(
            f"\ndemo sub-{row['subject']}: {row['images']} images x {row['views']} views, a face "
            f"in {row['images_with_face']} images; {row['seconds']:.1f} s per subject "
            f"(render {row['render_seconds']:.1f} s), {per_view:.2f} s per face and view"
        )
    print(
        "\nCalibrate this machine: python benchmarks/bench_metrics.py --rows defaceaudit, and "
        "quote its defaceaudit row's ratio to benchmarks/reference/metrics.json beside these."
    )
    if args.save:
        benchlib.save_merged(args.save, results)


if __name__ == "__main__":
    main()
