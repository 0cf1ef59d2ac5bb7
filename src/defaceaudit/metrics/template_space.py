"""Face surfaces in a common space, for re-identification across subjects.

MASD (paper section 2.3) compares two images of ONE subject on one grid. To rank every test
subject's original face against an image of another subject, the faces must share a frame: each
test subject's original is registered rigidly (rotation and translation, so head size and shape
stay what identifies it) to a template head, and face vertices are carried into template world
(RAS, mm). Each defaced or refaced image is registered to the template ON ITS OWN, as an attacker
would do without the original (what is left of the head drives its registration); reusing the
original's transform would align the intact part of the face perfectly with its own original and
inflate re-identification.

Re-identification compares faces only where defacing acts: the face region is the union of the
regions the configured defacers removed, carried into template space through each original's
rigid transform and dilated by a few mm (:func:`build_face_region`), so that the forehead,
scalp and ears that defacing leaves untouched never count. Each test subject's gallery face
comes from an independent acquisition of it (a second session), registered on its own
(:func:`align_gallery_face`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from defaceaudit.errors import ImageError
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import load_mask, load_t1w, save_nifti, to_ras, voxel_sizes_mm
from defaceaudit.imaging.register import coarse_grid, downsample, resample, rigid_register
from defaceaudit.metrics.surface import FaceCrop, face_vertices
from defaceaudit.tables import atomic_path, write_json

log = logging.getLogger(__name__)

#: finest voxel size (mm) of the template used for registration, and of the face region's grid
TEMPLATE_VOXEL_MM = 2.0
#: JSON key of the 4x4 subject-world -> template-world transform
TRANSFORM_KEY = "subject_to_template_ras_mm"


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
    image, moving = the template (:func:`defaceaudit.imaging.register.rigid_register`)."""
    return rigid_register(img, template, seed=seed)


