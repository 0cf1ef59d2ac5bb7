"""Template face-mask defacing: pydeface's average head and face mask, SimpleITK registration.

This is *not* pydeface (which runs FSL flirt): it reuses pydeface 2.1.0's template
(``mean_reg2mean.nii.gz``, an average head with face) and its ``facemask.nii.gz`` (1 = keep,
0 = remove: face, jaw, front of the neck), registers the template to the subject with
:func:`defaceaudit.imaging.register.affine_register` and zeroes the voxels that the mask, carried
into the
subject's grid, says to remove.

Arrays are ``[X, Y, Z]`` on the subject's grid (RAS world, mm), as everywhere in the package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np

from defaceaudit.deface.base import DefaceResult
from defaceaudit.imaging.nifti import voxel_sizes_mm
from defaceaudit.imaging.register import affine_register, downsample, resample

__all__ = ["METHOD", "deface_facemask", "image_sha256", "remove_region"]

METHOD = "facemask: pydeface's template and face mask, SimpleITK affine registration"


def image_sha256(img: nib.Nifti1Image) -> str:
    """sha256 of the image's file when it has one, else of its voxels (float32) and affine."""
    name = img.get_filename()
    digest = hashlib.sha256()
    if name and Path(name).is_file():
        with open(name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    else:
        digest.update(np.ascontiguousarray(np.asanyarray(img.dataobj), dtype=np.float32).tobytes())
        digest.update(np.asarray(img.affine, dtype=np.float64).tobytes())
    return digest.hexdigest()


def remove_region(
    facemask: nib.Nifti1Image, target: nib.Nifti1Image, transform: np.ndarray
) -> np.ndarray:
    """The face mask's remove region (mask < 0.5) carried onto ``target``'s grid.

    ``transform`` (4x4, RAS mm) maps ``target`` world points to the face mask's world (as returned
    by :func:`affine_register` with ``target`` fixed). The remove indicator ``1 - mask`` is
    resampled linearly (outside the mask's field of view: 0, i.e. keep) and thresholded at 0.5.
    Returns bool ``[X, Y, Z]`` on ``target``'s grid, True = remove.
    """
    keep = np.asarray(facemask.dataobj, dtype=np.float32)
    keep = np.clip(keep, 0.0, 1.0) if keep.max() <= 1.0 else (keep > 0.5).astype(np.float32)
    removal = resample((1.0 - keep, facemask.affine), target, transform, order=1)
    return removal > 0.5


def deface_facemask(
    t1w: nib.Nifti1Image,
    template: nib.Nifti1Image,
    facemask: nib.Nifti1Image,
    *,
    seed: int = 0,
) -> DefaceResult:
    """Deface ``t1w`` by zeroing the template face mask's remove region.

    ``t1w``: the subject's T1w, 3-D, reoriented to RAS (any voxel size, intensities in scanner
    units). ``template``: an average head with face; ``facemask``: on the template's grid, 1 = keep,
    0 = remove. The template, anti-aliased down to the subject's finest voxel size when it is
    finer, is registered to the subject (fixed = subject; affine, seeded by ``seed``), the
    remove region is carried into subject space (:func:`remove_region`) and those voxels are
    set to 0.

    Returns a :class:`DefaceResult`: ``defaced`` float32 ``[X, Y, Z]`` on ``t1w``'s grid;
    ``removed`` bool ``[X, Y, Z]`` = remove region where the input was non-zero; ``params`` with
    the method name, the registration matrix (subject world -> template world, RAS mm, rounded
    to 4 decimals), the seed and the sha256 of the template and the face mask.
    """
    data = np.asarray(t1w.dataobj, dtype=np.float32)
    # The template is coarsened to the subject's finest voxel size first: the registration then
    # costs the same as for a subject-sized image (1 mm template, 2 mm subject: about 4x faster).
    coarse = downsample(template, min(voxel_sizes_mm(t1w.affine)))
    transform = affine_register(t1w, coarse, seed=seed)
    remove = remove_region(facemask, t1w, transform)
    defaced = np.where(remove, np.float32(0.0), data).astype(np.float32)
    removed = remove & (data != 0)
    params = {
        "method": METHOD,
        "registration": "SimpleITK affine, Mattes MI, fixed = subject, moving = template",
        "subject_to_template_ras_mm": np.round(transform, 4).tolist(),
        "seed": int(seed),
        "template_sha256": image_sha256(template),
        "facemask_sha256": image_sha256(facemask),
        "removed_voxels": int(removed.sum()),
    }
    return DefaceResult(defaced=defaced, removed=removed, params=params)
