"""Training and sampling jobs of the refacing cascade, on files (the rules call these).

One model pair (stage 1 + stage 2) is trained on every train subject x face-removing defacer
(defaced input, original target), as the paper's 720 pairs; a second pair is trained on
skull-stripped inputs (paper Figure 5). Checkpoints are self-describing: sampling rebuilds each
network from the checkpoint's own config.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from defaceaudit import __version__
from defaceaudit.devices import bf16_autocast, device_from_config, precision_name, use_bf16
from defaceaudit.errors import ImageError
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import load_t1w, require_grid, save_nifti, to_ras, voxel_sizes_mm
from defaceaudit.reface.cascade import (
    AttackTraining,
    PairSet,
    SamplingSettings,
    diffusion_loss,
    sample_cascade,
    stage1_batches,
    stage2_batches,
)
from defaceaudit.reface.checkpoint import CheckpointError, model_from_checkpoint
from defaceaudit.reface.region import (
    attack_region,
    envelope_needed,
    removed_tissue_distances,
)
from defaceaudit.reface.schedule import DiffusionSchedule
from defaceaudit.reface.sizing import (
    check_stage2_sizes,
    factor_of,
    stage_multiple,
    training_grid,
)
from defaceaudit.reface.train import train
from defaceaudit.reface.unet import unet_from_config
from defaceaudit.reface.volumes import (
    crop_volume,
    downsample,
    from_unit,
    intensity_scale,
    pad_volume,
    padded_shape,
    to_unit,
)
from defaceaudit.tables import write_json

log = logging.getLogger(__name__)


def scale_of(data: np.ndarray, path: str | os.PathLike) -> float:
    """:func:`~defaceaudit.reface.volumes.intensity_scale` of the defaced image ``data`` read
    from ``path``; raises :class:`ImageError` naming the file when it has no positive voxel."""
    try:
        return intensity_scale(data)
    except ValueError as err:
        raise ImageError(f"{path}: no positive voxel, cannot scale its intensities") from err


def pairs_sha256(
    originals: Sequence[str | os.PathLike], defaced: Sequence[str | os.PathLike]
) -> str:
    """Identity of a training set (hex sha256): over the sha256 of each file's bytes, pair by
    pair in the given order (the order decides which pair each sampled index draws). File
    names, sizes and times do not enter: the same data under another path or with a newer
    time stamp is the same training set."""
    digests: dict[str, str] = {}

    def digest(path: str | os.PathLike) -> str:
        key = os.fspath(path)
        if key not in digests:  # an original is listed once per defacer
            with open(path, "rb") as handle:
                digests[key] = hashlib.file_digest(handle, "sha256").hexdigest()
        return digests[key]

    total = hashlib.sha256()
    for original, other in zip(originals, defaced, strict=True):
        total.update(f"{digest(original)} {digest(other)}\n".encode())
    return total.hexdigest()


def known_voxels(generated: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The voxels sampling keeps, [*shape] bool on the padded grid: not ``generated``
    ([X, Y, Z] bool, the region to generate), and every padded voxel (known background, -1 in
    the padded image, as in training)."""
    pads = [(0, int(t) - int(n)) for n, t in zip(generated.shape, shape, strict=True)]
    return np.pad(~np.asarray(generated, dtype=bool), pads, constant_values=True)


def _storage(count: int, shape: Sequence[int], dtype) -> torch.Tensor:
    """An uninitialised [count, 1, *shape] tensor (numpy-allocated: tracemalloc sees it)."""
    return torch.from_numpy(np.empty((count, 1, *shape), dtype=dtype))


#: training pairs whose removed tissue :func:`training_envelope` measures (evenly spaced)
ENVELOPE_PAIRS = 16


