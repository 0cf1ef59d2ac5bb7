"""The denoising network: MONAI's ``DiffusionModelUNet`` built from a plain config dict.

One code path serves both refacing stages (paper section 2.1): the 3-D stage-1 model on the whole
low-resolution volume and the 2.5-D stage-2 model on slabs of 8 axial slices, which is also a
3-D network (``spatial_dims = 3``) whose input is ``[B, C, X, Y, 8]``. Conditioning is by channel
concatenation, so ``in_channels = 1 + condition channels`` and ``out_channels = 1`` (x0).

The config is a plain dict (saved in checkpoints, so sampling rebuilds the network from the
checkpoint's own settings). Every spatial size must divide by :func:`required_multiple`;
:mod:`defaceaudit.reface.volumes` pads volumes with -1 (background in [-1, 1]) to such sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monai.networks.nets import DiffusionModelUNet

from defaceaudit.reface.sizing import required_multiple as required_multiple

#: keys of a UNet config (:func:`unet_from_config`): the config schema's
#: ``reface.stage<N>.network`` and the stage's ``in_channels`` and ``out_channels``; all but
#: ``spatial_dims`` are required (their defaults are the schema's)
UNET_KEYS = (
    "in_channels",
    "out_channels",
    "channels",
    "attention_levels",
    "spatial_dims",
    "num_res_blocks",
    "num_head_channels",
    "norm_num_groups",
)
_REQUIRED = tuple(key for key in UNET_KEYS if key != "spatial_dims")


def build_unet(
    *,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int],
    attention_levels: Sequence[bool],
    spatial_dims: int = 3,
    num_res_blocks: int | Sequence[int],
    num_head_channels: int | Sequence[int],
    norm_num_groups: int,
) -> DiffusionModelUNet:
    """A ``DiffusionModelUNet`` with ``forward(x [B, in_channels, *S], t [B]) ->
    [B, out_channels, *S]``; ``len(channels)`` resolution levels, self-attention at the levels
    flagged in ``attention_levels``. Every channel count must divide by ``norm_num_groups`` and
    every spatial size ``S`` by :func:`required_multiple` (channels). ``spatial_dims`` is 3 for
    both refacing stages (a stage-2 slab is [B, C, X, Y, 8]); 2 builds the same net in 2-D.
    """
    channels = tuple(int(c) for c in channels)
    attention_levels = tuple(bool(a) for a in attention_levels)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(attention_levels) != len(channels):
        raise ValueError(
            f"{len(attention_levels)} attention levels for {len(channels)} channel levels"
        )
    if any(c % norm_num_groups for c in channels):
        raise ValueError(
            f"channels {channels} must all divide by norm_num_groups {norm_num_groups}"
        )
    if not isinstance(num_res_blocks, int):
        num_res_blocks = tuple(int(n) for n in num_res_blocks)
    if not isinstance(num_head_channels, int):
        num_head_channels = tuple(int(n) for n in num_head_channels)
    return DiffusionModelUNet(
        spatial_dims=int(spatial_dims),
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        num_res_blocks=num_res_blocks,
        channels=channels,
        attention_levels=attention_levels,
        norm_num_groups=int(norm_num_groups),
        num_head_channels=num_head_channels,
        # PyTorch's scaled_dot_product_attention in the attention blocks (the middle block always
        # has one): same parameters, about half the stage-2 sampling time on 2 CPU cores.
        use_flash_attention=True,
    )


def unet_from_config(cfg: Mapping) -> DiffusionModelUNet:
    """:func:`build_unet` from a plain dict (e.g. from YAML or a checkpoint) with the keys
    :data:`UNET_KEYS`. Raises ValueError on a missing required key or an unknown key (a typo
    must not silently fall back to a default)."""
    cfg = dict(cfg)
    missing = [k for k in _REQUIRED if k not in cfg]
    unknown = sorted(set(cfg) - set(UNET_KEYS))
    if missing or unknown:
        raise ValueError(f"UNet config: missing keys {missing}, unknown keys {unknown}")
    return build_unet(**cfg)
