"""Look at the input images before a run: warn about heads that already look defaced, and
about images with no brain where their brain mask has one (``defaceaudit check-inputs``).

Arrays are ``[X, Y, Z]`` in RAS (:func:`~defaceaudit.imaging.nifti.to_ras`), volumes in mL.
Both checks need a brain mask: the subject's own (BIDS derivatives or the manifest) or, once the
prepare stage has run, the prepared one; without either the image is not scanned.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defaceaudit.errors import DefaceAuditError
from defaceaudit.imaging.masks import face_volume_ml, head_mask
from defaceaudit.imaging.nifti import load_mask, load_t1w, to_ras, voxel_sizes_mm

__all__ = [
    "LOOKS_DEFACED_FACE_FRACTION",
    "NO_BRAIN_OUTSIDE_FRACTION",
    "ScanReport",
    "scan_cohort",
    "scan_t1w",
]

#: a head whose face box (head in front of and below the brain:
#: :func:`~defaceaudit.imaging.masks.face_volume_ml`) holds less than this fraction of its brain
#: volume looks defaced. On the demo (2.5 mm) originals hold 0.07-0.23 of their brain volume
#: there, their quickshear, facemask and niimath outputs 0.002-0.04, skull-stripped ones 0.
LOOKS_DEFACED_FACE_FRACTION = 0.05
#: more than this fraction of the brain mask outside the image's head: no brain in the image
#: where the mask has one (a defacer that removed it, or a mask of another image)
NO_BRAIN_OUTSIDE_FRACTION = 0.5


def scan_t1w(t1w: str | os.PathLike, brain_mask: str | os.PathLike) -> list[str]:
    """Warnings about one T1w and the brain mask on its grid, each naming the file.

    * no brain where one is expected: the brain mask is empty, or more than
      :data:`NO_BRAIN_OUTSIDE_FRACTION` of it lies outside the image's head mask
      (:func:`~defaceaudit.imaging.masks.head_mask`: background there);
    * already defaced: the head in the face box is less than
      :data:`LOOKS_DEFACED_FACE_FRACTION` of the brain's volume (a face has several times that).

    A file that cannot be read is one warning too (the run would stop on it).
    """
    name = Path(t1w).absolute()
    try:
        img = to_ras(load_t1w(t1w))
        brain = load_mask(brain_mask, img, canonical=True, reference_name=name)
    except DefaceAuditError as err:
        return [" ".join(str(err).split())]
    if not brain.any():
        return [f"{name}: no brain where one is expected (its brain mask {brain_mask} is empty)"]
    data = np.asarray(img.dataobj, dtype=np.float32)
    try:
        head = head_mask(data, voxel_sizes_mm(img.affine))
    except ValueError as err:
        return [f"{name}: no head found ({err})"]
    outside = float(np.count_nonzero(brain & ~head)) / float(brain.sum())
    if outside > NO_BRAIN_OUTSIDE_FRACTION:
        return [
            f"{name}: no brain where one is expected ({outside:.0%} of its brain mask is "
            "background: brain removed, or the mask of another image)"
        ]
    voxel_ml = abs(float(np.linalg.det(img.affine[:3, :3]))) / 1000.0
    brain_ml = float(brain.sum()) * voxel_ml
    face_ml = face_volume_ml(head, brain, img.affine)
    if face_ml < LOOKS_DEFACED_FACE_FRACTION * brain_ml:
        return [
            f"{name}: looks defaced already ({face_ml:.0f} mL of head in front of and below "
            f"the brain, {face_ml / brain_ml:.1%} of its {brain_ml:.0f} mL; a face holds more "
            f"than {LOOKS_DEFACED_FACE_FRACTION:.0%}): defacing it again measures nothing"
        ]
    return []


@dataclass
class ScanReport:
    """What :func:`scan_cohort` found: warnings (one line each), how many images were scanned,
    and the subjects it could not scan (no image yet, or no brain mask yet)."""

    warnings: list[str] = field(default_factory=list)
    scanned: int = 0
    not_scanned: list[str] = field(default_factory=list)


def scan_cohort(subjects: Iterable, prepared_brain_mask=None) -> ScanReport:
    """:func:`scan_t1w` for every subject (``Subject`` records: ``subject``, ``t1w``,
    ``brain_mask``) whose T1w exists, with its own brain mask or else
    ``prepared_brain_mask(subject_id)`` (a path; used when that file exists)."""
    report = ScanReport()
    for subject in subjects:
        mask = subject.brain_mask
        if mask is None and prepared_brain_mask is not None:
            prepared = Path(prepared_brain_mask(subject.subject))
            mask = prepared if prepared.is_file() else None
        if not Path(subject.t1w).is_file() or mask is None:
            report.not_scanned.append(subject.subject)
            continue
        report.warnings += scan_t1w(subject.t1w, mask)
        report.scanned += 1
    return report
