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

from defaceaudit.masks import gaussian_filter, in_slabs, percentile

#: percentile of the original's intensities (inside the scale mask) that becomes 1
SCALE_PERCENTILE = 99.5
#: Gaussian SSIM window, in voxels: sigma, and skimage's truncation for gaussian_weights=True
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
#: reach of the window in voxels, as scipy.ndimage rounds it: int(3.5 * 1.5 + 0.5) = 5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)


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


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of a non-empty bool array grown by ``margin`` voxels, within the array."""
    box = []
    for axis, size in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(0, int(hits[0]) - margin), min(size, int(hits[-1]) + 1 + margin)))
    return tuple(box)


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
    are its map's, bit for bit (tested), at a fraction of the memory and time: the Gaussians run
    in threads on the mask's bounding box grown by :data:`SSIM_RADIUS` (no window centred in the
    mask reaches past it, so nothing changes inside the mask), and the ratio is evaluated at the
    mask's voxels only.
    """
    box = _box(mask, SSIM_RADIUS)
    inside = mask[box]
    a, b = _normalised_box(original, box, scale), _normalised_box(other, box, scale)
    squared, spare = a[inside], b[inside]
    np.subtract(squared, spare, out=squared)
    np.multiply(squared, squared, out=squared)
    # Gaussian-weighted local means at the mask's voxels: the products first, while a and b are
    # intact, then a and b themselves, each filtered in place (three box-sized buffers in all).
    work = np.empty(inside.shape, dtype=np.float64)
    mean_ab = _local_mean(np.multiply(a, b, out=work), inside)
    var_a = _local_mean(np.multiply(a, a, out=work), inside)  # the mean of a^2, for now
    var_b = _local_mean(np.multiply(b, b, out=work), inside)
    mu_a, mu_b = _local_mean(a, inside), _local_mean(b, inside)
    del a, b, work
    # The ratio in place, in skimage's order of operations (its "1.0 *" population-covariance
    # factor is exact and left out): every new array would cost fresh memory, whose first touch
    # is a good part of the time on a 256^3 volume.
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    denominator = np.multiply(mu_a, mu_a)
    var_a -= denominator  # s_a = <a^2> - mu_a^2
    np.multiply(mu_b, mu_b, out=spare)
    var_b -= spare  # s_b
    denominator += spare
    denominator += c1  # B1 = mu_a^2 + mu_b^2 + C1
    np.multiply(mu_a, mu_b, out=spare)
    mean_ab -= spare  # s_ab = <ab> - mu_a mu_b
    var_a += var_b
    var_a += c2  # B2 = s_a + s_b + C2
    denominator *= var_a
    ssim = np.multiply(mu_a, 2, out=spare)
    ssim *= mu_b
    ssim += c1  # A1 = 2 mu_a mu_b + C1
    mean_ab *= 2
    mean_ab += c2  # A2 = 2 s_ab + C2
    ssim *= mean_ab
    ssim /= denominator
    return ssim, squared


def _local_mean(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``values`` Gaussian-filtered IN PLACE (the SSIM window), then its voxels in ``inside``."""
    gaussian_filter(values, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect", output=values)
    return values[inside]


def _normalised_box(volume: np.ndarray, box: tuple[slice, ...], scale: float) -> np.ndarray:
    """``volume[box] / scale`` in float64, C order whatever ``volume``'s (nibabel's is Fortran:
    the Gaussian passes run on contiguous lines); converted in slabs, in threads."""
    out = np.empty(tuple(s.stop - s.start for s in box), dtype=np.float64)

    def one(slab: slice) -> None:
        rows = slice(box[0].start + slab.start, box[0].start + slab.stop)
        np.divide(volume[(rows, *box[1:])], scale, out=out[slab], dtype=np.float64)

    in_slabs(one, out.shape[0])
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
