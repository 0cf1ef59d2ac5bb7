"""QC of defaced images: known answers on synthetic and hand-built volumes."""

import math

import numpy as np
import pytest
from synthetic import synthetic_head

from defaceaudit.deface.qc import (
    face_region_box,
    facial_surface,
    qc_record,
    qc_summary,
    qc_table,
)
from defaceaudit.imaging.masks import head_mask


@pytest.fixture(scope="module")
def case():
    img, brain = synthetic_head()
    original = img.get_fdata()
    vox = tuple(float(v) for v in img.header.get_zooms()[:3])
    head = head_mask(original, vox)
    region = face_region_box(head, brain, img.affine)
    y = np.indices(original.shape)[1] * vox[1] + img.affine[1, 3]  # world y (mm) per voxel
    return original, brain, head, region, vox, y, img.affine


def test_face_region_box_definition(case):
    original, brain, head, region, vox, y, affine = case
    assert region.dtype == bool and region.shape == original.shape
    assert not (region & brain).any()
    z = np.indices(original.shape)[2] * vox[2] + affine[2, 3]
    y_front = y[brain].max()
    z_mid = z[brain].mean()
    assert region[(y > y_front - 20) & (z < z_mid + 10) & ~brain].all()
    assert not region[(y <= y_front - 20) | (z >= z_mid + 10)].any()
    # the nose tip (world y ~ 115 mm, z ~ -25 mm) lies on the facial surface
    surface = facial_surface(head, region)
    assert surface[(y > 100) & (np.abs(z + 25) < 10)].any()


def test_face_removed_only_is_success(case):
    original, brain, head, region, vox, _, _ = case
    defaced = original.copy()
    defaced[region] = 0.0
    rec = qc_record(original, defaced, brain, head, region, vox)
    assert rec["status"] == "success"
    assert rec["brain_altered_fraction"] == 0.0
    assert rec["face_surface_intact_fraction"] == 0.0
    assert rec["n_face_surface_voxels"] > 100
    assert not rec["identical"] and not rec["empty"]
    assert all(type(v) in (float, int, bool, str) for v in rec.values())


def test_cut_into_brain_is_failure_ii(case):
    original, brain, head, region, vox, y, _ = case
    defaced = original.copy()
    defaced[y > 40] = 0.0  # a shear plane 40 mm in front of the centre: through the frontal lobe
    rec = qc_record(original, defaced, brain, head, region, vox)
    assert rec["status"] == "failure_II"
    expected = np.count_nonzero(brain & (y > 40)) / np.count_nonzero(brain)
    assert rec["brain_altered_fraction"] == pytest.approx(expected)
    assert rec["brain_altered_ml"] == pytest.approx(np.count_nonzero(brain & (y > 40)) * 0.064)


def test_untouched_face_is_failure_i(case):
    original, brain, head, region, vox, y, _ = case
    defaced = original.copy()
    defaced[y < -84] = 0.0  # back of the scalp only (brain ends at y = -80 mm)
    rec = qc_record(original, defaced, brain, head, region, vox)
    assert rec["status"] == "failure_I"
    assert rec["brain_altered_fraction"] == 0.0
    assert rec["face_surface_intact_fraction"] == 1.0


def test_identical_and_empty_are_failures(case):
    original, brain, head, region, vox, _, _ = case
    rec = qc_record(original, original.astype(np.float32), brain, head, region, vox)
    assert rec["identical"] and rec["status"] == "failure"
    rec = qc_record(original, np.zeros_like(original), brain, head, region, vox)
    assert rec["empty"] and not rec["identical"] and rec["status"] == "failure"


def test_round_off_is_not_a_change(case):
    original, brain, head, region, vox, _, _ = case
    defaced = original.astype(np.float32).astype(np.float64)
    defaced[region] = 0.0
    assert qc_record(original, defaced, brain, head, region, vox)["status"] == "success"


