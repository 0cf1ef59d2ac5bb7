"""Quality control of one defaced image, and the per-defacer outcome table (Gao et al. 2023).

Arrays are ``[X, Y, Z]`` on one grid reoriented to RAS (axis 0 Right, 1 Anterior, 2 Superior);
voxel sizes in mm, volumes in mL. A defacing fails in one of the published ways:

* **Failure I** (face left): most of the facial skin surface is unchanged;
* **Failure II** (brain removed): more than a small fraction of brain voxels changed;
* plus **failure** when the output is identical to the input or all zero (the tool did nothing or
  wrote nothing useful) and **job_failed** when the job produced no output at all (recorded by
  the caller: ``{"defacer": ..., "subject": ..., "status": "job_failed", "error": ...}``).

A voxel is *changed* when ``|defaced - original| > rel_tol * scale`` with ``scale`` the 99th
percentile of ``|original|`` over its non-zero voxels (a robust intensity scale; the tolerance
absorbs float round-off of tools that rewrite the image, not real edits). Refacing tools
(mri_reface) replace the face rather than zero it: replaced voxels count as changed too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "FACE_ANTERIOR_MARGIN_MM",
    "FACE_SUPERIOR_MARGIN_MM",
    "STATUSES",
    "face_region_box",
    "facial_surface",
    "qc_record",
    "qc_summary",
    "qc_table",
]

#: The face region starts this far (mm) behind the brain's most anterior voxel centre.
FACE_ANTERIOR_MARGIN_MM = 20.0
#: The face region ends this far (mm) above the brain's centroid (brow ridge in, forehead out).
FACE_SUPERIOR_MARGIN_MM = 10.0
#: Outcome of one (subject, defacer) job.
STATUSES = ("success", "failure_I", "failure_II", "failure", "job_failed")
#: Row labels of :func:`qc_summary` for each status.
_LABELS = {
    "success": "Success",
    "failure_I": "Failure I",
    "failure_II": "Failure II",
    "failure": "Failure (identical/empty)",
    "job_failed": "Job failed",
}


def _check_same_shape(**arrays: np.ndarray) -> tuple[int, int, int]:
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    first = next(iter(shapes.values()))
    if len(first) != 3 or any(s != first for s in shapes.values()):
        raise ValueError(f"need 3-D arrays of one shape, got {shapes}")
    return first


def facial_surface(head: np.ndarray, face_region: np.ndarray) -> np.ndarray:
    """Outer-surface voxels of ``head`` inside ``face_region`` (both bool ``[X, Y, Z]``).

    The surface is ``head & ~erosion(head)`` with a 6-connected 3x3x3 cross, one voxel thick. The
    erosion treats outside the field of view as head (``border_value=1``), so voxels cut by the
    FOV edge (the neck's bottom slice) are not surface: only skin facing air is.
    """
    head = np.asarray(head, dtype=bool)
    _check_same_shape(head=head, face_region=face_region)
    inner = ndimage.binary_erosion(
        head, structure=ndimage.generate_binary_structure(3, 1), border_value=1
    )
    return head & ~inner & np.asarray(face_region, dtype=bool)


def qc_record(
    original: np.ndarray,
    defaced: np.ndarray,
    brain: np.ndarray,
    head: np.ndarray,
    face_region: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    brain_threshold: float = 0.01,
    face_threshold: float = 0.5,
    rel_tol: float = 1e-6,
) -> dict:
    """QC metrics and outcome of one defaced image (all values plain Python scalars).

    Inputs are ``[X, Y, Z]`` arrays on one RAS grid: ``original`` and ``defaced`` intensities
    (same units), ``brain`` the brain mask and ``head`` the head mask of the *original* (bool),
    ``face_region`` a bool region in front of/below the brain (e.g. :func:`face_region_box`);
    ``voxel_size_mm`` the voxel edge lengths ``(dx, dy, dz)`` in mm.

    Returns a dict:

    * ``brain_altered_fraction``: changed brain voxels / brain voxels (0..1);
    * ``brain_altered_ml``: their volume in mL;
    * ``face_surface_intact_fraction``: unchanged facial-surface voxels / facial-surface voxels
      (:func:`facial_surface` of ``head`` and ``face_region``); NaN if there are none;
    * ``n_brain_voxels``, ``n_face_surface_voxels``, ``changed_ml`` (all changed voxels);
    * ``identical`` (``defaced == original`` everywhere, NaNs equal) and ``empty`` (all zero);
    * ``status``: ``"failure"`` if identical or empty; else ``"failure_II"`` if
      ``brain_altered_fraction > brain_threshold`` (brain removed); else ``"failure_I"`` if
      ``face_surface_intact_fraction > face_threshold`` (face left); else ``"success"``.

    Raises ValueError for mismatched shapes or an empty brain mask.
    """
    original = np.asarray(original, dtype=np.float64)
    defaced = np.asarray(defaced, dtype=np.float64)
    brain = np.asarray(brain, dtype=bool)
    head = np.asarray(head, dtype=bool)
    face_region = np.asarray(face_region, dtype=bool)
    _check_same_shape(
        original=original, defaced=defaced, brain=brain, head=head, face_region=face_region
    )
    vox = np.asarray(voxel_size_mm, dtype=float)
    if vox.shape != (3,) or not np.all(vox > 0):
        raise ValueError(f"voxel_size_mm must be three positive sizes, got {voxel_size_mm}")
    if not brain.any():
        raise ValueError("qc_record: the brain mask is empty")
    voxel_ml = float(np.prod(vox)) / 1000.0

    orig = np.nan_to_num(original, nan=0.0, posinf=0.0, neginf=0.0)
    dfc = np.nan_to_num(defaced, nan=0.0, posinf=0.0, neginf=0.0)
    nonzero = np.abs(orig[orig != 0])
    scale = float(np.percentile(nonzero, 99)) if nonzero.size else 1.0
    tol = rel_tol * (scale if scale > 0 else 1.0)
    changed = np.abs(dfc - orig) > tol

    n_brain = int(np.count_nonzero(brain))
    n_brain_changed = int(np.count_nonzero(changed & brain))
    surface = facial_surface(head, face_region)
    n_surface = int(np.count_nonzero(surface))
    n_surface_intact = int(np.count_nonzero(surface & ~changed))
    brain_frac = n_brain_changed / n_brain
    face_frac = n_surface_intact / n_surface if n_surface else float("nan")

    identical = bool(np.array_equal(original, defaced, equal_nan=True))
    empty = not bool(np.any(dfc))
    if identical or empty:
        status = "failure"
    elif brain_frac > brain_threshold:
        status = "failure_II"
    elif n_surface and face_frac > face_threshold:
        status = "failure_I"
    else:
        status = "success"
    return {
        "status": status,
        "brain_altered_fraction": float(brain_frac),
        "brain_altered_ml": float(n_brain_changed * voxel_ml),
        "face_surface_intact_fraction": float(face_frac),
        "changed_ml": float(np.count_nonzero(changed) * voxel_ml),
        "n_brain_voxels": n_brain,
        "n_face_surface_voxels": n_surface,
        "identical": identical,
        "empty": empty,
        "brain_threshold": float(brain_threshold),
        "face_threshold": float(face_threshold),
    }


def face_region_box(head: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Bool ``[X, Y, Z]`` region holding the face of a RAS head: a world-space box minus brain.

    With voxel centres in world mm (``affine`` 4x4, RAS: +y anterior, +z superior),
    ``y_front`` = the largest y of any brain voxel (frontal pole) and ``z_mid`` = the mean z of
    the brain voxels, the region is every voxel with

    * ``y > y_front - FACE_ANTERIOR_MARGIN_MM`` (20 mm: the cheeks and eye sockets start slightly
      behind the frontal pole), and
    * ``z < z_mid + FACE_SUPERIOR_MARGIN_MM`` (10 mm: includes the eyebrows and brow ridge,
      **excludes the forehead** above them, which defacers are not required to remove),
    * and not in ``brain``.

    Covers eyes, nose, cheeks, lips, chin (and the front of the neck). It is wider than the
    face box of :func:`defaceaudit.imaging.masks.face_volume_ml` (no margins), so that QC does not
    miss
    a face whose surface lies partly behind the frontal pole. ``head`` only fixes the grid.
    Raises ValueError for mismatched shapes or an empty brain mask.
    """
    head = np.asarray(head, dtype=bool)
    brain = np.asarray(brain, dtype=bool)
    shape = _check_same_shape(head=head, brain=brain)
    if not brain.any():
        raise ValueError("face_region_box: the brain mask is empty")
    affine = np.asarray(affine, dtype=float)
    rows = affine[1:3]  # world y and z rows
    ijk = np.vstack(np.nonzero(brain)).astype(float)
    brain_yz = rows[:, :3] @ ijk + rows[:, 3:]
    y_front = float(brain_yz[0].max())
    z_mid = float(brain_yz[1].mean())
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
    ii, jj, kk = i[:, None, None], j[None, :, None], k[None, None, :]
    y = rows[0, 0] * ii + rows[0, 1] * jj + rows[0, 2] * kk + rows[0, 3]
    z = rows[1, 0] * ii + rows[1, 1] * jj + rows[1, 2] * kk + rows[1, 3]
    region = (y > y_front - FACE_ANTERIOR_MARGIN_MM) & (z < z_mid + FACE_SUPERIOR_MARGIN_MM)
    return np.broadcast_to(region, shape) & ~brain


def qc_table(records: list[dict]) -> pd.DataFrame:
    """One row per (subject, defacer) record, ``status`` first; ``defacer`` is required.

    Records come from :func:`qc_record` with ``defacer`` (and usually ``subject``) added by the
    caller, or are ``{"defacer", "subject", "status": "job_failed", "error"}`` for jobs that
    produced no output. Raises ValueError for a record without ``defacer`` or with an unknown
    status.
    """
    for rec in records:
        if "defacer" not in rec:
            raise ValueError(f"QC record without 'defacer': {rec}")
        if rec.get("status") not in STATUSES:
            raise ValueError(f"QC record status {rec.get('status')!r} not in {STATUSES}")
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return pd.DataFrame(columns=["subject", "defacer", "status"])
    first = [c for c in ("subject", "defacer", "status") if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def qc_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Outcome counts per defacer, laid out like Gao et al. (2023): rows outcome, columns defacer.

    Rows ``Success``, ``Failure I`` (face left) and ``Failure II`` (brain removed) always;
    ``Failure (identical/empty)`` and ``Job failed`` only when some record has that status; and
    ``Total``. Columns are the defacers in order of first appearance; values are int counts.
    """
    defacers = list(dict.fromkeys(table["defacer"])) if len(table) else []
    statuses = ["success", "failure_I", "failure_II"]
    statuses += [
        s for s in ("failure", "job_failed") if len(table) and (table["status"] == s).any()
    ]
    counts = pd.crosstab(table["status"], table["defacer"]) if len(table) else pd.DataFrame()
    counts = counts.reindex(index=statuses, columns=defacers, fill_value=0).astype(int)
    counts.index = [_LABELS[s] for s in statuses]
    counts.loc["Total"] = counts.sum(axis=0).astype(int)
    counts.index.name = "outcome"
    counts.columns.name = "defacer"
    return counts
