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
(:func:`defaceaudit.reface.slabs.slab_predictor`). Averaging x0 at EVERY step, with one
shared noisy volume, keeps neighbouring slabs consistent on their shared slices throughout the
reverse process; averaging once at the end would reconcile slabs that drifted apart and leave
seams. With paste-back (default) the voxels defacing left untouched are written into stage 2's
x0 at every step and into the final volume, so only the removed region is generated. Stage 1 has
no paste-back (see :func:`sample_cascade`).

Tensors are [B, C, X, Y, Z], intensities in [-1, 1] (:mod:`defaceaudit.reface.volumes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from defaceaudit.config import section_settings
from defaceaudit.reface.ddim import ddim_sample, model_predictor, paste_known_hook
from defaceaudit.reface.schedule import DiffusionSchedule
from defaceaudit.reface.slabs import SLAB_SIZE, SLAB_STRIDE, slab_predictor
from defaceaudit.reface.volumes import downsample, upsample, upsample_window


@dataclass
class PairSet:
    """Training pairs (defaced input, original target) on one padded grid [X, Y, Z] in [-1, 1],
    on the CPU, stored for host memory: N pairs of M distinct originals (paper scale: 720 pairs
    of 180 originals, 4 defacers each), ``f`` = ``factor``.

    - ``low_targets``: [N, 1, X/f, Y/f, Z/f] float32, each pair's target downsampled (stage 1's
      x0; stage 2 upsamples its coarse condition from it, window by window);
    - ``low_inputs``: [N, 1, X/f, Y/f, Z/f] float32, the inputs downsampled (stage 1), or None;
    - ``inputs``: [N, 1, X, Y, Z] float16, the inputs at full resolution (stage 2), or None;
    - ``regions``: [N, 1, X, Y, Z] bool, each pair's attack region (the voxels to generate,
      :func:`~defaceaudit.reface.region.attack_region`; False on the padding), or None
      (stage 1 keeps only ``low_regions``);
    - ``low_regions``: [N, 1, X/f, Y/f, Z/f] float32, the fraction of each coarse voxel in the
      region (stage 1's mask channel and loss weight; stage 2 draws its windows near it);
    - ``originals``: [M, 1, X, Y, Z] float16, each distinct original once (stage 2), or None,
      with ``original_index`` [N] int64 and ``gain`` [N] float32 (>= 1) giving pair i's target
      ``clip(gain[i] * (originals[original_index[i]] + 1) - 1, -1, 1)``. A pair's target is
      its original scaled by the pair's DEFACED image (:mod:`~defaceaudit.reface.volumes`),
      so one original's pairs differ by a factor: it is stored on the largest of their scales
      and ``gain`` is that scale over the pair's.

    Float16: the full-resolution volumes are rounded to float16 once and read back as float32
    (:meth:`input_window`, :meth:`target_window`): error <= 2**-12 (2.4e-4) on an input and
    ``gain`` * 2**-12 on a target (below 5e-4 while an original's scales differ by less than
    a factor 2). The downsampled volumes are computed in float32 from the float32 volumes and
    kept in float32: stage 1's batches and stage 2's coarse condition are those of float32
    storage. Nothing else reads a PairSet (sampling and paste-back work on float32 volumes).
    """

    factor: int
    low_targets: torch.Tensor
    original_index: torch.Tensor
    gain: torch.Tensor
    low_inputs: torch.Tensor | None = None
    inputs: torch.Tensor | None = None
    originals: torch.Tensor | None = None
    regions: torch.Tensor | None = None
    low_regions: torch.Tensor | None = None

    def __post_init__(self):
        n = self.low_targets.shape[0]
        full = (n, 1, *self.shape)
        checks = [
            ("low_targets", self.low_targets.ndim == 5 and self.low_targets.shape[1] == 1),
            ("original_index", tuple(self.original_index.shape) == (n,)),
            ("gain", tuple(self.gain.shape) == (n,)),
            ("low_inputs", self.low_inputs is None or self.low_inputs.shape == (n, 1, *self.low)),
            ("inputs", self.inputs is None or tuple(self.inputs.shape) == full),
            ("originals", self.originals is None or tuple(self.originals.shape[1:]) == full[1:]),
            ("regions", self.regions is None or tuple(self.regions.shape) == full),
            (
                "low_regions",
                self.low_regions is None or self.low_regions.shape == (n, 1, *self.low),
            ),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(
                    f"PairSet.{name}: shape does not fit low_targets "
                    f"{tuple(self.low_targets.shape)} (factor {self.factor})"
                )

    @classmethod
    def from_volumes(
        cls,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        factor: int,
        regions: torch.Tensor | None = None,
    ) -> PairSet:
        """From full-resolution float32 volumes ``inputs`` and ``targets`` [N, 1, X, Y, Z] in
        [-1, 1] (sizes divisible by ``factor``), each target its own original; ``regions``
        [N, 1, X, Y, Z] bool, the voxels to generate (default: where the input is exactly -1,
        a defacer's zero)."""
        if inputs.shape != targets.shape or inputs.ndim != 5:
            raise ValueError(
                f"pairs need equal [N, 1, X, Y, Z] shapes, got {tuple(inputs.shape)} "
                f"and {tuple(targets.shape)}"
            )
        n = inputs.shape[0]
        regions = (inputs == -1) if regions is None else regions.bool()
        return cls(
            regions=regions,
            low_regions=downsample(regions.float(), factor),
            factor=factor,
            low_targets=downsample(targets, factor),
            low_inputs=downsample(inputs, factor),
            inputs=inputs.half(),
            originals=targets.half(),
            original_index=torch.arange(n),
            gain=torch.ones(n),
        )

    def __len__(self) -> int:
        return self.low_targets.shape[0]

    @property
    def low(self) -> tuple[int, int, int]:
        """The downsampled grid (x, y, z) = (X, Y, Z) / factor."""
        return tuple(self.low_targets.shape[2:])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The full-resolution grid (X, Y, Z)."""
        return tuple(self.factor * n for n in self.low)

    def input_window(self, i: int, window: tuple[slice, ...]) -> torch.Tensor:
        """Pair ``i``'s input in ``window`` (three slices of the grid): [1, *sizes] float32."""
        return self.inputs[i, :, *window].float()

    def target_window(self, i: int, window: tuple[slice, ...]) -> torch.Tensor:
        """Pair ``i``'s target in ``window``: [1, *sizes] float32."""
        original = self.originals[int(self.original_index[i]), :, *window].float()
        return torch.clamp(self.gain[i] * (original + 1) - 1, -1, 1)

    def region_window(self, i: int, window: tuple[slice, ...]) -> torch.Tensor:
        """Pair ``i``'s attack region in ``window``: [1, *sizes] float32 (1 = to generate)."""
        return self.regions[i, :, *window].float()

    def coarse_window(self, i: int, window: tuple[slice, ...]) -> torch.Tensor:
        """Pair ``i``'s target downsampled and upsampled again, in ``window``: [1, *sizes]
        float32, the window of ``upsample(downsample(target), grid)``."""
        return upsample_window(self.low_targets[i], self.factor, window)


@dataclass(frozen=True)
class AttackTraining:
    """How the refacing networks are trained to re-grow a face (beyond the paper's recipe,
    which conditions on the defaced image alone and weights every voxel alike).

    - ``mask_channel``: the networks also see where the attack region is (one more input
      channel, 1 inside it and -1 outside; stage 1 the region's fraction of each coarse voxel
      mapped the same way), so they need not guess from the intensities which zeros are air;
    - ``region_weight``: the loss weight of a voxel inside the region relative to one outside
      (known voxels are pasted back at sampling time, so their prediction matters little);
    - ``focus``: the fraction of stage 2's windows centred on a voxel of the pair's region
      (drawn uniformly in its bounding box) instead of anywhere;
    - ``flip``: each sample is mirrored left-right with probability 1/2 (faces are nearly
      symmetric: twice the anatomy for the same pairs);
    - ``coarse_noise``: stage 2's coarse condition gets Gaussian noise of a standard deviation
      drawn uniformly in [0, coarse_noise] (units of [-1, 1]), so stage 2 is trained on the
      imperfect inputs it gets from stage 1 when sampling (conditioning augmentation,
      Ho et al. 2022, "Cascaded diffusion models");
    - ``scale``: stage 1's samples are zoomed by a factor drawn in [1 - scale, 1 + scale] about
      a centre shifted by up to ``scale`` of the grid (input, target and region together), so
      the network learns to fit a face to a head of another size and position than the few
      training persons' (the demo trains on two);
    - ``gamma``: input and target (and stage 2's coarse condition) go through one intensity
      curve ``u ** g``, ``u`` in [0, 1], ``log g`` drawn in [-gamma, gamma] (zero stays zero):
      robustness to another scanner's contrast and bias field.

    A field left out is off: ``AttackTraining()`` is the paper's recipe. The configured attack,
    with the config schema's defaults, is :meth:`from_config`.
    """

    mask_channel: bool = False
    region_weight: float = 1.0
    focus: float = 0.0
    flip: bool = False
    coarse_noise: float = 0.0
    scale: float = 0.0
    gamma: float = 0.0

    @classmethod
    def from_config(cls, reface: Mapping) -> AttackTraining:
        """From a ``reface`` config section's ``attack`` keys, validated against the config
        schema (``reface.attack``), each key it lacks (or the whole section) taking the
        schema's default. Raises :class:`~defaceaudit.errors.InputError` naming the key."""
        return cls(**section_settings("reface.attack", reface.get("attack", {})))


def mask_channel(region: torch.Tensor) -> torch.Tensor:
    """A region (bool, or its fraction per voxel in [0, 1]) as a network channel in [-1, 1]."""
    return 2.0 * region.float() - 1.0


def _flip(rng: np.random.Generator, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` ([C, X, Y, Z] each) mirrored along X together, with probability 1/2."""
    if rng.random() < 0.5:
        return tuple(t.flip(1) for t in tensors)
    return tensors


def _gamma(rng: np.random.Generator, gamma: float, *images: torch.Tensor) -> tuple:
    """``images`` (in [-1, 1]) through one curve ``u ** g`` on ``u = (x + 1) / 2``, ``log g``
    drawn uniformly in [-gamma, gamma]; unchanged for ``gamma`` 0."""
    if gamma <= 0:
        return images
    g = float(np.exp(rng.uniform(-gamma, gamma)))
    return tuple(2.0 * ((x + 1.0) * 0.5).clamp(0.0, 1.0) ** g - 1.0 for x in images)


def _zoom(rng: np.random.Generator, scale: float, *volumes: torch.Tensor) -> tuple:
    """``volumes`` ([C, x, y, z] each, one grid) zoomed together by a factor drawn in
    [1 - scale, 1 + scale] about a centre shifted by up to ``scale`` (fractions of the grid),
    trilinear, the border values extended; unchanged for ``scale`` 0."""
    if scale <= 0:
        return volumes
    factor = float(rng.uniform(1.0 - scale, 1.0 + scale))
    shift = rng.uniform(-scale, scale, 3)
    # affine_grid maps output to input coordinates, (z, y, x) order of the last three axes
    theta = torch.zeros(1, 3, 4)
    theta[0, :3, :3] = torch.eye(3) / factor
    theta[0, :, 3] = torch.as_tensor(shift[::-1].copy(), dtype=torch.float32)
    stacked = torch.cat(volumes)[None]
    grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
    out = F.grid_sample(stacked, grid, padding_mode="border", align_corners=False)[0]
    return tuple(torch.split(out, [v.shape[0] for v in volumes]))


def _weight(region: torch.Tensor, region_weight: float) -> torch.Tensor:
    """Loss weights from a region (fraction per voxel): 1 outside, ``region_weight`` inside."""
    return 1.0 + (float(region_weight) - 1.0) * region.float()


def stage1_batches(
    pairs: PairSet, batch_size: int, attack: AttackTraining | None = None
) -> Callable[[np.random.Generator], Iterator[dict]]:
    """Batches for stage 1 at 1/``pairs.factor``: ``{"x0": [B, 1, x, y, z], "cond": [B, C, x,
    y, z], "weight": [B, 1, x, y, z]}``: random pairs' downsampled target, their downsampled
    input (C = 1) and, with ``attack.mask_channel``, their region's fraction per coarse voxel
    (C = 2), and the loss weights (:class:`AttackTraining`; default: the paper's recipe)."""
    if pairs.low_inputs is None:
        raise ValueError("stage 1 needs the downsampled inputs (pairs loaded for stage 2)")
    attack = AttackTraining() if attack is None else attack
    if pairs.low_regions is None and (attack.mask_channel or attack.region_weight != 1):
        raise ValueError("a mask channel or region weight needs the pairs' regions")

    def batches(rng: np.random.Generator) -> Iterator[dict]:
        while True:
            x0, cond, weight = [], [], []
            for i in rng.integers(0, len(pairs), batch_size):
                region = (
                    pairs.low_regions[i]
                    if pairs.low_regions is not None
                    else torch.zeros_like(pairs.low_targets[i])
                )
                target, given = pairs.low_targets[i], pairs.low_inputs[i]
                if attack.flip:
                    target, given, region = _flip(rng, target, given, region)
                target, given, region = _zoom(rng, attack.scale, target, given, region)
                target, given = _gamma(rng, attack.gamma, target, given)
                x0.append(target)
                channels = [given, mask_channel(region)] if attack.mask_channel else [given]
                cond.append(torch.cat(channels))
                weight.append(_weight(region, attack.region_weight))
            yield {"x0": torch.stack(x0), "cond": torch.stack(cond), "weight": torch.stack(weight)}

    return batches


def _window_start(
    rng: np.random.Generator, size: int, extent: int, box: tuple[int, int] | None
) -> int:
    """Start of a window of ``size`` voxels on an axis of ``extent``: centred on a voxel drawn
    uniformly in ``box`` (lo, hi) when given, else anywhere; always inside the axis."""
    if box is None:
        return int(rng.integers(0, extent - size + 1))
    centre = int(rng.integers(box[0], box[1]))
    return int(np.clip(centre - size // 2, 0, extent - size))


def region_boxes(regions: torch.Tensor) -> list[tuple[tuple[int, int], ...] | None]:
    """Each pair's region bounding box on the full grid, ``((x0, x1), (y0, y1), (z0, z1))``
    (half-open), or None for an empty region; ``regions`` [N, 1, X, Y, Z] bool."""
    boxes = []
    for region in regions[:, 0]:
        todo = torch.nonzero(region)
        if todo.numel() == 0:
            boxes.append(None)
            continue
        lo, hi = todo.min(dim=0).values, todo.max(dim=0).values + 1
        boxes.append(tuple((int(a), int(b)) for a, b in zip(lo, hi, strict=True)))
    return boxes


def stage2_batches(
    pairs: PairSet, batch_size: int, patch: int = 0, attack: AttackTraining | None = None
) -> Callable[[np.random.Generator], Iterator[dict]]:
    """Batches for stage 2: ``{"x0": [B, 1, P, P, 8], "cond": [B, C, P, P, 8], "weight":
    [B, 1, P, P, 8]}`` float32: random pairs, random slab positions (any start, not only the
    stride's, so every slice is seen; with ``attack.focus`` that fraction of windows is centred
    on the pair's region) and, when ``patch`` > 0, an in-plane crop of ``patch`` x ``patch``
    voxels (the network is convolutional, so it samples whole slabs after training on crops;
    crops cut the cost of a step several-fold). ``patch`` = 0 or larger than the grid: whole
    slabs [B, *, X, Y, 8]. The conditions are the window of the target downsampled and
    upsampled again (:meth:`PairSet.coarse_window`, with ``attack.coarse_noise``), of the input
    and, with ``attack.mask_channel``, of the region (C = 3; else 2)."""
    if pairs.inputs is None or pairs.originals is None:
        raise ValueError("stage 2 needs the full-resolution volumes (pairs loaded for stage 1)")
    attack = AttackTraining() if attack is None else attack
    if pairs.regions is None and (
        attack.mask_channel or attack.region_weight != 1 or attack.focus > 0
    ):
        raise ValueError("a mask channel, region weight or focus needs the pairs' regions")
    nx, ny, depth = pairs.shape
    px, py = (min(patch, nx), min(patch, ny)) if patch > 0 else (nx, ny)
    boxes = region_boxes(pairs.regions) if pairs.regions is not None else [None] * len(pairs)

    def batches(rng: np.random.Generator) -> Iterator[dict]:
        while True:
            x0, cond, weight = [], [], []
            for i in rng.integers(0, len(pairs), batch_size):
                box = boxes[i] if rng.random() < attack.focus else None
                window = tuple(
                    slice(start, start + size)
                    for start, size in (
                        (_window_start(rng, n, extent, box and box[axis]), n)
                        for axis, (n, extent) in enumerate(((px, nx), (py, ny), (SLAB_SIZE, depth)))
                    )
                )
                target = pairs.target_window(i, window)
                coarse = pairs.coarse_window(i, window)
                if attack.coarse_noise > 0:
                    sigma = rng.uniform(0.0, attack.coarse_noise)
                    noise = rng.standard_normal(coarse.shape).astype(np.float32)
                    coarse = coarse + float(sigma) * torch.from_numpy(noise)
                given = pairs.input_window(i, window)
                region = (
                    pairs.region_window(i, window)
                    if pairs.regions is not None
                    else torch.zeros_like(target)
                )
                if attack.flip:
                    target, coarse, given, region = _flip(rng, target, coarse, given, region)
                target, coarse, given = _gamma(rng, attack.gamma, target, coarse, given)
                channels = [coarse, given] + ([mask_channel(region)] if attack.mask_channel else [])
                x0.append(target)
                cond.append(torch.cat(channels))
                weight.append(_weight(region, attack.region_weight))
            yield {"x0": torch.stack(x0), "cond": torch.stack(cond), "weight": torch.stack(weight)}

    return batches


def diffusion_loss(schedule: DiffusionSchedule):
    """``loss_fn(model, batch, generator)`` for the training loop: x0-prediction MSE, weighted
    by the batch's ``weight`` when it has one."""

    def loss_fn(model, batch, generator=None):
        device = next(model.parameters()).device
        weight = batch.get("weight")
        return schedule.x0_loss(
            model,
            batch["x0"].to(device),
            batch["cond"].to(device),
            generator=generator,
            weight=None if weight is None else weight.to(device),
        )

    return loss_fn


@dataclass(frozen=True)
class SamplingSettings:
    """DDIM settings chosen at sampling time (not training time), the config's
    ``reface.sampling`` (:meth:`from_config`, which fills the schema's defaults). ``bf16``: the
    networks run under bf16 autocast on a CUDA device (the DDIM arithmetic and slab averaging
    stay fp32; ignored on the CPU); the caller applies it
    (:func:`~defaceaudit.reface.refacing.sample_refaced`)."""

    steps: int
    eta: float
    seed: int
    paste_back: bool
    slab_batch: int
    bf16: bool

    @classmethod
    def from_config(cls, sampling: Mapping) -> SamplingSettings:
        """From ``reface.sampling`` config keys, validated against the config schema, each key
        it lacks taking the schema's default. Raises :class:`~defaceaudit.errors.InputError`
        naming the key."""
        return cls(**section_settings("reface.sampling", sampling))


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
    mask_channels: tuple[bool, bool] = (False, False),
) -> torch.Tensor:
    """Reface one padded volume.

    Args:
        defaced: [1, 1, X, Y, Z] in [-1, 1] on the models' device; sizes as
            :func:`~defaceaudit.reface.volumes.padded_shape` gives them.
        keep: [1, 1, X, Y, Z] bool, the voxels defacing left untouched and the padding (known
            background, -1 in ``defaced``); pasted back when ``settings.paste_back``.
        multiple: stage 2's size multiple (:func:`~defaceaudit.reface.unet.required_multiple`).
            With paste-back, stage 2 runs only on :func:`generation_window`: slabs holding no
            voxel to generate would be overwritten by the paste-back anyway.
        mask_channels: whether stage 1 and stage 2 were trained with the region as an input
            channel (:class:`AttackTraining`); the region is ``~keep``.
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
    todo = (~keep).to(dtype)
    low_cond = downsample(defaced, factor)
    if mask_channels[0]:
        low_cond = torch.cat([low_cond, mask_channel(downsample(todo, factor))], dim=1)
    low = ddim_sample(
        model_predictor(stage1),
        (defaced.shape[0], 1, *low_cond.shape[2:]),
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
    conditions = [coarse[region], defaced[region]]
    if mask_channels[1]:
        conditions.append(mask_channel(todo[region]))
    crop = ddim_sample(
        predict,
        tuple(defaced[region].shape),
        torch.cat(conditions, dim=1),
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
