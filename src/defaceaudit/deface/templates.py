"""Files the template-based native defacers share: pydeface's template and the average head."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib

from defaceaudit.cohort.demo.sources import PYDEFACE_FACEMASK, PYDEFACE_TEMPLATE, fetch_package_file
from defaceaudit.imaging.nifti import save_nifti, to_ras

log = logging.getLogger(__name__)


def fetch_face_template(
    out_template: str | os.PathLike,
    out_facemask: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
) -> None:
    """Write pydeface 2.1.0's average head (with face) and face mask (1 keep, 0 remove), RAS."""
    cache = Path(cache_dir).expanduser() if cache_dir else None
    for spec, out in ((PYDEFACE_TEMPLATE, out_template), (PYDEFACE_FACEMASK, out_facemask)):
        img = to_ras(nib.load(fetch_package_file(spec, cache)))
        save_nifti(nib.Nifti1Image(img.get_fdata(dtype="float32"), img.affine), out)


def build_average_head(
    t1w: list[str],
    template: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
    workers: int = 1,
) -> None:
    """Average of the training subjects' heads in template space (avgface), written to ``out``;
    ``workers`` subjects registered at a time."""
    from defaceaudit.deface.avgface import average_head

    log.info("average head of %d training subjects, %d at a time", len(t1w), workers)
    average = average_head(list(t1w), nib.load(template), seed=seed, workers=workers)
    save_nifti(average, out)
