"""Face crops in template space (paper section 3.1): the network input of the radiodensity study.

Each ORIGINAL T1w is registered affinely to a whole-head template; the same transform carries
every other image of that subject (defaced, population-average face, skull-stripped: all on the
original's voxel grid) onto one crop grid in template world. The crop keeps the anterior part of
the head (the paper removes the posterior two thirds: 201 x 87 x 261 voxels at 1 mm), the brain
is masked out, and the remaining head voxels are z-normalised.

Conventions: RAS world coordinates in mm; arrays ``[X, Y, Z]`` with axis 0 towards Right, 1
Anterior, 2 Superior. The registration result ``T`` (4x4) maps a template-world point ``p`` to the
subject-world point ``T @ p`` (:func:`defaceaudit.imaging.register.affine_register` with fixed =
template, moving = original), which is exactly what pulling subject intensities onto a grid in
template world needs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from defaceaudit.errors import ImageError
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import load_mask, load_t1w, require_grid, voxel_sizes_mm
from defaceaudit.imaging.register import affine_register, downsample, resample
from defaceaudit.tables import atomic_path, write_json

__all__ = [
    "ANTERIOR_MARGIN_MM",
    "HEAD_REGIONS",
    "MIN_REGISTRATION_VOXEL_MM",
    "CropGeometry",
    "normalise_region",
    "crop_radiodensity_face",
]

log = logging.getLogger(__name__)

#: The template is anti-aliased down to at least this voxel size (mm) for the registration:
#: an affine needs no finer detail, and ITK's pyramid on a 1 mm template costs time for nothing.
MIN_REGISTRATION_VOXEL_MM = 2.0
#: Which head mask bounds the voxels that are z-normalised (see :func:`crop_radiodensity_face`).
HEAD_REGIONS = ("own", "original")
#: Air kept in front of the template's face (mm): after an affine alignment a subject's face can
#: reach further forward than the template's. With no margin, 11 of the 24 demo subjects' faces
#: touched the crop's front face (the demo stretches faces by up to 7.5 mm, the very signal the
#: study looks for); with 12 mm none did.
ANTERIOR_MARGIN_MM = 12.0
#: a crop voxel whose pulled brain fraction exceeds this is brain (masked out): any partial
#: volume of brain counts, so no blend of brain intensity is left among the facial voxels
BRAIN_FRACTION = 1e-3
#: an image whose normalisation region holds fewer voxels than this fraction of the original's
#: has no face left (a skull-stripped image: at most a rim of interpolation): its crop is 0
MIN_REGION_FRACTION = 0.01


@dataclass(frozen=True)
class CropGeometry:
    """The face-crop grid in template world.

    ``shape``: voxels ``(X, Y, Z)``; ``affine``: 4x4 voxel-index -> template RAS world (mm), axes
    aligned with the world axes (diagonal voxel size).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm."""
        return voxel_sizes_mm(self.affine)

    @classmethod
    def from_template(
        cls,
        template_img: nib.Nifti1Image | str | os.PathLike,
        shape: tuple[int, int, int],
        voxel_mm: float,
        anterior_margin_mm: float = ANTERIOR_MARGIN_MM,
    ) -> CropGeometry:
        """A grid of ``shape`` voxels of ``voxel_mm`` mm placed on the template's head.

        The head is :func:`defaceaudit.imaging.masks.head_mask` of the template (Otsu threshold plus
        morphology; isolated bright noise cannot stretch its box). Its world bounding box (voxel
        centres of the head mask mapped through the template affine) gives the placement: the
        grid is centred on the box in x and z; in y its anterior face lies ``anterior_margin_mm``
        (default :data:`ANTERIOR_MARGIN_MM`) in front of the most anterior head voxel centre and
        it extends ``shape[1] * voxel_mm`` mm posteriorly (the anterior part of the head; the
        paper keeps 87 of ~260 mm). The margin leaves room for faces that reach further forward
        than the template's.
        """
        if isinstance(template_img, str | os.PathLike):
            template_img = load_t1w(template_img)
        shape = tuple(int(n) for n in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"crop shape must be three positive integers, got {shape}")
        if not voxel_mm > 0:
            raise ValueError(f"voxel_mm must be > 0, got {voxel_mm}")
        data = np.asarray(template_img.dataobj, dtype=np.float32)
        try:
            head = head_mask(data, voxel_sizes_mm(template_img.affine))
        except ValueError as err:
            name = template_img.get_filename() or "template"
            raise ImageError(f"{name}: no head found in the template ({err})") from err
        # the template affine may be oblique: map every head voxel, not just the box's corners
        world = nib.affines.apply_affine(template_img.affine, np.argwhere(head))
        low, high = world.min(axis=0), world.max(axis=0)
        v = float(voxel_mm)
        n = np.asarray(shape, dtype=float)
        origin = np.empty(3)
        origin[[0, 2]] = (low[[0, 2]] + high[[0, 2]]) / 2.0 - (n[[0, 2]] - 1.0) / 2.0 * v
        # last voxel's centre half a voxel behind the anterior face of the grid
        origin[1] = high[1] + float(anterior_margin_mm) - v / 2.0 - (n[1] - 1.0) * v
        affine = np.diag([v, v, v, 1.0])
        affine[:3, 3] = origin
        return cls(shape=shape, affine=affine)


def normalise_region(crop: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Z-normalise ``crop`` over the voxels of ``region``; every other voxel becomes 0.

    ``crop`` float ``[X, Y, Z]``, ``region`` bool of the same shape. Mean and SD (population SD,
    ddof 0) are computed in float64 over the region. A region of fewer than 2 voxels or with zero
    SD (nothing left, e.g. a skull-stripped image whose head is all brain) gives all zeros.
    Returns float32.
    """
    out = np.zeros(crop.shape, dtype=np.float32)
    values = np.asarray(crop, dtype=np.float64)[region]
    if values.size < 2:
        return out
    sd = float(values.std())
    if not sd > 0:
        return out
    out[region] = ((values - values.mean()) / sd).astype(np.float32)
    return out


