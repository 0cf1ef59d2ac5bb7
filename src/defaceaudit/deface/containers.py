"""Shell command lines of the real defacers, run inside Apptainer images by Snakemake.

A rule names its image with the ``container:`` directive and Snakemake runs the ``shell:`` command
inside it with ``apptainer exec``, which skips the image's entrypoint: a command sets up itself
what the entrypoint would have (FSL's environment, :func:`_fsl_env`). Every function here is
pure: it returns one bash command string, every path passed through :func:`shlex.quote`,
following the tool's documented usage:

========== ===================================================================================
tool       documented usage
========== ===================================================================================
fsl_deface ``fsl_deface in out [-d defacing_mask] [-f 0.5] [-B]`` (FSL >= 6.0.1)
mri_deface ``mri_deface in talairach_mixed_with_skull.gca face.gca out`` (FreeSurfer 1.22)
pydeface   ``pydeface in --outfile out [--cost C] [--nocleanup] [--force]`` (2.1.0)
quickshear ``quickshear anat mask out [buffer]`` (1.2.0)
mri_reface ``run_mri_reface.sh in.nii outdir -imType T1`` -> ``outdir/<stem>_deFaced.nii``
mideface   ``mideface --i in --o out --facemask fm.mgz --odir qa [--no-ears] [--threads n]``
           (FreeSurfer >= 7.4.1; needs a licence file, ``FS_LICENSE``)
afni_refac ``afni_refacer2 -input in -mode_deface -shell SHELL -prefix out`` (AFNI, v2.7;
er2        the shell is always named: since v2.6 the default is afni_refacer_shell_sym_2.1)
========== ===================================================================================

All images are NIfTI volumes ``[X, Y, Z]`` reoriented to RAS before defacing; the defaced output
keeps the input's grid and intensity units. Buffers and fractions are as the tools define them
(quickshear's buffer in voxels, fsl_deface's ``-f`` a BET fractional intensity in 0..1).

Image references come from the configuration (``deface.containers.<defacer>``) and must be
reproducible: :func:`check_image_reference` accepts only
digest-pinned ``docker://`` references or a local ``.sif``/``.tar`` file (mri_reface is not
redistributable: each user downloads its docker-archive tarball and may build a ``.sif`` from it).

Commands contain shell braces (``${FSLDIR:-...}``): hand them to a rule as a parameter,
``params: cmd=...`` with ``shell: "{params.cmd}"`` (Snakemake formats the template once and does
not re-format substituted values), not as the ``shell:`` template itself.
"""

from __future__ import annotations

import re
import shlex
from os import PathLike

__all__ = [
    "AFNI_REFACER2_MODES",
    "afni_refacer2_command",
    "check_image_reference",
    "fsl_deface_command",
    "mideface_command",
    "mri_deface_command",
    "mri_reface_command",
    "pydeface_command",
    "pydeface_mask_path",
    "quickshear_command",
]

StrPath = str | PathLike[str]
#: afni_refacer2's modes: zeros in the face and ears (deface), a generic face there (reface),
#: a generic face over face, ears and outer skull (reface_plus)
AFNI_REFACER2_MODES = ("deface", "reface", "reface_plus")

_DIGEST_RE = re.compile(
    r"^docker://"
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?"  # registry host or first path component
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # further path components
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # optional tag (informative only)
    r"@sha256:[0-9a-f]{64}$"
)

#: Candidate FSL installations when the image does not set ``$FSLDIR`` in its environment
#: (the pixi-based pydeface image uses /opt/pixi/envs/default, NeuroDebian ones /usr/share/fsl/*).
_FSLDIR_CANDIDATES = (
    "/opt/pixi/envs/default",
    "/usr/share/fsl/6.0",
    "/usr/share/fsl/5.0",
    "/usr/share/fsl",
    "/opt/fsl",
    "/usr/local/fsl",
)


def _q(path: StrPath) -> str:
    return shlex.quote(str(path))


