"""The deface stage: run a native defacer or take a container's output, then finalise it.

Finalising is common to every backend: header scrubbed of free text, the removed/altered-region
mask (the tool's own where it writes one, else the changed voxels), a JSON sidecar (tool,
version, backend, package version or image digest, command, parameters, seconds:
:mod:`defaceaudit.deface.provenance`), a QC record and a PNG. An empty output or
one identical to its input is a failure of that job (:class:`DefaceError`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from defaceaudit.deface.base import DefaceResult
from defaceaudit.deface.provenance import refuse_overwrite, sidecar
from defaceaudit.errors import DefaceAuditError
from defaceaudit.imaging.nifti import load_mask, load_t1w, require_grid, save_nifti
from defaceaudit.tables import write_json

log = logging.getLogger(__name__)

NATIVE_DEFACERS = ("quickshear", "facemask", "avgface", "skullstrip", "niimath")
CONTAINER_DEFACERS = (
    "fsl_deface",
    "mri_deface",
    "pydeface",
    "quickshear",
    "mri_reface",
    "mideface",
    "afni_refacer2",
)
#: container tools that write their own mask of the region they removed (or, pydeface, kept)
WRITES_REMOVED_MASK = ("fsl_deface", "pydeface", "mideface")


class DefaceError(DefaceAuditError):
    """A defacer produced no usable output."""


@dataclass(frozen=True)
class PreparedSubject:
    """The prepare stage's outputs of one subject, loaded once per job."""

    path: Path  # the prepared T1w
    img: nib.Nifti1Image  # RAS
    data: np.ndarray  # [X, Y, Z] float32
    head: np.ndarray  # [X, Y, Z] bool
    brain: np.ndarray  # [X, Y, Z] bool

    @classmethod
    def load(cls, prepared: dict) -> PreparedSubject:
        """``prepared``: paths t1w, head_mask, brain_mask."""
        img = load_t1w(prepared["t1w"])
        return cls(
            Path(prepared["t1w"]).absolute(),
            img,
            np.asarray(img.dataobj, dtype=np.float32),
            load_mask(prepared["head_mask"], img),
            load_mask(prepared["brain_mask"], img),
        )


def run_native(defacer: str, t1w: nib.Nifti1Image, brain: np.ndarray, **extra) -> DefaceResult:
    """Dispatch to a native defacer. ``extra`` holds the files a defacer needs (paths).

    quickshear: ``buffer``; facemask and niimath: ``template``, ``facemask`` (niimath also
    ``threads``, None: OMP_NUM_THREADS); avgface: ``average``, ``facemask`` (face mask on the
    average's grid).
    """
    if defacer == "quickshear":
        from defaceaudit.deface.simple import deface_quickshear

        return deface_quickshear(t1w, brain, buffer=extra.get("buffer", 10))
    if defacer == "skullstrip":
        from defaceaudit.deface.simple import skull_strip

        return skull_strip(t1w, brain)
    if defacer == "facemask":
        from defaceaudit.deface.facemask import deface_facemask

        return deface_facemask(t1w, nib.load(extra["template"]), nib.load(extra["facemask"]))
    if defacer == "avgface":
        from defaceaudit.deface.avgface import reface_avgface

        average, facemask = nib.load(extra["average"]), nib.load(extra["facemask"])
        return reface_avgface(t1w, average, facemask)
    if defacer == "niimath":
        from defaceaudit.deface.niimath import deface_niimath

        return deface_niimath(
            t1w, extra["template"], extra["facemask"], threads=extra.get("threads")
        )
    raise ValueError(f"no native backend for {defacer}")


def check_output(defaced: np.ndarray, original: np.ndarray, where: str) -> None:
    """Raise DefaceError for an empty output or one identical to the input."""
    if not np.any(defaced):
        raise DefaceError(f"{where}: defaced image is empty (all voxels 0)")
    if np.array_equal(defaced, original):
        raise DefaceError(f"{where}: defaced image is identical to its input (nothing removed)")


