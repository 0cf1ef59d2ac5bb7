"""The refacing cascade (paper section 2.1): what each stage sees and how a face is sampled.

Stage 1 (3-D, low resolution): x0 = the original downsampled by ``factor``; condition = the
defaced image downsampled the same way. Stage 2 (2.5-D, full resolution, slabs of 8 axial slices,
stride 4): x0 = a slab of the original; conditions = the same slab of the stage-1 result
upsampled to full resolution and of the full-resolution defaced image. In training the stage-1
result is stood in for by the original downsampled and upsampled again (what a perfect stage 1
would give); at sampling time it is the real stage-1 sample.

Sampling a subject: stage 1 by DDIM on the whole low-resolution volume; upsample; stage 2 by
DDIM whose state is the whole full-resolution volume: at every step it is cut into slabs (8
slices, stride 4, the last slab aligned to the volume's end), all slabs go through the network
(``slab_batch`` at a time) and their x0 predictions are merged by averaging the overlaps
(:func:`defaceaudit.diffusion.slabs.slab_predictor`). Averaging x0 at EVERY step, with one
shared noisy volume, keeps neighbouring slabs consistent on their shared slices throughout the
reverse process; averaging once at the end would reconcile slabs that drifted apart and leave
seams. With paste-back (default) the voxels defacing left untouched are written into stage 2's
x0 at every step and into the final volume, so only the removed region is generated. Stage 1 has
no paste-back (see :func:`sample_cascade`).

Tensors are [B, C, X, Y, Z], intensities in [-1, 1] (:mod:`defaceaudit.diffusion.volumes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from defaceaudit.diffusion.ddim import ddim_sample, model_predictor, paste_known_hook
from defaceaudit.diffusion.schedule import DiffusionSchedule
from defaceaudit.diffusion.slabs import SLAB_SIZE, SLAB_STRIDE, slab_predictor
from defaceaudit.diffusion.volumes import downsample, upsample


@dataclass
class PairSet:
    """Training pairs on one padded grid, in [-1, 1]: ``inputs`` (defaced) and ``targets``
    (originals), each [N, 1, X, Y, Z] float32 (CPU)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self):
        if self.inputs.shape != self.targets.shape or self.inputs.ndim != 5:
            raise ValueError(
                f"pairs need equal [N, 1, X, Y, Z] shapes, got {tuple(self.inputs.shape)} "
                f"and {tuple(self.targets.shape)}"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]


def stage1_batches(
    pairs: PairSet, factor: int, batch_size: int
) -> Callable[[np.random.Generator], Iterator[dict]]:
    """Batches for stage 1: ``{"x0": [B, 1, x, y, z], "cond": [B, 1, x, y, z]}`` at 1/factor."""
    low_targets = downsample(pairs.targets, factor)
    low_inputs = downsample(pairs.inputs, factor)

    def batches(rng: np.random.Generator) -> Iterator[dict]:
        while True:
            index = torch.as_tensor(rng.integers(0, len(pairs), batch_size))
            yield {"x0": low_targets[index], "cond": low_inputs[index]}

    return batches


def stage2_batches(
    pairs: PairSet, factor: int, batch_size: int, patch: int = 0
) -> Callable[[np.random.Generator], Iterator[dict]]:
    """Batches for stage 2: ``{"x0": [B, 1, P, P, 8], "cond": [B, 2, P, P, 8]}``: random pairs,
    random slab positions (any start, not only the stride's, so every slice is seen) and, when
    ``patch`` > 0, a random in-plane crop of ``patch`` x ``patch`` voxels (the network is
    convolutional, so it samples whole slabs after training on crops; crops cut the cost of a
    step several-fold). ``patch`` = 0 or larger than the grid: whole slabs [B, *, X, Y, 8]."""
    coarse = upsample(downsample(pairs.targets, factor), pairs.targets.shape[2:])
    conditions = torch.cat([coarse, pairs.inputs], dim=1)
    nx, ny, depth = pairs.targets.shape[2:]
    px, py = (min(patch, nx), min(patch, ny)) if patch > 0 else (nx, ny)

    def batches(rng: np.random.Generator) -> Iterator[dict]:
        while True:
            index = rng.integers(0, len(pairs), batch_size)
            starts = rng.integers(0, depth - SLAB_SIZE + 1, batch_size)
            xs = rng.integers(0, nx - px + 1, batch_size)
            ys = rng.integers(0, ny - py + 1, batch_size)
            x0, cond = [], []
            for i, s, x, y in zip(index, starts, xs, ys, strict=True):
                window = (slice(x, x + px), slice(y, y + py), slice(s, s + SLAB_SIZE))
                x0.append(pairs.targets[i, :, *window])
                cond.append(conditions[i, :, *window])
            yield {"x0": torch.stack(x0), "cond": torch.stack(cond)}

    return batches