def test_known_fractions_on_a_cube():
    shape = (10, 10, 10)
    head = np.zeros(shape, bool)
    head[2:8, 2:8, 2:8] = True  # 216 voxels; 6-eroded core [3:7]^3 = 64 -> surface 152
    brain = np.zeros(shape, bool)
    brain[4:6, 4:6, 4:6] = True  # 8 voxels
    original = np.where(head, 100.0, 0.0)
    region = np.ones(shape, bool)
    assert facial_surface(head, region).sum() == 152
    defaced = original.copy()
    defaced[2:8, 7, 2:8] = 0.0  # the anterior face of the cube: 36 surface voxels
    defaced[4, 4, 4] = 50.0  # one brain voxel of 8
    rec = qc_record(original, defaced, brain, head, region, (2.0, 2.0, 2.0))
    assert rec["face_surface_intact_fraction"] == pytest.approx(116 / 152)
    assert rec["brain_altered_fraction"] == pytest.approx(1 / 8)
    assert rec["brain_altered_ml"] == pytest.approx(0.008)
    assert rec["status"] == "failure_II"
    rec = qc_record(original, defaced, brain, head, region, (2, 2, 2), brain_threshold=0.2)
    assert rec["status"] == "failure_I"
    rec = qc_record(
        original, defaced, brain, head, region, (2, 2, 2), brain_threshold=0.2, face_threshold=0.8
    )
    assert rec["status"] == "success"
    # no facial surface in the region: fraction is NaN and cannot signal failure I
    rec = qc_record(
        original, defaced, brain, head, np.zeros(shape, bool), (2, 2, 2), brain_threshold=0.2
    )
    assert math.isnan(rec["face_surface_intact_fraction"]) and rec["status"] == "success"


def test_qc_record_rejects_bad_input():
    a = np.zeros((4, 4, 4))
    m = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="one shape"):
        qc_record(a, np.zeros((4, 4, 5)), m, m, m, (1, 1, 1))
    with pytest.raises(ValueError, match="brain mask is empty"):
        qc_record(a, a, np.zeros_like(m), m, m, (1, 1, 1))
    with pytest.raises(ValueError, match="three positive sizes"):
        qc_record(a, a, m, m, m, (1, 1))


def test_table_and_summary():
    records = [
        {"subject": "sub-01", "defacer": "pydeface", "status": "success"},
        {"subject": "sub-02", "defacer": "pydeface", "status": "success"},
        {"subject": "sub-01", "defacer": "quickshear", "status": "failure_II"},
        {"subject": "sub-02", "defacer": "quickshear", "status": "failure_I"},
        {"subject": "sub-01", "defacer": "mri_reface", "status": "job_failed", "error": "OOM"},
    ]
    table = qc_table(records)
    assert list(table.columns[:3]) == ["subject", "defacer", "status"]
    assert len(table) == 5
    summary = qc_summary(table)
    assert list(summary.columns) == ["pydeface", "quickshear", "mri_reface"]
    assert list(summary.index) == ["Success", "Failure I", "Failure II", "Job failed", "Total"]
    assert summary.loc["Success", "pydeface"] == 2
    assert summary.loc["Failure I", "quickshear"] == 1
    assert summary.loc["Failure II", "quickshear"] == 1
    assert summary.loc["Job failed", "mri_reface"] == 1
    assert summary.loc["Total"].tolist() == [2, 2, 1]
    # without failed jobs the optional rows are absent
    summary = qc_summary(qc_table(records[:4]))
    assert list(summary.index) == ["Success", "Failure I", "Failure II", "Total"]
    with pytest.raises(ValueError):
        qc_table([{"defacer": "x", "status": "fine"}])
    with pytest.raises(ValueError):
        qc_table([{"status": "success"}])
    assert list(qc_summary(qc_table([])).index) == ["Success", "Failure I", "Failure II", "Total"]


def test_failure_reason_points_at_the_step_that_failed(tmp_path):
    from defaceaudit.deface.qc_report import failure_reason

    own, prepare = tmp_path / "deface.log", tmp_path / "prepare.log"
    upstream = [str(prepare)]
    # the job never ran and nothing before it logged an error: point at every log
    assert failure_reason([str(own)], upstream) == f"not run; see {own}, {prepare}"
    prepare.write_text("2026 INFO start\n2026 ERROR /d/x.nii.gz: image is empty (all voxels 0)\n")
    assert failure_reason([str(own)], upstream) == (
        f"not run: /d/x.nii.gz: image is empty (all voxels 0) (see {prepare})"
    )
    own.write_text("2026 INFO start\n2026 ERROR quickshear failed on x: ValueError: no brain\n")
    assert failure_reason([str(own)], upstream) == "quickshear failed on x: ValueError: no brain"
    own.write_text("2026 INFO start\n")  # ran, said nothing useful
    assert failure_reason([str(own)], upstream) == f"no output; see {own}"
