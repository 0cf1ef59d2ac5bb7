"""niimath's ``-deface``: the real tool (PyPI ``niimath``, BSD-2 binary in the wheel), natively.

``niimath in -deface <template> <mask> out`` registers the input to ``template`` (affine, its
fast adaptive Hellinger/correlation-ratio engine), warps ``mask`` back onto the input's own grid
(linear interpolation) and sets every voxel where the warped mask is below 0.5 to the image's
finite minimum (about 0 for MRI; the input is never resampled). With pydeface 2.1.0's template
(``mean_reg2mean.nii.gz``) and face mask (``facemask.nii.gz``, 1 = keep, 0 = remove), the files
the pipeline already fetches for ``facemask``, it is a pydeface-style defacer with no FSL and no
container. Beyond the template's field of view the warped mask is 0, so niimath also removes
what lies outside it (on the demo grid: air and the lowest slices of the neck).

Arrays are ``[X, Y, Z]`` on the subject's grid, RAS, as everywhere in the package.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np

from defaceaudit.deface.base import DefaceResult
from defaceaudit.deface.facemask import image_sha256
from defaceaudit.errors import DefaceAuditError
from defaceaudit.imaging.nifti import load_t1w, require_grid, save_nifti

__all__ = ["METHOD", "deface_niimath", "niimath_binary", "niimath_command", "niimath_version"]

METHOD = "niimath -deface with pydeface 2.1.0's template and face mask"


def niimath_binary() -> str:
    """Path of the niimath executable shipped in the installed ``niimath`` wheel."""
    import niimath

    return str(niimath.bin)


@cache
def niimath_version() -> dict:
    """``{"package": PyPI version, "binary": the executable's --version line}``."""
    from importlib.metadata import version

    done = subprocess.run(
        [niimath_binary(), "--version"], capture_output=True, text=True, check=False
    )
    line = (done.stdout or done.stderr).strip().splitlines()
    return {"package": version("niimath"), "binary": line[0] if line else None}


def niimath_command(
    t1w: str | os.PathLike,
    template: str | os.PathLike,
    facemask: str | os.PathLike,
    out: str | os.PathLike,
    threads: int | None = None,
    binary: str = "niimath",
) -> list[str]:
    """``niimath in [-p threads] -deface template mask out`` as an argument list.

    ``-p`` is an operation in niimath's chain: it comes after the input and before the
    operations it governs (niimath README). ``threads`` None leaves niimath to
    ``OMP_NUM_THREADS`` (Snakemake sets it to the job's threads).
    """
    args = [binary, str(t1w)]
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"niimath threads must be >= 1, got {threads}")
        args += ["-p", str(int(threads))]
    return [*args, "-deface", str(template), str(facemask), str(out)]


def deface_niimath(
    t1w: nib.Nifti1Image,
    template: str | os.PathLike,
    facemask: str | os.PathLike,
    *,
    threads: int | None = None,
) -> DefaceResult:
    """Deface ``t1w`` with niimath's ``-deface``.

    ``t1w``: the subject's T1w, 3-D, RAS, intensities in scanner units. ``template``: an average
    head with face (a file); ``facemask``: on the template's grid, >= 0.5 keep, < 0.5 remove.
    The image is written as float32 to a temporary folder (niimath reads files), defaced there and
    read back; an output off the input's grid is refused (:class:`DefaceAuditError`), and a
    non-zero exit raises RuntimeError with niimath's last output line.

    Returns a :class:`DefaceResult`: ``defaced`` float32 ``[X, Y, Z]`` (removed voxels hold the
    image's minimum, as niimath writes them); ``removed`` bool ``[X, Y, Z]`` = the voxels
    niimath changed; ``params`` with the method, the command (paths of the temporary copies
    replaced by their roles), the niimath version and the sha256 of the template and mask.
    """
    data = np.asarray(t1w.dataobj, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="niimath-") as tmp:
        src, out = Path(tmp) / "t1w.nii.gz", Path(tmp) / "defaced.nii.gz"
        save_nifti(data, src, t1w.affine, np.float32)
        args = niimath_command(src, template, facemask, out, threads, niimath_binary())
        # niimath honours FSLOUTPUTTYPE for the output's format; the name says .nii.gz
        env = {**os.environ, "FSLOUTPUTTYPE": "NIFTI_GZ"}
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        log = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or not out.is_file():
            last = log.splitlines()[-1] if log else "no output"
            raise RuntimeError(f"niimath exited {done.returncode}: {last}")
        img = load_t1w(out)
        try:
            require_grid(out, img.shape, img.affine, t1w, "its input", what="niimath output")
        except DefaceAuditError as err:
            raise DefaceAuditError(f"niimath output {err}") from err
        defaced = np.asarray(img.dataobj, dtype=np.float32)
    removed = defaced != data
    shown = ["niimath", "<t1w>", *args[2:-4], "-deface", str(template), str(facemask), "<out>"]
    params = {
        "method": METHOD,
        "command": shlex.join(shown),
        "niimath": niimath_version(),
        "threads": threads,
        "template_sha256": image_sha256(nib.load(template)),
        "facemask_sha256": image_sha256(nib.load(facemask)),
        "removed_voxels": int(removed.sum()),
        "fill_value": float(data.min()),
        "log": [line for line in log.splitlines() if line.startswith(" + Deface")],
    }
    return DefaceResult(defaced=defaced, removed=removed, params=params)
