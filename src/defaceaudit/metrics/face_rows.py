"""The face metrics of one test subject for one defacer: its rows of the paper's Tables 1-3.

For a defacer ``d`` the images compared with the subject's original are: the image defaced by
``d``, the population-average refaced image (the same for every ``d``), and later the image the
diffusion models refaced from ``d``'s output. Each gets, against the original (section 2.3):

* MASD of the face, other -> original (every vertex of the image's face to the original's) and
  symmetric (:mod:`defaceaudit.metrics.surface`);
* SSIM and PSNR over the whole head (the original's head mask M3) and over the face area
  M5 = M1 & M2 & M3 & M4 (Figure S1): M1 the region ``d`` removed, M2 the region the
  population-average refacer altered, M3 and M4 the head masks of the original and of the
  population-average image. Without a population-average refacer, M5 = M1 & M3. Both regions use
  one intensity scale: the original's 99.5th percentile inside its head mask.

Arrays are ``[X, Y, Z]`` on the original's RAS grid; distances in mm, PSNR in dB.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from defaceaudit.errors import ImageError
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import (
    load_mask,
    load_on_grid,
    load_t1w,
    to_ras,
    voxel_sizes_mm,
)
from defaceaudit.metrics import IMAGE_TYPES
from defaceaudit.metrics.face_tables import FACE_METRIC_COLUMNS
from defaceaudit.metrics.similarity import similarity
from defaceaudit.metrics.surface import (
    FaceCrop,
    face_vertices,
    masd_from_vertices,
    skin_vertices,
)
from defaceaudit.metrics.template_space import (
    apply_transform,
    load_template,
    register_to_template,
    save_faces,
    to_world,
)
from defaceaudit.tables import write_tsv

log = logging.getLogger(__name__)

#: columns of a metric row, in order (the per-job TSVs and results/metrics/face_metrics.tsv)
COLUMNS = FACE_METRIC_COLUMNS


def face_area(
    removed: np.ndarray,
    original_head: np.ndarray,
    population_altered: np.ndarray | None = None,
    population_head: np.ndarray | None = None,
) -> np.ndarray:
    """M5 of the paper's Figure S1: the intersection of the masks given (bool ``[X, Y, Z]``)."""
    area = np.asarray(removed, bool) & np.asarray(original_head, bool)
    for mask in (population_altered, population_head):
        if mask is not None:
            area &= np.asarray(mask, bool)
    return area


def compute_face_metrics(
    subject: str,
    test_set: str,
    defacer: str,
    prepared: dict,
    images: dict[str, dict],
    template: str | os.PathLike | None = None,
    out_rows: str | os.PathLike | None = None,
    out_faces: str | os.PathLike | None = None,
    seed: int = 0,
    probes: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Rows of one subject and defacer; written to ``out_rows`` (TSV) when given.

    Args:
        prepared: the original's prepared files: ``t1w``, ``head_mask``.
        images: ``image_type -> {"image": name, "t1w": path, "removed": path}`` for the image
            types present (``defaced`` is required and its ``removed`` is M1;
            ``population_average``'s ``removed`` is M2).
        template: the template head; with ``out_faces``, every image is treated as an attacker
            would, without the original: its face is cropped with planes found on its own head
            (not the original's, as for MASD), it is registered rigidly to the template on its
            own, and its face vertices go to ``out_faces`` in template world (npz; an empty
            ``[0, 3]`` array for an image with no face left, which then identifies no one).
        seed: seed of those registrations.
        probes: the image types whose faces go to ``out_faces`` (default: all; none: an empty
            file, for a subject re-identification does not rank). An image shared by every row
            of a subject (the population average) is registered in one row only.
    Returns a DataFrame with :data:`COLUMNS`, one row per image type, in paper order.
    """
    if "defaced" not in images:
        raise ValueError("compute_face_metrics needs the defaced image")
    original_img = to_ras(load_t1w(prepared["t1w"]))
    original = np.asarray(original_img.dataobj, dtype=np.float32)
    original_head = load_mask(
        prepared["head_mask"], original_img, canonical=True, reference_name=prepared["t1w"]
    )
    spacing = voxel_sizes_mm(original_img.affine)
    crop = FaceCrop.from_head(original_head, spacing)
    original_faces = face_vertices(original_head, crop, spacing)

    loaded, data, heads = {}, {}, {}
    for kind, entry in images.items():
        loaded[kind], data[kind] = load_on_grid(entry["t1w"], original_img, prepared["t1w"])
        try:
            heads[kind] = head_mask(data[kind], spacing)
        except ValueError as err:
            raise ImageError(f"{entry['t1w']}: no head to measure ({err})") from err
    removed = load_mask(images["defaced"]["removed"], original_img, canonical=True)
    population = images.get("population_average")
    altered = population_head = None
    if population is not None:
        altered = load_mask(population["removed"], original_img, canonical=True)
        population_head = heads["population_average"]
    area = face_area(removed, original_head, altered, population_head)
    if not area.any():
        log.warning("%s / %s: the face area M5 is empty; face SSIM/PSNR are n/a", subject, defacer)

    rows = []
    for kind in (k for k in IMAGE_TYPES if k in images):
        try:
            face = face_vertices(heads[kind], crop, spacing)
            distance = masd_from_vertices(original_faces, face)
        except ValueError as err:  # no face surface left inside the crop
            log.warning("%s / %s / %s: %s; MASD is n/a", subject, defacer, kind, err)
            distance = {"masd_mm": np.nan, "masd_symmetric_mm": np.nan}
        whole = similarity(original, data[kind], original_head)
        face = (
            similarity(original, data[kind], area, scale_mask=original_head)
            if area.any()
            else {"ssim": np.nan, "psnr_db": np.nan}
        )
        rows.append(
            {
                "subject": subject,
                "test_set": test_set,
                "defacer": defacer,
                "image_type": kind,
                "image": images[kind]["image"],
                "masd_mm": distance["masd_mm"],
                "masd_symmetric_mm": distance["masd_symmetric_mm"],
                "ssim_head": whole["ssim"],
                "psnr_head_db": whole["psnr_db"],
                "ssim_face": face["ssim"],
                "psnr_face_db": face["psnr_db"],
                "n_face_voxels": int(area.sum()),
            }
        )
        log.info("%s / %s / %s: %s", subject, defacer, kind, rows[-1])
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if out_faces is not None and template is not None:
        world = {}
        kinds = [k for k in IMAGE_TYPES if k in images and (probes is None or k in probes)]
        # no probe (a subject outside the re-identification gallery): an empty file, and no
        # registration
        reference = load_template(template, spacing) if kinds else None
        for kind in kinds:
            name = f"{kind}__{images[kind]['image']}"
            try:
                own_crop = FaceCrop.from_head(heads[kind], spacing)
                verts = face_vertices(heads[kind], own_crop, spacing)
                # a defacer's cut is no face: only skin is matched against the gallery
                verts = skin_vertices(verts, data[kind], heads[kind], spacing)
            except ValueError as err:
                log.warning("%s / %s / %s: %s; no face to re-identify", subject, defacer, kind, err)
                world[name] = np.empty((0, 3))
                continue
            matrix = register_to_template(loaded[kind], reference, seed=seed)
            world[name] = apply_transform(to_world(verts, spacing, original_img.affine), matrix)
        save_faces(out_faces, world, subject=subject, defacer=defacer)
    if out_rows is not None:
        write_tsv(frame, out_rows)
    return frame
