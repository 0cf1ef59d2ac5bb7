"""Self-describing training checkpoints, written atomically: sampling rebuilds the network
from the checkpoint's own settings, not from the current config.

A checkpoint is one ``torch.save`` file holding a plain dict:

``format``
    :data:`CHECKPOINT_FORMAT`, bumped when the layout changes.
``model``, ``ema``, ``optimizer``
    ``state_dict()`` of the network, of its :class:`~defaceaudit.reface.train.EMA` and of the
    optimiser.
``step``
    optimiser steps taken (int).
``config``
    the resolved config (plain dict: ``network``, ``schedule``, ``training``, ...); the network is
    rebuilt from it by the caller's ``build_model(config)``, never from the current config.
``rng``
    ``{"torch_cpu": ByteTensor, "torch_cuda": [ByteTensor, ...] or None}``: global torch states.
``extra``
    caller's plain dict; the training loop stores the data-sampling numpy ``Generator`` state and
    the loss's torch ``Generator`` state there.
``defaceaudit_version``, ``torch_version``
    versions that wrote the file.

Files are loaded with ``weights_only=True``: only tensors and plain containers are stored, so a
checkpoint cannot run code when it is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

import defaceaudit
from defaceaudit.errors import DefaceAuditError

__all__ = [
    "CHECKPOINT_FORMAT",
    "REQUIRED_KEYS",
    "CheckpointError",
    "load_checkpoint",
    "model_from_checkpoint",
    "plain_config",
    "save_checkpoint",
]

#: layout version of the checkpoint dict
CHECKPOINT_FORMAT = 1

#: keys every checkpoint holds
REQUIRED_KEYS = (
    "format",
    "model",
    "ema",
    "optimizer",
    "step",
    "config",
    "rng",
    "extra",
    "defaceaudit_version",
    "torch_version",
)


class CheckpointError(DefaceAuditError):
    """A checkpoint file is missing, unreadable, incomplete or from another config."""


def plain_config(config: Mapping[str, Any]) -> dict:
    """A deep copy of ``config`` as JSON-plain data (dicts, lists, str, numbers, bool, None).

    Tuples become lists, so two configs compare equal after this whatever container the YAML
    loader or the caller used. Raises :class:`TypeError` naming the offending value otherwise
    (paths, arrays, ... do not belong in a checkpoint's config).
    """
    try:
        return json.loads(json.dumps(dict(config)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"config must be plain JSON-like data: {err}") from err


def _rng_states() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch_cpu": torch.get_rng_state(), "torch_cuda": cuda}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    ema: Any,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint to ``path`` atomically and return the path.

    The dict is written to a temporary file in the same folder, flushed and fsync'ed, then moved
    over ``path`` with :func:`os.replace` (atomic on one file system): a job killed at any moment
    leaves either the previous file or the new one, never a half-written one. ``ema`` is any
    object with ``state_dict()`` (normally :class:`~defaceaudit.reface.train.EMA`); ``extra``
    is stored as is and must hold only tensors and plain data (it is read back with
    ``weights_only=True``). The global torch RNG states (CPU, and CUDA when available) are saved
    as they are at the call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "config": plain_config(config),
        "rng": _rng_states(),
        "extra": dict(extra or {}),
        "defaceaudit_version": defaceaudit.__version__,
        "torch_version": str(torch.__version__),  # TorchVersion is no weights_only-safe type
    }
    prefix = f".{path.name}."
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename is durable only once the folder entry is; best effort (not every OS allows it).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    # Temporaries of earlier writes to this path that a SIGKILL left behind (large files).
    # mkstemp's random part has no dot: this skips the temporaries of "<name>.<more>" files.
    for stale in path.parent.glob(f"{prefix}*.tmp"):
        if "." not in stale.name[len(prefix) : -len(".tmp")]:
            stale.unlink(missing_ok=True)
    return path


def _reason(err: Exception) -> str:
    """One line on why ``torch.load`` failed (its weights-only message runs to many lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    unpickler = [line for line in lines if line.startswith("WeightsUnpickler error")]
    return f"{type(err).__name__}: {(unpickler or lines or [''])[0]}"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Tensors are mapped to ``map_location`` (default CPU; ``load_state_dict`` then copies them to
    the module's device). Raises :class:`CheckpointError` naming the file when it does not exist,
    cannot be unpickled (truncated, corrupt, not a torch file) or lacks any of
    :data:`REQUIRED_KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupt?): {_reason(err)}"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint dict"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys: {', '.join(missing)}")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {checkpoint['format']}, this version reads "
            f"{CHECKPOINT_FORMAT}"
        )
    return checkpoint


def model_from_checkpoint(
    path: str | os.PathLike,
    build_model: Callable[[dict], torch.nn.Module],
    *,
    ema: bool = True,
    map_location: Any = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """Rebuild a network from a checkpoint's own config, for sampling.

    ``build_model(checkpoint["config"])`` makes the network; it receives the EMA weights
    (``ema=True``, what sampling should use) or the raw training weights, and is returned in
    eval mode on ``map_location`` together with the checkpoint's config.
    """
    checkpoint = load_checkpoint(path, map_location=map_location)
    model = build_model(checkpoint["config"])
    state = checkpoint["ema"]["shadow"] if ema else checkpoint["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit the network built from its config: {err}"
        ) from err
    return model.to(map_location).eval(), checkpoint["config"]