def _face_in_template(
    img: nib.Nifti1Image, head: np.ndarray, template: str | os.PathLike, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rigid transform (4x4) of a RAS image to the template and its face vertices ``[N, 3]`` in
    template world (mm): the face cropped with planes found on its own ``head``."""
    spacing = voxel_sizes_mm(img.affine)
    transform = register_to_template(img, load_template(template, spacing), seed=seed)
    verts = face_vertices(head, FaceCrop.from_head(head, spacing), spacing)
    return transform, apply_transform(to_world(verts, spacing, img.affine), transform)


def _write_transform(transform: np.ndarray, template, seed: int, out_transform) -> None:
    write_json(
        {
            TRANSFORM_KEY: np.round(transform, 6).tolist(),
            "method": "SimpleITK rigid (Euler3D), Mattes MI, fixed = subject, moving = template",
            "template": str(template),
            "seed": int(seed),
        },
        out_transform,
    )


def align_face_to_template(
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
    (4x4). ``out_faces`` (npz): ``vertices_original`` ``[N, 3]`` float32, template world mm
    (the original as re-identification's ceiling probe: registered on its own, like any
    probe). Returns the 4x4 matrix.
    """
    img = to_ras(load_t1w(t1w))
    head = load_mask(head_mask, img, canonical=True, reference_name=t1w)
    transform, world = _face_in_template(img, head, template, seed)
    save_faces(out_faces, {"original": world}, subject=str(t1w))
    _write_transform(transform, template, seed, out_transform)
    log.info("%s: rigid to template, %d face vertices", t1w, len(world))
    return transform


def align_gallery_face(
    t1w: str | os.PathLike,
    template: str | os.PathLike,
    out_transform: str | os.PathLike,
    out_faces: str | os.PathLike,
    seed: int = 0,
) -> np.ndarray:
    """A gallery image (an independent acquisition of a test subject, not prepared: any
    orientation and grid) reoriented to RAS, its head mask found, registered rigidly to
    ``template`` on its own like :func:`align_face_to_template`; ``out_faces`` holds
    ``vertices_gallery`` ``[N, 3]`` (template world, mm). Returns the 4x4 matrix."""
    img = to_ras(load_t1w(t1w))
    spacing = voxel_sizes_mm(img.affine)
    try:
        head = head_mask(np.asarray(img.dataobj, dtype=np.float32), spacing)
        transform, world = _face_in_template(img, head, template, seed)
    except ValueError as err:  # no head, or no face inside the crop
        raise ImageError(f"{t1w}: no face for the re-identification gallery ({err})") from err
    save_faces(out_faces, {"gallery": world}, subject=str(t1w))
    _write_transform(transform, template, seed, out_transform)
    log.info("%s: gallery face, rigid to template, %d face vertices", t1w, len(world))
    return transform


def read_transform(path: str | os.PathLike) -> np.ndarray:
    """The 4x4 subject -> template matrix of a transform file of :func:`align_face_to_template`."""
    with open(path) as handle:
        return np.asarray(json.load(handle)[TRANSFORM_KEY], dtype=float)


@dataclass(frozen=True)
class FaceRegion:
    """A region of template world: ``mask`` bool ``[X, Y, Z]`` on the grid of ``affine`` (4x4,
    RAS mm); ``layers``: the part of it each defacer removed (defacer -> bool ``[X, Y, Z]``,
    each dilated like the whole), empty where not known."""

    mask: np.ndarray
    affine: np.ndarray
    layers: dict = field(default_factory=dict)

    def layer(self, name: str) -> FaceRegion:
        """The region one defacer removed (the whole region for a name without a layer)."""
        if name not in self.layers:
            return self
        return FaceRegion(self.layers[name], self.affine)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Bool ``[N]``: whether each point ``[N, 3]`` (template world, mm) lies in a voxel of
        the region (nearest voxel; False outside the grid)."""
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(self.affine), points)).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(self.mask.shape)), axis=1)
        found = np.zeros(len(points), dtype=bool)
        found[inside] = self.mask[tuple(ijk[inside].T)]
        return found

    @classmethod
    def load(cls, path: str | os.PathLike, layers: Sequence[str] = ()) -> FaceRegion:
        """From a mask written by :func:`build_face_region`: bit ``i`` of each voxel is layer
        ``layers[i]``, any bit the whole region."""
        img = nib.load(os.fspath(path))
        bits = np.asarray(img.dataobj).astype(np.uint8)
        named = {name: (bits >> i) & 1 == 1 for i, name in enumerate(layers)}
        return cls(bits > 0, np.asarray(img.affine, dtype=float), named)


def face_region(
    removed: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    grid: tuple[tuple[int, int, int], np.ndarray],
    dilation_mm: float,
) -> FaceRegion:
    """The union of removed regions in template space, dilated by ``dilation_mm``.

    Args:
        removed: ``(mask bool [X, Y, Z], its affine 4x4, subject -> template 4x4[, defacer])``
            per subject and defacer (the mask on the subject's grid, the transform of
            :func:`align_face_to_template`); with the defacer's name, each defacer's union is also
            kept as a layer of the region (:meth:`FaceRegion.layer`).
        grid: ``(shape, affine)`` of the template grid.
        dilation_mm: every template voxel within this distance (mm, Euclidean) of the union is
            in the region: the skin lies half a voxel outside the tissue a defacer removed,
            and subjects register to the template within a few mm.
    """
    shape, affine = grid
    layers: dict[str, np.ndarray] = {}
    for entry in removed:
        mask, mask_affine, to_template = entry[:3]
        name = entry[3] if len(entry) > 3 else ""
        layer = layers.setdefault(name, np.zeros(tuple(shape), dtype=bool))
        # each template voxel looks its subject's mask up (no holes, unlike pushing voxels)
        layer |= (
            resample(
                (np.asarray(mask, np.float32), mask_affine),
                (shape, affine),
                np.linalg.inv(to_template),
                order=1,
            )
            > 0.5
        )
    for name, layer in layers.items():
        if dilation_mm > 0 and layer.any():
            distance = ndimage.distance_transform_edt(~layer, sampling=voxel_sizes_mm(affine))
            layers[name] = distance <= dilation_mm
    union = np.zeros(tuple(shape), dtype=bool)
    for layer in layers.values():
        union |= layer
    named = {name: layer for name, layer in layers.items() if name}
    return FaceRegion(union, np.asarray(affine, dtype=float), named)


def build_face_region(
    subjects: Mapping[str, Mapping],
    template: str | os.PathLike,
    out_mask: str | os.PathLike,
    out_sidecar: str | os.PathLike,
    dilation_mm: float,
    defacers: Sequence[str] = (),
) -> FaceRegion:
    """The re-identification face region (:func:`face_region`) on the template's grid at
    :data:`TEMPLATE_VOXEL_MM`, from files.

    Args:
        subjects: ``subject -> {"transform": JSON of align_face_to_template, "removed": [masks of
            the subject's defaced images]}``.
        defacers: their names, for the sidecar.
    Writes ``out_mask`` (uint8 NIfTI, template world) and ``out_sidecar`` (JSON: defacers,
    subjects, dilation, volume in mL).
    """
    grid = coarse_grid(to_ras(load_t1w(template)), TEMPLATE_VOXEL_MM)
    removed = []
    for subject, files in subjects.items():
        to_template = read_transform(files["transform"])
        # each subject's masks come in the order of ``defacers``: each names its layer
        count = len(files["removed"])
        names = list(defacers) if len(defacers) == count else [""] * count
        for path, name in zip(files["removed"], names, strict=True):
            img = to_ras(nib.load(os.fspath(path)))
            removed.append((np.asarray(img.dataobj) > 0.5, img.affine, to_template, name))
        log.info("%s: %d removed regions", subject, len(files["removed"]))
    region = face_region(removed, grid, dilation_mm)
    if not region.mask.any():
        raise ImageError(f"the defacers ({', '.join(defacers)}) removed nothing: no face region")
    if len(region.layers) > 8:
        raise ValueError(f"at most 8 defacers make a face region, got {len(region.layers)}")
    # one bit per defacer's layer (FaceRegion.load); a voxel of the region has at least one
    bits = np.zeros(region.mask.shape, dtype=np.uint8)
    layers = [name for name in defacers if name in region.layers]
    for i, name in enumerate(layers):
        bits |= region.layers[name].astype(np.uint8) << i
    bits[region.mask & (bits == 0)] = 1
    save_nifti(bits, out_mask, affine=region.affine, dtype=np.uint8)
    volume_ml = float(region.mask.sum() * np.prod(voxel_sizes_mm(region.affine))) / 1000
    write_json(
        {
            "description": "union of the regions the defacers removed, in template space, "
            "dilated; bit i of a voxel: layers[i] removed it; re-identification compares a "
            "defacer's images inside its own layer, the originals inside the union",
            "defacers": list(defacers),
            "layers": layers,
            "subjects": list(subjects),
            "dilation_mm": float(dilation_mm),
            "voxel_mm": TEMPLATE_VOXEL_MM,
            "volume_ml": round(volume_ml, 1),
            "template": str(template),
        },
        out_sidecar,
    )
    log.info("face region: %.0f mL from %d masks", volume_ml, len(removed))
    return region
