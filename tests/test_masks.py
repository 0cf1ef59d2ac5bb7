import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu
from synthetic import synthetic_head

from defaceaudit.imaging import masks
from defaceaudit.imaging.masks import face_volume_ml, head_mask, largest_component


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def true_head(img):
    shape = img.shape
    x, y, z = nib.affines.apply_affine(img.affine, np.indices(shape).reshape(3, -1).T).T
    head = (x / 75) ** 2 + (y / 95) ** 2 + ((z - 10) / 85) ** 2 <= 1
    return head.reshape(shape)


def test_head_mask_fills_skull_and_cavities_and_ignores_noise():
    img, brain = synthetic_head(nose=False, seed=3)
    data = img.get_fdata()
    truth = true_head(img)
    cavity = np.zeros_like(truth)
    cavity[20:28, 40:45, 23:28] = True  # an enclosed air cavity (sinus-like) inside the head
    data[cavity] = np.abs(np.random.default_rng(0).normal(0, 15, cavity.sum()))
    # a bias field: darker below
    data *= np.linspace(0.5, 1.2, data.shape[2])[None, None, :]
    mask = head_mask(data, (4.0, 4.0, 4.0))
    assert mask[cavity].all()
    assert dice(mask, truth) > 0.95
    corner = np.zeros_like(mask)
    corner[:5, :5, :5] = True
    assert not mask[corner].any()


def test_head_mask_is_scale_free():
    img, _ = synthetic_head(seed=4)
    data = img.get_fdata()
    assert np.array_equal(head_mask(data, (4, 4, 4)), head_mask(data * 37.5, (4, 4, 4)))


def test_face_volume_drops_when_the_face_is_removed():
    img, brain = synthetic_head(nose=True, seed=5)
    head = head_mask(img.get_fdata(), (4.0, 4.0, 4.0))
    whole = face_volume_ml(head, brain, img.affine)
    y = nib.affines.apply_affine(img.affine, np.indices(img.shape).reshape(3, -1).T)[:, 1]
    z = nib.affines.apply_affine(img.affine, np.indices(img.shape).reshape(3, -1).T)[:, 2]
    face = ((y > 60) & (z < 20)).reshape(img.shape)
    defaced = head & ~face
    assert whole > 40
    assert face_volume_ml(defaced, brain, img.affine) < 0.1 * whole


# --- the fast head mask against the straightforward algorithm it replaced -----------------------


def reference_head_mask(data, voxel_size_mm):
    """The former head_mask, kept as the specification: every step on the whole volume, the
    closing by two Euclidean distance transforms, holes filled by scipy."""
    data = np.asarray(data, dtype=np.float32)
    vox = np.asarray(voxel_size_mm, dtype=float)
    data = np.where(np.isfinite(data), data, 0.0).astype(np.float32, copy=False)
    smooth = ndimage.gaussian_filter(data, sigma=1.0 / vox, mode="nearest")
    clipped = np.clip(smooth, 0.0, np.percentile(smooth, 99.9))
    logged = np.log1p(clipped / clipped.max() * 1000.0)
    positive = logged[clipped > 0]
    mask = logged > threshold_otsu(positive if positive.size > 1 else logged)
    radii = np.maximum(1.0, 4.0 / vox)
    pad = int(np.ceil(radii.max())) + 1
    padded = np.pad(mask, pad)
    dilated = ndimage.distance_transform_edt(~padded, sampling=1.0 / radii) <= 1.0 + 1e-6
    closed = ndimage.distance_transform_edt(dilated, sampling=1.0 / radii) > 1.0 + 1e-6
    mask = largest_component(closed[pad:-pad, pad:-pad, pad:-pad])
    mask = ndimage.binary_fill_holes(mask)
    for axis in (2, 1, 0):
        in_plane = np.zeros((3, 3, 3), dtype=bool)
        index = [slice(None)] * 3
        index[axis] = 1
        in_plane[tuple(index)] = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_fill_holes(mask, structure=in_plane)
    return largest_component(mask)


def noisy_biased_head(seed):
    """A harder input: 2 mm voxels, strong Rician-like noise, bias field, enclosed and open air
    cavities, bright outliers, a zeroed (defaced-like) block and a few non-finite voxels."""
    img, _ = synthetic_head(shape=(96, 120, 104), voxel_mm=2.0, seed=seed)
    rng = np.random.default_rng(seed)
    data = img.get_fdata(dtype=np.float32)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in data.shape), indexing="ij")
    data *= (0.6 + 0.5 * (z + 1) / 2 + 0.2 * x * y).astype(np.float32)
    data += np.abs(rng.normal(0.0, 40.0, data.shape)).astype(np.float32)
    data[40:50, 70:80, 30:38] = rng.normal(20.0, 10.0, (10, 10, 8))  # a sinus-like cavity
    data[44:52, 100:, 20:30] = 5.0  # mouth-like air open to the front
    data[rng.random(data.shape) < 1e-4] *= 40.0  # bright outliers
    data[:, 105:, :40] = 0.0  # a removed face
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    return data


