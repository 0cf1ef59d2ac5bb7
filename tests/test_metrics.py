import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import marching_cubes
from skimage.metrics import structural_similarity

from defaceaudit.metrics import similarity as similarity_module
from defaceaudit.metrics.similarity import normalise, similarity
from defaceaudit.metrics.surface import FaceCrop, face_vertices, inferior_slices, masd


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
    crop = FaceCrop.from_head(head, (1.0, 1.0, 1.0))
    verts = face_vertices(head, crop, (1.0, 1.0, 1.0))
    centre = np.asarray(head.shape) / 2
    radii = np.linalg.norm(verts + 0.5 - centre, axis=1)  # vertex frame: voxel centres at i
    assert np.abs(radii - 40).max() < 1.0  # every vertex is on the sphere, none on a flat cap
    assert verts[:, 1].min() >= crop.y_min + 0.5


@pytest.mark.parametrize(("slice_mm", "dropped"), [(1.0, 10), (2.5, 4), (1.2, 9), (0.9, 12)])
def test_the_neck_crop_drops_at_least_10_mm_in_whole_slices(slice_mm, dropped):
    assert inferior_slices(slice_mm) == dropped
    head = ball(40)
    lowest = int(np.nonzero(head.any(axis=(0, 1)))[0][0])
    assert FaceCrop.from_head(head, (1.0, 1.0, slice_mm)).z_min == lowest + dropped


def test_masd_direction_is_other_to_original_and_symmetric_is_the_mean():
    from scipy.spatial import cKDTree

    from defaceaudit.metrics.surface import masd_from_vertices

    original = np.random.default_rng(3).normal(size=(400, 3)) * 30
    other = original[::2]  # a partial face: every vertex of it lies on the original
    back = float(cKDTree(other).query(original)[0].mean())  # original -> other, > 0
    result = masd_from_vertices(original, other)
    assert result["masd_mm"] == 0.0 and back > 1.0
    assert result["masd_symmetric_mm"] == pytest.approx(back / 2)


def test_a_shifted_face_has_a_larger_distance_than_itself():
    head = ball(40)
    shifted = np.roll(head, 2, axis=1)
    assert masd(head, head, (1, 1, 1))["masd_mm"] == 0.0
    assert masd(head, shifted, (1, 1, 1))["masd_mm"] > 0.5


def reference_face_vertices(head, crop, spacing):
    """The straightforward computation: smoothing and marching cubes on the whole volume."""
    spacing = np.asarray(spacing, dtype=float)
    smooth = ndimage.gaussian_filter(np.pad(crop.apply(head), 3).astype(np.float32), 1.0)
    verts = marching_cubes(smooth, level=0.5, spacing=tuple(spacing))[0] - 3 * spacing
    on_caps = (verts[:, 1] <= (crop.y_min + 0.5) * spacing[1]) | (
        verts[:, 2] <= (crop.z_min + 0.5) * spacing[2]
    )
    return verts[~on_caps]


@pytest.mark.parametrize(
    ("centre", "spacing"),
    [
        (None, (1.0, 1.0, 1.0)),
        ((50, 80, 62), (1.0, 1.0, 1.0)),  # cut by the volume's anterior and superior faces
        ((30, 60, 55), (1.2, 0.9, 1.1)),  # cut by the right face too, anisotropic voxels
    ],
)
def test_face_vertices_on_the_bounding_box_match_the_whole_volume(centre, spacing):
    head = ball(30, shape=(60, 90, 70), centre=centre)
    crop = FaceCrop.from_head(head, spacing)
    fast = face_vertices(head, crop, spacing)
    expected = reference_face_vertices(head, crop, spacing)
    assert fast.shape == expected.shape
    assert np.abs(fast - expected).max() < 1e-4  # float32 rounding of the vertex positions


