"""Volumes for the refacing models: intensity scaling to [-1, 1], padding, resolution changes.

Intensities: every image is divided by the 99.5th percentile of the DEFACED image's non-zero
voxels (what an attacker has; the original is never needed at sampling time) and mapped to
[-1, 1] (0 -> -1, the scale -> 1), clipped; the scale is kept to map samples back to the
image's units. Training pairs (defaced input, original target) share the input's scale.

Grids: volumes are ``[X, Y, Z]`` on the prepared RAS grid (Z axial). Both networks need sizes
divisible by a power of two, and stage 1 works on a grid ``factor`` times coarser, so volumes are
padded at the end of each axis with -1 (background) to :func:`padded_shape` and cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defaceaudit.reface.sizing import padded_shape as padded_shape

#: percentile of the defaced image's non-zero voxels mapped to +1
SCALE_PERCENTILE = 99.5


def intensity_scale(defaced: np.ndarray) -> float:
    """The scale (image units) of a defaced volume: :data:`SCALE_PERCENTILE` of its non-zero
    voxels. Raises ValueError for an empty volume."""
    values = np.asarray(defaced, dtype=np.float32)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        raise ValueError("the defaced image has no positive voxels")
    return float(np.percentile(values, SCALE_PERCENTILE))


def to_unit(volume: np.ndarray, scale: float) -> np.ndarray:
    """Image units -> [-1, 1] (float32): ``clip(2 v / scale - 1, -1, 1)``."""
    return np.clip(2.0 * np.asarray(volume, dtype=np.float32) / scale - 1.0, -1.0, 1.0)


def from_unit(volume: np.ndarray, scale: float) -> np.ndarray:
    """[-1, 1] -> image units (float32), the inverse of :func:`to_unit` inside its range."""
    return ((np.asarray(volume, dtype=np.float32) + 1.0) * 0.5 * scale).astype(np.float32)


def pad_volume(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``volume`` [X, Y, Z] padded at the end of each axis with -1 to ``shape``."""
    pads = [(0, int(t) - int(n)) for n, t in zip(volume.shape, shape, strict=True)]
    if any(p[1] < 0 for p in pads):
        raise ValueError(f"cannot pad {volume.shape} to the smaller {tuple(shape)}")
    return np.pad(np.asarray(volume, dtype=np.float32), pads, constant_values=-1.0)


def crop_volume(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The first ``shape`` voxels of ``volume`` (undoes :func:`pad_volume`)."""
    return volume[: shape[0], : shape[1], : shape[2]]


def downsample(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, C, X, Y, Z] -> [B, C, X/f, Y/f, Z/f] by block means (sizes must divide by f)."""
    if factor == 1:
        return volume
    return F.avg_pool3d(volume, kernel_size=factor, stride=factor)


def upsample(volume: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[B, C, x, y, z] -> [B, C, *size], trilinear (the stage-1 output as stage-2 condition)."""
    return F.interpolate(volume, size=tuple(size), mode="trilinear", align_corners=False)


def upsample_window(low: torch.Tensor, factor: int, window: Sequence[slice]) -> torch.Tensor:
    """``upsample(low, factor * low's size)[..., *window]`` without the full-resolution volume.

    ``low``: [..., x, y, z] (at least 4-D); ``window``: three slices (steps of 1) of the
    full-resolution grid ``factor * (x, y, z)``. Returns [..., *window sizes].

    Trilinear interpolation (``align_corners=False``) at an integer ``factor`` reads, for each
    full-resolution voxel, the two nearest low-resolution voxels along each axis, clamped at the
    volume's edges. Upsampling the low-resolution block that covers the window with one voxel of
    margin (where not at the volume's edge) gives every voxel of the window the same neighbours
    and weights (the block's own edge clamping touches only its margin); its crop is the window
    of the full upsample: bit for bit when ``factor`` is a power of two, else to float32 rounding
    of the interpolation weights.
    """
    block, crop = [], []
    for part, n in zip(window, low.shape[-3:], strict=True):
        lo = max(part.start // factor - 1, 0)
        hi = min(-(-part.stop // factor) + 1, n)
        block.append(slice(lo, hi))
        crop.append(slice(part.start - lo * factor, part.stop - lo * factor))
    piece = low[..., *block]
    squeeze = piece.ndim == 4  # F.interpolate needs [B, C, x, y, z]
    if squeeze:
        piece = piece[None]
    up = upsample(piece, [factor * n for n in piece.shape[-3:]])[..., *crop]
    return up[0] if squeeze else up
