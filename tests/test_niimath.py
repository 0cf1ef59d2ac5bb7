"""niimath's -deface, the real binary from the niimath wheel, on tiny synthetic heads."""

import nibabel as nib
import numpy as np
import pytest
from helpers import dice, expected_region, subject_of, world
from synthetic import synthetic_head

from defaceaudit.deface.niimath import (
    METHOD,
    deface_niimath,
    niimath_command,
    niimath_version,
)
from defaceaudit.deface.run import run_native


@pytest.fixture(scope="module")
def template_files(tmp_path_factory):
    """The synthetic template head and its face mask (0 = remove where y > 80, z < 0 mm)."""
    folder = tmp_path_factory.mktemp("niimath_template")
    img, brain = synthetic_head(seed=0)
    _, y, z = world(img)
    keep = ~((y > 80) & (z < 0))
    nib.save(img, folder / "template.nii.gz")
    nib.save(nib.Nifti1Image(keep.astype(np.float32), img.affine), folder / "facemask.nii.gz")
    return img, brain, folder / "template.nii.gz", folder / "facemask.nii.gz"


def test_command_is_niimaths_documented_form():
    assert niimath_command("in.nii.gz", "t.nii.gz", "m.nii.gz", "out.nii.gz") == [
        "niimath",
        "in.nii.gz",
        "-deface",
        "t.nii.gz",
        "m.nii.gz",
        "out.nii.gz",
    ]
    # -p is an operation of the chain: after the input, before the operation it governs
    args = niimath_command("in.nii.gz", "t.nii.gz", "m.nii.gz", "o.nii.gz", threads=2)
    assert args[1:4] == ["in.nii.gz", "-p", "2"] and args[4] == "-deface"
    with pytest.raises(ValueError):
        niimath_command("a", "b", "c", "d", threads=0)


def test_version_names_the_wheel_and_the_binary():
    version = niimath_version()
    assert version["package"] == "1.0.20261016"
    assert version["binary"].startswith("v1.0.20261016")


def test_niimath_removes_the_warped_face_region_and_keeps_the_brain(template_files):
    tpl, brain, template, facemask = template_files
    other, _ = synthetic_head(seed=5)  # same anatomy, other noise, moved rigidly
    subject, subject_brain, t = subject_of(other, brain)
    data = subject.get_fdata(dtype=np.float32)
    res = deface_niimath(subject, template, facemask, threads=1)
    assert res.defaced.shape == data.shape and res.defaced.dtype == np.float32
    region = expected_region(subject, t)
    assert dice(res.removed, region) > 0.9
    assert not (res.removed & subject_brain).any()
    assert np.array_equal(res.defaced[~res.removed], data[~res.removed])
    # removed voxels hold the image minimum (0 here)
    assert np.all(res.defaced[res.removed] == data.min())
    assert res.params["method"] == METHOD
    assert res.params["command"].startswith("niimath '<t1w>' -p 1 -deface ")
    assert len(res.params["template_sha256"]) == 64


def test_run_native_dispatches_niimath_with_the_template_files(template_files):
    tpl, brain, template, facemask = template_files
    res = run_native("niimath", tpl, brain, template=str(template), facemask=str(facemask))
    assert res.removed.any() and res.params["niimath"]["package"] == "1.0.20261016"


def test_a_failing_niimath_raises_with_its_last_line(template_files, tmp_path, monkeypatch):
    import defaceaudit.deface.niimath as module

    stub = tmp_path / "niimath"
    stub.write_text("#!/bin/sh\necho 'registration failed: no overlap' >&2\nexit 3\n")
    stub.chmod(0o755)
    monkeypatch.setattr(module, "niimath_binary", lambda: str(stub))
    tpl, _, template, facemask = template_files
    with pytest.raises(RuntimeError, match="niimath exited 3: registration failed: no overlap"):
        deface_niimath(tpl, template, facemask)
