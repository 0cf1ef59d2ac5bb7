"""Affine registration (SimpleITK) and resampling: conventions and recovery of known motions."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation
from synthetic import synthetic_head

from defaceaudit.imaging.register import (
    affine_register,
    coarse_grid,
    downsample,
    from_sitk_transform,
    resample,
    rigid_register,
    rotation_angle_deg,
    to_sitk,
)

# Corners of a box inside the synthetic head (RAS mm), homogeneous, [4, 8].
BOX = np.array([[x, y, z, 1.0] for x in (-60, 60) for y in (-80, 80) for z in (-60, 80)]).T


def rigid(angles_deg, shift_mm):
    """4x4 RAS rotation (xyz Euler angles, degrees) plus translation (mm)."""
    t = np.eye(4)
    t[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    t[:3, 3] = shift_mm
    return t


def moved_copy(img, t_true, origin_shift=(3.0, -5.0, 2.0)):
    """``img``'s content on a shifted grid: fixed point p lies at moving point t_true @ p."""
    affine = img.affine.copy()
    affine[:3, 3] += origin_shift
    data = resample(img, (img.shape, affine), np.linalg.inv(t_true))
    return nib.Nifti1Image(data, affine)


def test_to_sitk_geometry_matches_nibabel_oblique():
    affine = np.array(
        [[0.0, -2.0, 0.0, 30.0], [0.0, 0.0, 3.0, -40.0], [1.5, 0.0, 0.0, 12.0], [0, 0, 0, 1]]
    )
    affine[:3, :3] = Rotation.from_euler("z", 10, degrees=True).as_matrix() @ affine[:3, :3]
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    img = nib.Nifti1Image(data, affine)
    s = to_sitk(img)
    assert s.GetSize() == (5, 6, 7)
    for ijk in [(0, 0, 0), (4, 1, 6), (2, 5, 3)]:
        ras = affine @ (*ijk, 1.0)
        lps = s.TransformIndexToPhysicalPoint(ijk)
        assert np.allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)
        assert s[ijk] == data[ijk]


def test_from_sitk_transform_flips_x_and_y():
    tx = sitk.TranslationTransform(3, (1.0, 2.0, 3.0))  # LPS shift: 1 mm left, 2 mm posterior
    t = from_sitk_transform(tx)
    assert np.allclose(t[:3, :3], np.eye(3))
    assert np.allclose(t[:3, 3], [-1.0, -2.0, 3.0])


def test_resample_identity_and_shift():
    img, _ = synthetic_head()
    data = img.get_fdata(dtype=np.float32)
    assert np.allclose(resample(img, img, np.eye(4), order=1), data, atol=1e-3)
    assert np.array_equal(resample(img, img, None, order=0), data)
    shift = np.eye(4)
    shift[1, 3] = 8.0  # two 4 mm voxels along +y
    out = resample(img, img, shift, order=0)
    assert np.array_equal(out[:, :-2], data[:, 2:])
    assert np.all(out[:, -2:] == 0)  # outside the moving volume: cval 0


@pytest.mark.parametrize(
    ("angles", "shift"), [((8.0, -5.0, 6.0), (6.0, -9.0, 4.0)), ((0.0, 0.0, -12.0), (-10, 5, 0))]
)
def test_affine_register_recovers_known_motion(angles, shift):
    img, _ = synthetic_head()
    t_true = rigid(angles, shift)
    t = affine_register(img, moved_copy(img, t_true), seed=0)
    assert np.abs((t - t_true) @ BOX)[:3].max() < 1.0  # mm, over the head's bounding box
    assert rotation_angle_deg(t @ np.linalg.inv(t_true)) < 1.0


def test_affine_register_deterministic_and_masked():
    img, brain = synthetic_head()
    mov = moved_copy(img, rigid((3, 0, 4), (2, 3, -4)))
    t1 = affine_register(img, mov, seed=3)
    t2 = affine_register(img, mov, seed=3)
    assert np.array_equal(t1, t2)  # threads=1 (default): bit-identical
    mask = ndimage.binary_dilation(brain, iterations=4)
    t3 = affine_register(img, mov, seed=3, fixed_mask=mask)
    assert np.abs((t3 - t1) @ BOX)[:3].max() < 2.0
    with pytest.raises(ValueError, match="fixed_mask shape"):
        affine_register(img, mov, fixed_mask=mask[:-1])


def test_downsample_keeps_field_of_view():
    img, _ = synthetic_head(shape=(40, 50, 44), voxel_mm=2.0)
    shape, affine = coarse_grid(img, 4.0)
    assert shape == (20, 25, 22)
    centre_old = nib.affines.apply_affine(img.affine, (np.asarray(img.shape) - 1) / 2)
    centre_new = nib.affines.apply_affine(affine, (np.asarray(shape) - 1) / 2)
    assert np.allclose(centre_old, centre_new)
    small = downsample(img, 4.0)
    assert small.shape == shape and small.get_data_dtype() == np.float32
    assert abs(small.get_fdata().mean() - img.get_fdata().mean()) < 0.05 * img.get_fdata().mean()
    assert downsample(img, 1.0) is img


def test_rigid_register_recovers_known_motion_without_scaling():
    img, _ = synthetic_head()
    t_true = rigid((6.0, -4.0, 5.0), (5.0, -7.0, 3.0))
    t = rigid_register(img, moved_copy(img, t_true), seed=0)
    assert np.abs((t - t_true) @ BOX)[:3].max() < 1.0
    singular = np.linalg.svd(t[:3, :3], compute_uv=False)
    assert np.allclose(singular, 1.0, atol=1e-6)  # a rotation: head size kept
