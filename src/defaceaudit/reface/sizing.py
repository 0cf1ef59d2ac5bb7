"""Sizes, without torch: the padded grid that refacing puts images on, the networks' size
multiple, and the host memory of a training job. The workflow sizes the training jobs' memory
with :func:`training_job_mb` in the Snakemake process, which must not import torch (a second
per start); the training code uses the same functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from defaceaudit.errors import InputError
from defaceaudit.imaging.nifti import load_t1w

#: axial slices per slab and slab stride (paper section 2.1: 8 slices, 4 overlapping)
SLAB_SIZE = 8
SLAB_STRIDE = 4


def required_multiple(channels: Sequence[int]) -> int:
    """The factor every spatial size must divide by: ``2 ** (len(channels) - 1)`` (one
    down-sampling by 2 between consecutive levels)."""
    return 2 ** (len(channels) - 1)


def padded_shape(
    shape: Sequence[int], factor: int, multiple_low: int, multiple_high: int
) -> tuple[int, int, int]:
    """The smallest shape >= ``shape`` whose stage-1 grid (divided by ``factor``) divides by
    ``multiple_low`` and whose full-resolution in-plane axes divide by ``multiple_high``; the
    axial axis holds at least one slab."""
    step_low = factor * multiple_low
    steps = (math.lcm(step_low, multiple_high),) * 2 + (step_low,)
    out = [int(math.ceil(n / s) * s) for n, s in zip(shape, steps, strict=True)]
    out[2] = max(out[2], int(math.ceil(SLAB_SIZE / step_low) * step_low))
    return tuple(out)


def ras_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """[X, Y, Z] of ``to_ras(load_t1w(path))`` read from the header (no voxel is read)."""
    try:
        img = nib.load(path)
    except Exception:
        load_t1w(path)  # raises ImageError naming the file and the problem
        raise
    axes = nib.orientations.io_orientation(img.affine)[:, 0]
    return tuple(int(n) for _, n in sorted(zip(axes, img.shape[:3], strict=True)))


def factor_of(reface: dict) -> int:
    """The stage-1 downsampling factor of a ``reface`` config section."""
    return int(reface["downsample_factor"])


def stage_multiple(stage: dict) -> int:
    """The size multiple of one stage's section of a ``reface`` config: from its network's
    channels, or its ``size_multiple`` where a stage's ``training_settings`` carry only that
    of the other stage."""
    if "network" in stage:
        return required_multiple(stage["network"]["channels"])
    return int(stage["size_multiple"])


def grid_multiples(reface: dict) -> tuple[int, int, int]:
    """(downsampling factor, stage-1 size multiple, stage-2 size multiple) of a ``reface``
    config section (the resolved section or a stage's ``training_settings``)."""
    return factor_of(reface), stage_multiple(reface["stage1"]), stage_multiple(reface["stage2"])


def training_grid(images: Sequence[str | os.PathLike], reface: dict) -> tuple[int, int, int]:
    """The padded grid [X, Y, Z] (voxels) that training puts ``images`` on: the largest
    :func:`padded_shape` of their RAS shapes, read from the headers (no voxel is read)."""
    multiples = grid_multiples(reface)
    shapes = [padded_shape(ras_shape(path), *multiples) for path in images]
    return tuple(int(n) for n in np.max(shapes, axis=0))


#: full-resolution float32 volumes that loading holds at a time besides the PairSet (an
#: original, a defaced image, the file buffers and the temporaries of scaling and padding, and
#: those of the attack region: its head mask and distance transform, about 5 volumes, measured
#: 13.1 with tracemalloc); also bounds a training batch (stage 2's whole-slab batch of 4 is 0.4
#: volumes)
LOAD_WORKING_VOLUMES = 14

#: MB for the interpreter, torch and a GPU's runtime libraries (not measured at paper scale:
#: an allowance); networks, optimiser state and activations live on the GPU
PROCESS_MB = 3000


def training_memory_mb(
    stage: int,
    pairs: int,
    originals: int,
    shape: Sequence[int],
    factor: int,
    overhead_mb: float = PROCESS_MB,
) -> float:
    """Peak host memory (MB, 10**6 bytes) of training stage ``stage`` (1 or 2) on ``pairs``
    pairs of ``originals`` distinct originals on the padded grid ``shape`` [X, Y, Z] (as
    :func:`padded_shape` gives it) with the stage-1 ``factor``.

    Counts what :func:`defaceaudit.reface.refacing.load_pairs` keeps for the stage (stage 1:
    the downsampled inputs and targets, float32, 2 N X Y Z / f**3 values; stage 2: the inputs
    and originals, float16, (N + M) X Y Z values, the attack regions, bool, N X Y Z, and the
    downsampled targets, float32; both: the regions downsampled, float32, N X Y Z / f**3; plus
    the index and gain of each pair), :data:`LOAD_WORKING_VOLUMES` full-resolution float32 volumes
    held while loading (afterwards: a batch, smaller), and ``overhead_mb`` for the process
    (:data:`PROCESS_MB`). Files are float32 on disk (prepared and defaced images are).
    """
    voxels = int(np.prod(shape))
    low = voxels // factor**3
    if stage == 1:
        kept = 2 * pairs * low * 4
    elif stage == 2:
        kept = (pairs + originals) * voxels * 2 + pairs * voxels + pairs * low * 4
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    kept += pairs * low * 4  # low_regions
    kept += pairs * (8 + 4)  # original_index (int64), gain (float32)
    return (kept + LOAD_WORKING_VOLUMES * voxels * 4) / 1e6 + overhead_mb


def training_job_mb(
    originals: Sequence[str | os.PathLike],
    defaced: Sequence[str | os.PathLike],
    reface: dict,
    stage: int,
) -> int:
    """:func:`training_memory_mb` of a training job, in whole MB: the padded grid
    (:func:`training_grid`) and the stage-1 factor from ``reface`` (the resolved config section
    or a stage's ``training_settings``), one pair per defaced image, ``originals`` counted once
    each."""
    shape = training_grid(defaced, reface)
    pairs, distinct = len(defaced), len(set(map(str, originals)))
    return math.ceil(training_memory_mb(stage, pairs, distinct, shape, factor_of(reface)))


def check_reface_config(reface: dict) -> None:
    """Raise :class:`InputError`, one line naming the key, for what the validated ``reface``
    section's keys allow one by one but not together (the schema checks single keys):

    - each stage's ``network``: one ``attention_levels`` entry per ``channels`` level, every
      channel count divisible by ``norm_num_groups``, and by ``num_head_channels`` at the
      levels with attention (MONAI's DiffusionModelUNet refuses them otherwise);
    - ``schedule``: ``beta_start`` at most ``beta_end``;
    - stage 2: :func:`check_stage2_sizes`.

    Torch-free: the workflow calls it when it plans a run, before any job starts.
    """
    for stage in ("stage1", "stage2"):
        network = reface[stage]["network"]
        key = f"config reface.{stage}.network"
        channels, attention = list(network["channels"]), list(network["attention_levels"])
        if len(attention) != len(channels):
            raise InputError(
                f"{key}.attention_levels: {len(attention)} entries for the {len(channels)} "
                f"levels of {key}.channels {channels} (one true/false per level)"
            )
        groups = network["norm_num_groups"]
        if any(c % groups for c in channels):
            raise InputError(
                f"{key}.channels: {channels} must all be divisible by {key}.norm_num_groups "
                f"= {groups}"
            )
        heads = network["num_head_channels"]
        if any(c % heads for c, a in zip(channels, attention, strict=True) if a):
            raise InputError(
                f"{key}.num_head_channels: {heads} must divide the channels of every level "
                f"with attention ({channels}, attention {attention})"
            )
    schedule = reface["schedule"]
    if schedule["beta_start"] > schedule["beta_end"]:
        raise InputError(
            f"config reface.schedule.beta_start: {schedule['beta_start']:g} is above "
            f"reface.schedule.beta_end = {schedule['beta_end']:g}"
        )
    check_stage2_sizes(reface)


def check_stage2_sizes(reface: dict) -> None:
    """Raise :class:`InputError` naming the config key unless stage 2's network fits a slab of
    :data:`SLAB_SIZE` axial slices (its :func:`required_multiple` divides the slab size) and
    ``slab_patch`` (voxels; 0 = whole slabs) is a multiple of that multiple."""
    multiple = stage_multiple(reface["stage2"])
    levels = multiple.bit_length()  # required_multiple = 2 ** (levels - 1)
    if SLAB_SIZE % multiple:
        raise InputError(
            f"config reface.stage2.network.channels: {levels} levels need sizes divisible "
            f"by {multiple}, but a stage-2 slab has {SLAB_SIZE} axial slices "
            f"(at most {SLAB_SIZE.bit_length()} levels)"
        )
    patch = int(reface.get("slab_patch", 0))
    if patch > 0 and patch % multiple:
        raise InputError(
            f"config reface.slab_patch: {patch} is not a multiple of {multiple}, the size "
            f"multiple of reface.stage2.network.channels ({levels} levels)"
        )
