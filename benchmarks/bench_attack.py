"""Does the refacing attack work? The acceptance figures of a finished run, beside a reference.

Reads what a run wrote (default ``results/``; ``make demo`` first) and prints, for every test
subject and face-removing defacer refaced by the DPM cascade (quickshear and facemask by
default):

- the face MASD (mm) of the defaced and of the DPM-refaced image to the original, in the
  paper's direction and symmetric (``results/metrics/face_metrics.tsv``), and their ratio;
- tissue in air: the head volume inside the generated region (``*_desc-dpm*generated_mask``)
  of the refaced image against the original's there (``head_mask`` of each; the original's
  from the prepare stage), as ``refaced / original``;
- per test set and defacer, the mean ratio;
- the models' validation verdicts (``results/reface/validation/*_verdict.json``) and the
  seconds of every refacing job (Snakemake's benchmark files), beside the
  ``bench_metrics.py`` calibration row where ``--calibrate`` asks for it.

The criteria of a working attack: every subject's DPM MASD below
its defaced MASD in both directions, each mean ratio at most 0.5, and every volume ratio within
0.75-1.25. The exit status is 0 when all hold, 1 otherwise.

    python benchmarks/bench_attack.py [--results results] [--defacers quickshear facemask]
                                      [--save-reference] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference" / "attack.json"
#: criteria of point 1 of the issue
MAX_MEAN_RATIO = 0.5
VOLUME_RANGE = (0.75, 1.25)


def _rows(results: Path, defacers: list[str]) -> pd.DataFrame:
    table = pd.read_csv(results / "metrics" / "face_metrics.tsv", sep="\t", na_values="n/a")
    table = table[table["defacer"].isin(defacers)]
    wide = table.pivot_table(
        index=["test_set", "subject", "defacer"],
        columns="image_type",
        values=["masd_mm", "masd_symmetric_mm"],
    )
    out = pd.DataFrame(index=wide.index)
    for metric in ("masd_mm", "masd_symmetric_mm"):
        out[f"{metric}_defaced"] = wide[(metric, "defaced")]
        out[f"{metric}_dpm"] = wide.get((metric, "dpm_refaced"), np.nan)
        out[f"{metric}_ratio"] = out[f"{metric}_dpm"] / out[f"{metric}_defaced"]
    return out.reset_index()


def _volume_ratio(results: Path, subject: str, defacer: str) -> float:
    """Head volume of the refaced image inside its generated region over the original's."""
    import nibabel as nib

    from defaceaudit import paths
    from defaceaudit.imaging.masks import head_mask
    from defaceaudit.imaging.nifti import voxel_sizes_mm

    def path(p: str) -> Path:
        return results / Path(p).relative_to(paths.RESULTS)

    files = paths.refaced_files(defacer, subject)
    refaced = nib.as_closest_canonical(nib.load(path(files["t1w"])))
    generated = np.asarray(nib.as_closest_canonical(nib.load(path(files["removed"]))).dataobj, bool)
    prepared = path(paths.stage_file("prepare", subject, "head", "mask"))
    original_head = np.asarray(nib.as_closest_canonical(nib.load(prepared)).dataobj, bool)
    head = head_mask(np.asarray(refaced.dataobj, np.float32), voxel_sizes_mm(refaced.affine))
    truth = int((original_head & generated).sum())
    return float((head & generated).sum()) / truth if truth else math.nan


def _job_seconds(results: Path) -> dict[str, float]:
    """Wall seconds of the refacing jobs, summed per rule (Snakemake's benchmark files)."""
    seconds: dict[str, float] = {}
    for rule in ("train_stage1", "train_stage2", "validate_refacing", "sample_refaced"):
        for tsv in (results / "benchmarks" / rule).glob("*.tsv"):
            seconds[rule] = seconds.get(rule, 0.0) + float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
    return seconds


