"""Template face-mask defacing and average-face refacing on tiny synthetic heads."""

import nibabel as nib
import numpy as np
import pytest
from helpers import dice, expected_region, subject_of, world
from scipy import ndimage
from synthetic import synthetic_head

from defaceaudit.deface.avgface import average_head, reface_avgface
from defaceaudit.deface.facemask import METHOD, deface_facemask
from defaceaudit.errors import ImageError
from defaceaudit.imaging.register import resample


@pytest.fixture(scope="module")
def template():
    """Synthetic template head with nose, and a face mask: 0 (remove) where y > 80, z < 0 mm.

    (A y > 60, z < 10 box would cut into this synthetic brain, which reaches y = 79 mm at
    z = 10 mm; this box stays about 5 mm clear of it.)
    """
    img, brain = synthetic_head(seed=0)
    _, y, z = world(img)
    keep = ~((y > 80) & (z < 0))
    mask = nib.Nifti1Image(keep.astype(np.float32), img.affine)
    return img, brain, mask


def test_bad_average_head_subject_cancels_pending_registrations(template, tmp_path, monkeypatch):
    """A headless first subject ends the job before the queued subjects are registered."""
    import time

    import defaceaudit.deface.avgface as avgface

    calls = []

    def slow_identity(fixed, moving, **kwargs):
        calls.append(1)
        time.sleep(0.3)
        return np.eye(4)

    monkeypatch.setattr(avgface, "affine_register", slow_identity)
    tpl, _, _ = template
    headless = tmp_path / "sub-headless_T1w.nii.gz"
    negative = -np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(negative, tpl.affine), headless)
    with pytest.raises(ImageError, match="sub-headless_T1w.nii.gz: no head"):
        average_head([headless] + [tpl] * 6, tpl, seed=0, workers=1)
    # the worker may have started the next subject before the error reached the caller; the
    # other five never start (without cancellation all six would be registered)
    assert len(calls) <= 1


def test_deface_facemask_zeroes_face_keeps_brain(template):
    tpl, brain, mask = template
    other, _ = synthetic_head(seed=5)  # same anatomy, other noise
    subject, sbrain, t = subject_of(other, brain)
    data = subject.get_fdata(dtype=np.float32)
    res = deface_facemask(subject, tpl, mask, seed=0)
    assert res.defaced.shape == data.shape and res.defaced.dtype == np.float32
    assert res.removed.dtype == bool
    region = expected_region(subject, t)
    # Nose and facial scalp of the subject, one voxel (4 mm) clear of the box's faces.
    nose = ndimage.binary_erosion(region) & (data > 400)
    assert nose.sum() > 20
    assert np.all(res.defaced[nose] == 0)
    assert dice(res.removed, region & (data != 0)) > 0.9
    assert np.array_equal(res.defaced[~res.removed & (data != 0)], data[~res.removed & (data != 0)])
    assert not (res.removed & sbrain).any()
    assert np.array_equal(res.defaced[sbrain], data[sbrain])
    assert res.params["method"] == METHOD
    matrix = np.asarray(res.params["subject_to_template_ras_mm"])
    assert matrix.shape == (4, 4)
    assert np.abs(matrix[:3, 3] - t[:3, 3]).max() < 1.5
    assert len(res.params["template_sha256"]) == 64
    assert res.params["template_sha256"] != res.params["facemask_sha256"]


@pytest.mark.slow
def test_build_average_and_reface(template, tmp_path):
    tpl, brain, mask = template
    heads = []
    for k, shift in enumerate([(0, 0, 0), (4.0, -4.0, 2.0)]):
        img, _ = synthetic_head(seed=10 + k)
        moved, _, _ = subject_of(img, brain, angles=(0, 0, 3.0 * k), shift=shift)
        heads.append(moved)
    path = tmp_path / "sub-a_T1w.nii.gz"
    nib.save(heads[1], path)
    average = average_head([heads[0], path], tpl, seed=0)
    assert average.shape == tpl.shape  # template already 4 mm: no coarsening
    in_workers = average_head([heads[0], path], tpl, seed=0, workers=2)
    np.testing.assert_array_equal(in_workers.get_fdata(), average.get_fdata())
    headless = tmp_path / "sub-headless_T1w.nii.gz"
    negative = -np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(negative, heads[1].affine), headless)  # no head to find
    with pytest.raises(ImageError, match="sub-headless_T1w.nii.gz: no head"):
        average_head([headless, path, heads[0]], tpl, seed=0, workers=2)
    avg = average.get_fdata()
    assert average.get_data_dtype() == np.float32
    assert 0.5 < np.median(avg[brain]) < 1.5  # head-median units

    # A subject without a nose: refacing puts the average's nose in the face region.
    plain, _ = synthetic_head(seed=7, nose=False)
    subject, sbrain, t = subject_of(plain, brain, angles=(-3.0, 2.0, 0.0), shift=(-4, 3, 2))
    data = subject.get_fdata(dtype=np.float32)
    res = reface_avgface(subject, average, mask, seed=0)
    region = expected_region(subject, t)
    assert dice(res.removed, region) > 0.9
    changed = res.defaced != data
    assert not (changed & ~res.removed).any()  # only the face region is altered
    assert not (res.removed & sbrain).any()
    assert np.array_equal(res.defaced[sbrain], data[sbrain])
    # Core of the nose (template nose moved into subject space): was air, now tissue-bright.
    x, y, z = (t[:3, :3] @ world(subject).reshape(3, -1) + t[:3, 3:]).reshape(3, *data.shape)
    core = (x / 10) ** 2 + ((y - 105) / 12) ** 2 + ((z + 25) / 20) ** 2 <= 1
    assert core.sum() > 5
    assert np.mean(data[core]) < 100
    assert np.mean(res.defaced[core]) > 400
    scaled = res.params["intensity_scale"] * resample(
        average, subject, np.asarray(res.params["subject_to_average_ras_mm"])
    )
    inner = res.removed & (data > 0)
    assert np.abs(res.defaced - scaled)[inner].mean() < np.abs(data - scaled)[inner].mean()
    assert res.params["blend_mm"] > 0 and len(res.params["average_sha256"]) == 64
