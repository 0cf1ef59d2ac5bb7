"""The metrics on NIfTI files: load, check both lie on one grid, head masks, measure."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import load_mask, load_t1w, require_grid, to_ras, voxel_sizes_mm
from defaceaudit.metrics.similarity import similarity
from defaceaudit.metrics.surface import masd


def load_pair(original: str | os.PathLike, other: str | os.PathLike):
    """Both images in RAS; ImageError naming both files when their grids differ."""
    a, b = to_ras(load_t1w(original)), to_ras(load_t1w(other))
    require_grid(other, b.shape, b.affine, a, original, hint="resample one onto the other first")
    return a, b


def _data(img: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(img.dataobj, dtype=np.float32)


def masd_files(original: str | os.PathLike, other: str | os.PathLike) -> dict:
    """MASD (mm) between the faces of two T1w files on one grid (head masks by Otsu)."""
    a, b = load_pair(original, other)
    zooms = voxel_sizes_mm(a.affine)
    return masd(head_mask(_data(a), zooms), head_mask(_data(b), zooms), zooms)


def similarity_files(
    original: str | os.PathLike, other: str | os.PathLike, mask: str | os.PathLike | None = None
) -> dict:
    """SSIM and PSNR (dB) inside ``mask`` (default: the original's head mask)."""
    a, b = load_pair(original, other)
    if mask is None:
        region = head_mask(_data(a), voxel_sizes_mm(a.affine))
    else:
        region = load_mask(mask, a, canonical=True, reference_name=original)
    return similarity(_data(a), _data(b), region)
