"""QC figure of one defacing: mid-sagittal slices and a frontal depth rendering of the face.

Arrays are ``[X, Y, Z]`` on a RAS grid (axis 0 Right, 1 Anterior, 2 Superior); voxel sizes in mm
come from the affine's column norms. The figure is drawn with matplotlib's Agg canvas (no screen,
no pyplot state) and written atomically. Renderings of real heads show identifiable faces of
real volunteers: keep them out of version control, as the volumes are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from defaceaudit.tables import atomic_path

__all__ = ["LIGHT_DIRECTION", "depth_map", "render_qc_png", "shade_depth"]

#: Light direction (x, y, z) in RAS world space: from the front, above, from the viewer's left
#: (the patient's right). Normalised before use.
LIGHT_DIRECTION = (0.4, 1.0, 0.5)
#: Ambient fraction of the shading (the rest is Lambertian).
AMBIENT = 0.15


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def depth_map(head: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Frontal orthographic depth of a bool head mask ``[X, Y, Z]``: float ``[X, Z]`` in mm.

    For each ``(x, z)`` column along the anterior axis, the depth is the position of the most
    anterior head voxel's centre, ``(j + 0.5) * dy`` mm from the posterior edge of the field of
    view (larger = closer to a viewer in front of the face); NaN where the column holds no head.
    """
    head = np.asarray(head, dtype=bool)
    if head.ndim != 3:
        raise ValueError(f"depth_map needs a 3-D mask, got shape {head.shape}")
    dy = float(voxel_size_mm[1])
    ny = head.shape[1]
    any_head = head.any(axis=1)
    # index of the last True along y: first True of the reversed column
    last = ny - 1 - np.argmax(head[:, ::-1, :], axis=1)
    return np.where(any_head, (last + 0.5) * dy, np.nan)


def shade_depth(
    depth: np.ndarray,
    voxel_size_mm: Sequence[float],
    light: Sequence[float] = LIGHT_DIRECTION,
    ambient: float = AMBIENT,
    smooth_sigma_vox: float = 1.0,
) -> np.ndarray:
    """Lambertian shading of a depth map ``[X, Z]`` (mm): float ``[X, Z]`` in 0..1, NaN outside.

    The surface ``y = depth(x, z)`` has normal ``(-dD/dx, 1, -dD/dz)`` (gradients in mm/mm from
    :func:`numpy.gradient` with the voxel spacings ``dx``, ``dz``); the brightness is
    ``ambient + (1 - ambient) * max(0, n . l)`` with ``l`` the normalised light direction.
    Columns without head (NaN) are filled with the minimum depth before the gradient so that
    the silhouette edge is shaded as a steep wall, then set back to NaN. The filled depth is
    smoothed with a Gaussian of ``smooth_sigma_vox`` voxels first (0 disables it): a voxel mask's
    depth is a staircase whose terraces would otherwise show as contour rings.
    """
    depth = np.asarray(depth, dtype=float)
    valid = np.isfinite(depth)
    if not valid.any():
        return np.full(depth.shape, np.nan)
    filled = np.where(valid, depth, np.nanmin(depth))
    if smooth_sigma_vox > 0:
        filled = ndimage.gaussian_filter(filled, sigma=smooth_sigma_vox, mode="nearest")
    dx, dz = float(voxel_size_mm[0]), float(voxel_size_mm[2])
    if min(depth.shape) < 2:
        gx = np.zeros_like(filled)
        gz = np.zeros_like(filled)
    else:
        gx, gz = np.gradient(filled, dx, dz)
    normal = np.stack([-gx, np.ones_like(filled), -gz])
    normal /= np.linalg.norm(normal, axis=0, keepdims=True)
    lvec = np.asarray(light, dtype=float)
    lvec = lvec / np.linalg.norm(lvec)
    lambert = np.clip(np.tensordot(lvec, normal, axes=1), 0.0, 1.0)
    return np.where(valid, ambient + (1.0 - ambient) * lambert, np.nan)


def _window(original: np.ndarray) -> tuple[float, float]:
    finite = original[np.isfinite(original) & (original != 0)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1.0, 99.5])
    return float(min(lo, 0.0)), float(hi if hi > lo else lo + 1.0)


def _fallback_head(defaced: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Head mask of the defaced image (Otsu + morphology); any non-zero voxel if that fails."""
    from defaceaudit.imaging.masks import head_mask

    try:
        return head_mask(defaced, vox)
    except ValueError:
        return np.nan_to_num(defaced) > 0


def render_qc_png(
    original: np.ndarray,
    defaced: np.ndarray,
    head_defaced: np.ndarray | None,
    affine: np.ndarray,
    path: str | os.PathLike,
    title: str,
) -> None:
    """Write a QC PNG of one defacing to ``path`` (atomically: temporary file + os.replace).

    ``original`` and ``defaced`` are ``[X, Y, Z]`` intensities on one RAS grid; ``affine`` (4x4)
    gives the voxel sizes; ``head_defaced`` is the bool head mask of the defaced image, or None
    to compute it (:func:`defaceaudit.imaging.masks.head_mask`, falling back to ``defaced != 0``).
    Panels, each with its true mm aspect ratio:

    1. original, mid-sagittal slice (``x = X // 2``), anterior to the right, superior up;
    2. defaced, same slice and intensity window (1st-99.5th percentile of the original's
       non-zero voxels);
    3. frontal orthographic rendering of the defaced head's surface: :func:`depth_map` shaded
       by :func:`shade_depth`, seen from the front (the patient's right on the viewer's left).
    """
    original = np.asarray(original, dtype=float)
    defaced = np.asarray(defaced, dtype=float)
    if original.ndim != 3 or original.shape != defaced.shape:
        raise ValueError(f"original {original.shape} and defaced {defaced.shape} must match, 3-D")
    vox = _voxel_sizes(affine)
    if head_defaced is None:
        head_defaced = _fallback_head(defaced, vox)
    head_defaced = np.asarray(head_defaced, dtype=bool)
    if head_defaced.shape != defaced.shape:
        raise ValueError(f"head mask {head_defaced.shape} does not match {defaced.shape}")

    nx, ny, nz = original.shape
    dx, dy, dz = (float(v) for v in vox)
    vmin, vmax = _window(original)
    mid = nx // 2
    sag_extent = (0.0, ny * dy, 0.0, nz * dz)  # y (mm) horizontal, z (mm) vertical
    shaded = shade_depth(depth_map(head_defaced, vox), vox)
    # rows z (superior up with origin="lower"), columns x reversed: patient's right on the left
    face_img = np.ma.masked_invalid(shaded.T[:, ::-1])

    fig = Figure(figsize=(12, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, data, label in (
        (axes[0], original, "original (mid-sagittal)"),
        (axes[1], defaced, "defaced (mid-sagittal)"),
    ):
        ax.imshow(
            np.nan_to_num(data[mid]).T,
            origin="lower",
            cmap="gray",
            vmin=vmin,
            vmax=vmax,
            extent=sag_extent,
            interpolation="nearest",
        )
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("posterior → anterior (mm)", fontsize=8)
        ax.set_ylabel("inferior → superior (mm)", fontsize=8)
        ax.set_aspect("equal")
    axes[2].set_facecolor("black")
    axes[2].imshow(
        face_img,
        origin="lower",
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        extent=(nx * dx, 0.0, 0.0, nz * dz),  # x decreasing to the right
        interpolation="bilinear",
    )
    axes[2].set_title("defaced surface (frontal view)", fontsize=10)
    axes[2].set_xlabel("patient right ← → left (mm)", fontsize=8)
    axes[2].set_aspect("equal")
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
