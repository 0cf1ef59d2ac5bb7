"""Load, validate, reorient, scrub and save NIfTI volumes.

Every problem with an input file is raised as :class:`~defaceaudit.errors.ImageError` whose
message is one line: ``"<full path>: <problem>"``.

Conventions: arrays are indexed ``[i, j, k]`` (voxel indices); the affine maps voxel indices to
world coordinates in mm (NIfTI "RAS+" world space). After :func:`to_ras` the array axes run
towards Right, Anterior and Superior.
"""

from __future__ import annotations

import gzip
import os
import uuid
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from defaceaudit.errors import ImageError

__all__ = [
    "GRID_ATOL_MM",
    "GRID_RTOL",
    "MIN_AXIS_VOXELS",
    "VOXEL_SIZE_RANGE_MM",
    "load_mask",
    "load_t1w",
    "require_grid",
    "save_nifti",
    "scrub_header",
    "to_ras",
    "voxel_sizes_mm",
]

#: Shortest accepted image axis, in voxels.
MIN_AXIS_VOXELS = 8
#: Accepted voxel edge lengths in mm (inclusive), read from the affine's columns.
VOXEL_SIZE_RANGE_MM = (0.1, 10.0)
#: Two images lie on one voxel grid when their affines agree element-wise within this (mm, the
#: linear part and the translation alike) plus :data:`GRID_RTOL` of the reference's value, as
#: ``np.allclose(affine, reference, rtol=GRID_RTOL, atol=GRID_ATOL_MM)``: headers written in
#: float32 round a 128 mm translation by up to about 1e-5 mm, tools that rewrite them a little more.
GRID_ATOL_MM = 1e-3
GRID_RTOL = 1e-5
#: Free-text header fields that may carry identifying text (cleared by :func:`scrub_header`).
FREE_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")

# Errors that nibabel, gzip and the OS raise for a missing, truncated or corrupt file.
_READ_ERRORS = (
    ImageFileError,
    HeaderDataError,
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    OSError,
    ValueError,
)

_SUFFIXES = (".nii.gz", ".nii")


def _one_line(text: object) -> str:
    """Collapse whitespace (newlines included) so the message stays on one line."""
    return " ".join(str(text).split())


def _fmt(values) -> str:
    """Format a sequence of floats compactly, e.g. ``1x1x1.2``."""
    return "x".join(f"{float(v):.4g}" for v in values)


