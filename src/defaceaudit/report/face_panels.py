"""Grids of frontal face renderings, like Figures 3 and 4 of Gao, Xu et al. (2025).

Each cell is one T1w image seen from the front: the head mask
(:func:`defaceaudit.imaging.masks.head_mask`,
Otsu + morphology) is turned into a frontal depth map and shaded (:func:`defaceaudit.imaging.render.
depth_map`, :func:`defaceaudit.imaging.render.shade_depth`), so the cell shows the face surface
that a
face-recognition attack would see; the background is white.

**Renderings of real heads are identifiable faces.** Write them under ``results/`` (git-ignored)
and never commit or publish them; use synthetic heads in tests and documentation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import load_t1w, to_ras, voxel_sizes_mm
from defaceaudit.imaging.render import depth_map, shade_depth
from defaceaudit.tables import atomic_path

__all__ = ["frontal_rendering", "draw_face_panel"]

#: One panel row: (row label, [(column label, path to a T1w NIfTI or None), ...]).
PanelRow = tuple[str, Sequence[tuple[str, str | os.PathLike | None]]]


def frontal_rendering(
    path: str | os.PathLike,
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Shaded frontal view of the head in one T1w NIfTI file.

    The image is loaded and validated (:func:`defaceaudit.imaging.nifti.load_t1w`), reoriented to
    RAS
    (:func:`defaceaudit.imaging.nifti.to_ras`; a no-op for the pipeline's RAS images) and masked
    with
    :func:`defaceaudit.imaging.masks.head_mask`. Returns ``(image, extent)``: ``image`` is float
    ``[Z, X]`` brightness in 0..1 with NaN where no head is seen, rows running inferior to
    superior (draw with ``origin="lower"``) and columns from the patient's right to left, so
    that the patient's right appears on the viewer's left as when facing the person;
    ``extent`` is ``(left, right, bottom, top)`` in mm for :meth:`~matplotlib.axes.Axes.imshow`.
    Raises :class:`defaceaudit.errors.ImageError` for an unreadable image and ValueError when no
    head is found.
    """
    img = to_ras(load_t1w(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    vox = voxel_sizes_mm(img.affine)
    shaded = shade_depth(depth_map(head_mask(data, vox), vox), vox)  # [X, Z]
    nx, _, nz = data.shape
    # transpose: superior up; reverse x: patient's right (high x in RAS) on the viewer's left
    image = shaded.T[:, ::-1]
    return image, (nx * vox[0], 0.0, 0.0, nz * vox[2])


def _blank(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.45")


def _bare(ax: Axes) -> None:
    """No ticks or frame, but keep the axis so the row label (y label) still shows."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def draw_face_panel(
    rows: Sequence[PanelRow],
    out_png: str | os.PathLike,
    title: str = "",
) -> None:
    """Write a grid of frontal face renderings to ``out_png`` (PNG, atomically).

    ``rows`` is a list of ``(row_label, cells)``; ``row_label`` (e.g. the defacer) is written at
    the left of the row and ``cells`` is a list of ``(column_label, path)`` with the column label
    (e.g. ``"defaced\\nMASD 3.65 mm"``) written above the cell and ``path`` a T1w NIfTI file
    (RAS, as the pipeline writes them), or None for an image that does not exist: that cell
    reads "not available". Rows may have different numbers of cells; the grid is as wide as the
    longest row. Each cell is drawn by :func:`frontal_rendering` in grey (dark = facing away
    from the light) on white, with its true mm aspect ratio.

    Renderings of real heads are identifiable: keep them under ``results/`` (git-ignored).
    Raises :class:`defaceaudit.errors.ImageError` for an existing path that cannot be read.
    """
    rows = [(str(label), list(cells)) for label, cells in rows]
    n_rows = max(len(rows), 1)
    n_cols = max((len(cells) for _, cells in rows), default=1) or 1
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")

    fig = Figure(figsize=(0.6 + 2.4 * n_cols, 0.5 + 2.9 * n_rows), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        _bare(ax)
    if not rows:
        _blank(axes[0, 0], "no images")
    for r, (row_label, cells) in enumerate(rows):
        axes[r, 0].set_ylabel(row_label, fontsize=11)
        for c, (column_label, path) in enumerate(cells):
            ax = axes[r, c]
            ax.set_title(str(column_label), fontsize=9)
            if path is None:
                _blank(ax, "not available")
                continue
            image, extent = frontal_rendering(Path(path))
            ax.imshow(
                np.ma.masked_invalid(image),
                origin="lower",
                cmap=cmap,
                vmin=0.0,
                vmax=1.0,
                extent=extent,
                interpolation="bilinear",
            )
            ax.set_aspect("equal")
            _bare(ax)
    if title:
        fig.suptitle(title, fontsize=12)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
