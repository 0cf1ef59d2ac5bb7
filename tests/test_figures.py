"""Report figures: every plot writes a PNG for full data and for missing or empty data.

Synthetic tables and synthetic heads only (no real MRI, no real faces).
"""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from synthetic import synthetic_head

from defaceaudit.errors import DefaceAuditError
from defaceaudit.report.face_panels import draw_face_panel, frontal_rendering
from defaceaudit.report.figures import (
    plot_masd,
    plot_qc,
    plot_reidentification,
    plot_similarity,
    small_sample_note,
)
from defaceaudit.tables import read_tsv, write_tsv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFACERS = ("quickshear", "facemask", "skullstrip")
IMAGE_TYPES = ("defaced", "population_average", "dpm_refaced")
METRICS = ("masd_mm", "masd_symmetric_mm", "psnr_head_db", "psnr_face_db", "ssim_head", "ssim_face")


def _assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file


def _per_subject(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for test_set, n in (("internal_test", 5), ("external_test", 8)):
        for defacer in DEFACERS:
            for image_type in IMAGE_TYPES:
                for s in range(n):
                    row = {
                        "subject": f"sub-{s:02d}",
                        "test_set": test_set,
                        "defacer": defacer,
                        "image_type": image_type,
                        "image": f"{defacer}_{image_type}",
                        "n_face_voxels": 1000,
                    }
                    row.update({m: float(rng.uniform(0.2, 1.0)) for m in METRICS})
                    row["psnr_head_db"] *= 25
                    row["psnr_face_db"] *= 12
                    rows.append(row)
    return pd.DataFrame(rows)


def _summary(per_subject):
    long = per_subject.melt(
        id_vars=["test_set", "defacer", "image_type"], value_vars=list(METRICS), var_name="metric"
    )
    grouped = long.groupby(["test_set", "defacer", "metric", "image_type"], sort=False)["value"]
    out = grouped.agg(n="size", mean="mean").reset_index()
    out["ci_low"] = out["mean"] - 0.05
    out["ci_high"] = out["mean"] + 0.05
    return out


def _reid():
    rows = []
    for test_set, n in (("internal_test", 5), ("external_test", 8)):
        for defacer in DEFACERS:
            for i, image_type in enumerate(IMAGE_TYPES):
                r1 = 0.2 * (i + 1)
                rows.append(
                    {
                        "test_set": test_set,
                        "image_type": image_type,
                        "defacer": defacer,
                        "n_probes": n,
                        "n_gallery": n,
                        "rank1_rate": r1,
                        "rank1_ci_low": r1 - 0.1,
                        "rank1_ci_high": r1 + 0.1,
                        "rank5_rate": min(r1 + 0.2, 1.0),
                        "rank5_ci_low": r1,
                        "rank5_ci_high": 1.0,
                        "chance_rank1": 1 / n,
                        "chance_rank5": min(5 / n, 1.0),
                    }
                )
    return pd.DataFrame(rows)


def _qc():
    rows = []
    statuses = ("success", "failure_I", "failure_II", "job_failed")
    for d, defacer in enumerate(DEFACERS):
        for s in range(6):
            status = statuses[(s + d) % len(statuses)]
            rec = {"defacer": defacer, "subject": f"sub-{s:02d}", "status": status}
            if status != "job_failed":
                rec.update(
                    brain_altered_fraction=0.2 if status == "failure_II" else 0.001 * s,
                    face_surface_intact_fraction=0.9 if status == "failure_I" else 0.05 * s,
                    brain_threshold=0.01,
                    face_threshold=0.5,
                )
            rows.append(rec)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("plot", [plot_masd, plot_similarity])
def test_metric_plots_full_and_missing(plot, tmp_path):
    per_subject = _per_subject()
    summary = _summary(per_subject)
    plot(summary, tmp_path / "full.png", rows=per_subject)
    _assert_png(tmp_path / "full.png")
    # no population average, one test set, NaN intervals, a NaN mean, no per-subject points
    partial = summary[
        (summary["image_type"] != "population_average") & (summary["test_set"] == "internal_test")
    ].copy()
    partial.loc[partial.index[:3], ["ci_low", "ci_high"]] = np.nan
    partial.loc[partial.index[3], "mean"] = np.nan
    plot(partial, tmp_path / "partial.png")
    _assert_png(tmp_path / "partial.png")
    # an empty frame, with and without columns
    plot(summary.iloc[:0], tmp_path / "empty.png")
    _assert_png(tmp_path / "empty.png")
    plot(pd.DataFrame(), tmp_path / "bare.png", rows=pd.DataFrame())
    _assert_png(tmp_path / "bare.png")


def test_plots_read_tsv_with_na(tmp_path):
    summary = _summary(_per_subject())
    summary.loc[summary.index[:5], "ci_low"] = np.nan
    write_tsv(summary, tmp_path / "summary.tsv")
    assert "n/a" in (tmp_path / "summary.tsv").read_text()
    assert read_tsv(tmp_path / "summary.tsv", "summary")["ci_low"].isna().sum() == 5
    plot_masd(tmp_path / "summary.tsv", tmp_path / "masd.png")
    _assert_png(tmp_path / "masd.png")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(
        DefaceAuditError, match=r"empty.tsv: cannot read the summary \(the file is empty\)"
    ):
        read_tsv(tmp_path / "empty.tsv", "summary")  # a table that must have rows
    plot_similarity(tmp_path / "empty.tsv", tmp_path / "sim.png")
    _assert_png(tmp_path / "sim.png")


def test_metric_plot_rejects_wrong_table(tmp_path):
    with pytest.raises(ValueError, match="lacks columns"):
        plot_masd(pd.DataFrame({"x": [1]}), tmp_path / "bad.png")


def test_plot_qc(tmp_path):
    qc = _qc()
    plot_qc(qc, tmp_path / "qc.png")
    _assert_png(tmp_path / "qc.png")
    # the jittered strips are seeded: a rerun writes the same PNG, the global stream is untouched
    state = np.random.get_state()  # noqa: NPY002
    plot_qc(qc, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "qc.png").read_bytes()
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002
    # report labels instead of raw codes, no face column, only failed jobs, empty
    labelled = qc.replace({"status": {"success": "Success", "failure_I": "Failure I"}})
    plot_qc(labelled.drop(columns="face_surface_intact_fraction"), tmp_path / "labels.png")
    _assert_png(tmp_path / "labels.png")
    failed = pd.DataFrame(
        {"defacer": ["quickshear"], "subject": ["sub-01"], "status": "job_failed"}
    )
    plot_qc(failed, tmp_path / "failed.png")
    _assert_png(tmp_path / "failed.png")
    plot_qc(pd.DataFrame(columns=["subject", "defacer", "status"]), tmp_path / "empty.png")
    _assert_png(tmp_path / "empty.png")


def test_plot_reidentification(tmp_path):
    reid = _reid()
    plot_reidentification(reid, tmp_path / "reid.png")
    _assert_png(tmp_path / "reid.png")
    partial = reid[reid["image_type"] == "defaced"].drop(columns=["chance_rank5"]).copy()
    partial[["rank1_ci_low", "rank1_ci_high"]] = np.nan
    plot_reidentification(partial, tmp_path / "partial.png")
    _assert_png(tmp_path / "partial.png")
    by_image = reid.drop(columns="defacer").assign(image=reid["defacer"] + "_x")
    plot_reidentification(by_image, tmp_path / "by_image.png")
    _assert_png(tmp_path / "by_image.png")
    plot_reidentification(reid.iloc[:0], tmp_path / "empty.png")
    _assert_png(tmp_path / "empty.png")


def test_render_face_panel(tmp_path):
    img, _ = synthetic_head()
    original = tmp_path / "original.nii.gz"
    nib.save(img, original)
    data = img.get_fdata()
    y = np.indices(data.shape)[1] * 4.0 + img.affine[1, 3]
    defaced = nib.Nifti1Image(np.where(y > 70, 0.0, data).astype(np.float32), img.affine)
    defaced.set_qform(img.affine, code=1)
    defaced.set_sform(img.affine, code=1)
    defaced_path = tmp_path / "defaced.nii.gz"
    nib.save(defaced, defaced_path)

    image, extent = frontal_rendering(original)
    assert image.shape == (data.shape[2], data.shape[0])  # [Z, X]: superior rows, x columns
    assert np.isnan(image[-1, 0]) and np.isfinite(image[image.shape[0] // 2, image.shape[1] // 2])
    assert extent == (data.shape[0] * 4.0, 0.0, 0.0, data.shape[2] * 4.0)

    out = tmp_path / "panels" / "faces.png"
    rows = [
        ("quickshear", [("original", original), ("defaced\nMASD 5.5 mm", defaced_path)]),
        ("facemask", [("original", str(original)), ("population average", None)]),
        ("skullstrip", [("DPM-refaced", None)]),
    ]
    draw_face_panel(rows, out, title="synthetic subject")
    _assert_png(out)
    draw_face_panel([], tmp_path / "none.png")
    _assert_png(tmp_path / "none.png", min_bytes=1_000)


def test_small_sample_note_flags_cis_on_fewer_than_ten_subjects():
    assert small_sample_note(pd.Series([4, 6, 12])) == (
        "bars over fewer than 10 subjects (here down to n = 4): percentile CIs too narrow, "
        "read them as rough ranges"
    )
    assert small_sample_note(pd.Series([10, 469, np.nan])) is None
    assert small_sample_note(pd.Series([1, 0])) is None  # no interval at all: nothing to flag
    assert small_sample_note(pd.Series(dtype=float)) is None