@pytest.mark.parametrize(
    ("case", "voxel_size_mm"),
    [
        ("synthetic", (4.0, 4.0, 4.0)),
        ("synthetic_nose_free", (4.0, 4.0, 4.0)),
        ("synthetic", (3.0, 4.0, 5.5)),  # anisotropic closing radii, one below a voxel
        ("noisy_biased", (2.0, 2.0, 2.0)),
        ("noisy_biased", (1.0, 1.2, 0.9)),  # 4 mm as 4, 3.3 and 4.4 voxels
    ],
)
def test_head_mask_is_identical_to_the_straightforward_algorithm(case, voxel_size_mm):
    if case == "noisy_biased":
        data = noisy_biased_head(seed=11)
    else:
        data = synthetic_head(nose=case == "synthetic", seed=7)[0].get_fdata()
    fast = head_mask(data, voxel_size_mm)
    assert fast.dtype == bool and fast.shape == data.shape and fast.any()
    assert np.array_equal(fast, reference_head_mask(data, voxel_size_mm))


def test_closing_is_identical_to_the_distance_transform_closing():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(int(n) for n in rng.integers(4, 30, 3))
        mask = rng.random(shape) < rng.uniform(0.02, 0.4)
        radii = np.maximum(1.0, 4.0 / rng.choice([0.5, 0.9, 1.0, 1.3, 2.0, 3.0, 5.0], 3))
        pad = int(np.ceil(radii.max())) + 1
        padded = np.pad(mask, pad)
        dilated = ndimage.distance_transform_edt(~padded, sampling=1.0 / radii) <= 1.0 + 1e-6
        closed = ndimage.distance_transform_edt(dilated, sampling=1.0 / radii) > 1.0 + 1e-6
        expected = closed[pad:-pad, pad:-pad, pad:-pad]
        assert np.array_equal(masks._closing(mask, radii), expected), (shape, radii)


def test_fill_holes_is_identical_to_scipy():
    rng = np.random.default_rng(1)
    mask = ndimage.binary_opening(rng.random((30, 25, 20)) < 0.6)
    assert np.array_equal(masks._fill_holes(mask, (0, 1, 2)), ndimage.binary_fill_holes(mask))
    for axis in range(3):
        in_plane = np.zeros((3, 3, 3), dtype=bool)
        index = [slice(None)] * 3
        index[axis] = 1
        in_plane[tuple(index)] = ndimage.generate_binary_structure(2, 1)
        expected = ndimage.binary_fill_holes(mask, structure=in_plane)
        assert np.array_equal(masks._fill_slices(mask, across=axis), expected)


@pytest.mark.parametrize("q", [99.9, 99.5, 90.0, 50.0])
@pytest.mark.parametrize("n", [1000, 4096, 100_003, 262_144])
def test_percentile_is_numpys(q, n):
    rng = np.random.default_rng(n)
    values = rng.lognormal(size=n).astype(np.float32)
    values[rng.random(n) < 0.1] = 3.0  # ties
    assert masks.percentile(values, q) == np.percentile(values, q)
    assert masks.percentile(values, q).dtype == np.float32
    in_float64 = np.percentile(values.astype(np.float64), q)
    assert masks.percentile(values, q, dtype=np.float64) == in_float64
    volume = values[: (n // 64) * 64].reshape(4, 16, -1, order="F")
    assert masks.percentile(volume, q) == np.percentile(volume, q)


def test_otsu_threshold_is_skimages():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(1, 0.3, 5000), rng.normal(4, 0.5, 3000)])
    values = values.astype(np.float32)
    assert masks._otsu_threshold(values) == threshold_otsu(values)
    constant = np.full(10, 2.5, dtype=np.float32)
    assert masks._otsu_threshold(constant) == threshold_otsu(constant)


def test_threaded_gaussian_filter_is_scipys():
    rng = np.random.default_rng(3)
    volume = np.asfortranarray(rng.random((40, 33, 21)).astype(np.float32))
    for sigma, mode, truncate in [(1.0, "nearest", 4.0), ((1.5, 0.0, 0.7), "reflect", 3.5)]:
        expected = ndimage.gaussian_filter(volume, sigma, mode=mode, truncate=truncate)
        for threads in (1, 3):
            result = masks.gaussian_filter(
                volume, sigma, mode=mode, truncate=truncate, threads=threads
            )
            assert result.dtype == np.float32 and np.array_equal(result, expected)
        in_place = volume.astype(np.float64, order="C")
        masks.gaussian_filter(in_place, sigma, mode=mode, truncate=truncate, output=in_place)
        assert np.array_equal(
            in_place,
            ndimage.gaussian_filter(volume.astype(np.float64), sigma, mode=mode, truncate=truncate),
        )