def measure(results: Path, defacers: list[str]) -> dict:
    rows = _rows(results, defacers)
    rows["volume_ratio"] = [
        _volume_ratio(results, s, d) for s, d in zip(rows["subject"], rows["defacer"], strict=True)
    ]
    means = (
        rows.groupby(["test_set", "defacer"])[["masd_mm_ratio", "masd_symmetric_mm_ratio"]]
        .mean()
        .reset_index()
    )
    verdicts = {
        p.name.removesuffix("_verdict.json"): json.loads(p.read_text())
        for p in sorted((results / "reface" / "validation").glob("*_verdict.json"))
    }
    below = bool((rows["masd_mm_ratio"] < 1).all() and (rows["masd_symmetric_mm_ratio"] < 1).all())
    halved = bool(
        (means[["masd_mm_ratio", "masd_symmetric_mm_ratio"]] <= MAX_MEAN_RATIO).all().all()
    )
    volume = bool(rows["volume_ratio"].between(*VOLUME_RANGE).all())
    groups = []
    for (test_set, defacer), group in rows.groupby(["test_set", "defacer"]):
        mean = group[["masd_mm_ratio", "masd_symmetric_mm_ratio"]].mean()
        groups.append(
            {
                "test_set": test_set,
                "defacer": defacer,
                "every_dpm_below_defaced": bool(
                    (group[["masd_mm_ratio", "masd_symmetric_mm_ratio"]] < 1).all().all()
                ),
                "mean_ratio_at_most_half": bool((mean <= MAX_MEAN_RATIO).all()),
                "volume_within_25_percent": bool(
                    group["volume_ratio"].between(*VOLUME_RANGE).all()
                ),
            }
        )
    return {
        "per_group": groups,
        "rows": rows.round(4).to_dict(orient="records"),
        "means": means.round(4).to_dict(orient="records"),
        "verdicts": {m: {"converged": v.get("converged")} for m, v in verdicts.items()},
        "job_seconds": {k: round(v, 1) for k, v in _job_seconds(results).items()},
        "criteria": {
            "every_dpm_below_defaced": below,
            "mean_ratio_at_most_half": halved,
            "volume_within_25_percent": volume,
        },
    }


def _print(result: dict, reference: dict | None) -> None:
    rows = pd.DataFrame(result["rows"])
    print("Face MASD to the original (mm): defaced -> DPM-refaced, paper direction / symmetric")
    print(
        rows[
            [
                "test_set",
                "subject",
                "defacer",
                "masd_mm_defaced",
                "masd_mm_dpm",
                "masd_symmetric_mm_defaced",
                "masd_symmetric_mm_dpm",
                "volume_ratio",
            ]
        ].to_string(index=False, float_format=lambda v: f"{v:.2f}")
    )
    print("\nMean DPM / defaced MASD ratio per test set and defacer (goal <= 0.5):")
    means = pd.DataFrame(result["means"])
    if reference is not None:
        ref = pd.DataFrame(reference["means"])
        means = means.merge(
            ref, on=["test_set", "defacer"], how="left", suffixes=("", "_reference")
        )
    print(means.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nValidation verdicts:", result["verdicts"])
    print("Refacing job seconds:", result["job_seconds"])
    if reference is not None:
        print("  reference:", reference.get("job_seconds"))
    print("\nCriteria per test set and defacer:")
    print(pd.DataFrame(result["per_group"]).to_string(index=False))
    print("Criteria, all together:", result["criteria"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--defacers", nargs="+", default=["quickshear", "facemask"])
    parser.add_argument("--save-reference", action="store_true")
    parser.add_argument("--json", action="store_true", help="last line: the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args.results, args.defacers)
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else None
    _print(result, reference)
    if args.save_reference:
        REFERENCE.write_text(json.dumps(result, indent=1) + "\n")
        print(f"saved {REFERENCE}")
    if args.json:
        print(json.dumps(result))
    return 0 if all(result["criteria"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