def finalize(
    defacer: str,
    backend: str,
    subject: PreparedSubject,
    result: DefaceResult,
    outputs: dict,
    seconds: float,
    image: str | None = None,
    qc_params: dict | None = None,
    command: str | None = None,
) -> dict:
    """Write the defaced image, removed mask, sidecar, QC record and PNG of one subject.

    Args:
        subject: the prepared images the defacer started from (never written:
            :func:`~defaceaudit.deface.provenance.refuse_overwrite`).
        outputs: paths t1w, removed, sidecar, qc, png.
        image, command: the container image and the exact command a container tool ran (the
            sidecar's provenance; a native tool's comes from its parameters).
    Returns the QC record.
    """
    from defaceaudit.deface.qc import face_region_box, qc_record
    from defaceaudit.imaging.render import render_qc_png

    original, data, head, brain = subject.img, subject.data, subject.head, subject.brain
    check_output(result.defaced, data, str(outputs["t1w"]))
    refuse_overwrite(outputs, [subject.path])
    written = []
    try:
        written.append(save_nifti(result.defaced, outputs["t1w"], original.affine, np.float32))
        written.append(save_nifti(result.removed, outputs["removed"], original.affine, np.uint8))
        zooms = original.header.get_zooms()[:3]
        face = face_region_box(head, brain, original.affine)
        record = qc_record(data, result.defaced, brain, head, face, zooms, **(qc_params or {}))
        record = {"defacer": defacer, "backend": backend, **record}
        write_json(record, outputs["qc"])
        written.append(Path(outputs["qc"]))
        title = f"{Path(outputs['t1w']).name}: {record['status']}"
        render_qc_png(data, result.defaced, None, original.affine, outputs["png"], title)
        written.append(Path(outputs["png"]))
        provenance = sidecar(
            defacer,
            backend,
            result.params,
            image=image,
            command=command,
            seconds=seconds,
            source=subject.path,
        )
        write_json(provenance, outputs["sidecar"])
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    return record


def deface_native(
    defacer: str, prepared: dict, outputs: dict, extra: dict, qc_params: dict | None = None
) -> dict:
    """Run native ``defacer`` on one prepared subject and finalise its outputs."""
    subject = PreparedSubject.load(prepared)
    start = time.perf_counter()
    try:
        result = run_native(defacer, subject.img, subject.brain, **extra)
    except DefaceAuditError:
        raise
    except Exception as err:  # the tool's own failure: one line for the QC table, trace in log
        log.info("%s traceback", defacer, exc_info=True)
        message = " ".join(f"{type(err).__name__}: {err}".split())
        raise DefaceError(f"{defacer} failed on {prepared['t1w']}: {message}") from err
    seconds = time.perf_counter() - start
    log.info("%s on %s: %.1f s", defacer, prepared["t1w"], seconds)
    return finalize(defacer, "native", subject, result, outputs, seconds, None, qc_params)


def finalize_container_deface(
    defacer: str,
    prepared: dict,
    raw: str | os.PathLike,
    outputs: dict,
    image: str,
    params: dict,
    benchmark: str | os.PathLike | None = None,
    raw_removed: str | os.PathLike | None = None,
    qc_params: dict | None = None,
    command_file: str | os.PathLike | None = None,
) -> dict:
    """Finalise a container tool's output ``raw`` (resampled tools are refused: same grid).

    ``raw_removed``: the tool's own mask (fsl_deface: removed; pydeface: kept; mideface: its
    face label volume, > 0 removed); ``command_file``: the exact command the container job ran
    (written by the job, recorded in the sidecar); ``benchmark``: the job's Snakemake benchmark.
    """
    subject = PreparedSubject.load(prepared)
    original, data = subject.img, subject.data
    try:
        defaced_img = load_t1w(raw)
        require_grid(
            raw,
            defaced_img.shape,
            defaced_img.affine,
            original,
            subject.path,
            what="output",
            hint="a tool that resamples or crops its output cannot be scored voxel by voxel",
        )
    except DefaceAuditError as err:
        raise DefaceError(f"{defacer} output {err}") from err
    defaced = np.asarray(defaced_img.dataobj, dtype=np.float32)
    zeroed = (defaced == 0) & (data != 0)
    if raw_removed is not None and Path(raw_removed).exists():
        removed = load_mask(raw_removed, original)
        if defacer == "pydeface":  # its kept mask multiplies the input: 1 = keep, 0 = remove
            removed = ~removed & (data != 0)
        # a voxel the tool zeroed was removed, whatever the mask's edge interpolation says
        removed = removed | zeroed
    else:
        removed = zeroed
    if replaces_face(defacer, params):
        removed = removed | (np.abs(defaced - data) > 1e-6 * float(np.abs(data).max()))
    # the container rule's Snakemake benchmark file: column "s" is the wall-clock seconds
    seconds = float(pd.read_csv(benchmark, sep="\t")["s"].iloc[0]) if benchmark else float("nan")
    command = Path(command_file).read_text().strip() if command_file else None
    result = DefaceResult(defaced, removed, params)
    return finalize(
        defacer, "container", subject, result, outputs, seconds, image, qc_params, command
    )


def replaces_face(defacer: str, params: dict) -> bool:
    """Whether a container tool fills the region it removes with something other than 0, so
    that every voxel it changed counts as removed: mri_reface (an average face), mideface (the
    background's mode unless told to fill zeros) and afni_refacer2 in a reface mode."""
    if defacer == "mri_reface":
        return True
    if defacer == "mideface":
        return not params.get("fill_zero", False)
    return defacer == "afni_refacer2" and params.get("mode", "deface") != "deface"
