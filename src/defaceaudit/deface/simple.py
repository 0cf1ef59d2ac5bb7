"""Native defacers that need nothing but the brain mask: quickshear and skull-stripping."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import quickshear

from defaceaudit.deface.base import DefaceResult


def deface_quickshear(t1w: nib.Nifti1Image, brain: np.ndarray, buffer: int = 10) -> DefaceResult:
    """Quickshear (the real package, 1.2.0): shear off everything anterior-inferior of a plane
    tangent to the brain mask's convex hull, ``buffer`` voxels away from it.

    Args:
        t1w: prepared T1w, RAS, [X, Y, Z].
        brain: bool brain mask on the same grid.
    """
    data = np.asarray(t1w.dataobj, dtype=np.float32)
    mask_img = nib.Nifti1Image(brain.astype(np.uint8), t1w.affine)
    anat_img = nib.Nifti1Image(data, t1w.affine)
    defaced = np.asarray(quickshear.quickshear(anat_img, mask_img, buff=buffer).dataobj)
    defaced = defaced.astype(np.float32)
    removed = (defaced == 0) & (data != 0)
    return DefaceResult(defaced, removed, {"buffer_voxels": buffer, "quickshear": "1.2.0"})


def skull_strip(t1w: nib.Nifti1Image, brain: np.ndarray) -> DefaceResult:
    """Keep the brain only: every voxel outside the brain mask set to 0."""
    data = np.asarray(t1w.dataobj, dtype=np.float32)
    defaced = np.where(brain, data, 0.0).astype(np.float32)
    return DefaceResult(defaced, ~brain & (data != 0), {})
