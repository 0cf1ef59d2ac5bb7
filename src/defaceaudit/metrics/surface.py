"""Mean absolute surface distance (MASD) between two faces, paper section 2.3.

The face is the head-mask surface after cropping the most inferior 10 mm (the neck: the paper's
"10 axial slices" of its 1 mm images, so that other voxel sizes crop the same height) and the
posterior half of the head. Both images are cropped with the planes found on the ORIGINAL image,
so both faces cover the same region. Marching cubes runs on the cropped mask with the voxel
spacing (mm); the vertices that lie on the crop planes (the flat caps the crop creates) are
dropped, because they are not skin and would dilute the distance. Distances are nearest-vertex
distances from a KD-tree (mm).

Direction: ``masd_mm`` averages, over every vertex of the OTHER face (defaced or refaced), the
distance to the nearest vertex of the ORIGINAL face (the paper queries "the nearest neighbor on
the surface of one face for every vertex on the other face" without saying which is which; this
is the reading that scores a partial face by how far its remaining skin lies from the original);
``masd_symmetric_mm`` is the mean of that and the reverse direction.

Cost (1 mm 256^3 pair, 2 cores): smoothing and marching cubes run on the face's bounding box
only, about 0.2 s per face, and both nearest-vertex searches about 0.4 s; a caller measuring
several images against one original passes the original's vertices (``original_vertices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from defaceaudit.imaging.masks import bounding_box, gaussian_filter

#: Gaussian smoothing of the binary mask before marching cubes, in voxels
SMOOTHING_VOXELS = 1.0
#: height (mm) dropped at the inferior end of the head (the neck): paper section 2.3 drops 10
#: axial slices of 1 mm images
INFERIOR_MM = 10.0
#: reach of the smoothing kernel in voxels (scipy's default truncation at 4 sigma)
_KERNEL_RADIUS = int(4.0 * SMOOTHING_VOXELS + 0.5)
#: zero voxels around the face's bounding box: with two kernel radii, every smoothed value in
#: the window is the one an unbounded all-background volume would give (no edge effect), so the
#: surface is the one of the whole zero-padded volume
_WINDOW_MARGIN = 2 * _KERNEL_RADIUS
#: KD-tree leaves: larger leaves and no node compaction halve the query time on face surfaces
#: (far query points, such as a defaced cut, visit many leaves); the distances are unchanged
_TREE_OPTIONS = {"leafsize": 64, "compact_nodes": False, "balanced_tree": False}


@dataclass(frozen=True)
class FaceCrop:
    """Crop planes in voxel indices of a RAS grid: keep z >= z_min and y >= y_min."""

    z_min: int
    y_min: int

    @classmethod
    def from_head(
        cls, head: np.ndarray, spacing_mm: Sequence[float], inferior_mm: float = INFERIOR_MM
    ) -> FaceCrop:
        """Planes from a head mask [X, Y, Z] with voxel sizes ``spacing_mm``: drop the lowest
        ``inferior_mm`` of the head (whole slices, at least that height: 10 slices at 1 mm, 4 at
        2.5 mm) and the posterior half of its antero-posterior extent."""
        ys = np.nonzero(head.any(axis=(0, 2)))[0]
        zs = np.nonzero(head.any(axis=(0, 1)))[0]
        if ys.size == 0:
            raise ValueError("empty head mask: no face to measure")
        return cls(
            z_min=int(zs[0]) + inferior_slices(spacing_mm[2], inferior_mm),
            y_min=int((ys[0] + ys[-1] + 1) // 2),
        )

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` (bool [X, Y, Z]) with everything outside the kept region set False."""
        out = np.zeros_like(mask, dtype=bool)
        out[:, self.y_min :, self.z_min :] = mask[:, self.y_min :, self.z_min :]
        return out


def inferior_slices(slice_mm: float, inferior_mm: float = INFERIOR_MM) -> int:
    """Whole axial slices of thickness ``slice_mm`` covering at least ``inferior_mm``."""
    if slice_mm <= 0:
        raise ValueError(f"slice thickness must be positive, got {slice_mm} mm")
    return int(np.ceil(inferior_mm / slice_mm - 1e-6))


