import json

import nibabel as nib
import numpy as np
import pytest
from synthetic import synthetic_head

from defaceaudit.errors import ImageError
from defaceaudit.prepare.subject import prepare_subject


def lia_copy(img, data):
    """The same volume stored LIA (as FreeSurfer writes), same world coordinates."""
    ras_to_lia = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt("LIA")
    )
    out = nib.orientations.apply_orientation(data, ras_to_lia)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ras_to_lia, data.shape)
    return nib.Nifti1Image(out, affine)


def outputs_in(folder):
    return {
        "t1w": folder / "t.nii.gz",
        "head_mask": folder / "h.nii.gz",
        "brain_mask": folder / "b.nii.gz",
        "summary": folder / "t.json",
    }


def test_prepare_reorients_and_writes_everything(tmp_path):
    img, brain = synthetic_head()
    t1w, mask = tmp_path / "in_T1w.nii.gz", tmp_path / "in_mask.nii.gz"
    nib.save(lia_copy(img, img.get_fdata().astype(np.float32)), t1w)
    nib.save(lia_copy(img, brain.astype(np.uint8)), mask)
    out = outputs_in(tmp_path / "out")
    summary = prepare_subject(t1w, out, brain_mask_path=mask)
    prepared = nib.load(out["t1w"])
    assert nib.aff2axcodes(prepared.affine) == ("R", "A", "S")
    assert np.allclose(prepared.affine, img.affine)
    assert np.allclose(prepared.get_fdata(), img.get_fdata(), atol=1e-3)
    assert np.array_equal(nib.load(out["brain_mask"]).get_fdata() > 0, brain)
    head = nib.load(out["head_mask"]).get_fdata() > 0
    assert head[brain].mean() > 0.99
    assert summary["source_orientation"] == "LIA"
    assert json.loads(out["summary"].read_text())["brain_volume_ml"] == pytest.approx(
        brain.sum() * 64 / 1000, abs=0.1
    )


def test_mask_on_another_grid_leaves_nothing(tmp_path):
    img, brain = synthetic_head()
    t1w, mask = tmp_path / "in_T1w.nii.gz", tmp_path / "in_mask.nii.gz"
    nib.save(img, t1w)
    nib.save(nib.Nifti1Image(brain[:-2].astype(np.uint8), img.affine), mask)
    out = outputs_in(tmp_path / "out")
    with pytest.raises(ImageError, match=r"mask is not on the voxel grid .*: shape \(46, 60, 52\)"):
        prepare_subject(t1w, out, brain_mask_path=mask)
    assert not any(p.exists() for p in out.values())


def test_empty_brain_mask_is_refused(tmp_path):
    img, brain = synthetic_head()
    t1w, mask = tmp_path / "in_T1w.nii.gz", tmp_path / "in_mask.nii.gz"
    nib.save(img, t1w)
    nib.save(nib.Nifti1Image(np.zeros(brain.shape, np.uint8), img.affine), mask)
    with pytest.raises(ImageError, match="in_mask.nii.gz: brain mask of 0 mL"):
        prepare_subject(t1w, outputs_in(tmp_path / "out"), brain_mask_path=mask)


@pytest.mark.parametrize("failure", ["empty", "raises"])
def test_a_failed_robex_extraction_names_the_image_and_leaves_nothing(
    tmp_path, monkeypatch, failure
):
    from defaceaudit.prepare import subject as prepare

    def robex(img):
        if failure == "raises":
            raise RuntimeError("registration diverged")
        return np.zeros(img.shape, bool)

    monkeypatch.setattr(prepare, "robex_brain_mask", robex)
    img, _ = synthetic_head()
    t1w = tmp_path / "in_T1w.nii.gz"
    nib.save(img, t1w)
    out = outputs_in(tmp_path / "out")
    expected = {
        "empty": r"in_T1w.nii.gz \(ROBEX\): brain mask of 0 mL",
        "raises": r"in_T1w.nii.gz: ROBEX brain extraction failed \(RuntimeError: registration",
    }[failure]
    with pytest.raises(ImageError, match=expected):
        prepare_subject(t1w, out)
    assert not any(p.exists() for p in out.values())
