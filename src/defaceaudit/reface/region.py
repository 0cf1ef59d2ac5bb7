"""Where the refacing attack generates voxels, computed from what an attacker holds.

An attacker holds the defaced image only: not the original, not its head mask, not the mask of
what the defacer removed (that mask is "removed where the ORIGINAL was non-zero", so on an
original whose background is exactly 0 it is the face's own silhouette). What a defaced image
does show is where it is zero: defacers write 0 over what they remove. The attack's region is
therefore

    region = (defaced == 0) & (distance to the remaining head <= envelope_mm)

The envelope keeps the model from being asked to fill air far from any head (a quickshear cut
zeroes a whole half-space, about a quarter of the volume, mostly air). The remaining head is the
head mask of the defaced image (:func:`defaceaudit.imaging.masks.head_mask`) less its zero voxels.

How far the envelope must reach depends on the defacer (a face mask removes the jaw and the front
of the neck, about 55 mm from the remaining head; skull-stripping removes everything outside the
brain). The attacker learns it from his own training pairs, where he holds both images:
:func:`envelope_needed` is the distance from the remaining head within which
:data:`ENVELOPE_COVERAGE` of the removed tissue lies, plus :data:`ENVELOPE_MARGIN_MM`.

Arrays are ``[X, Y, Z]`` on the image's RAS grid; distances in mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from defaceaudit.imaging.masks import head_mask

#: fraction of the training pairs' removed tissue the envelope must hold
ENVELOPE_COVERAGE = 0.995
#: mm added to the distance that holds :data:`ENVELOPE_COVERAGE` of the removed tissue
ENVELOPE_MARGIN_MM = 5.0


def remaining_head(defaced: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """The head the defacer left, bool ``[X, Y, Z]``: the head mask of ``defaced`` less its
    zero voxels (a mask's closing and hole filling may reach into the zeroed region); the
    positive voxels where no head mask can be found (a nearly empty image)."""
    data = np.nan_to_num(np.asarray(defaced, dtype=np.float32))
    try:
        head = head_mask(data, spacing_mm)
    except ValueError:
        head = data > 0
    return head & (data != 0)


def head_distance(defaced: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Distance (mm, float32 ``[X, Y, Z]``) of every voxel to the nearest voxel of
    :func:`remaining_head` (0 inside it); +inf everywhere when no head is left."""
    head = remaining_head(defaced, spacing_mm)
    if not head.any():
        return np.full(np.shape(defaced), np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~head, sampling=spacing_mm).astype(np.float32)


def attack_region(
    defaced: np.ndarray, spacing_mm: Sequence[float], envelope_mm: float
) -> np.ndarray:
    """The voxels the attack generates, bool ``[X, Y, Z]``: zero voxels of ``defaced`` within
    ``envelope_mm`` of the remaining head (every zero voxel when no head is left)."""
    zero = np.nan_to_num(np.asarray(defaced, dtype=np.float32)) == 0
    distance = head_distance(defaced, spacing_mm)
    if np.isinf(distance).all():  # no head left to measure the envelope from
        return zero
    return zero & (distance <= float(envelope_mm))


def removed_tissue_distances(
    original_head: np.ndarray, defaced: np.ndarray, spacing_mm: Sequence[float]
) -> np.ndarray:
    """Distances (mm, 1-D) from the remaining head of every voxel of the original's head that
    ``defaced`` zeroes (the tissue to re-grow): what :func:`envelope_needed` summarises."""
    zero = np.nan_to_num(np.asarray(defaced, dtype=np.float32)) == 0
    tissue = np.asarray(original_head, dtype=bool) & zero
    return head_distance(defaced, spacing_mm)[tissue]


def envelope_needed(distances: Sequence[np.ndarray]) -> float:
    """The envelope (mm, a multiple of 5) that holds :data:`ENVELOPE_COVERAGE` of the removed
    tissue of every training pair, ``distances`` one array per pair
    (:func:`removed_tissue_distances`), plus :data:`ENVELOPE_MARGIN_MM`. A pair whose defacer
    removed no tissue adds nothing; with none removed at all the envelope is the margin."""
    reach = 0.0
    for d in distances:
        d = np.asarray(d, dtype=np.float64)
        d = d[np.isfinite(d)]
        if d.size:
            reach = max(reach, float(np.quantile(d, ENVELOPE_COVERAGE)))
    return 5.0 * math.ceil((reach + ENVELOPE_MARGIN_MM) / 5.0)
