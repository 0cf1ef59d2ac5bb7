"""Affine registration of head volumes with SimpleITK, and resampling through the result.

Conventions. Images are nibabel images whose affines map voxel indices ``[i, j, k]`` to world
coordinates in mm, NIfTI "RAS+" (x towards Right, y Anterior, z Superior). ITK's physical space is
LPS: x and y change sign. :func:`affine_register` hides that: the 4x4 matrix it returns acts on
RAS world points in mm, like every affine in this package.

A registration result ``T`` (4x4, RAS, mm) maps a point ``p`` of the *fixed* image's world to
the corresponding point ``T @ p`` of the *moving* image's world (ITK's convention: the transform
pulls moving intensities onto the fixed grid). :func:`resample` uses it exactly that way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = [
    "SHRINK_FACTORS",
    "affine_register",
    "rigid_register",
    "coarse_grid",
    "downsample",
    "from_sitk_transform",
    "itk_threads",
    "resample",
    "rotation_angle_deg",
    "to_sitk",
]

#: Multi-resolution pyramid: shrink factors per level (coarse to fine).
SHRINK_FACTORS = (4, 2, 1)
#: Gaussian smoothing per level, in voxels of the fixed image (converted to mm).
SMOOTHING_VOXELS = (2.0, 1.0, 0.5)
#: Metric samples drawn per level (the sampling percentage is derived from the level's size).
SAMPLES_PER_LEVEL = 40_000
#: Initial optimiser step (largest physical shift per step), in fixed voxels.
STEP_VOXELS = 0.5
#: Smallest optimiser step (the optimiser stops below it), in mm of physical shift: a hundredth
#: of a millimetre is far below the voxel size; 1e-3 cost about 40 % more time for changes of
#: a few tenths of a millimetre on the 2 mm demo heads.
MIN_STEP_MM = 1e-2
#: Mattes mutual information histogram bins.
HISTOGRAM_BINS = 32

# RAS <-> LPS: flip the signs of x and y (its own inverse).
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_sitk(img: nib.Nifti1Image, data: np.ndarray | None = None) -> sitk.Image:
    """Convert a nibabel image (or ``data`` on its grid) to a float32 SimpleITK image.

    ``data`` is ``[X, Y, Z]`` (default: the image's voxels). SimpleITK arrays are indexed
    ``[z, y, x]``, so the array is transposed. Geometry from the RAS affine ``A``: with ``F`` the
    x/y sign flip, the LPS index-to-point matrix is ``F @ A[:3, :3]`` = direction @ diag(spacing),
    spacing = its column norms (mm), origin = ``F @ A[:3, 3]`` (mm).
    """
    arr = np.asarray(img.dataobj if data is None else data, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"to_sitk needs a 3-D volume, got shape {arr.shape}")
    lps = _FLIP @ np.asarray(img.affine, dtype=float)
    lin = lps[:3, :3]
    spacing = np.sqrt((lin**2).sum(axis=0))
    direction = lin / spacing
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    out.SetSpacing([float(s) for s in spacing])
    out.SetDirection([float(v) for v in direction.ravel()])
    out.SetOrigin([float(v) for v in lps[:3, 3]])
    return out


def from_sitk_transform(transform: sitk.Transform) -> np.ndarray:
    """4x4 RAS matrix (mm) of an affine SimpleITK transform (which acts on LPS points).

    The transform is probed at the origin and the three unit points (exact for affine maps), then
    conjugated with the x/y sign flip: ``T_ras = F @ T_lps @ F``.
    """
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    lin = np.column_stack(
        [np.asarray(transform.TransformPoint(tuple(e))) - origin for e in np.eye(3)]
    )
    t_lps = np.eye(4)
    t_lps[:3, :3] = lin
    t_lps[:3, 3] = origin
    return _FLIP @ t_lps @ _FLIP


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Rotation angle (degrees) of the orthogonal part of a 4x4 (or 3x3) affine matrix."""
    lin = np.asarray(matrix, dtype=float)[:3, :3]
    u, _, vt = np.linalg.svd(lin)
    rot = u @ vt
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


@contextlib.contextmanager
def itk_threads(threads: int | None) -> Iterator[None]:
    """ITK's global default thread count set to ``threads`` inside the block, restored after;
    ``None`` leaves it alone.

    The setting is process-wide: to register several images at once in Python threads, set it
    once around them all (``with itk_threads(1): ... pool.map(...)``) and register with
    ``threads=None`` inside (each registration then runs on one ITK thread, as with
    ``threads=1``).
    """
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if threads is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _stage(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform: sitk.Transform,
    *,
    seed: int,
    fixed_mask: sitk.Image | None,
    iterations: int,
    threads: int | None,
) -> sitk.Transform:
    """One multi-resolution Mattes-MI registration stage; returns the optimised transform."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    n_vox = float(np.prod(fixed.GetSize()))
    percentages = [min(1.0, SAMPLES_PER_LEVEL * s**3 / n_vox) for s in SHRINK_FACTORS]
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(percentages, seed=int(seed) + 1)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    sp = min(fixed.GetSpacing())
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=STEP_VOXELS * sp,
        minStep=MIN_STEP_MM,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    reg.SetSmoothingSigmasPerLevel([s * sp for s in SMOOTHING_VOXELS])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if threads is not None:
        reg.SetNumberOfThreads(int(threads))
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed, moving)
    return transform


def affine_register(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    *,
    seed: int = 0,
    fixed_mask: np.ndarray | None = None,
    iterations: int = 100,
    threads: int | None = 1,
) -> np.ndarray:
    """Affine registration of ``moving`` to ``fixed`` (Mattes mutual information, SimpleITK).

    ``fixed`` and ``moving`` are 3-D nibabel images of any grids (RAS affines in mm; voxel
    intensities in any units). ``fixed_mask`` (bool ``[X, Y, Z]`` on ``fixed``'s grid) restricts
    the metric to those fixed voxels. Steps: a moments-based
    :class:`SimpleITK.CenteredTransformInitializer` (centres of mass aligned); a similarity stage
    (rotation, translation, isotropic scale); then a full affine stage. Each stage is a 3-level
    pyramid (shrink :data:`SHRINK_FACTORS`, Gaussian sigmas :data:`SMOOTHING_VOXELS` fixed voxels,
    given in mm) with regular-step gradient descent, physical-shift scales and random metric
    sampling of about :data:`SAMPLES_PER_LEVEL` voxels per level seeded by ``seed``.
    ``iterations`` caps iterations per level. ``threads`` sets ITK's thread count during the call
    (SimpleITK's global default, restored afterwards; for concurrent Python threads see
    :func:`itk_threads`).
    The default 1 makes repeat runs bit-identical and cost about the same on the 2-core demo
    machine (3-9 s for a 2 mm head to the 2 mm template, either way); ``None`` keeps the global
    default, whose multi-threaded sums make repeat runs differ by up to ~0.01 mm.

    Returns ``T``, a 4x4 float matrix in RAS world mm: fixed-space point ``p`` corresponds to
    moving-space point ``T @ p`` (homogeneous coordinates).
    """
    # the metric's own threading follows the global default, not the method's setting
    with itk_threads(threads):
        fx = to_sitk(fixed)
        mv = to_sitk(moving)
        mask_img = None
        if fixed_mask is not None:
            fixed_mask = np.asarray(fixed_mask, dtype=bool)
            if fixed_mask.shape != tuple(fixed.shape[:3]):
                raise ValueError(
                    f"fixed_mask shape {fixed_mask.shape} differs from {fixed.shape[:3]}"
                )
            mask_img = sitk.Cast(to_sitk(fixed, fixed_mask.astype(np.float32)), sitk.sitkUInt8)
        sim = sitk.CenteredTransformInitializer(
            fx, mv, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        sim = sitk.Similarity3DTransform(sim)
        sim = _stage(
            fx, mv, sim, seed=seed, fixed_mask=mask_img, iterations=iterations, threads=threads
        )
        aff = sitk.AffineTransform(3)
        aff.SetCenter(sim.GetCenter())
        aff.SetMatrix(sim.GetMatrix())
        aff.SetTranslation(sim.GetTranslation())
        aff = _stage(
            fx, mv, aff, seed=seed + 7, fixed_mask=mask_img, iterations=iterations, threads=threads
        )
    return from_sitk_transform(aff)


def rigid_register(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    *,
    seed: int = 0,
    iterations: int = 100,
    threads: int | None = 1,
) -> np.ndarray:
    """Rigid registration (rotation and translation, 6 degrees of freedom) of ``moving`` to
    ``fixed``: Mattes MI with the pyramid and optimiser of :func:`affine_register`, started from
    the images' centres of mass, run twice.

    Rigid keeps what identifies a head (its size and shape); an affine would scale it towards the
    other image. Returns ``T``, 4x4 RAS mm, fixed-world point ``p`` -> moving-world ``T @ p``.
    """
    with itk_threads(threads):
        fx, mv = to_sitk(fixed), to_sitk(moving)
        start = sitk.CenteredTransformInitializer(
            fx, mv, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        rigid = sitk.Euler3DTransform(start)
        # Two passes, like affine_register's two stages: the first pass's shrinking step stops
        # about a degree short on a 4 mm head; a second pass from there converges (test_register).
        for offset in (0, 7):
            rigid = _stage(
                fx,
                mv,
                rigid,
                seed=seed + offset,
                fixed_mask=None,
                iterations=iterations,
                threads=threads,
            )
    return from_sitk_transform(rigid)


def coarse_grid(img: nib.Nifti1Image, voxel_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """A coarser grid covering about the same field of view as ``img`` (same axis directions).

    Each axis is coarsened by ``voxel_mm / voxel size`` (at least 1, so finer axes are kept); the
    new first voxel's centre lies half a new voxel inside the old grid's corner. Returns
    ``(shape, affine 4x4 in RAS mm)``.
    """
    sizes = np.sqrt((np.asarray(img.affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    factor = np.maximum(1.0, float(voxel_mm) / sizes)
    shape = tuple(int(max(1, np.floor(n / f))) for n, f in zip(img.shape[:3], factor, strict=True))
    step = np.eye(4)
    step[:3, :3] = np.diag(factor)
    step[:3, 3] = (factor - 1.0) / 2.0
    return shape, np.asarray(img.affine, dtype=float) @ step


def downsample(img: nib.Nifti1Image, voxel_mm: float) -> nib.Nifti1Image:
    """``img`` on :func:`coarse_grid` (``voxel_mm`` mm voxels), Gaussian anti-aliased first.

    The blur per axis has sigma ``sqrt(f**2 - 1) / 2.355`` voxels for a coarsening factor ``f``
    (a Gaussian of the new voxel's width, less the old one). Returns a float32 image (the input
    itself when no axis is coarsened).
    """
    shape, affine = coarse_grid(img, voxel_mm)
    if shape == tuple(img.shape[:3]):
        return img
    sizes = np.sqrt((np.asarray(img.affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    factor = np.maximum(1.0, float(voxel_mm) / sizes)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data = ndimage.gaussian_filter(data, np.sqrt(factor**2 - 1.0) / 2.355)
    out = nib.Nifti1Image(resample((data, img.affine), (shape, affine)), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


def resample(
    moving: nib.Nifti1Image | tuple[np.ndarray, np.ndarray],
    fixed: nib.Nifti1Image | tuple[tuple[int, int, int], np.ndarray],
    transform: np.ndarray | None = None,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample ``moving`` onto ``fixed``'s voxel grid through ``transform``.

    ``moving``: a nibabel image, or ``(data [X, Y, Z], affine 4x4)``. ``fixed``: a nibabel image,
    or ``(shape, affine)`` of the target grid. ``transform``: 4x4 RAS matrix (mm) from
    :func:`affine_register` (fixed world -> moving world); ``None`` means identity (both grids in
    the same world). For each fixed voxel ``v`` the moving voxel coordinate is
    ``inv(A_moving) @ T @ A_fixed @ v``, interpolated with :func:`scipy.ndimage.affine_transform`
    (the affine form of ``map_coordinates``) of spline ``order`` (1 = linear; 0 = nearest, for
    masks); outside the moving volume the value is ``cval`` (0).

    Returns a float32 array of the fixed grid's shape (bool input comes back as 0/1 floats).
    """
    if isinstance(moving, nib.spatialimages.SpatialImage):
        m_data, m_aff = np.asanyarray(moving.dataobj), moving.affine
    else:
        m_data, m_aff = moving
    if isinstance(fixed, nib.spatialimages.SpatialImage):
        f_shape, f_aff = tuple(fixed.shape[:3]), fixed.affine
    else:
        f_shape, f_aff = tuple(fixed[0]), fixed[1]
    m_data = np.asarray(m_data, dtype=np.float32)
    t = np.eye(4) if transform is None else np.asarray(transform, dtype=float)
    vox = np.linalg.inv(np.asarray(m_aff, dtype=float)) @ t @ np.asarray(f_aff, dtype=float)
    out = ndimage.affine_transform(
        m_data,
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=f_shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=order > 1,
    )
    return out.astype(np.float32, copy=False)
