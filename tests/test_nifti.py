import gzip

import nibabel as nib
import numpy as np
import pytest
from synthetic import synthetic_head

from defaceaudit.errors import ImageError
from defaceaudit.imaging.nifti import (
    GRID_ATOL_MM,
    load_mask,
    load_t1w,
    require_grid,
    save_nifti,
    scrub_header,
    to_ras,
)


def save(tmp_path, data, affine=None, name="t1w.nii.gz", codes=1):
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=codes)
    img.set_sform(affine, code=codes)
    path = tmp_path / name
    nib.save(img, path)
    return path


def one_line_error(path, match):
    with pytest.raises(ImageError, match=match) as err:
        load_t1w(path)
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_valid_head_loads_as_3d(tmp_path, head_and_brain):
    img, _ = head_and_brain
    path = tmp_path / "head.nii.gz"
    nib.save(img, path)
    loaded = load_t1w(path)
    assert loaded.shape == img.shape
    assert np.allclose(loaded.get_fdata(), img.get_fdata())


def test_missing_file(tmp_path):
    one_line_error(tmp_path / "nothere.nii.gz", "file missing")


def test_truncated_and_random_bytes(tmp_path, head_and_brain):
    img, _ = head_and_brain
    good = tmp_path / "good.nii.gz"
    nib.save(img, good)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:4000])
    one_line_error(truncated, "not a readable NIfTI")
    noise = tmp_path / "noise.nii.gz"
    noise.write_bytes(gzip.compress(np.random.default_rng(0).bytes(5000)))
    one_line_error(noise, "not a readable NIfTI")


def test_4d_rejected_but_singleton_4d_accepted(tmp_path):
    data = np.random.default_rng(0).random((10, 10, 10, 3)).astype(np.float32)
    one_line_error(save(tmp_path, data, name="bold.nii.gz"), "4-D image with 3 volumes")
    single = load_t1w(save(tmp_path, data[..., :1], name="single.nii.gz"))
    assert single.shape == (10, 10, 10)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d * np.nan, "non-finite"),
        (lambda d: np.zeros_like(d), "image is empty"),
        (lambda d: d[:, :, :4], "shorter than 8"),
    ],
)
def test_bad_voxels(tmp_path, mutate, match):
    data = np.random.default_rng(1).random((10, 10, 10)).astype(np.float32)
    one_line_error(save(tmp_path, mutate(data)), match)


def test_bad_geometry(tmp_path):
    data = np.random.default_rng(2).random((10, 10, 10)).astype(np.float32)
    one_line_error(save(tmp_path, data, codes=0, name="a.nii.gz"), "no orientation")
    singular = np.diag([2.0, 2.0, 2.0, 1.0])
    singular[:3, 2] = singular[:3, 0]
    one_line_error(save(tmp_path, data, singular, name="b.nii.gz"), "singular affine")
    huge = np.diag([20.0, 20.0, 20.0, 1.0])
    one_line_error(save(tmp_path, data, huge, name="c.nii.gz"), "voxel sizes 20x20x20")
    sheared = np.diag([2.0, 2.0, 2.0, 1.0])
    sheared[0, 2] = 0.1  # z axis leans 2.86 degrees towards x
    one_line_error(save(tmp_path, data, sheared, name="d.nii.gz"), "sheared affine.*2.86 degrees")
    # an oblique acquisition (rotated, axes perpendicular) with header rounding is fine
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = np.diag([1.0, 1.2, 2.0, 1.0])
    oblique[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ oblique[:3, :3]
    oblique[:3, :3] = np.round(oblique[:3, :3], 5)
    assert load_t1w(save(tmp_path, data, oblique, name="e.nii.gz")).shape == (10, 10, 10)


def test_to_ras_keeps_world_coordinates():
    data = np.zeros((10, 12, 14), dtype=np.float32)
    data[2, 3, 4] = 1.0
    lia = np.array([[-1.0, 0, 0, 10], [0, 0, 1, -5], [0, -1, 0, 7], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, lia)
    ras = to_ras(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    world = nib.affines.apply_affine(lia, [2, 3, 4])
    marked = np.argwhere(ras.get_fdata() == 1.0)[0]
    assert np.allclose(nib.affines.apply_affine(ras.affine, marked), world)


def test_scrub_header_clears_free_text():
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    img.header["descrip"] = b"Jane Doe 1970-01-01"
    img.header["aux_file"] = b"jane"
    clean = scrub_header(img)
    assert clean.header["descrip"].item() == b""
    assert clean.header["aux_file"].item() == b""
    assert img.header["descrip"].item() != b""  # the input is not modified


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.nii.gz"

    def broken_save(img, path):
        with open(path, "wb") as half:
            half.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError):
        save_nifti(np.ones((8, 8, 8)), target, affine=np.eye(4))
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_load_mask_checks_the_grid(tmp_path):
    img, brain = synthetic_head()
    good = save(tmp_path, brain.astype(np.uint8), img.affine, name="m.nii.gz")
    assert np.array_equal(load_mask(good, img), brain)
    shifted = img.affine.copy()
    shifted[0, 3] += 4
    wrong = save(tmp_path, brain.astype(np.uint8), shifted, name="w.nii.gz")
    with pytest.raises(ImageError, match="mask is not on the voxel grid .*: affine differs"):
        load_mask(wrong, img)


def test_require_grid_names_both_files_and_what_differs():
    reference = nib.Nifti1Image(np.zeros((8, 9, 10), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    affine = reference.affine.copy()
    require_grid("a.nii.gz", (8, 9, 10), affine, reference, "ref.nii.gz")  # same grid
    affine[1, 3] += GRID_ATOL_MM / 2  # below the tolerance: still one grid
    require_grid("a.nii.gz", (8, 9, 10, 1), affine, reference, "ref.nii.gz")
    with pytest.raises(
        ImageError,
        match=r"^a.nii.gz: image is not on the voxel grid .*: shape \(8, 9, 11\), not \(8, 9, 10\)",
    ) as err:
        require_grid("a.nii.gz", (8, 9, 11), reference.affine, reference, "ref.nii.gz")
    assert "of ref.nii.gz" in str(err.value)
    affine[1, 3] += GRID_ATOL_MM  # 1.5 x the tolerance
    with pytest.raises(
        ImageError,
        match=r"mask is not on the voxel grid of ref.nii.gz: affine differs by up to 0.0015 mm; "
        r"fix it$",
    ):
        require_grid(
            "a.nii.gz", (8, 9, 10), affine, reference, "ref.nii.gz", what="mask", hint="fix it"
        )


def test_require_grid_tolerates_header_rounding_but_not_a_broken_affine():
    reference = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    reference.affine[:3, 3] = -128.0
    affine = reference.affine.copy()
    affine[0, 3] += GRID_ATOL_MM * 1.5  # within atol + 1e-5 x 128 mm, as np.allclose
    require_grid("a.nii.gz", (8, 8, 8), affine, reference, "ref.nii.gz")
    affine[0, 3] = np.nan
    with pytest.raises(ImageError, match="affine differs"):
        require_grid("a.nii.gz", (8, 8, 8), affine, reference, "ref.nii.gz")
