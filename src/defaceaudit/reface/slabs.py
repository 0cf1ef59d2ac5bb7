"""The 2.5-D tiling of the stage-2 model: slabs of 8 axial slices, 4 of them shared with the
next slab (paper section 2.1). The axial axis is the last one: volumes are [B, C, X, Y, Z].

The slabs start every ``stride`` slices; the last slab is aligned with the volume's end, so every
slice is covered whatever the depth (it may overlap its neighbour by more than ``size - stride``).

Sampling (see :mod:`defaceaudit.reface.cascade`): :func:`slab_predictor` keeps the DDIM state
as one volume; at EVERY step it cuts the noisy volume into slabs, runs the network on them and
averages the overlapping x0 predictions back into one volume. Neighbouring slabs then agree on
their shared slices (noisy image, noise and x0) throughout the reverse process, instead of
drifting apart and being reconciled only at the end, which leaves seams.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from defaceaudit.reface.ddim import Predictor
from defaceaudit.reface.sizing import SLAB_SIZE as SLAB_SIZE
from defaceaudit.reface.sizing import SLAB_STRIDE as SLAB_STRIDE


def slab_starts(depth: int, size: int = SLAB_SIZE, stride: int = SLAB_STRIDE) -> list[int]:
    """First axial slice of each slab: ``0, stride, 2 stride, ...`` and ``depth - size`` last.

    E.g. depth 13 -> ``[0, 4, 5]``; depth 12 -> ``[0, 4]``; depth 8 -> ``[0]``.
    Raises ValueError if ``depth < size`` or unless ``1 <= stride <= size`` (no gaps).
    """
    if size < 1 or not 1 <= stride <= size:
        raise ValueError(
            f"need size >= 1 and 1 <= stride <= size, got size {size}, stride {stride}"
        )
    if depth < size:
        raise ValueError(f"the volume has {depth} axial slices, fewer than one slab of {size}")
    starts = list(range(0, depth - size + 1, stride))
    if starts[-1] != depth - size:
        starts.append(depth - size)
    return starts


def extract_slabs(
    volume: torch.Tensor, starts: Sequence[int], size: int = SLAB_SIZE
) -> torch.Tensor:
    """Cut slabs along the last axis.

    Args:
        volume: [B, C, X, Y, Z].
        starts: first slice of each of the S slabs (:func:`slab_starts`).
    Returns:
        [B * S, C, X, Y, size], batch-major: slab ``s`` of volume ``b`` at index ``b * S + s``.
    """
    depth = volume.shape[-1]
    if not starts or min(starts) < 0 or max(starts) + size > depth:
        raise ValueError(f"slab starts {list(starts)} of size {size} do not fit depth {depth}")
    slabs = torch.stack([volume[..., s : s + size] for s in starts], dim=1)
    return slabs.reshape(-1, *slabs.shape[2:])


def merge_slabs(slabs: torch.Tensor, starts: Sequence[int], depth: int, batch: int) -> torch.Tensor:
    """Reassemble slabs into volumes, averaging the slices that several slabs cover (each slice
    weighted by the number of slabs covering it).

    The mean is accumulated incrementally (``m += (v - m) / k``), which equals the count-weighted
    sum divided by the count and returns the value itself, bit for bit, where the overlapping
    slabs agree.

    Args:
        slabs: [B * S, C, X, Y, size], as :func:`extract_slabs` orders them.
        starts: the S slab starts.
        depth: Z of the volume.
        batch: B.
    Returns:
        [B, C, X, Y, depth]. Raises ValueError if a slice is covered by no slab.
    """
    n_slabs = len(starts)
    if slabs.shape[0] != batch * n_slabs:
        raise ValueError(f"{slabs.shape[0]} slabs for {batch} volumes of {n_slabs} slabs")
    size = slabs.shape[-1]
    per_volume = slabs.reshape(batch, n_slabs, *slabs.shape[1:])
    out = per_volume.new_zeros((batch, *slabs.shape[1:-1], depth))
    count = torch.zeros(depth, dtype=torch.long)
    for i, s in enumerate(starts):
        count[s : s + size] += 1
        k = count[s : s + size].to(device=out.device, dtype=out.dtype)
        window = out[..., s : s + size]
        out[..., s : s + size] = window + (per_volume[:, i] - window) / k
    if bool(torch.any(count == 0)):
        empty = torch.nonzero(count == 0).flatten().tolist()
        raise ValueError(f"axial slices {empty} are covered by no slab")
    return out


def slab_predictor(
    predict_slabs: Predictor,
    size: int = SLAB_SIZE,
    stride: int = SLAB_STRIDE,
    max_slabs: int | None = None,
) -> Predictor:
    """Turn a slab model into a whole-volume x0 predictor for
    :func:`~defaceaudit.reface.ddim.ddim_sample`.

    The returned ``predict_x0(x_t [B, C, X, Y, Z], cond [B, C_cond, X, Y, Z], t [B])`` cuts
    ``x_t`` and ``cond`` into slabs, runs ``predict_slabs`` on them (``max_slabs`` at a time, to
    bound memory) and merges the x0 slabs back by averaging. The sampling state then stays one
    volume, so the overlapping slabs see the same noisy slices as well as agreeing on x0.
    """

    def predict_x0(x_t: torch.Tensor, cond: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        batch, depth = x_t.shape[0], x_t.shape[-1]
        starts = slab_starts(depth, size, stride)
        x_slabs = extract_slabs(x_t, starts, size)
        c_slabs = None if cond is None else extract_slabs(cond, starts, size)
        t_slabs = t.repeat_interleave(len(starts))
        chunk = x_slabs.shape[0] if max_slabs is None else int(max_slabs)
        parts = [
            predict_slabs(
                x_slabs[i : i + chunk],
                None if c_slabs is None else c_slabs[i : i + chunk],
                t_slabs[i : i + chunk],
            )
            for i in range(0, x_slabs.shape[0], chunk)
        ]
        return merge_slabs(torch.cat(parts), starts, depth, batch)

    return predict_x0