def test_masd_accepts_the_original_vertices_and_crop():
    head, other = ball(40), ball(43)
    crop = FaceCrop.from_head(head, (1.0, 1.0, 1.0))
    vertices = face_vertices(head, crop, (1.0, 1.0, 1.0))
    plain = masd(head, other, (1.0, 1.0, 1.0))
    reused = masd(head, other, (1.0, 1.0, 1.0), original_vertices=vertices, crop=crop)
    assert reused == plain
    lower = FaceCrop(z_min=crop.z_min, y_min=crop.y_min + 20)  # a smaller face region
    cropped = masd(head, other, (1.0, 1.0, 1.0), crop=lower)
    assert cropped["n_vertices_original"] < plain["n_vertices_original"]
    with pytest.raises(ValueError, match="original_vertices"):
        masd(head, other, (1.0, 1.0, 1.0), original_vertices=np.zeros((0, 3)))


def ssim_volumes(shape=(48, 40, 36)):
    """A textured original (float32, Fortran order as nibabel loads it) and a noisy copy with
    a zeroed block; masks reaching one face of the volume and lying inside it."""
    rng = np.random.default_rng(5)
    original = ndimage.gaussian_filter(rng.random(shape), 2.0) * 800 + 100
    original = np.asfortranarray(original.astype(np.float32))
    other = (original + rng.normal(0, 20, shape)).astype(np.float32)
    other[30:, 25:, 20:] = 0.0
    inner = ball(12, shape=shape, centre=(20, 18, 16))
    at_edge = ball(14, shape=shape, centre=(44, 36, 18))  # cut by two faces of the volume
    return original, other, inner, at_edge


@pytest.mark.parametrize("which", ["inner", "at_edge", "union"])
def test_ssim_inside_the_mask_is_the_whole_volume_map_bit_for_bit(which):
    original, other, inner, at_edge = ssim_volumes()
    mask = {"inner": inner, "at_edge": at_edge, "union": inner | at_edge}[which]
    scale = 731.25
    values, squared = similarity_module._masked_terms(original, other, mask, scale)
    a, b = original.astype(float) / scale, other.astype(float) / scale
    full = structural_similarity(
        a,
        b,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )[1]
    assert np.array_equal(values, full[mask])
    assert np.array_equal(squared, ((a - b) ** 2)[mask])
    result = similarity(original, other, mask)
    scale = np.percentile(original[mask].astype(float), 99.5)
    a, b = original.astype(float) / scale, other.astype(float) / scale
    full = structural_similarity(
        a,
        b,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )[1]
    assert result["ssim"] == full[mask].mean()
    assert result["psnr_db"] == 10 * np.log10(1.0 / np.mean((a[mask] - b[mask]) ** 2))
    assert result["n_voxels"] == mask.sum()


def test_scale_mask_sets_the_intensity_scale():
    rng = np.random.default_rng(6)
    shape = (40, 40, 40)
    head = ball(18, shape=shape)
    face = head & (np.indices(shape)[1] > 28)  # the front of the head
    original = np.where(head, 100.0, 0.0)
    original[face] = 50.0  # darker face: its own 99.5th percentile is 50, the head's is 100
    other = original + rng.normal(0.0, 2.0, shape)
    own = similarity(original, other, face)
    shared = similarity(original, other, face, scale_mask=head)
    assert shared["n_voxels"] == own["n_voxels"] == face.sum()
    # twice the scale: a quarter of the normalised MSE, 20 log10(2) dB more PSNR
    assert shared["psnr_db"] - own["psnr_db"] == pytest.approx(20 * np.log10(2), abs=1e-9)
    assert shared["ssim"] != own["ssim"]  # the constants C1, C2 weigh differently
    scaled, _ = normalise(original, other, face, scale_mask=head)
    assert scaled.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="grids differ"):
        similarity(original, other, face, scale_mask=head[:-1])


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
    strict = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)  # no Infinity
    assert strict["ssim"] == pytest.approx(1.0)
    assert strict["psnr_db"] is None and strict["psnr_identical"] is True
    assert main(["masd", str(same), str(other)]) == 1
    error = capsys.readouterr().err
    assert "grid" in error and str(other) in error and "\n" not in error.strip()