def training_envelope(
    originals: Sequence[str | os.PathLike], defaced: Sequence[str | os.PathLike]
) -> float:
    """The attack region's envelope (mm) learnt from the training pairs, which the attacker
    holds both images of: :func:`~defaceaudit.reface.region.envelope_needed` over up to
    :data:`ENVELOPE_PAIRS` pairs, evenly spaced in the given order (deterministic)."""
    count = min(len(defaced), ENVELOPE_PAIRS)
    chosen = sorted({int(i) for i in np.linspace(0, len(defaced) - 1, count)})
    distances = []
    for i in chosen:
        original = to_ras(load_t1w(originals[i]))
        other = to_ras(load_t1w(defaced[i]))
        spacing = voxel_sizes_mm(other.affine)
        data = np.asarray(original.dataobj, dtype=np.float32)
        try:
            head = head_mask(data, spacing)
        except ValueError as err:
            raise ImageError(f"{originals[i]}: no head found ({err})") from err
        distances.append(
            removed_tissue_distances(head, np.asarray(other.dataobj, np.float32), spacing)
        )
    envelope = envelope_needed(distances)
    log.info("attack region: zero voxels within %g mm of the remaining head", envelope)
    return envelope


def load_pairs(
    originals: Sequence[str | os.PathLike],
    defaced: Sequence[str | os.PathLike],
    config: dict,
    stage: int | None = None,
    envelope_mm: float = float("inf"),
) -> PairSet:
    """Training pairs (defaced input, original target) in [-1, 1] on one padded grid.

    ``originals[i]`` and ``defaced[i]`` are one pair (same subject and grid); an original listed
    for several pairs (one per defacer) is read and stored once (same path). Each pair is scaled
    by its defaced image's :func:`intensity_scale`; all are padded with -1 to the largest
    :func:`padded_shape` among them. ``stage`` 1 keeps the downsampled volumes only, stage 2
    the full-resolution inputs and originals and the downsampled targets, None all of them
    (:class:`~defaceaudit.reface.cascade.PairSet`); each pair's attack region
    (:func:`~defaceaudit.reface.region.attack_region` with ``envelope_mm``) at full
    resolution for stage 2 and as coarse fractions for both. Volumes are downsampled while loading,
    one original and its defaced images at a time: peak host memory as
    :func:`defaceaudit.reface.sizing.training_memory_mb` estimates it.
    """
    if len(originals) != len(defaced) or not originals:
        raise ValueError(f"need matching, non-empty pairs, got {len(originals)}/{len(defaced)}")
    factor = factor_of(config)
    shape = training_grid(defaced, config)
    low = tuple(n // factor for n in shape)
    members: dict[str, list[int]] = {}
    for i, path in enumerate(originals):
        members.setdefault(os.fspath(path), []).append(i)
    index = torch.empty(len(defaced), dtype=torch.int64)
    gain = torch.empty(len(defaced), dtype=torch.float32)
    low_targets = _storage(len(defaced), low, np.float32)
    low_inputs = _storage(len(defaced), low, np.float32) if stage != 2 else None
    inputs = _storage(len(defaced), shape, np.float16) if stage != 1 else None
    stored = _storage(len(members), shape, np.float16) if stage != 1 else None
    regions = _storage(len(defaced), shape, np.bool_) if stage != 1 else None
    low_regions = _storage(len(defaced), low, np.float32)

    def downsampled(unit: np.ndarray) -> torch.Tensor:
        return downsample(torch.from_numpy(unit)[None, None], factor)[0]

    for j, (original_path, group) in enumerate(members.items()):
        original = to_ras(load_t1w(original_path))
        data = np.asarray(original.dataobj, dtype=np.float32)
        scales = {}
        for i in group:
            other = to_ras(load_t1w(defaced[i]))
            require_grid(
                defaced[i],
                other.shape,
                other.affine,
                original,
                original_path,
                hint="a defacer that moves or resamples the image cannot make a pair",
            )
            d = np.asarray(other.dataobj, dtype=np.float32)
            scales[i] = scale_of(d, defaced[i])
            unit = pad_volume(to_unit(d, scales[i]), shape)
            region = np.zeros(shape, dtype=bool)
            region[: d.shape[0], : d.shape[1], : d.shape[2]] = attack_region(
                d, voxel_sizes_mm(other.affine), envelope_mm
            )
            low_regions[i] = downsample(torch.from_numpy(region)[None, None].float(), factor)[0]
            if regions is not None:
                regions[i, 0] = torch.from_numpy(region)
            del other, d, region
            if low_inputs is not None:
                low_inputs[i] = downsampled(unit)
            if inputs is not None:
                inputs[i, 0] = torch.from_numpy(unit)  # rounded to float16
            del unit
            low_targets[i] = downsampled(pad_volume(to_unit(data, scales[i]), shape))
        top = max(scales.values())
        for i in group:
            index[i], gain[i] = j, top / scales[i]
        if stored is not None:
            stored[j, 0] = torch.from_numpy(pad_volume(to_unit(data, top), shape))
        if top > 2 * min(scales.values()):
            log.warning(
                "%s: its defaced images' intensity scales differ by more than a factor 2 "
                "(%g to %g): its float16 targets are off by up to %.1e",
                original_path,
                min(scales.values()),
                top,
                top / min(scales.values()) * 2.0**-12,
            )
        del original, data
    log.info(
        "%d training pairs of %d originals on a padded grid %s",
        len(defaced),
        len(members),
        shape,
    )
    return PairSet(
        factor=factor,
        low_targets=low_targets,
        original_index=index,
        gain=gain,
        low_inputs=low_inputs,
        inputs=inputs,
        originals=stored,
        regions=regions,
        low_regions=low_regions,
    )


def _schedule(config: dict) -> DiffusionSchedule:
    return DiffusionSchedule(**config["schedule"])


def train_refacing_stage(
    stage: int,
    originals: Sequence[str | os.PathLike],
    defaced: Sequence[str | os.PathLike],
    config: dict,
    checkpoint: str | os.PathLike,
    device: str = "auto",
) -> dict:
    """Train stage ``stage`` (1 or 2) of a refacing model pair and write its checkpoint.

    ``config``: the resolved ``reface`` section (network, training, schedule, downsampling);
    stored in the checkpoint with the number of pairs and their :func:`pairs_sha256`. A
    periodic resume file beside the checkpoint lets a killed job continue where it stopped
    (:func:`defaceaudit.reface.train.train`); one written for other pairs or another config
    is moved aside (``.stale``) and training starts afresh.
    Raises :class:`InputError` when stage 2's sizes do not fit (:func:`check_stage2_sizes`).
    Each distinct original (by path) is read and stored once; peak host memory:
    :func:`defaceaudit.reface.sizing.training_memory_mb`.

    The attack (:class:`~defaceaudit.reface.cascade.AttackTraining`, ``config["attack"]``)
    trains on each pair's attack region, the defaced image's zero voxels within
    ``config["envelope_mm"]`` of its remaining head (None: :func:`training_envelope`, learnt
    from the pairs; both stages learn the same value). ``config["validation"]["snapshots"]``
    EMA snapshots, evenly spaced over training, go into the checkpoint for the learning curve
    (:mod:`defaceaudit.reface.validation`).
    """
    key = f"stage{stage}"
    check_stage2_sizes(config)
    envelope = config["envelope_mm"]
    envelope = training_envelope(originals, defaced) if envelope is None else float(envelope)
    pairs = load_pairs(originals, defaced, config, stage, envelope_mm=envelope)
    factor = factor_of(config)
    attack = AttackTraining.from_config(config)
    batch_size = int(config[key]["training"]["batch_size"])
    if stage == 1:
        batches = stage1_batches(pairs, batch_size, attack)
    else:
        batches = stage2_batches(pairs, batch_size, int(config.get("slab_patch", 0)), attack)
    # x_t + conditions (stage 1: the defaced image; stage 2: the coarse sample and the defaced
    # image) + the region
    in_channels = (2 if stage == 1 else 3) + int(attack.mask_channel)
    steps = int(config[key]["training"]["steps"])
    count = int(config["validation"]["snapshots"])
    snapshot_steps = sorted({max(1, round(steps * k / count)) for k in range(1, count + 1)})
    stage_config = {
        "stage": stage,
        "network": {**config[key]["network"], "in_channels": in_channels, "out_channels": 1},
        "training": config[key]["training"],
        "schedule": config["schedule"],
        "downsample_factor": factor,
        "slab_patch": int(config.get("slab_patch", 0)),
        "defaceaudit_version": __version__,
        "pairs": len(pairs),
        "pairs_sha256": pairs_sha256(originals, defaced),
        "attack": asdict(attack),
        "envelope_mm": envelope,
    }
    return train(
        build_model=lambda cfg: unet_from_config(cfg["network"]),
        loss_fn=diffusion_loss(_schedule(stage_config)),
        batches=batches,
        config=stage_config,
        checkpoint_path=checkpoint,
        device=device_from_config(device),
        log=log,
        snapshot_steps=snapshot_steps if count else (),
    )


def train_stage1(**kwargs) -> dict:
    """Rule ``train_stage1``: :func:`train_refacing_stage` with ``stage=1`` (the 3-D
    low-resolution model), the same keyword arguments otherwise."""
    return train_refacing_stage(stage=1, **kwargs)


def train_stage2(**kwargs) -> dict:
    """Rule ``train_stage2``: :func:`train_refacing_stage` with ``stage=2`` (the 2.5-D
    super-resolution model), the same keyword arguments otherwise."""
    return train_refacing_stage(stage=2, **kwargs)


def load_sampler(checkpoint: str | os.PathLike, device: torch.device):
    """(EMA network in eval mode on ``device``, schedule, config) rebuilt from a checkpoint's
    own config. The checkpoint is read into host memory and only the EMA network moves to the
    device (the raw weights and optimiser moments it also holds never take GPU memory)."""
    model, config = model_from_checkpoint(
        checkpoint, lambda cfg: unet_from_config(cfg["network"]), map_location="cpu"
    )
    return model.to(device), _schedule(config), config


def mask_channels_of(config: dict) -> bool:
    """Whether a checkpoint's network takes the attack region as an input channel (checkpoints
    written before the channel existed do not)."""
    return bool(config.get("attack", {}).get("mask_channel", False))


@dataclass
class Sampler:
    """A trained model pair, ready to reface volumes: the two EMA networks on one device, their
    schedules and checkpoint configs (:func:`load_model_pair`)."""

    model1: torch.nn.Module
    model2: torch.nn.Module
    schedule1: DiffusionSchedule
    schedule2: DiffusionSchedule
    config1: dict
    config2: dict
    device: torch.device

    @property
    def factor(self) -> int:
        return factor_of(self.config1)

    @property
    def envelope_mm(self) -> float:
        """The attack region's envelope the pair was trained with (inf for checkpoints from
        before the envelope existed: every zero voxel)."""
        return float(self.config1.get("envelope_mm") or float("inf"))


def load_model_pair(
    stage1: str | os.PathLike, stage2: str | os.PathLike, device: torch.device
) -> Sampler:
    """The model pair of two checkpoints; raises
    :class:`~defaceaudit.reface.checkpoint.CheckpointError` unless they share a
    ``downsample_factor``."""
    model1, schedule1, config1 = load_sampler(stage1, device)
    model2, schedule2, config2 = load_sampler(stage2, device)
    if factor_of(config2) != factor_of(config1):
        raise CheckpointError(
            f"stage-2 checkpoint {stage2} was trained with downsample_factor "
            f"{config2['downsample_factor']}, stage-1 checkpoint {stage1} with "
            f"{config1['downsample_factor']}: not one model pair"
        )
    return Sampler(model1, model2, schedule1, schedule2, config1, config2, device)


def reface_volume(
    data: np.ndarray,
    spacing_mm: Sequence[float],
    sampler: Sampler,
    settings: SamplingSettings,
    scale: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Reface one defaced volume ``data`` ``[X, Y, Z]`` (image units, RAS) with a model pair.

    The voxels generated are the attack region
    (:func:`~defaceaudit.reface.region.attack_region` with the pair's envelope): zero
    voxels of ``data`` near its remaining head; nothing derived from the original is used.
    ``scale``: :func:`scale_of` ``data``. Returns (refaced ``[X, Y, Z]`` float32 in image units,
    the voxels generated bool ``[X, Y, Z]``: the region with paste-back, every voxel without,
    seconds of sampling).
    """
    generated = attack_region(data, spacing_mm, sampler.envelope_mm)
    multiple2 = stage_multiple(sampler.config2)
    shape = padded_shape(data.shape, sampler.factor, stage_multiple(sampler.config1), multiple2)
    device = sampler.device
    unit = torch.from_numpy(pad_volume(to_unit(data, scale), shape))[None, None]
    keep = torch.from_numpy(known_voxels(generated, shape))[None, None]
    bf16 = use_bf16(settings.bf16, device, log)
    start = time.perf_counter()
    with bf16_autocast(bf16):
        out = sample_cascade(
            sampler.model1,
            sampler.model2,
            sampler.schedule1,
            sampler.schedule2,
            unit.to(device),
            keep.to(device),
            sampler.factor,
            settings,
            multiple=multiple2,
            mask_channels=(mask_channels_of(sampler.config1), mask_channels_of(sampler.config2)),
        )
    seconds = time.perf_counter() - start
    refaced = from_unit(crop_volume(out[0, 0].float().cpu().numpy(), data.shape), scale)
    # a generated voxel is never exactly 0: that marks a defacer's fill (which re-identification
    # does not take for skin: defaceaudit.metrics.surface.skin_vertices); generated air is the
    # smallest positive float instead
    refaced = np.maximum(refaced, np.finfo(np.float32).tiny)
    if settings.paste_back:
        refaced = np.where(generated, refaced, data)
    else:  # stage 2 sampled the whole volume: every voxel is generated
        generated = np.ones_like(generated)
    return refaced.astype(np.float32), generated, seconds


def sample_refaced(
    defaced: str | os.PathLike,
    stage1: str | os.PathLike,
    stage2: str | os.PathLike,
    outputs: dict,
    sampling: dict,
    device: str = "auto",
) -> dict:
    """Reface one defaced image with a trained model pair (:func:`reface_volume`).

    Args:
        defaced: the defacer's output (prepared grid). Only this image reaches sampling: the
            attacker never sees the original nor anything derived from it (such as the
            defacer's removed-region mask, which is "removed where the original had tissue").
        stage1, stage2: checkpoints of one model pair (same ``downsample_factor``, else
            :class:`~defaceaudit.reface.checkpoint.CheckpointError`).
        outputs: paths ``t1w`` (refaced image, the defaced image's units), ``removed`` (the
            voxels the cascade generated: the attack region with paste-back, every voxel
            without), ``sidecar`` (JSON).
        sampling: the config's ``reface.sampling`` keys
            (:meth:`~defaceaudit.reface.cascade.SamplingSettings.from_config`).
    Raises :class:`ImageError` naming ``defaced`` when it has no positive voxel.
    """
    torch_device = device_from_config(device)
    img = to_ras(load_t1w(defaced))
    data = np.asarray(img.dataobj, dtype=np.float32)
    scale = scale_of(data, defaced)
    sampler = load_model_pair(stage1, stage2, torch_device)
    settings = SamplingSettings.from_config(sampling)
    bf16 = use_bf16(settings.bf16, torch_device, log)
    log.info(
        "sampling on %s (%s), %d DDIM steps", torch_device, precision_name(bf16), settings.steps
    )
    refaced, generated, seconds = reface_volume(
        data, voxel_sizes_mm(img.affine), sampler, settings, scale
    )
    written = [save_nifti(refaced, outputs["t1w"], img.affine, np.float32)]
    try:
        written.append(save_nifti(generated, outputs["removed"], img.affine, np.uint8))
        record = {
            "tool": "defaceaudit DDIM refacing cascade",
            "source": str(defaced),
            "stage1": str(stage1),
            "stage2": str(stage2),
            "sampling": sampling,
            "envelope_mm": sampler.envelope_mm,
            "voxels_generated": int(generated.sum()),
            "device": str(torch_device),
            "precision": precision_name(bf16),
            "intensity_scale": scale,
            "seconds": round(seconds, 2),
            "defaceaudit_version": __version__,
        }
        write_json(record, outputs["sidecar"])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    log.info("refaced %s in %.1f s on %s", defaced, seconds, torch_device)
    return record
