"""A sheet of one subject's face-recognition renderings with the faces the recognizer found.

Rows are the subject's images (original, gallery, defaced, population average, DPM-refaced),
columns the views; a green box marks the face found (with the detector's score), a cell
without one says "no face". The sheet is titled PRIVATE: **renderings of real heads are
identifiable faces**; it goes into the report (results/, never version control) only.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from defaceaudit.metrics.face_recognition import load_embeddings, load_renderings
from defaceaudit.tables import atomic_path

__all__ = ["plot_face_views"]

#: row order: the ceiling and the gallery first, then what defacing and refacing made
_ORDER = ("original", "gallery", "defaced", "population_average", "dpm_refaced")


def _row_key(label: str) -> tuple[int, str]:
    kind = label.partition("__")[0]
    return (_ORDER.index(kind) if kind in _ORDER else len(_ORDER), label)


def plot_face_views(
    renderings: str | os.PathLike,
    embeddings: str | os.PathLike,
    out_png: str | os.PathLike,
    subject: str = "",
) -> None:
    """Draw the renderings (:func:`~defaceaudit.metrics.face_recognition.render_face_views`)
    and found faces (:func:`~defaceaudit.metrics.face_recognition.embed_face_views`) of one
    subject into ``out_png`` (atomically)."""
    views, images = load_renderings(renderings)
    faces = load_embeddings(embeddings)
    labels = sorted(images, key=_row_key)
    cell = 1.6
    fig = Figure(figsize=(1.9 + cell * len(views), 0.8 + cell * len(labels)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(labels), len(views), squeeze=False)
    for r, label in enumerate(labels):
        found = faces.get(label, {})
        for c, view in enumerate(views):
            ax = axes[r, c]
            ax.imshow(images[label][c], cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if found and bool(found["found"][c]):
                left, top, right, bottom = (int(v) for v in found["box"][c])
                ax.add_patch(
                    Rectangle(
                        (left, top), right - left, bottom - top, fill=False, ec="lime", lw=1.2
                    )
                )
                ax.text(2, 2, f"{found['score'][c]:.2f}", color="lime", fontsize=6, va="top")
            else:
                ax.text(
                    0.5, 0.04, "no face", color="orange", fontsize=7, ha="center",
                    transform=ax.transAxes,
                )  # fmt: skip
            if r == 0:
                ax.set_title(view, fontsize=7)
            if c == 0:
                ax.set_ylabel(label.replace("__", "\n"), fontsize=7)
    n_found = sum(int(np.any(faces.get(label, {}).get("found", False))) for label in labels)
    fig.suptitle(
        f"PRIVATE (identifiable faces) - sub-{subject}: renderings matched by face recognition; "
        f"a face found in {n_found} of {len(labels)} images",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
