"""Face surfaces in a common space, for re-identification across subjects.

MASD (paper section 2.3) compares two images of ONE subject on one grid. To rank every test
subject's original face against an image of another subject, the faces must share a frame: each
test subject's original is registered rigidly (rotation and translation, so head size and shape
stay what identifies it) to a template head, and face vertices are carried into template world
(RAS, mm). Each defaced or refaced image is registered to the template ON ITS OWN, as an attacker
would do without the original (what is left of the head drives its registration); reusing the
original's transform would align the intact part of the face perfectly with its own original and
inflate re-identification.
"""

from __future__ import annotations

import logging
import os

import nibabel as nib
import numpy as np

from defaceaudit.metrics.surface import FaceCrop, face_vertices
from defaceaudit.nifti import load_mask, load_t1w, to_ras, voxel_sizes_mm
from defaceaudit.register import downsample, rigid_register
from defaceaudit.tables import atomic_path, write_json

log = logging.getLogger(__name__)

#: finest voxel size (mm) of the template used for registration
TEMPLATE_VOXEL_MM = 2.0


def to_world(vertices_mm: np.ndarray, spacing_mm, affine: np.ndarray) -> np.ndarray:
    """Vertices ``[N, 3]`` in the voxel-index frame times spacing (mm, as
    :func:`~defaceaudit.metrics.surface.face_vertices` gives them) -> world RAS mm ``[N, 3]``."""
    ijk = np.asarray(vertices_mm, dtype=float) / np.asarray(spacing_mm, dtype=float)
    affine = np.asarray(affine, dtype=float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def apply_transform(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """4x4 homogeneous ``transform`` applied to points ``[N, 3]`` (mm)."""
    transform = np.asarray(transform, dtype=float)
    return np.asarray(points, dtype=float) @ transform[:3, :3].T + transform[:3, 3]


def save_faces(path: str | os.PathLike, faces: dict[str, np.ndarray], **labels: str) -> None:
    """Write vertex arrays (``name -> [N, 3]`` float32, template world mm) and string labels to
    one ``.npz``, atomically."""
    arrays = {f"vertices_{name}": np.asarray(v, dtype=np.float32) for name, v in faces.items()}
    arrays.update({f"label_{k}": np.asarray(str(v)) for k, v in labels.items()})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def load_faces(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``name -> vertices [N, 3]`` of a file written by :func:`save_faces`."""
    with np.load(path) as data:
        return {k[len("vertices_") :]: data[k] for k in data.files if k.startswith("vertices_")}


def load_template(path: str | os.PathLike, spacing_mm) -> nib.Nifti1Image:
    """The template head (RAS), anti-aliased down to the subject's voxel size ``spacing_mm``
    (never finer than :data:`TEMPLATE_VOXEL_MM`).

    ITK builds a pyramid of the moving image too, so a template much finer than the subject
    costs time without adding accuracy.
    """
    return downsample(to_ras(load_t1w(path)), max(TEMPLATE_VOXEL_MM, *spacing_mm))


def register_to_template(
    img: nib.Nifti1Image, template: nib.Nifti1Image, seed: int = 0
) -> np.ndarray:
    """Rigid transform (4x4, RAS mm) from ``img``'s world to ``template``'s world: fixed = the
    image, moving = the template (:func:`defaceaudit.register.rigid_register`)."""
    return rigid_register(img, template, seed=seed)


def align_to_template(
    t1w: str | os.PathLike,
    head_mask: str | os.PathLike,
    template: str | os.PathLike,
    out_transform: str | os.PathLike,
    out_faces: str | os.PathLike,
    seed: int = 0,
) -> np.ndarray:
    """Register a prepared original rigidly to ``template``; write the transform and the
    original's face vertices in template world.

    Fixed = the subject (so the result maps subject world -> template world directly), moving =
    the template, anti-aliased down to the subject's voxel size (at least
    :data:`TEMPLATE_VOXEL_MM`). ``out_transform`` (JSON): ``subject_to_template_ras_mm``
    (4x4). ``out_faces`` (npz): ``vertices_original`` ``[N, 3]`` float32, template world mm.
    Returns the 4x4 matrix.
    """
    img = to_ras(load_t1w(t1w))
    head = load_mask(head_mask, img, canonical=True, reference_name=t1w)
    spacing = voxel_sizes_mm(img.affine)
    transform = register_to_template(img, load_template(template, spacing), seed=seed)
    verts = face_vertices(head, FaceCrop.from_head(head, spacing), spacing)
    world = apply_transform(to_world(verts, spacing, img.affine), transform)
    save_faces(out_faces, {"original": world}, subject=str(t1w))
    write_json(
        {
            "subject_to_template_ras_mm": np.round(transform, 6).tolist(),
            "method": "SimpleITK rigid (Euler3D), Mattes MI, fixed = subject, moving = template",
            "template": str(template),
            "seed": int(seed),
        },
        out_transform,
    )
    log.info("%s: rigid to template, %d face vertices", t1w, len(world))
    return transform