def _head(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    try:
        return head_mask(np.asarray(img.dataobj, dtype=np.float32), voxel_sizes_mm(img.affine))
    except ValueError as err:
        raise ImageError(f"{path}: no head found ({err})") from err


def crop_radiodensity_face(
    original: str | os.PathLike,
    brain_mask: str | os.PathLike,
    images: Mapping[str, str | os.PathLike],
    template: str | os.PathLike,
    shape: tuple[int, int, int],
    voxel_mm: float,
    out_crops: str | os.PathLike | None = None,
    out_transform: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    anterior_margin_mm: float = ANTERIOR_MARGIN_MM,
    head_region: str = "own",
) -> dict[str, np.ndarray]:
    """Face crops of one subject's original and other images (paper section 3.1).

    ``original``: the prepared T1w; ``brain_mask``: its brain mask (same grid); ``images``:
    image type name (e.g. ``"quickshear"``, ``"avgface"``, ``"skullstrip"``) -> NIfTI path on
    the original's voxel grid; ``template``: whole-head template; ``shape`` crop voxels
    ``(X, Y, Z)`` of ``voxel_mm`` mm placed by :meth:`CropGeometry.from_template` (with
    ``anterior_margin_mm``).

    Steps: the original is registered to the template (:func:`affine_register`, fixed = template
    anti-aliased to ``max(voxel_mm, 2)`` mm, moving = original, ``seed``); the transform (template
    world -> subject world) pulls the original, each image (linear) and the brain mask (linear)
    onto the crop grid; every voxel with any brain in it (pulled fraction above
    :data:`BRAIN_FRACTION`) is set to 0.

    Z-normalisation region (``head_region``): each crop is normalised over its non-zero voxels
    inside a head mask and outside the brain; everything else (air, brain, voxels a defacer
    removed) is 0. An image whose region holds fewer than :data:`MIN_REGION_FRACTION` of the
    original's voxels has no face left (a skull-stripped image) and gets an all-zero crop. With
    ``"own"`` (default) the head mask is :func:`masks.head_mask` of that
    image itself (on its native grid, carried with the crop). ``"original"`` uses the original's
    head mask for every image; that hands the network the original face's outline through
    images that replace the face (the population-average face), so it is not the default.

    Writes ``out_crops`` (npz; keys = ``"original"`` and the image type names; float32
    ``[X, Y, Z]``) and ``out_transform`` (JSON: the 4x4, its direction, method, template, seed,
    crop grid) atomically when given. Raises :class:`ImageError` naming the file for an
    unreadable, empty or non-3-D image, a mask or image off the original's grid, or a head that
    cannot be found. Returns ``{"original": crop, name: crop, ...}``, float32 ``[X, Y, Z]``.
    """
    if head_region not in HEAD_REGIONS:
        raise ValueError(f"head_region must be one of {HEAD_REGIONS}, got {head_region!r}")
    if "original" in images:
        raise ValueError("'original' is reserved for the original image; rename that image type")
    original = Path(original).absolute()
    orig = load_t1w(original)
    brain = load_mask(brain_mask, orig, reference_name=original)
    others: dict[str, tuple[Path, nib.Nifti1Image]] = {}
    for name, path in images.items():
        path = Path(path).absolute()
        img = load_t1w(path)
        require_grid(
            path,
            img.shape,
            img.affine,
            orig,
            f"the original {original}",
        )
        others[name] = (path, img)

    template = Path(template).absolute()
    fixed = downsample(load_t1w(template), max(float(voxel_mm), MIN_REGISTRATION_VOXEL_MM))
    geometry = CropGeometry.from_template(
        fixed, shape, voxel_mm, anterior_margin_mm=anterior_margin_mm
    )
    transform = affine_register(fixed, orig, seed=seed)
    grid = (geometry.shape, geometry.affine)

    def pull(data: np.ndarray) -> np.ndarray:
        return resample((data, orig.affine), grid, transform, order=1)

    brain_crop = pull(brain.astype(np.float32)) > BRAIN_FRACTION
    orig_head = pull(_head(original, orig).astype(np.float32)) > 0.5
    crops: dict[str, np.ndarray] = {}
    minimum = 0
    for name, (path, img) in {"original": (original, orig), **others}.items():
        crop = pull(np.asarray(img.dataobj, dtype=np.float32))
        crop[brain_crop] = 0.0
        if head_region == "original" or name == "original":
            head = orig_head
        else:
            head = pull(_head(path, img).astype(np.float32)) > 0.5
        region = head & ~brain_crop & (crop != 0)
        voxels = int(region.sum())
        if name == "original":
            minimum = int(np.ceil(MIN_REGION_FRACTION * voxels))
        if voxels < minimum:
            log.info(
                "%s: %s crop has %d facial voxels (under %d, %g of the original's): no face "
                "left, all zeros",
                original.name,
                name,
                voxels,
                minimum,
                MIN_REGION_FRACTION,
            )
            region, voxels = np.zeros_like(region), 0
        crops[name] = normalise_region(crop, region)
        log.info("%s: %s crop, %d normalised voxels", original.name, name, voxels)

    if out_crops is not None:
        with atomic_path(out_crops) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **crops)
    if out_transform is not None:
        write_json(
            {
                "template_to_subject_ras_mm": np.round(transform, 6).tolist(),
                "method": (
                    "SimpleITK affine (similarity then affine stage, Mattes MI), "
                    "fixed = template, moving = original"
                ),
                "template": str(template),
                "registration_voxel_mm": max(float(voxel_mm), MIN_REGISTRATION_VOXEL_MM),
                "seed": int(seed),
                "crop_shape": list(geometry.shape),
                "crop_affine": np.round(geometry.affine, 6).tolist(),
                "anterior_margin_mm": float(anterior_margin_mm),
                "head_region": head_region,
            },
            out_transform,
        )
    return crops
