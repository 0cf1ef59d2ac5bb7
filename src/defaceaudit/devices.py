"""Torch devices and precision for the GPU jobs (refacing and radiodensity), in one place.

A config names a device as ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``
or ``"cuda:N"``; :func:`device_from_config` turns it into a :class:`torch.device` or refuses it.
bf16 autocast runs only where it pays (:func:`bf16_supported`); everything else is fp32.
"""

from __future__ import annotations

import contextlib
import logging
import re

import torch

from defaceaudit.errors import InputError

__all__ = [
    "bf16_autocast",
    "bf16_supported",
    "device_from_config",
    "precision_name",
    "use_bf16",
]

log = logging.getLogger(__name__)

_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_from_config(name: str) -> torch.device:
    """The torch device for a config value: ``"auto"`` (CUDA when available, else CPU),
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Raises :class:`InputError` for anything else and for a
    CUDA device this machine does not have."""
    if not isinstance(name, str) or not _DEVICE_RE.fullmatch(name):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available on this machine")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(
            f"device {name!r} requested but this machine has {torch.cuda.device_count()} "
            "CUDA device(s)"
        )
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is worth running on ``device``: a CUDA GPU of compute capability
    8.0 or later (Ampere, Hopper), whose tensor cores do bf16. Older GPUs (a V100: 7.0) only
    emulate it, slower than fp32; the CPU path stays fp32 here."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def use_bf16(requested: bool, device: torch.device, logger: logging.Logger | None = None) -> bool:
    """Whether a job that asked for bf16 (``requested``, the config's ``bf16``) runs under bf16
    autocast on ``device``: only where :func:`bf16_supported`. On a GPU without bf16 tensor
    cores the refusal is logged (INFO, to ``logger``, else this module's); on the CPU, where the
    config documents ``bf16`` as ignored, it is not."""
    if requested and not bf16_supported(device):
        if device.type == "cuda":
            (logger or log).info(
                "bf16 requested but %s has no bf16 tensor cores: running in fp32", device
            )
        return False
    return bool(requested)


def bf16_autocast(enabled: bool) -> contextlib.AbstractContextManager:
    """A fresh context for one forward pass: CUDA bf16 autocast when ``enabled`` (weights,
    optimiser state and anything outside the context stay fp32), else a context that does
    nothing."""
    if enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_name(bf16: bool) -> str:
    """How the logs and benchmark rows name the precision: ``"bf16 autocast"`` or ``"fp32"``."""
    return "bf16 autocast" if bf16 else "fp32"
