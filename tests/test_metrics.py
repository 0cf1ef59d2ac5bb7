import numpy as np
import pytest

from defaceaudit.metrics.similarity import similarity
from defaceaudit.metrics.surface import FaceCrop, face_vertices, masd


def ball(radius_mm, shape=(120, 120, 120), spacing=1.0, centre=None):
    centre = np.asarray(shape) / 2 if centre is None else np.asarray(centre)
    grid = np.indices(shape).transpose(1, 2, 3, 0) + 0.5 - centre
    return np.linalg.norm(grid * spacing, axis=-1) <= radius_mm


@pytest.mark.parametrize(("r1", "r2"), [(40, 43), (45, 40), (38, 38)])
def test_concentric_spheres_give_the_radius_difference(r1, r2):
    result = masd(ball(r1), ball(r2), (1.0, 1.0, 1.0))
    assert result["masd_mm"] == pytest.approx(abs(r1 - r2), abs=0.1)
    assert result["masd_symmetric_mm"] == pytest.approx(abs(r1 - r2), abs=0.1)


def test_crop_caps_are_dropped():
    head = ball(40)
    crop = FaceCrop.from_head(head)
    verts = face_vertices(head, crop, (1.0, 1.0, 1.0))
    centre = np.asarray(head.shape) / 2
    radii = np.linalg.norm(verts + 0.5 - centre, axis=1)  # vertex frame: voxel centres at i
    assert np.abs(radii - 40).max() < 1.0  # every vertex is on the sphere, none on a flat cap
    assert verts[:, 1].min() >= crop.y_min + 0.5


def test_a_shifted_face_has_a_larger_distance_than_itself():
    head = ball(40)
    shifted = np.roll(head, 2, axis=1)
    assert masd(head, head, (1, 1, 1))["masd_mm"] == 0.0
    assert masd(head, shifted, (1, 1, 1))["masd_mm"] > 0.5


def test_identical_volumes_give_ssim_one_and_infinite_psnr():
    rng = np.random.default_rng(0)
    volume = rng.random((24, 24, 24)) * 100
    mask = ball(10, shape=(24, 24, 24))
    result = similarity(volume, volume.copy(), mask)
    assert result["ssim"] == pytest.approx(1.0)
    assert result["psnr_db"] == float("inf")


def test_known_gaussian_noise_gives_the_expected_psnr():
    rng = np.random.default_rng(1)
    shape = (40, 40, 40)
    original = np.full(shape, 50.0)
    original[0, 0, 0] = 100.0  # the 99.5th percentile inside the mask stays 50
    sigma = 0.05 * 50.0  # noise of 5 % of the normalisation scale
    other = original + rng.normal(0.0, sigma, shape)
    mask = np.zeros(shape, bool)
    mask[5:35, 5:35, 5:35] = True
    expected = 10 * np.log10(1 / 0.05**2)  # 26.02 dB
    assert similarity(original, other, mask)["psnr_db"] == pytest.approx(expected, abs=0.2)


def test_different_grids_are_refused():
    with pytest.raises(ValueError, match="grids differ"):
        masd(ball(10, (30, 30, 30)), ball(10, (30, 30, 31)), (1, 1, 1))


def test_cli_prints_json_and_refuses_two_grids(tmp_path, capsys):
    import json

    import nibabel as nib
    from synthetic import synthetic_head

    from defaceaudit.cli import main

    img, _ = synthetic_head()
    same, other = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    nib.save(img, same)
    nib.save(nib.Nifti1Image(img.get_fdata()[:-1], img.affine), other)
    assert main(["masd", str(same), str(same), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["masd_mm"] == 0.0
    assert main(["similarity", str(same), str(same), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ssim"] == pytest.approx(1.0)
    assert main(["masd", str(same), str(other)]) == 1
    error = capsys.readouterr().err
    assert "grid" in error and str(other) in error and "\n" not in error.strip()
