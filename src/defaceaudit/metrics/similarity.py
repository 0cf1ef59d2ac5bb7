"""SSIM and PSNR inside a mask (whole head, or the face area M5 of the paper's Figure S1).

Intensities are normalised before comparison: both images are divided by the ORIGINAL's 99.5th
percentile inside a scale mask (no clipping, which would hide errors above it), so the peak
signal, the ``data_range`` of SSIM and of PSNR, is 1 and the two images share one scale. The scale
mask is the measured mask itself by default; the pipeline measures the small face area M5 with
the scale of the whole head (the original's head mask M3), so that face and head figures of one
image use one intensity scale and a face area of little tissue does not set its own peak.

SSIM uses a Gaussian window (sigma 1.5 voxels truncated at 3.5 sigma, population covariance, as
Wang et al.; :func:`skimage.metrics.structural_similarity`) and is the mean of the SSIM map inside
the mask; PSNR is 10 log10(1 / MSE) with the MSE inside the mask (infinite for identical images).
The map is computed on the mask's bounding box grown by the window's radius (5 voxels) only,
in slabs run in parallel: inside the mask it is the same array, bit for bit, as the map of the
whole volumes, since no window centred in the mask reaches past the box.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from defaceaudit.imaging.masks import available_threads, bounding_box, in_slabs, percentile

#: percentile of the original's intensities (inside the scale mask) that becomes 1
SCALE_PERCENTILE = 99.5
#: Gaussian SSIM window, in voxels: sigma, and skimage's truncation for gaussian_weights=True
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
#: reach of the window in voxels, as scipy.ndimage rounds it: int(3.5 * 1.5 + 0.5) = 5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
#: rows (along axis 0) of the slabs the SSIM map is computed in: the first Gaussian pass reads
#: SSIM_RADIUS more rows on each side, so thin slabs repeat work, thick ones hold more memory
#: (about ten float64 arrays of the slab's size per thread)
_SLAB_ROWS = 32


def _scale(original: np.ndarray, scale_mask: np.ndarray) -> float:
    """The original's :data:`SCALE_PERCENTILE` percentile inside ``scale_mask`` (> 0).

    Interpolated in float64 (as for float64 input). The voxels are gathered in the volume's
    memory order (nibabel's is Fortran): a percentile does not depend on their order.
    """
    order = "F" if original.flags.f_contiguous and not original.flags.c_contiguous else "C"
    values = np.ravel(original, order=order)[np.ravel(scale_mask, order=order)]
    scale = float(percentile(values, SCALE_PERCENTILE, dtype=np.float64))
    if not scale > 0:
        raise ValueError("the original image is empty inside the scale mask")
    return scale


def normalise(
    original: np.ndarray,
    other: np.ndarray,
    mask: np.ndarray,
    *,
    scale_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Both volumes divided by the original's 99.5th percentile in ``scale_mask`` (default
    ``mask``); bool masks of the volumes' shape."""
    scale = _scale(original, np.asarray(mask if scale_mask is None else scale_mask, dtype=bool))
    return original / scale, other / scale


def _masked_terms(
    original: np.ndarray,
    other: np.ndarray,
    mask: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM map values and squared differences at the voxels of ``mask``, in C order (1-D).

    With ``a = original / scale`` and ``b = other / scale`` (float64), the map is Wang et al.'s
    SSIM with Gaussian-weighted local means ``mu`` and (population) covariances ``s``::

        ((2 mu_a mu_b + C1) (2 s_ab + C2)) / ((mu_a^2 + mu_b^2 + C1) (s_a + s_b + C2))

    C1 = 0.01^2, C2 = 0.03^2 (data range 1), the Gaussian mirrored at the volume's faces. The
    operations are those of ``skimage.metrics.structural_similarity(a, b, data_range=1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)``, so the values
    are its map's, bit for bit (tested), in a fraction of the memory and time. Only the mask's
    bounding box grown by :data:`SSIM_RADIUS` is read (no window centred in the mask reaches
    past it), in slabs of :data:`_SLAB_ROWS` rows along axis 0 run in threads
    (:func:`_slab_terms`); the ratio is evaluated at the mask's voxels only.
    """
    box = bounding_box(mask, SSIM_RADIUS)
    inside = mask[box]
    # where each row's voxels go in the C-ordered outputs
    starts = np.concatenate([[0], np.cumsum(np.count_nonzero(inside, axis=(1, 2)))])
    ssim = np.empty(int(starts[-1]), dtype=np.float64)
    squared = np.empty_like(ssim)

    def one(slab: slice) -> None:
        rows = slice(int(starts[slab.start]), int(starts[slab.stop]))
        ssim[rows], squared[rows] = _slab_terms(original, other, box, inside, slab, scale)

    n_rows, threads = inside.shape[0], available_threads()
    # about _SLAB_ROWS rows each, as many slabs for every thread
    in_slabs(one, n_rows, threads, parts=threads * max(1, round(n_rows / _SLAB_ROWS / threads)))
    return ssim, squared


def _slab_terms(
    original: np.ndarray,
    other: np.ndarray,
    box: tuple[slice, ...],
    inside: np.ndarray,
    slab: slice,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM values and squared differences at ``inside[slab]`` (``slab``: rows of ``box``).

    The slab is read across its own bounding box of the mask grown by :data:`SSIM_RADIUS`, with
    that many more rows on both sides (fewer at the box's ends) for the first Gaussian pass,
    along axis 0; the two other passes need only the slab's rows. Each filtered map is the same
    as scipy's ``gaussian_filter`` of the whole volume inside the mask: the passes are the same
    1-D filters in the same order, and no window centred in the mask reaches past a cut.
    """
    keep = inside[slab]
    if not keep.any():
        return np.empty(0), np.empty(0)
    # the slab's own box across the rows: a head is narrower near its ends
    _, cols, depth = bounding_box(keep, SSIM_RADIUS)
    keep = keep[:, cols, depth]
    low = max(0, slab.start - SSIM_RADIUS)
    high = min(inside.shape[0], slab.stop + SSIM_RADIUS)
    region = (
        slice(box[0].start + low, box[0].start + high),
        slice(box[1].start + cols.start, box[1].start + cols.stop),
        slice(box[2].start + depth.start, box[2].start + depth.stop),
    )
    a = _normalised(original, region, scale)
    b = _normalised(other, region, scale)
    centre = slice(slab.start - low, slab.stop - low)
    squared = a[centre][keep] - b[centre][keep]
    squared *= squared
    filtered = {}
    for name, first, second in (
        ("ab", a, b),
        ("aa", a, a),
        ("bb", b, b),
        ("a", a, None),
        ("b", b, None),
    ):
        values = first if second is None else first * second
        # first pass on the rows with their margin, then only the slab's rows, in place
        values = ndimage.gaussian_filter1d(
            values, SSIM_SIGMA, axis=0, mode="reflect", truncate=SSIM_TRUNCATE
        )[centre]
        for axis in (1, 2):
            ndimage.gaussian_filter1d(
                values, SSIM_SIGMA, axis=axis, output=values, mode="reflect", truncate=SSIM_TRUNCATE
            )
        filtered[name] = values[keep]
    return _ssim_ratio(**filtered), squared


def _ssim_ratio(
    a: np.ndarray, b: np.ndarray, aa: np.ndarray, bb: np.ndarray, ab: np.ndarray
) -> np.ndarray:
    """The SSIM ratio from local means of a, b, a^2, b^2 and ab (1-D, overwritten).

    In place, in skimage's order of operations (its "1.0 *" population-covariance factor is
    exact and left out): every new array would cost fresh memory.
    """
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    denominator = np.multiply(a, a)
    aa -= denominator  # s_a = <a^2> - mu_a^2
    spare = np.multiply(b, b)
    bb -= spare  # s_b
    denominator += spare
    denominator += c1  # B1 = mu_a^2 + mu_b^2 + C1
    np.multiply(a, b, out=spare)
    ab -= spare  # s_ab = <ab> - mu_a mu_b
    aa += bb
    aa += c2  # B2 = s_a + s_b + C2
    denominator *= aa
    ssim = np.multiply(a, 2, out=spare)
    ssim *= b
    ssim += c1  # A1 = 2 mu_a mu_b + C1
    ab *= 2
    ab += c2  # A2 = 2 s_ab + C2
    ssim *= ab
    ssim /= denominator
    return ssim


def _normalised(volume: np.ndarray, box: tuple[slice, ...], scale: float) -> np.ndarray:
    """``volume[box] / scale`` in float64 and C order, whatever ``volume``'s order.

    nibabel loads Fortran-ordered arrays, but the Gaussian passes want contiguous lines. The
    copy is then a transposition, done in blocks of 16 x 32 lines so that reads and writes both
    stay in cache (twice as fast as one strided copy).
    """
    out = np.empty(tuple(s.stop - s.start for s in box), dtype=np.float64)
    rows, cols, depth = box
    for i in range(0, out.shape[0], 16):
        for k in range(0, out.shape[2], 32):
            source = volume[
                rows.start + i : min(rows.start + i + 16, rows.stop),
                cols,
                depth.start + k : min(depth.start + k + 32, depth.stop),
            ]
            np.divide(source, scale, out=out[i : i + 16, :, k : k + 32], dtype=np.float64)
    return out


def similarity(
    original: np.ndarray,
    other: np.ndarray,
    mask: np.ndarray,
    *,
    scale_mask: np.ndarray | None = None,
) -> dict:
    """``{"ssim", "psnr_db", "n_voxels"}`` of ``other`` against ``original`` inside ``mask``.

    Arrays are [X, Y, Z] on one grid; ``mask`` and ``scale_mask`` are bool. The intensity scale
    is the original's 99.5th percentile inside ``scale_mask`` (default: ``mask``). ``n_voxels``
    counts ``mask``.
    """
    mask = np.asarray(mask, dtype=bool)
    scale_mask = mask if scale_mask is None else np.asarray(scale_mask, dtype=bool)
    if not (original.shape == other.shape == mask.shape == scale_mask.shape):
        raise ValueError(
            f"grids differ: {original.shape}, {other.shape}, mask {mask.shape}, "
            f"scale mask {scale_mask.shape}"
        )
    if not mask.any():
        raise ValueError("the mask is empty")
    ssim_values, squared = _masked_terms(original, other, mask, _scale(original, scale_mask))
    mse = float(np.mean(squared))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return {"ssim": float(ssim_values.mean()), "psnr_db": psnr, "n_voxels": int(squared.size)}
