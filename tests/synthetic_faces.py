"""Synthetic heads with a face that dlib's detector finds when rendered (no real MRI in git).

Each head is a union of ellipsoids (cranium, cheeks and jaw, chin, neck, ears, nose, brow
ridge, lips) with eye sockets carved out and eyelids put back, on a RAS grid centred on the
world origin: a cartoon face, but one with the layout (brow, eyes, nose, mouth, chin) that a
face detector keys on. A subject's proportions come from a seeded draw.
"""

import nibabel as nib
import numpy as np

#: world grid (mm) of the heads: x left-right, y posterior-anterior, z inferior-superior
EXTENT_MM = ((-96, 96), (-120, 120), (-112, 112))


def face_params(seed):
    """Proportions of one synthetic subject (mm), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        "eye_x": rng.uniform(25, 35),
        "eye_z": rng.uniform(-12, -4),
        "nose_length": rng.uniform(20, 32),
        "nose_width": rng.uniform(9, 14),
        "nose_y": rng.uniform(88, 96),
        "mouth_z": rng.uniform(-68, -58),
        "mouth_width": rng.uniform(16, 26),
        "face_width": rng.uniform(56, 68),
        "brow": rng.uniform(8, 14),
    }


def _ellipsoid(x, y, z, centre, radii):
    return (
        ((x - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((z - centre[2]) / radii[2]) ** 2
    ) <= 1


def face_head(params=None, voxel_mm=3.0, face=True, yaw_deg=0.0, noise_seed=0):
    """A T1w-like RAS image (nibabel) of a head with a face: tissue about 600, air about 10,
    Gaussian noise from ``noise_seed``. ``face=False`` removes everything in front of the
    forehead below the brow (what a defacer removes); ``params`` as :func:`face_params`
    (default: seed 0); ``yaw_deg`` turns the head about the superior axis (another session's
    pose)."""
    p = face_params(0) if params is None else params
    axes = [np.arange(lo + voxel_mm / 2, hi, voxel_mm) for lo, hi in EXTENT_MM]
    gx, gy, z = np.meshgrid(*axes, indexing="ij")
    turn = np.radians(yaw_deg)
    x = np.cos(turn) * gx + np.sin(turn) * gy
    y = -np.sin(turn) * gx + np.cos(turn) * gy
    e = _ellipsoid
    cheeks = (p["face_width"], 78, 62)
    head = e(x, y, z, (0, 0, 25), (72, 92, 88)) | e(x, y, z, (0, 22, -30), cheeks)
    head |= e(x, y, z, (0, 60, -75), (30, 30, 22)) | e(x, y, z, (0, -10, -90), (40, 40, 50))
    head |= e(x, y, z, (40, 0, -10), (15, 18, 25)) | e(x, y, z, (-40, 0, -10), (15, 18, 25))
    nose_z = -20 - p["nose_length"] / 2
    nose = (p["nose_width"], 14, p["nose_length"])
    head |= e(x, y, z, (0, p["nose_y"], nose_z), nose) & (y < 118)
    head |= e(x, y, z, (0, p["nose_y"] + 4, nose_z - p["nose_length"] * 0.7), (16, 8, 6))
    head |= e(x, y, z, (0, 86, p["eye_z"] + 16), (52, 12, p["brow"]))
    for side in (-1, 1):
        head &= ~e(x, y, z, (side * p["eye_x"], 90, p["eye_z"]), (15, 14, 11))
        head |= e(x, y, z, (side * p["eye_x"], 78, p["eye_z"] - 1), (12, 10, 8))
    mz, mw = p["mouth_z"], p["mouth_width"]
    head |= e(x, y, z, (0, 88, mz + 4), (mw, 8, 5)) | e(x, y, z, (0, 86, mz - 5), (mw - 2, 8, 5))
    head &= ~e(x, y, z, (0, 94, mz - 0.5), (mw, 8, 1.6))
    if not face:
        head &= ~((y > 55) & (z < p["eye_z"] + 10))
    rng = np.random.default_rng(noise_seed)
    data = np.abs(np.where(head, 600.0, 10.0) + rng.normal(0, 10, head.shape)).astype(np.float32)
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = [lo + voxel_mm / 2 for lo, _ in EXTENT_MM]
    return nib.Nifti1Image(data, affine)