def check_image_reference(ref: str) -> None:
    """Raise ValueError unless ``ref`` is a reproducible container image reference.

    Accepted:

    * ``docker://[registry/]name[:tag]@sha256:<64 lowercase hex>`` (pinned by digest; a tag alone
      can be moved and is rejected);
    * a local file path ending in ``.sif`` (an Apptainer image: ``apptainer exec`` runs nothing
      else from a path; build a docker-archive tarball such as the mri_reface download into a
      ``.sif`` first, README "Building the container images"), without a URL scheme.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"empty container image reference: {ref!r}")
    if ref != ref.strip():
        raise ValueError(f"container image reference has stray whitespace: {ref!r}")
    if "://" in ref:
        if _DIGEST_RE.match(ref):
            return
        raise ValueError(
            f"container image {ref!r} is not pinned by digest: use "
            "docker://name@sha256:<64 hex> (see `docker buildx imagetools inspect name:tag`) "
            "or a local .sif file"
        )
    name = ref.rsplit("/", 1)[-1]
    if name.endswith(".sif") and name != ".sif":
        return
    hint = (
        " (a docker-archive tarball: `apptainer build image.sif docker-archive://file.tar`, "
        "then give the .sif)"
        if name.endswith(".tar")
        else ""
    )
    raise ValueError(
        f"container image {ref!r} is neither docker://name@sha256:<64 hex> nor a local "
        f".sif file{hint}"
    )


def fsl_deface_command(
    t1w: StrPath,
    out: StrPath,
    removed_mask: StrPath,
    fraction: float | None = None,
    bias_correct: bool = False,
) -> str:
    """fsl_deface (FSL >= 6.0.1): ``fsl_deface in out -d removed_mask [-f F] [-B]``, in the FSL
    environment (:func:`_fsl_env`: Snakemake skips the image's entrypoint, and a ``.nii.gz``
    output needs ``FSLOUTPUTTYPE=NIFTI_GZ``).

    Documented usage: ``fsl_deface <input> <output> [options]`` with ``-d <defacing_mask>`` (save
    the defacing mask: the removed face region, on the input's grid), ``-f <f>`` (BET fractional
    intensity threshold, 0..1, FSL default 0.5) and ``-B`` (bias-correct the input with FAST).
    ``-f`` is written only when ``fraction`` is given. Raises ValueError for a fraction outside
    (0, 1).
    """
    parts = ["fsl_deface", _q(t1w), _q(out), "-d", _q(removed_mask)]
    if fraction is not None:
        fraction = float(fraction)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fsl_deface -f must be in (0, 1), got {fraction}")
        parts += ["-f", repr(fraction)]
    if bias_correct:
        parts.append("-B")
    return "; ".join(["set -euo pipefail", _fsl_env(), " ".join(parts)])


def mri_deface_command(t1w: StrPath, out: StrPath, atlas_dir: StrPath = "/flywheel/v0") -> str:
    """mri_deface 1.22: ``mri_deface in <atlas_dir>/talairach_mixed_with_skull.gca
    <atlas_dir>/face.gca out``.

    Documented usage: ``mri_deface <in volume> <brain template> <face template> <out volume>``;
    the two GCA atlases ship in ``/flywheel/v0/`` of the flywheel/mri-deface image (pass
    ``atlas_dir`` for another image).
    """
    atlas = str(atlas_dir).rstrip("/") or "/"
    brain_gca = f"{atlas}/talairach_mixed_with_skull.gca"
    face_gca = f"{atlas}/face.gca"
    return " ".join(["mri_deface", _q(t1w), _q(brain_gca), _q(face_gca), _q(out)])


def pydeface_mask_path(infile: StrPath) -> str:
    """Where pydeface 2.1.0 leaves its mask with ``--nocleanup``: derived from the *input* path.

    Copied from ``pydeface/__main__.py`` 2.1.0:
    ``args.infile.replace('.gz', '').replace('.nii', '_pydeface_mask.nii.gz')`` (every
    occurrence is replaced, so the input path should contain ``.nii``/``.gz`` only in its suffix;
    :func:`pydeface_command` copies the input to a fixed name in its work directory for that).
    """
    return str(infile).replace(".gz", "").replace(".nii", "_pydeface_mask.nii.gz")


def _fsl_env(shim_dir: str | None = None) -> str:
    """Bash that sets up FSL like an FSL image's entrypoint (which Snakemake skips); with
    ``shim_dir``, an inert ``fsl`` launcher there when the image has none (pydeface checks for
    one). Outputs are ``.nii.gz`` (``FSLOUTPUTTYPE=NIFTI_GZ``, whatever the image sets)."""
    candidates = " ".join(_FSLDIR_CANDIDATES)
    setup = (
        'if [ -z "${FSLDIR:-}" ]; then '
        f"for d in {candidates}; do "
        'if [ -e "$d/bin/flirt" ] || [ -e "$d/etc/fslconf/fsl.sh" ]; then FSLDIR="$d"; break; fi; '
        "done; fi; "
        'export FSLDIR="${FSLDIR:-/usr/share/fsl}"; '
        # fsl.sh may read unset variables: Snakemake's shell prefix is `set -euo pipefail`.
        'if [ -f "$FSLDIR/etc/fslconf/fsl.sh" ]; then set +u; . "$FSLDIR/etc/fslconf/fsl.sh"; '
        "set -u; fi; "
        'export PATH="$FSLDIR/bin:$PATH"; '
        # the pipeline's file names end in .nii.gz: an image set to NIFTI would write .nii
        "export FSLOUTPUTTYPE=NIFTI_GZ"
    )
    if shim_dir is None:
        return setup
    # pydeface 2.1.0 checks shutil.which('fsl') before running flirt; some FSL builds have no
    # `fsl` launcher, so put an inert one on PATH (it is never executed).
    return setup + (
        "; if ! command -v fsl >/dev/null 2>&1; then "
        f"mkdir -p {shim_dir} && printf '#!/bin/sh\\nexit 0\\n' > {shim_dir}/fsl && "
        f'chmod +x {shim_dir}/fsl && PATH="$PATH:$(cd {shim_dir} && pwd -P)" && export PATH; fi'
    )


def pydeface_command(
    t1w: StrPath,
    out: StrPath,
    removed_mask: StrPath,
    workdir: StrPath,
    cost: str = "mutualinfo",
) -> str:
    """pydeface 2.1.0: ``pydeface in --outfile out --cost C --nocleanup --force``, in the FSL env.

    Steps (one bash command, ``set -euo pipefail``):

    1. Set up FSL as the image's entrypoint would: keep ``$FSLDIR`` if the image sets it, else
       take the first of :data:`_FSLDIR_CANDIDATES` holding FSL, else ``/usr/share/fsl``; source
       ``$FSLDIR/etc/fslconf/fsl.sh`` if present; prepend ``$FSLDIR/bin`` to ``PATH``; put an
       inert ``fsl`` launcher on ``PATH`` if there is none (pydeface checks for it).
    2. Copy the input to ``<workdir>/t1w.nii.gz`` (or ``t1w.nii``): pydeface writes its kept mask
       beside the *input* (:func:`pydeface_mask_path`), so this keeps it out of the input folder
       and away from ``.nii`` substrings elsewhere in the path.
    3. ``pydeface <workdir>/t1w.nii.gz --outfile out --cost C --nocleanup --force``.
    4. Move ``<workdir>/t1w_pydeface_mask.nii.gz`` to ``removed_mask``. Note pydeface's mask is
       the warped template face mask that *multiplies* the input (1 = kept, 0 = removed face, with
       interpolated values at the edge); consumers derive the removed region as ``mask < 0.5``.
       The registration matrix ``t1w_pydeface.mat`` stays in ``workdir``.
    """
    src = str(t1w)
    staged = f"{str(workdir).rstrip('/')}/t1w.nii" + (".gz" if src.endswith(".gz") else "")
    mask = pydeface_mask_path(staged)
    shim = f"{str(workdir).rstrip('/')}/fsl_shim"
    return "; ".join(
        [
            "set -euo pipefail",
            _fsl_env(_q(shim)),
            f"mkdir -p {_q(workdir)}",
            f"cp -f {_q(src)} {_q(staged)}",
            f"pydeface {_q(staged)} --outfile {_q(out)} --cost {_q(cost)} --nocleanup --force",
            f"mv -f {_q(mask)} {_q(removed_mask)}",
        ]
    )


def quickshear_command(t1w: StrPath, brain_mask: StrPath, out: StrPath, buffer: float = 10) -> str:
    """quickshear 1.2.0: ``quickshear anat mask out buffer``.

    Documented usage: ``quickshear anat_file mask_file defaced_file [buffer]``; the brain mask
    must be on the identical grid as the anatomical image (a mismatch exits 255); ``buffer`` is
    the distance in voxels between the shear plane and the brain mask (tool default 10.0;
    written as ``%g``).
    """
    buffer = float(buffer)
    if not buffer >= 0:
        raise ValueError(f"quickshear buffer must be >= 0 voxels, got {buffer}")
    return " ".join(["quickshear", _q(t1w), _q(brain_mask), _q(out), f"{buffer:g}"])


def mri_reface_command(t1w: StrPath, out: StrPath, workdir: StrPath, mcr_cache: StrPath) -> str:
    """mri_reface 0.3.x: ``run_mri_reface.sh in.nii outdir -imType T1`` -> ``<stem>_deFaced.nii``.

    mri_reface reads uncompressed ``.nii`` only and writes ``<outdir>/<stem>_deFaced.nii``; its
    MATLAB Runtime needs a writable ``MCR_CACHE_ROOT``, and its wrapper may exit 0 after a failure.
    Steps (``set -euo pipefail``): make ``workdir`` and ``mcr_cache`` and resolve both to absolute
    paths (the wrapper may change directory); remove an earlier ``<workdir>/t1w_deFaced.nii`` (a
    failed run that exits 0 must not pass an old result on); gunzip (or copy) the input to
    ``<workdir>/t1w.nii``;
    ``export MCR_CACHE_ROOT=<mcr_cache>``; run the tool with ``workdir`` as its output folder;
    fail with a message unless ``<workdir>/t1w_deFaced.nii`` exists and is non-empty
    (``test -s``); gzip it to ``out`` (or copy it when ``out`` ends in ``.nii``).
    """
    wd = str(workdir).rstrip("/") or "/"
    src = str(t1w)
    # absolute paths: the MATLAB wrapper may change directory before reading its arguments
    staged = '"$wd/t1w.nii"'
    result = '"$wd/t1w_deFaced.nii"'
    stage = (
        f"gunzip -c {_q(src)} > {staged}" if src.endswith(".gz") else f"cp -f {_q(src)} {staged}"
    )
    finish = (
        f"gzip -c {result} > {_q(out)}" if str(out).endswith(".gz") else f"cp -f {result} {_q(out)}"
    )
    return "; ".join(
        [
            "set -euo pipefail",
            f"mkdir -p {_q(wd)} {_q(mcr_cache)}",
            f'wd="$(cd {_q(wd)} && pwd -P)"',
            f"rm -f {result}",
            stage,
            f'MCR_CACHE_ROOT="$(cd {_q(mcr_cache)} && pwd -P)"',
            "export MCR_CACHE_ROOT",
            f'run_mri_reface.sh {staged} "$wd" -imType T1',
            f'if ! test -s {result}; then echo "mri_reface wrote no output {result}" >&2; '
            "exit 1; fi",
            finish,
        ]
    )


def mideface_command(
    t1w: StrPath,
    out: StrPath,
    facemask: StrPath,
    workdir: StrPath,
    license_file: StrPath,
    threads: int = 1,
    ears: bool = True,
    samseg: bool = True,
) -> str:
    """FreeSurfer mideface (7.4.1 or later): ``mideface --i in --o out --facemask fm.mgz
    --odir qa [--no-ears] [--no-samseg] --threads n``, then its face mask as NIfTI.

    Documented usage: ``mideface --i invol --o defacedvol --facemask facemask --odir qadir``;
    ``--no-ears`` keeps the ears (they are defaced by default), ``--no-samseg`` skips the full
    SAMSEG segmentation of the brain exclusion mask (about 14 GB and 20-40 min; SAMSEG still
    registers), ``--threads`` its threads. 7.4.0 under-segmented the head; 7.3.2 wrote
    ``--facemask`` only with ``--odir`` (freesurfer/freesurfer#1107), hence both here.

    Steps (``set -euo pipefail``): ``export FS_LICENSE=<license_file>`` (the file must be
    visible in the container: the workflow binds it read-only at the same path); make
    ``workdir``; run mideface with ``--facemask <workdir>/face.mask.mgz --odir <workdir>/qa``;
    fail with a message unless ``out`` exists and is non-empty; ``mri_convert`` the face mask
    (labels on the input's grid, > 0 = removed) to ``facemask`` (NIfTI).
    """
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"mideface --threads must be >= 1, got {threads}")
    wd = str(workdir).rstrip("/") or "/"
    mgz = f"{wd}/face.mask.mgz"
    parts = ["mideface", "--i", _q(t1w), "--o", _q(out), "--facemask", _q(mgz)]
    parts += ["--odir", _q(f"{wd}/qa")]
    if not ears:
        parts.append("--no-ears")
    if not samseg:
        parts.append("--no-samseg")
    parts += ["--threads", str(threads)]
    return "; ".join(
        [
            "set -euo pipefail",
            f"export FS_LICENSE={_q(license_file)}",
            f"mkdir -p {_q(wd)}",
            " ".join(parts),
            f'if ! test -s {_q(out)}; then echo "mideface wrote no output {out}" >&2; exit 1; fi',
            f"mri_convert {_q(mgz)} {_q(facemask)}",
        ]
    )


def afni_refacer2_command(
    t1w: StrPath,
    out: StrPath,
    workdir: StrPath,
    shell: str = "afni_refacer_shell_sym_2.1.nii.gz",
    mode: str = "deface",
) -> str:
    """AFNI afni_refacer2 (v2.7): ``afni_refacer2 -input in -mode_<mode> -shell SHELL -prefix
    <workdir>/t1w_<mode>.nii.gz``, then that file copied to ``out``.

    Documented usage: ``afni_refacer2 -input DSET -mode_{deface,reface,reface_plus,all}
    -prefix PREFIX [-shell SHELL]``; ``-mode_deface`` writes zeros in the face and ears region,
    ``-mode_reface`` a smoothed generic face there, ``-mode_reface_plus`` also over the outer
    skull. ``-shell`` names the refacing shell among AFNI's atlases: since afni_refacer2 v2.6
    the default is ``afni_refacer_shell_sym_2.1``, which removes more face, forehead and ears
    than the 1.0/2.0 shells most published evaluations used, so the shell is always written out
    (and recorded in the sidecar). The prefix lies in ``workdir`` because the tool writes its
    QC images and auxiliary volumes beside it. Raises ValueError for an unknown ``mode``.
    """
    if mode not in AFNI_REFACER2_MODES:
        raise ValueError(f"afni_refacer2 mode must be one of {AFNI_REFACER2_MODES}, got {mode!r}")
    wd = str(workdir).rstrip("/") or "/"
    prefix = f"{wd}/t1w_{mode}.nii.gz"
    return "; ".join(
        [
            "set -euo pipefail",
            f"mkdir -p {_q(wd)}",
            f"afni_refacer2 -input {_q(t1w)} -mode_{mode} -shell {_q(shell)} -prefix {_q(prefix)}",
            f'if ! test -s {_q(prefix)}; then echo "afni_refacer2 wrote no output {prefix}" >&2; '
            "exit 1; fi",
            f"cp -f {_q(prefix)} {_q(out)}",
        ]
    )
