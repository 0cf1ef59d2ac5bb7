"""Mean absolute surface distance (MASD) between two faces, paper section 2.3.

The face is the head-mask surface after cropping the 10 most inferior axial slices (the neck) and
the posterior half of the head. Both images are cropped with the planes found on the ORIGINAL
image, so both faces cover the same region. Marching cubes runs on the cropped mask with the voxel
spacing (mm); the vertices that lie on the crop planes (the flat caps the crop creates) are
dropped, because they are not skin and would dilute the distance. Distances are nearest-vertex
distances from a KD-tree (mm).

Direction: ``masd_mm`` (the paper's) averages, over every vertex of the OTHER face (defaced or
refaced), the distance to the nearest vertex of the ORIGINAL face; ``masd_symmetric_mm`` is the
mean of that and the reverse direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

#: Gaussian smoothing of the binary mask before marching cubes, in voxels
SMOOTHING_VOXELS = 1.0
#: axial slices dropped at the inferior end of the image (the neck), paper section 2.3
INFERIOR_SLICES = 10


@dataclass(frozen=True)
class FaceCrop:
    """Crop planes in voxel indices of a RAS grid: keep z >= z_min and y >= y_min."""

    z_min: int
    y_min: int

    @classmethod
    def from_head(cls, head: np.ndarray, inferior_slices: int = INFERIOR_SLICES) -> FaceCrop:
        """Planes from an original head mask [X, Y, Z]: drop the 10 lowest slices of the head and
        the posterior half of its antero-posterior extent."""
        ys = np.nonzero(head.any(axis=(0, 2)))[0]
        zs = np.nonzero(head.any(axis=(0, 1)))[0]
        if ys.size == 0:
            raise ValueError("empty head mask: no face to measure")
        return cls(z_min=int(zs[0]) + inferior_slices, y_min=int((ys[0] + ys[-1] + 1) // 2))

    def apply(self, mask: np.ndarray) -> np.ndarray:
        out = np.zeros_like(mask, dtype=bool)
        out[:, self.y_min :, self.z_min :] = mask[:, self.y_min :, self.z_min :]
        return out


def face_vertices(head: np.ndarray, crop: FaceCrop, spacing_mm: Sequence[float]) -> np.ndarray:
    """Vertices (N, 3) in mm (voxel-index frame times spacing) of the cropped face surface.

    The binary mask is smoothed by :data:`SMOOTHING_VOXELS` before marching cubes (level 0.5);
    vertices within one voxel of a crop plane belong to the flat caps and are dropped.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    pad = 3
    cropped = np.pad(crop.apply(head), pad)  # closed surfaces at the volume's border too
    if not cropped.any():
        raise ValueError("the face crop is empty")
    # A binary mask's iso-surface is a voxel staircase, whose nearest-vertex distances to another
    # staircase are shorter than the true gap; smoothing by one voxel gives sub-voxel surfaces.
    smooth = ndimage.gaussian_filter(cropped.astype(np.float32), SMOOTHING_VOXELS)
    verts, *_ = marching_cubes(smooth, level=0.5, spacing=tuple(spacing))
    verts -= pad * spacing  # undo the padding
    on_y_cap = verts[:, 1] <= (crop.y_min + 0.5) * spacing[1]
    on_z_cap = verts[:, 2] <= (crop.z_min + 0.5) * spacing[2]
    return verts[~(on_y_cap | on_z_cap)]


def masd(original: np.ndarray, other: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """MASD between two head masks [X, Y, Z] on one RAS grid, both cropped like the original.

    Returns ``{"masd_mm": other -> original, "masd_symmetric_mm": mean of both directions,
    "n_vertices_original", "n_vertices_other"}``.
    """
    if original.shape != other.shape:
        raise ValueError(f"grids differ: {original.shape} and {other.shape}")
    crop = FaceCrop.from_head(original)
    a = face_vertices(original, crop, spacing_mm)
    b = face_vertices(other, crop, spacing_mm)
    b_to_a = cKDTree(a).query(b, workers=-1)[0].mean()
    a_to_b = cKDTree(b).query(a, workers=-1)[0].mean()
    return {
        "masd_mm": float(b_to_a),
        "masd_symmetric_mm": float((a_to_b + b_to_a) / 2.0),
        "n_vertices_original": int(len(a)),
        "n_vertices_other": int(len(b)),
    }
