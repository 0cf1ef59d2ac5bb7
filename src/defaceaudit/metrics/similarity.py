"""SSIM and PSNR inside a mask (whole head, or the face area M5 of the paper's Figure S1).

Intensities are normalised before comparison: both images are divided by the ORIGINAL's 99.5th
percentile inside the mask (no clipping, which would hide errors above it), so the peak signal,
the ``data_range`` of SSIM and of PSNR, is 1 and the two images share one scale. SSIM uses a
Gaussian window (sigma 1.5 voxels, population covariance, as Wang et al.) and is the mean of the
SSIM map inside the mask; PSNR is 10 log10(1 / MSE) with the MSE inside the mask (infinite for
identical images).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def normalise(original: np.ndarray, other: np.ndarray, mask: np.ndarray):
    """Both volumes divided by the original's 99.5th percentile in ``mask``."""
    scale = float(np.percentile(original[mask], 99.5))
    if scale <= 0:
        raise ValueError("the original image is empty inside the mask")
    return original / scale, other / scale


def similarity(original: np.ndarray, other: np.ndarray, mask: np.ndarray) -> dict:
    """``{"ssim", "psnr_db", "n_voxels"}`` of ``other`` against ``original`` inside ``mask``.

    Arrays are [X, Y, Z] on one grid; ``mask`` is bool.
    """
    if not (original.shape == other.shape == mask.shape):
        raise ValueError(f"grids differ: {original.shape}, {other.shape}, mask {mask.shape}")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the mask is empty")
    a, b = normalise(np.asarray(original, float), np.asarray(other, float), mask)
    _, ssim_map = structural_similarity(
        a,
        b,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    mse = float(np.mean((a[mask] - b[mask]) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return {"ssim": float(ssim_map[mask].mean()), "psnr_db": psnr, "n_voxels": int(mask.sum())}