def _face_window(head: np.ndarray, crop: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
    """The cropped face in a box with :data:`_WINDOW_MARGIN` background voxels around it.

    Returns (window float32 [a, b, c] of 0/1, start: voxel index [3] of the window's first voxel
    in ``head``'s grid, negative where the window reaches beyond the volume).
    """
    kept = np.asarray(head[:, crop.y_min :, crop.z_min :], dtype=bool)
    if not kept.any():
        raise ValueError("the face crop is empty")
    box = bounding_box(kept)
    window = np.zeros(tuple(s.stop - s.start + 2 * _WINDOW_MARGIN for s in box), dtype=np.float32)
    window[(slice(_WINDOW_MARGIN, -_WINDOW_MARGIN),) * 3] = kept[box]
    start = np.array([s.start for s in box]) + [0, crop.y_min, crop.z_min] - _WINDOW_MARGIN
    return window, start


def face_vertices(head: np.ndarray, crop: FaceCrop, spacing_mm: Sequence[float]) -> np.ndarray:
    """Vertices (N, 3) in mm (voxel-index frame times spacing) of the cropped face surface.

    The binary mask is smoothed by :data:`SMOOTHING_VOXELS` before marching cubes (level 0.5);
    vertices within one voxel of a crop plane belong to the flat caps and are dropped. Only the
    face's bounding box (plus a background margin) is processed; the surface is the one of the
    whole volume padded with background. Raises ValueError if the crop leaves no face.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    window, start = _face_window(head, crop)
    # A binary mask's iso-surface is a voxel staircase, whose nearest-vertex distances to another
    # staircase are shorter than the true gap; smoothing by one voxel gives sub-voxel surfaces.
    smooth = gaussian_filter(window, SMOOTHING_VOXELS)
    verts, *_ = marching_cubes(smooth, level=0.5)
    # window index -> volume index -> mm, in float64 (marching cubes returns float32)
    verts = (verts.astype(np.float64) + start) * spacing
    on_y_cap = verts[:, 1] <= (crop.y_min + 0.5) * spacing[1]
    on_z_cap = verts[:, 2] <= (crop.z_min + 0.5) * spacing[2]
    return verts[~(on_y_cap | on_z_cap)]


#: a background (outside the head) with at most this fraction of exact zeros is "noisy": its
#: exact zeros are a defacer's fill, not air (a quickshear cut zeroes about a third of the
#: background, a face mask less; an exactly-0 background is all zeros)
NOISY_BACKGROUND_ZEROS = 0.8


def fill_mask(image: np.ndarray, head: np.ndarray) -> np.ndarray | None:
    """Where ``image`` ([X, Y, Z]) holds a defacer's fill, bool: its exact zeros, grown by one
    voxel, when its background (outside ``head``) is noisy (at most
    :data:`NOISY_BACKGROUND_ZEROS` exact zeros there); None when the background itself is
    exactly 0 (preprocessed data), where fill and air cannot be told apart."""
    image = np.asarray(image)
    zero = image == 0
    outside = ~np.asarray(head, dtype=bool)
    if not outside.any() or zero[outside].mean() > NOISY_BACKGROUND_ZEROS:
        return None
    return ndimage.binary_dilation(zero, iterations=1)


def skin_vertices(
    vertices: np.ndarray, image: np.ndarray, head: np.ndarray, spacing_mm: Sequence[float]
) -> np.ndarray:
    """``vertices`` ([N, 3] mm, as :func:`face_vertices` gives them) less those on a
    defacer's cut: next to its fill (:func:`fill_mask`). A cut surface is no skin: it follows
    where the defacer cut each head, and matching it against faces would identify the cut, not
    the face. All vertices are kept where the fill cannot be told from air."""
    fill = fill_mask(image, head)
    if fill is None or len(vertices) == 0:
        return vertices
    index = np.rint(np.asarray(vertices) / np.asarray(spacing_mm, dtype=float)).astype(int)
    index = np.clip(index, 0, np.array(fill.shape) - 1)
    return vertices[~fill[index[:, 0], index[:, 1], index[:, 2]]]


def _mean_nearest_distance(points: np.ndarray, queries: np.ndarray) -> float:
    """Mean over ``queries`` [M, 3] of the distance to the nearest of ``points`` [N, 3] (mm)."""
    tree = cKDTree(points, **_TREE_OPTIONS)
    return float(tree.query(queries, workers=-1)[0].mean())


def masd_from_vertices(original_vertices: np.ndarray, other_vertices: np.ndarray) -> dict:
    """MASD of two face surfaces given as vertices ``[N, 3]`` and ``[M, 3]`` in one frame (mm).

    Returns ``{"masd_mm": other -> original, "masd_symmetric_mm": mean
    of both directions}``.
    """
    b_to_a = _mean_nearest_distance(original_vertices, other_vertices)
    a_to_b = _mean_nearest_distance(other_vertices, original_vertices)
    return {"masd_mm": b_to_a, "masd_symmetric_mm": (a_to_b + b_to_a) / 2.0}


def masd(
    original: np.ndarray,
    other: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    original_vertices: np.ndarray | None = None,
    crop: FaceCrop | None = None,
) -> dict:
    """MASD between two head masks [X, Y, Z] on one RAS grid, both cropped like the original.

    ``crop`` defaults to ``FaceCrop.from_head(original, spacing_mm)``. ``original_vertices``
    ([N, 3] mm, from :func:`face_vertices` with the same crop and spacing) skips recomputing the
    original's face when several images are measured against it.

    Returns ``{"masd_mm": other -> original, "masd_symmetric_mm": mean of both directions,
    "n_vertices_original", "n_vertices_other"}``.
    """
    if original.shape != other.shape:
        raise ValueError(f"grids differ: {original.shape} and {other.shape}")
    crop = FaceCrop.from_head(original, spacing_mm) if crop is None else crop
    if original_vertices is None:
        a = face_vertices(original, crop, spacing_mm)
    else:
        a = np.asarray(original_vertices, dtype=float)
        if a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
            raise ValueError(f"original_vertices must be a non-empty [N, 3] array, got {a.shape}")
    b = face_vertices(other, crop, spacing_mm)
    return {
        **masd_from_vertices(a, b),
        "n_vertices_original": int(len(a)),
        "n_vertices_other": int(len(b)),
    }