def voxel_sizes_mm(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel edge lengths in mm along the three array axes: norms of the affine's columns.

    ``affine`` is a 4x4 voxel-to-world matrix (mm); the result is ``(dx, dy, dz)`` in mm.
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    return tuple(float(v) for v in np.sqrt((a**2).sum(axis=0)))


def _read(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Load a NIfTI file and read all its voxels (so truncation is found here).

    Returns the image and its data with trailing singleton axes removed (shape as read otherwise,
    dtype as the file's scaling gives it).
    """
    if not path.exists():
        raise ImageError(f"{path}: file missing")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
            raise ImageError(f"{path}: not a NIfTI file ({type(img).__name__})")
        data = np.asanyarray(img.dataobj)
    except ImageError:
        raise
    except _READ_ERRORS as err:
        raise ImageError(
            f"{path}: not a readable NIfTI file ({type(err).__name__}: {_one_line(err)})"
        ) from err
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return img, data


#: largest |cosine| between two voxel axes accepted as perpendicular (0.006 degrees: rounding
#: in real headers stays far below it)
MAX_SHEAR_COSINE = 1e-4


def _check_geometry(path: Path, img: nib.Nifti1Image) -> None:
    """Check that the header gives a usable voxel-to-world affine (raises ImageError)."""
    hdr = img.header
    if int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 0:
        raise ImageError(f"{path}: no orientation in header (qform_code and sform_code are both 0)")
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        raise ImageError(f"{path}: affine has non-finite entries")
    lin = affine[:3, :3]
    det = float(np.linalg.det(lin))
    sizes = voxel_sizes_mm(affine)
    if min(sizes) == 0.0 or abs(det) < 1e-6 * float(np.prod(sizes)):
        raise ImageError(f"{path}: singular affine (determinant {det:.3g})")
    lo, hi = VOXEL_SIZE_RANGE_MM
    if not all(lo <= s <= hi for s in sizes):
        raise ImageError(
            f"{path}: voxel sizes {_fmt(sizes)} mm outside the accepted range [{lo:g}, {hi:g}] mm"
        )
    axes = lin / sizes
    cosines = np.abs(axes.T @ axes - np.eye(3))
    if cosines.max() > MAX_SHEAR_COSINE:
        degrees = float(np.degrees(np.arcsin(min(1.0, cosines.max()))))
        raise ImageError(
            f"{path}: sheared affine (voxel axes {degrees:.2f} degrees from perpendicular); the "
            "qform cannot store it and registration tools refuse it: resample the image to a "
            "grid with perpendicular axes first"
        )


def load_t1w(path: str | os.PathLike) -> nib.Nifti1Image:
    """Load and validate one T1w head volume.

    Trailing singleton axes are dropped (a 4-D file holding one volume is accepted). Checks, each
    raising :class:`ImageError` naming ``path``: the file exists and is a readable NIfTI file; the
    image is 3-D with every axis at least :data:`MIN_AXIS_VOXELS` voxels; all voxels are finite;
    the image is not constant; the header has an orientation (qform or sform code > 0); the affine
    is finite, non-singular and without shear (:data:`MAX_SHEAR_COSINE`), and the voxel sizes
    lie in :data:`VOXEL_SIZE_RANGE_MM`.

    Returns an in-memory 3-D image, shape ``[X, Y, Z]``, with the data as read (scaling applied,
    dtype as nibabel gives it) and the original header and affine (in mm).
    """
    path = Path(path).absolute()
    img, data = _read(path)
    if data.ndim == 4:
        raise ImageError(
            f"{path}: 4-D image with {data.shape[3]} volumes; a single 3-D T1w volume is needed"
        )
    if data.ndim != 3:
        raise ImageError(
            f"{path}: {data.ndim}-D image of shape {data.shape}; a single 3-D T1w volume is needed"
        )
    if min(data.shape) < MIN_AXIS_VOXELS:
        raise ImageError(
            f"{path}: image shape {data.shape} has an axis shorter than {MIN_AXIS_VOXELS} voxels"
        )
    if data.dtype.kind not in "biuf":
        raise ImageError(f"{path}: unsupported voxel type {data.dtype}")
    if data.dtype.kind == "f":
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        if n_bad:
            raise ImageError(f"{path}: {n_bad} non-finite voxels (NaN or infinity)")
    lo, hi = data.min(), data.max()
    if lo == hi:
        raise ImageError(f"{path}: image is empty (all voxels equal to {float(lo):g})")
    _check_geometry(path, img)
    # In-memory copy: the voxels were read once already; nibabel resets scl_slope/scl_inter
    # because the data are stored scaled.
    return img.__class__(data, img.affine, img.header)


def require_grid(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    affine: np.ndarray,
    reference: nib.Nifti1Image,
    reference_name: str | os.PathLike,
    *,
    what: str = "image",
    hint: str = "",
) -> None:
    """Refuse an image that does not lie on ``reference``'s voxel grid.

    ``shape`` (``[X, Y, Z]``, trailing axes ignored) must equal ``reference``'s and ``affine``
    (4 x 4, mm) must match ``reference.affine`` within :data:`GRID_ATOL_MM` and
    :data:`GRID_RTOL` (a non-finite affine never matches), else
    :class:`ImageError`: one line that names ``path``, the ``what`` that differs, the reference
    (``reference_name``) and, when given, ``hint`` (what to do about it).
    """
    tail = f"; {hint}" if hint else ""
    shape, ref_shape = tuple(shape[:3]), tuple(reference.shape[:3])
    if shape != ref_shape:
        raise ImageError(
            f"{path}: {what} is not on the voxel grid of {reference_name}: shape {shape}, not "
            f"{ref_shape}{tail}"
        )
    affine, ref_affine = np.asarray(affine, float), np.asarray(reference.affine, float)
    if not np.allclose(affine, ref_affine, rtol=GRID_RTOL, atol=GRID_ATOL_MM):
        diff = float(np.abs(affine - ref_affine).max())
        raise ImageError(
            f"{path}: {what} is not on the voxel grid of {reference_name}: affine differs by "
            f"up to {diff:.3g} mm{tail}"
        )


def load_mask(
    path: str | os.PathLike,
    reference: nib.Nifti1Image,
    *,
    canonical: bool = False,
    reference_name: str | os.PathLike | None = None,
) -> np.ndarray:
    """Load a binary mask that must lie on the voxel grid of ``reference``.

    ``canonical=True`` first reorients the mask image with :func:`to_ras` (use it when
    ``reference`` has been reoriented the same way). Trailing singleton axes are dropped. The mask
    must be 3-D, finite, and on ``reference``'s grid (:func:`require_grid`), else
    :class:`ImageError` names both files (``reference_name``, else the reference's file name,
    else "the reference image").

    Returns a bool array of ``reference``'s shape ``[X, Y, Z]``: True where the value is > 0.5
    (0/1, 0/255, label and probability masks all work).
    """
    path = Path(path).absolute()
    img, data = _read(path)
    ref_name = reference_name or reference.get_filename() or "the reference image"
    if data.ndim != 3:
        raise ImageError(
            f"{path}: mask is {data.ndim}-D (shape {data.shape}); a 3-D mask is needed"
        )
    if data.dtype.kind not in "biuf":
        raise ImageError(f"{path}: unsupported mask voxel type {data.dtype}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ImageError(f"{path}: mask has non-finite voxels")
    affine = np.asarray(img.affine, dtype=float)
    if canonical:
        img3 = img.__class__(data, affine, img.header)
        img3 = to_ras(img3)
        data, affine = np.asanyarray(img3.dataobj), np.asarray(img3.affine, dtype=float)
    require_grid(path, data.shape, affine, reference, ref_name, what="mask")
    return np.asarray(data > 0.5)


def to_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorient by axis flips/permutations only (no resampling) so the axes run R, A, S.

    Same as :func:`nibabel.as_closest_canonical`: voxel values and world coordinates (mm) of every
    voxel are unchanged; an already RAS image is returned as is.
    """
    return nib.as_closest_canonical(img)


def scrub_header(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Return a copy whose free-text header fields are cleared.

    Clears ``descrip``, ``aux_file``, ``intent_name`` and ``db_name`` (where present) and drops
    all header extensions (they can hold DICOM headers or comments). Data and affine are shared.
    """
    out = img.__class__(img.dataobj, img.affine, img.header.copy())
    hdr = out.header
    for field in FREE_TEXT_FIELDS:
        if field in hdr:
            hdr[field] = b""
    extensions = getattr(hdr, "extensions", None)
    if extensions is not None:
        extensions.clear()
    return out


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return path.name[-len(suffix) :]
    raise ValueError(f"{path}: output name must end with .nii or .nii.gz")


def save_nifti(
    img_or_array: nib.Nifti1Image | np.ndarray,
    path: str | os.PathLike,
    affine: np.ndarray | None = None,
    dtype: np.dtype | type | str | None = None,
) -> Path:
    """Write a NIfTI file atomically, with a scrubbed header; returns the absolute path.

    ``img_or_array`` is an image or an array ``[X, Y, Z]`` (bool arrays are stored as uint8).
    ``affine`` (4x4, mm) is required for an array and replaces an image's affine when given;
    an array gets qform and sform set to it (code 1, scanner). ``dtype`` sets the on-disk type.
    The file is written to a hidden temporary file with the same suffix (``.nii`` or ``.nii.gz``)
    in the target folder, then moved over ``path`` with :func:`os.replace`; on any error the
    temporary file is removed and ``path`` is not created (a file already there is untouched).
    Parent folders are created.
    """
    path = Path(path).absolute()
    suffix = _suffix(path)
    if isinstance(img_or_array, nib.spatialimages.SpatialImage):
        img = img_or_array
        if affine is not None:
            img = img.__class__(img.dataobj, np.asarray(affine, dtype=float), img.header)
    else:
        if affine is None:
            raise ValueError(f"{path}: an affine is needed to save an array")
        arr = np.asarray(img_or_array)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        affine = np.asarray(affine, dtype=float)
        img = nib.Nifti1Image(arr, affine, dtype=dtype if dtype is not None else arr.dtype)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img = scrub_header(img)
    if dtype is not None:
        img.set_data_dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.tmp-{uuid.uuid4().hex}{suffix}")
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_on_grid(
    path: str | os.PathLike,
    reference: nib.Nifti1Image | None = None,
    reference_path: str | os.PathLike | None = None,
) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The T1w at ``path`` reoriented to RAS (:func:`load_t1w`, :func:`to_ras`) and its voxels
    ``[X, Y, Z]`` float32; with ``reference`` (an image in RAS), refused by
    :func:`require_grid` (ImageError naming both files) unless on ``reference``'s grid."""
    img = to_ras(load_t1w(path))
    if reference is not None:
        require_grid(path, img.shape, img.affine, reference, f"the original {reference_path}")
    return img, np.asarray(img.dataobj, dtype=np.float32)