def diffusion_loss(schedule: DiffusionSchedule):
    """``loss_fn(model, batch, generator)`` for the training loop: x0-prediction MSE."""

    def loss_fn(model, batch, generator=None):
        device = next(model.parameters()).device
        return schedule.x0_loss(
            model, batch["x0"].to(device), batch["cond"].to(device), generator=generator
        )

    return loss_fn


@dataclass(frozen=True)
class SamplingSettings:
    """DDIM settings chosen at sampling time (not training time)."""

    steps: int = 10
    eta: float = 0.0
    seed: int = 0
    paste_back: bool = True
    slab_batch: int = 8


#: voxels of context kept around the region to generate (stage 2 sees them as known voxels)
WINDOW_MARGIN = 8


def generation_window(keep: torch.Tensor, multiple: int, margin: int = WINDOW_MARGIN):
    """The box [X, Y, Z] (three slices) that stage 2 samples: the bounding box of the voxels to
    generate (``~keep``, [X, Y, Z] bool), grown by ``margin`` voxels of known context, its
    in-plane sizes rounded up to ``multiple`` and its depth to at least one slab, all within
    the volume (whose sizes already divide by ``multiple``)."""
    shape = keep.shape
    todo = torch.nonzero(~keep)
    if todo.numel() == 0:  # nothing to generate: the smallest valid box
        lo = torch.zeros(3, dtype=torch.long)
        hi = torch.zeros(3, dtype=torch.long)
    else:
        lo, hi = todo.min(dim=0).values, todo.max(dim=0).values + 1
    window = []
    for axis, n in enumerate(shape):
        need = multiple if axis < 2 else SLAB_SIZE
        start = max(0, int(lo[axis]) - margin)
        stop = min(n, int(hi[axis]) + margin)
        size = max(need, stop - start)
        if axis < 2:
            size = min(n, -(-size // multiple) * multiple)
        start = min(start, n - size)
        window.append(slice(start, start + size))
    return tuple(window)


@torch.no_grad()
def sample_cascade(
    stage1: torch.nn.Module,
    stage2: torch.nn.Module,
    schedule1: DiffusionSchedule,
    schedule2: DiffusionSchedule,
    defaced: torch.Tensor,
    keep: torch.Tensor,
    factor: int,
    settings: SamplingSettings,
    *,
    multiple: int,
) -> torch.Tensor:
    """Reface one padded volume.

    Args:
        defaced: [1, 1, X, Y, Z] in [-1, 1] on the models' device; sizes as
            :func:`~defaceaudit.diffusion.volumes.padded_shape` gives them.
        keep: [1, 1, X, Y, Z] bool, the voxels defacing left untouched and the padding (known
            background, -1 in ``defaced``); pasted back when ``settings.paste_back``.
        multiple: stage 2's size multiple (:func:`~defaceaudit.diffusion.unet.required_multiple`).
            With paste-back, stage 2 runs only on :func:`generation_window`: slabs holding no
            voxel to generate would be overwritten by the paste-back anyway.
    Returns the refaced volume [1, 1, X, Y, Z] in [-1, 1].

    Stage 1 is sampled without paste-back, deliberately: its result is only stage 2's coarse
    condition, and where defacing left the image untouched stage 2 also sees the full-resolution
    defaced voxels (as a condition, and pasted into its x0). A coarse voxel is known only when
    its whole ``factor``-cube is untouched, so the cubes straddling the removed region's edge,
    where the coarse condition matters, have no known value to paste; stage 1 sees the
    downsampled defaced image as its condition instead.
    """
    device, dtype = defaced.device, defaced.dtype
    generator = torch.Generator(device=device).manual_seed(int(settings.seed))
    low_cond = downsample(defaced, factor)
    low = ddim_sample(
        model_predictor(stage1),
        tuple(low_cond.shape),
        low_cond,
        schedule1,
        steps=settings.steps,
        eta=settings.eta,
        generator=generator,
        device=device,
        dtype=dtype,
    )
    coarse = upsample(low, defaced.shape[2:])
    window = (
        generation_window(keep[0, 0], multiple, margin=WINDOW_MARGIN)
        if settings.paste_back
        else tuple(slice(0, n) for n in defaced.shape[2:])
    )
    region = (slice(None), slice(None), *window)
    predict = slab_predictor(
        model_predictor(stage2), SLAB_SIZE, SLAB_STRIDE, max_slabs=settings.slab_batch
    )
    hook = paste_known_hook(defaced[region], keep[region]) if settings.paste_back else None
    crop = ddim_sample(
        predict,
        tuple(defaced[region].shape),
        torch.cat([coarse[region], defaced[region]], dim=1),
        schedule2,
        steps=settings.steps,
        eta=settings.eta,
        generator=generator,
        x0_hook=hook,
        device=device,
        dtype=dtype,
    )
    out = defaced.clone()
    out[region] = crop
    if settings.paste_back:
        out = torch.where(keep, defaced, out)
    return out
