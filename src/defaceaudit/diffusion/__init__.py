"""Cascaded diffusion models for refacing defaced MRI (paper section 2.1).

Kept apart (STYLE point 9): the noise process (:mod:`.schedule`: schedule, ``q_sample``, x0 loss),
the DDIM sampler (:mod:`.ddim`, eq. 12 of Song et al. 2021 with x0 prediction), the network
factory (:mod:`.unet`, one code path for the 3-D and the 2.5-D stage), the 2.5-D slab tiling
(:mod:`.slabs`) and the cascade wiring (:mod:`.cascade`).

Tensors are [B, C, X, Y, Z] (Z axial), intensities in [-1, 1], timesteps [B] long.
"""

from defaceaudit.diffusion.ddim import (
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    model_predictor,
    paste_known_hook,
)
from defaceaudit.diffusion.schedule import DiffusionSchedule
from defaceaudit.diffusion.slabs import (
    extract_slabs,
    merge_slabs,
    slab_predictor,
    slab_starts,
)
from defaceaudit.diffusion.unet import (
    build_unet,
    required_multiple,
    unet_from_config,
)

__all__ = [
    "DiffusionSchedule",
    "build_unet",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "extract_slabs",
    "merge_slabs",
    "model_predictor",
    "paste_known_hook",
    "required_multiple",
    "slab_predictor",
    "slab_starts",
    "unet_from_config",
]
