"""Workflow tests: dry-runs of config scenarios and tiny real runs of cohort and prepare."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import BIN, REPO, copy_run, job_counts, run_snakemake
from synthetic import synthetic_head

from defaceaudit import paths
from defaceaudit.imaging.masks import face_volume_ml

pytestmark = pytest.mark.workflow


def test_dry_run_default_config_has_a_job_per_subject(workdir):
    done = run_snakemake(workdir, "--dry-run")
    assert done.returncode == 0, done.stderr
    counts = job_counts(done.stdout)
    # config.yaml: 28 train + 4 internal + 4 external test subjects
    assert counts["prepare_subject"] == 36
    assert counts["synthesize_demo_subject"] == 36
    assert counts["fetch_demo_base"] == 3
    assert counts["write_demo_tables"] == 2
    for subject in ("tr01", "tr28", "in04", "ex04"):
        assert f"subject={subject}" in done.stdout
    # face metrics: 8 test subjects x 3 face-removing defacers (avgface is a column, not a row)
    assert counts["compute_face_metrics"] == 8 * 3
    assert counts["align_face_to_template"] == 8
    # re-identification: a second session of each test subject (the gallery), registered on
    # its own, and one face region; nothing per train subject
    assert counts["synthesize_demo_gallery"] == counts["align_gallery_face"] == 8
    assert counts["build_face_region"] == 1
    assert counts["render_face_panel"] == 4
    # refacing: two model pairs (face, skull-stripped), every test subject x row defacer
    assert counts["train_stage1"] == counts["train_stage2"] == 2
    assert counts["sample_refaced"] == 8 * 3
    for rule in ("aggregate_face_metrics", "reidentify_faces", "plot_face_figures"):
        assert counts[rule] == 1
    # radiodensity: every subject's crops; original + 4 defacers x 3 body parts
    assert counts["crop_radiodensity_face"] == 36
    assert counts["train_radiodensity"] == 5 * 3
    assert counts["radiodensity_targets"] == counts["evaluate_radiodensity"] == 1


def write_subject(folder: Path, name: str, kind: str = "good", seed: int = 0) -> tuple[Path, Path]:
    """A tiny synthetic head (4 mm) and its brain mask; ``kind`` breaks the image on purpose."""
    img, brain = synthetic_head(seed=seed)
    t1w, mask = folder / f"{name}_T1w.nii.gz", folder / f"{name}_mask.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), mask)
    if kind == "corrupt":
        t1w.write_bytes(b"\x1f\x8b\x08 this is not a NIfTI file")
    elif kind == "4d":
        data = np.stack([img.get_fdata()] * 3, axis=-1)
        nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), t1w)
    else:
        nib.save(img, t1w)
    return t1w, mask


def manifest_config(folder: Path, rows: list[dict]) -> dict:
    manifest = folder / "cohort.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    return {"input": {"source": "manifest", "manifest": str(manifest)}}


def test_subject_in_two_splits_stops_the_dag_with_one_line(workdir):
    t1w, _ = write_subject(workdir, "a")
    rows = [
        {"subject": "a", "t1w": str(t1w), "split": "train", "age": 30, "sex": "F"},
        {"subject": "a", "t1w": str(t1w), "split": "external_test", "age": 30, "sex": "F"},
    ]
    done = run_snakemake(workdir, "--dry-run", config=manifest_config(workdir, rows))
    assert done.returncode == 1
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if "two splits" in line]
    assert len(lines) == 1, output
    assert "subject a" in lines[0] and "cohort.tsv" in lines[0]


def test_bad_images_fail_alone_with_keep_going(workdir):
    rows = []
    for name, kind in (("good", "good"), ("broken", "corrupt"), ("movie", "4d")):
        t1w, mask = write_subject(workdir, name, kind)
        row = {"subject": name, "t1w": str(t1w), "split": "train", "age": 40, "sex": "M"}
        rows.append({**row, "brain_mask": str(mask)})
    config = manifest_config(workdir, rows)
    done = run_snakemake(workdir, "--cores", "2", "--keep-going", config=config)
    assert done.returncode == 1  # two jobs failed ...

    prepared = workdir / "results" / "prepare"
    good = sorted(p.name for p in (prepared / "sub-good" / "anat").iterdir())
    assert good == [
        "sub-good_desc-brain_mask.nii.gz",
        "sub-good_desc-head_mask.nii.gz",
        "sub-good_desc-prepared_T1w.json",
        "sub-good_desc-prepared_T1w.nii.gz",
    ]  # ... the good subject is complete
    for name, problem in (("broken", "not a readable NIfTI"), ("movie", "4-D image with 3")):
        assert not (prepared / f"sub-{name}").exists() or not any(
            (prepared / f"sub-{name}").rglob("*.nii.gz")
        )  # no partial output
        log = (workdir / "results" / "logs" / "prepare_subject" / f"{name}.log").read_text()
        errors = [line for line in log.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and problem in errors[0] and f"{name}_T1w.nii.gz" in errors[0]


@pytest.mark.network
def test_tiny_demo_run_builds_cohort_and_prepares_every_subject(tiny_demo_run, tmp_path):
    # the tiny run (helpers.TINY_DEMO_CONFIG) is shared with test_invalidation.py; this test
    # writes the report and reruns jobs below, so it works on its own copy
    done = tiny_demo_run.process
    assert done.returncode == 0, done.stderr[-3000:]
    workdir = copy_run(tiny_demo_run.path, tmp_path / "run")
    config = tiny_demo_run.config
    results = workdir / "results"

    cohort = pd.read_csv(results / "cohort" / "subjects.tsv", sep="\t")
    assert list(cohort["subject"]) == ["tr01", "tr02", "in01", "ex01"]
    assert cohort.groupby("subject")["split"].nunique().max() == 1  # splits disjoint

    for dataset, subjects in (("internal", ["tr01", "tr02", "in01"]), ("external", ["ex01"])):
        root = results / "demo" / "bids" / dataset
        participants = pd.read_csv(root / "participants.tsv", sep="\t")
        assert list(participants["participant_id"]) == [f"sub-{s}" for s in subjects]
        assert participants["age"].between(20, 80).all()
        assert set(participants["sex"]) <= {"M", "F"}
        ct = pd.read_csv(root / "phenotype" / "ct_muscle.tsv", sep="\t")
        assert ct.groupby("participant_id").size().between(1, 3).all()
        assert {"abdomen_hu", "thigh_hu", "shin_hu"} <= set(ct.columns)

    for subject in cohort["subject"]:
        anat = results / "prepare" / f"sub-{subject}" / "anat"
        t1w = nib.load(anat / f"sub-{subject}_desc-prepared_T1w.nii.gz")
        head = nib.load(anat / f"sub-{subject}_desc-head_mask.nii.gz").get_fdata() > 0
        brain = nib.load(anat / f"sub-{subject}_desc-brain_mask.nii.gz").get_fdata() > 0
        assert t1w.shape == (48, 68, 56)
        assert nib.aff2axcodes(t1w.affine) == ("R", "A", "S")
        assert 1.0 < brain.sum() * 64 / 1e6 < 2.0  # litres of brain at 4 mm voxels
        assert not (brain & ~head).sum() > 0.01 * brain.sum()
        assert face_volume_ml(head, brain, t1w.affine) > 50  # the face is present

    # every subject defaced by every native defacer, with sidecar, mask, QC row and rendering
    qc = pd.read_csv(results / "deface" / "qc_table.tsv", sep="\t")
    assert len(qc) == 4 * 4 and not (qc["status"] == "job_failed").any()
    assert (qc["brain_altered_fraction"] < 0.01).all()  # no defacer took brain
    for defacer in ("quickshear", "facemask", "avgface", "skullstrip"):
        for subject in cohort["subject"]:
            for path in paths.defaced_files(defacer, subject).values():
                assert (workdir / path).stat().st_size > 0, path

    # face metrics of every test subject x face-removing defacer x image type, with tables
    metrics = pd.read_csv(results / "metrics" / "face_metrics.tsv", sep="\t", na_values="n/a")
    assert len(metrics) == 2 * 3 * 3  # in01, ex01 x quickshear, facemask, skullstrip x 3 types
    assert set(metrics["image_type"]) == {"defaced", "population_average", "dpm_refaced"}
    assert metrics[["masd_mm", "ssim_head", "psnr_head_db"]].notna().all().all()
    defaced = metrics[metrics["image_type"] == "defaced"].set_index(["subject", "defacer"])
    average = metrics[metrics["image_type"] == "population_average"].set_index(
        ["subject", "defacer"]
    )
    assert (defaced["masd_mm"] > average["masd_mm"]).all()  # a removed face is further away
    for name in paths.FACE_TABLE_NAMES:
        assert "Internal (N=1)" in (results / "metrics" / f"{name}.md").read_text()
    table1 = pd.read_csv(results / "metrics" / "table1_masd.tsv", sep="\t", na_values="n/a")
    assert table1.filter(like="DPM").iloc[:, 0].notna().all()  # the DPM column is filled
    for subject in ("in01", "ex01"):
        for defacer in ("quickshear", "facemask", "skullstrip"):
            refaced = workdir / paths.refaced_files(defacer, subject)["t1w"]
            assert nib.load(refaced).shape == (48, 68, 56)
    # one subject per test split: too few gallery faces to rank, and the table says so
    reid = pd.read_csv(results / "metrics" / "reidentification.tsv", sep="\t")
    assert reid.empty and "chance_rank1" in reid.columns
    assert "at least 3 needed" in (results / "metrics" / "reidentification.md").read_text()
    for figure in paths.FIGURE_FILES.values():
        assert (workdir / figure).stat().st_size > 10_000, figure
    for subject in ("in01", "ex01"):
        assert (workdir / paths.face_panel_file(subject)).stat().st_size > 10_000
    report = run_snakemake(workdir, "--report", "results/report.html", config=config)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (results / "report.html").stat().st_size > 100_000

    # the same seed gives the same images
    before = nib.load(results / "demo/bids/internal/sub-tr01/anat/sub-tr01_T1w.nii.gz").get_fdata()
    again = run_snakemake(
        workdir,
        "--cores",
        "2",
        "--forcerun",
        "synthesize_demo_subject",
        "--until",
        "synthesize_demo_subject",
        config=config,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    after = nib.load(results / "demo/bids/internal/sub-tr01/anat/sub-tr01_T1w.nii.gz").get_fdata()
    assert np.array_equal(before, after)


def test_container_backends_dry_run_with_image_and_command_per_subject(workdir):
    shutil.copy2(REPO / "tests" / "configs" / "containers.yaml", workdir / "containers.yaml")
    done = run_snakemake(
        workdir, "--dry-run", "--printshellcmds", "--configfile", "containers.yaml"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scenario = yaml.safe_load((REPO / "tests" / "configs" / "containers.yaml").read_text())
    images = scenario["deface"]["containers"]
    commands = [line for line in done.stdout.splitlines() if line.startswith("Shell command:")]
    expected_tool = {
        "fsl_deface": "fsl_deface ",
        "mri_deface": "mri_deface ",
        "pydeface": "pydeface ",
        "quickshear": "quickshear ",
        "mri_reface": "run_mri_reface.sh ",
    }
    subjects = [f"tr{i:02d}" for i in range(1, 7)] + ["in01", "ex01"]
    for subject in subjects:
        prepared = f"results/prepare/sub-{subject}/anat/sub-{subject}_desc-prepared_T1w.nii.gz"
        for tool, call in expected_tool.items():
            mine = [c for c in commands if f"/{tool}/raw/sub-{subject}_T1w" in c]
            assert len(mine) == 1, (tool, subject)
            assert f"image: {images[tool]}" in mine[0]
            assert call in mine[0] and prepared in mine[0]
    counts = job_counts(done.stdout)
    assert counts["finalize_container_deface"] == len(subjects) * 5


def test_too_small_a_radiodensity_split_stops_the_dag_with_one_line(workdir):
    config = {
        "demo": {"n_train": 2, "n_internal_test": 1, "n_external_test": 1},
        "radiodensity": {"enabled": True},
    }
    done = run_snakemake(workdir, "--dry-run", config=config)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "train split" in line]
    assert len(lines) == 1 and "config radiodensity" in lines[0]
    assert "2 of the cohort's 4" in lines[0]


def test_impossible_backend_or_missing_image_is_a_clear_error(workdir):
    config = {"deface": {"defacers": ["mri_reface"]}}
    done = run_snakemake(workdir, "--dry-run", config=config)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "deface.containers.mri_reface: no image given" in output
    config = {"deface": {"defacers": ["fsl_deface"], "backends": {"fsl_deface": "native"}}}
    done = run_snakemake(workdir, "--dry-run", config=config)
    assert "fsl_deface has no native backend" in done.stdout + done.stderr


def test_failed_defacing_is_listed_in_the_qc_table(workdir):
    rows = []
    for name in ("good", "whole"):
        t1w, mask = write_subject(workdir, name, seed=1)
        if name == "whole":  # a "brain" mask covering everything: skull-stripping changes nothing
            nib.save(
                nib.Nifti1Image(np.ones(nib.load(mask).shape, np.uint8), nib.load(mask).affine),
                mask,
            )
        rows.append(
            {
                "subject": name,
                "t1w": str(t1w),
                "split": "train",
                "age": 50,
                "sex": "F",
                "brain_mask": str(mask),
            }
        )
    config = manifest_config(workdir, rows)
    config["deface"] = {"defacers": ["quickshear", "skullstrip"]}
    done = run_snakemake(workdir, "--cores", "2", "--keep-going", config=config)
    assert done.returncode == 1
    # the QC table's own rule could not run: the stand-in is apart from its output, which
    # Snakemake would otherwise take for up to date on the next run
    assert not (workdir / paths.QC_TABLE).exists()
    table = pd.read_csv(workdir / paths.partial_file(paths.QC_TABLE), sep="\t")
    failed = table[table["status"] == "job_failed"]
    # a brain mask over the whole field of view leaves both tools nothing to remove
    pairs = sorted(zip(failed["defacer"], failed["subject"], strict=True))
    assert pairs == [("quickshear", "whole"), ("skullstrip", "whole")]
    reasons = dict(zip(failed["defacer"], failed["error"], strict=True))
    assert "identical to its input" in reasons["skullstrip"]
    assert "quickshear failed on" in reasons["quickshear"] and "sub-whole" in reasons["quickshear"]
    good = table[(table["subject"] == "good")]
    assert set(good["defacer"]) == {"quickshear", "skullstrip"}
    assert (good["status"] != "job_failed").all()
    anat = workdir / "results" / "deface" / "skullstrip" / "sub-good" / "anat"
    sidecar = yaml.safe_load((anat / "sub-good_desc-skullstrip_T1w.json").read_text())
    assert sidecar["tool"] == "skullstrip" and sidecar["backend"] == "native"
    assert sidecar["seconds"] >= 0
    assert (
        workdir / "results/deface/skullstrip/sub-good/figures/sub-good_desc-skullstrip_qc.png"
    ).stat().st_size > 1000

    # leaving the broken subject out: the next run writes the real QC table and clears the
    # stand-ins
    config.update(manifest_config(workdir, rows[:1]))
    done = run_snakemake(workdir, "--cores", "2", config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(workdir / paths.QC_TABLE, sep="\t")
    assert set(table["subject"]) == {"good"} and (table["status"] != "job_failed").all()
    assert not (workdir / paths.PARTIAL).exists()


def test_killed_training_job_resumes_from_its_checkpoint(workdir):
    import signal
    import time

    rows = []
    for i, (name, split) in enumerate((("a", "train"), ("b", "train"), ("c", "internal_test"))):
        t1w, mask = write_subject(workdir, name, seed=i)
        row = {"subject": name, "t1w": str(t1w), "split": split, "age": 40, "sex": "F"}
        rows.append({**row, "brain_mask": str(mask)})
    config = manifest_config(workdir, rows)
    config["deface"] = {"defacers": ["quickshear"]}
    config["reface"] = {"stage1": {"training": {"steps": 400, "checkpoint_every": 5}}}
    target = paths.reface_checkpoint("face", 1)
    resume = workdir / f"{target}.resume.pt"
    (workdir / "test_config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(BIN / "snakemake"), target, "--cores", "1", "--configfile", "test_config.yaml"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    first = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not resume.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert resume.exists(), "no periodic checkpoint appeared"
    # the training job dies (a preempted GPU node): kill its process, not Snakemake
    killed = 0
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b".train_stage" in cmdline and os.getpgid(int(proc.name)) == first.pid:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (ValueError, OSError):
            continue
    assert killed >= 1
    assert first.wait(timeout=120) != 0  # Snakemake reports the failed job
    assert not (workdir / target).exists() and resume.exists()

    config["reface"]["stage1"]["training"]["steps"] = 20  # finish quickly this time
    done = run_snakemake(workdir, "--cores", "1", "--rerun-incomplete", target, config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (workdir / "results" / "logs" / "train_stage1" / "face.log").read_text()
    assert "resuming from" in log and "stage1.pt.resume.pt" in log
    assert (workdir / target).exists() and not resume.exists()
