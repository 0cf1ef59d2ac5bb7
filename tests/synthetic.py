"""Tiny synthetic heads for tests (no real MRI in git)."""

import nibabel as nib
import numpy as np


def synthetic_head(shape=(48, 60, 52), voxel_mm=4.0, seed=0, nose=True):
    """A head-like RAS volume: scalp ellipsoid, darker skull, bright brain, a nose bump in front.

    Returns (image, brain mask bool). World origin at the volume centre; 4 mm voxels by default.
    """
    rng = np.random.default_rng(seed)
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2
    ijk = np.indices(shape).reshape(3, -1).T
    x, y, z = nib.affines.apply_affine(affine, ijk).T
    head = (x / 75) ** 2 + (y / 95) ** 2 + ((z - 10) / 85) ** 2 <= 1
    skull = (x / 68) ** 2 + (y / 88) ** 2 + ((z - 10) / 78) ** 2 <= 1
    brain = (x / 62) ** 2 + (y / 80) ** 2 + ((z - 20) / 60) ** 2 <= 1
    data = np.where(head, 800.0, 0.0)  # scalp fat is bright on T1w
    data[skull] = 150.0
    data[brain] = 650.0
    if nose:
        bump = (x / 15) ** 2 + ((y - 95) / 25) ** 2 + ((z + 25) / 30) ** 2 <= 1
        data[bump & ~head] = 800.0
    data = data + rng.normal(0, 15, data.shape)
    data = np.abs(data).reshape(shape).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img, brain.reshape(shape)


def sphere_head(shape=(20, 20, 16), radius=6, cap_from=3, value=100.0):
    """A ball "head" of constant ``value`` on an exactly-zero background, and a defaced copy
    whose cap (the ball's voxels at Y >= centre + ``cap_from``) is set to 0.

    Returns (original, defaced, cap), float32 / float32 / bool ``[X, Y, Z]``; the ball is centred
    on ``shape // 2`` and holds the voxels within ``radius`` voxels of it.
    """
    centre = np.asarray(shape) // 2
    ijk = np.indices(shape)
    ball = sum((ijk[a] - centre[a]) ** 2 for a in range(3)) <= radius**2
    original = np.where(ball, value, 0.0).astype(np.float32)
    cap = ball & (ijk[1] >= centre[1] + cap_from)
    defaced = np.where(cap, 0.0, original).astype(np.float32)
    return original, defaced, cap
