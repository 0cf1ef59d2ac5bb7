"""A model-agnostic training loop for the refacing networks: AdamW, gradient clipping, EMA, bf16
autocast on GPU, periodic checkpoints and resumption after a preemption.

The loop knows nothing of diffusion: the caller passes ``build_model(config) -> nn.Module`` (the
network factory), ``loss_fn(model, batch, generator) -> scalar tensor`` (the noise process's
loss, which draws its noise and timesteps from ``generator``) and ``batches(rng) -> iterator``
(batches of tensors [B, C, ...] or dicts/tuples of them, drawn with the numpy ``rng``).

Checkpoints and Snakemake
-------------------------
Snakemake deletes the outputs of a failed job before it reruns it, so periodic checkpoints cannot
live in the rule's output. They go to a *resume file* that is no output, by default
``<checkpoint_path>.resume.pt`` beside it (:func:`default_resume_path`). A run starts from the
resume file when there is one, writes the final checkpoint to ``checkpoint_path`` (the rule's
output) when it reaches ``training.steps``, and then deletes the resume file: a finished job
leaves one checkpoint, a killed one leaves the last periodic checkpoint for the rerun.

Resumption is exact (bit-identical weights, EMA and optimiser state to an uninterrupted run with
the same seed, on the same hardware and deterministic kernels) when ``batches`` draws all its
randomness from ``rng``, lazily, one batch per ``next()`` (an endless generator function, as in
:mod:`defaceaudit.reface.cascade`), and ``loss_fn`` draws its randomness from ``generator``
or the global torch RNG: the checkpoint holds the numpy ``Generator`` state, the loss's torch
``Generator`` state and the global torch RNG states.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from defaceaudit.config import section_settings
from defaceaudit.devices import bf16_autocast, device_from_config, precision_name, use_bf16
from defaceaudit.errors import InputError
from defaceaudit.reface.checkpoint import (
    CheckpointError,
    load_checkpoint,
    plain_config,
    save_checkpoint,
)

__all__ = [
    "EMA",
    "PROVENANCE_KEYS",
    "default_resume_path",
    "train",
    "training_settings",
]

_LOG = logging.getLogger(__name__)

#: config keys recorded in checkpoints but not compared on resume (provenance, not settings)
PROVENANCE_KEYS = ("defaceaudit_version",)


class EMA:
    """Exponential moving average of a network's parameters (for sampling).

    After each optimiser step, ``update(model)`` sets every shadow parameter
    ``s <- d * s + (1 - d) * p`` with ``d = decay``, or with warm-up
    ``d = min(decay, (1 + n) / (10 + n))``, ``n`` the number of earlier updates, so the average
    is not dominated by the random initial weights early in training. Buffers (e.g. norm
    statistics) are copied, not averaged.

    ``shadow`` (also ``module``) is a deep copy of the model in eval mode without gradients, on
    the model's device: call it directly to sample with the averaged weights.
    """

    def __init__(self, model: nn.Module, *, decay: float, warmup: bool):
        # the config schema bounds reface.stage<N>.training.ema_decay alike
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged network (eval mode, no gradients)."""
        return self.shadow

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow parameters towards ``model``'s (same architecture) by one step."""
        weight = 1.0 - self.current_decay()
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            # lerp: s + w (p - s) = (1 - w) s + w p
            s.lerp_(p.detach().to(s.dtype), weight)
        for s, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s.copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters and buffers with the averaged ones."""
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            p.copy_(s)
        for s, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            b.copy_(s)

    def state_dict(self) -> dict:
        """``{"decay", "warmup", "num_updates", "shadow"}``; ``shadow`` is a model state dict."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": self.shadow.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the averaged weights and the update count (decay and warm-up stay as
        constructed, i.e. from the current config)."""
        self.shadow.load_state_dict(state["shadow"])
        self.num_updates = int(state["num_updates"])


def default_resume_path(checkpoint_path: str | os.PathLike) -> Path:
    """``<checkpoint_path>.resume.pt``: where periodic checkpoints go (not a Snakemake output)."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.name + ".resume.pt")


def training_settings(config: Mapping[str, Any]) -> dict:
    """``config["training"]`` validated against the config schema's
    ``reface.stage<N>.training`` (``N`` = ``config["stage"]``, 1 when absent: both stages share
    the section), each key it lacks filled with the schema's default. Raises
    :class:`InputError` naming the key, as for a config file."""
    training = config.get("training")
    if not isinstance(training, Mapping):
        raise InputError("config has no 'training' section")
    stage = config.get("stage", 1)
    return section_settings(f"reface.stage{stage}.training", training)


def _to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, lists and tuples) moved to ``device``; other values as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _loss_seed(seed: int) -> int:
    """A seed for the loss's torch generator, independent of the streams seeded by ``seed``."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _config_differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _config_differences(a, b, name + ".")
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


class _Progress:
    """Loss and speed over the steps since the last log line; losses stay on the device until
    read (one host sync per log line, not per step)."""

    def __init__(self, step: int):
        self.restart(step)
        self.last_mean = math.nan

    def restart(self, step: int) -> None:
        self.total: torch.Tensor | float = 0.0
        self.count = 0
        self.step0 = step
        self.time0 = time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.total = self.total + loss.detach().float()
        self.count += 1

    def check_finite(self, step: int) -> None:
        if self.count and not bool(torch.isfinite(torch.as_tensor(self.total))):
            raise FloatingPointError(f"training loss is not finite by step {step}")

    def flush(self, step: int, steps: int, log: logging.Logger) -> None:
        if not self.count:
            return
        self.check_finite(step)
        self.last_mean = float(self.total) / self.count
        elapsed = time.perf_counter() - self.time0
        rate = (step - self.step0) / elapsed if elapsed > 0 else math.inf
        left = (steps - step) / rate if rate > 0 else math.inf
        log.info(
            "step %d/%d loss %.5g %.2f steps/s %s left",
            step,
            steps,
            self.last_mean,
            rate,
            _duration(left),
        )
        self.restart(step)


def _next_batch(iterator: Iterator, batches: Callable, rng: np.random.Generator):
    """The next batch; a finite iterator is started again (next epoch)."""
    try:
        return next(iterator), iterator
    except StopIteration:
        iterator = iter(batches(rng))
        try:
            return next(iterator), iterator
        except StopIteration:
            raise ValueError("batches(rng) yielded no batch") from None


def train(
    *,
    build_model: Callable[[dict], nn.Module],
    loss_fn: Callable[[nn.Module, Any, torch.Generator], torch.Tensor],
    batches: Callable[[np.random.Generator], Iterable],
    config: Mapping[str, Any],
    checkpoint_path: str | os.PathLike,
    resume_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    log: logging.Logger = _LOG,
    snapshot_steps: Iterable[int] = (),
) -> dict:
    """Train ``build_model(config)`` to ``config["training"]["steps"]`` optimiser steps.

    Parameters
    ----------
    build_model
        Network factory; called with the resolved config (plain dict, ``training`` defaults
        filled in from the config schema), which is also what checkpoints store.
    loss_fn
        ``loss_fn(model, batch, generator)``: scalar loss tensor; ``generator`` is a
        ``torch.Generator`` on ``device`` for its noise and timesteps.
    batches
        ``batches(rng)``: iterator of batches (tensors [B, C, ...], or dicts/lists/tuples of
        them; moved to ``device`` here) drawn with the numpy ``rng``. Started again when it ends.
    config
        Resolved config; ``config["training"]`` holds the keys of the config schema's
        ``reface.stage<N>.training`` (:func:`training_settings`; absent ones take the schema's
        defaults): ``steps``, ``lr``, ``weight_decay`` (AdamW), ``grad_clip`` (max global
        gradient L2 norm; 0 or None: off), ``ema_decay`` and ``ema_warmup`` (see :class:`EMA`),
        ``checkpoint_every`` and ``log_every`` (steps), ``seed``, ``bf16``, and ``batch_size``
        (the caller's batches use it).
    checkpoint_path
        Final checkpoint (the rule's output), written when training ends.
    resume_path
        Periodic checkpoints; default :func:`default_resume_path`. When it exists the run
        resumes from it (weights, EMA, optimiser, step, RNG states) and logs ``"resuming from
        <path> at step N"``; it is deleted once the final checkpoint is written (unless it is
        ``checkpoint_path`` itself). A resume file written with a different config outside
        ``training`` and :data:`PROVENANCE_KEYS` (another model) is moved aside to
        ``<resume_path>.stale`` with a warning and training starts afresh; changed ``training``
        settings and provenance are logged as a warning and the new ones apply (``lr`` and
        ``weight_decay`` are set on the restored optimiser, ``ema_decay`` and ``ema_warmup`` on
        the EMA), except ``seed``: the resumed run continues the saved RNG states.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``.
    log
        Progress goes here: every ``log_every`` steps the step, mean loss since the previous
        line, steps per second and estimated time left.
    snapshot_steps
        Steps after which a copy of the EMA weights is kept (on the CPU) for a learning curve:
        they go into every later checkpoint as ``extra["ema_snapshots"]`` ``{"<step>": state
        dict}`` (resume files too, so a resumed run keeps the earlier ones).

    Precision: with ``bf16`` true on a GPU with bf16 tensor cores
    (:func:`defaceaudit.devices.bf16_supported`), the forward pass and loss run under
    ``torch.autocast(dtype=torch.bfloat16)`` (weights, gradients, optimiser and EMA stay fp32);
    elsewhere ``bf16`` is ignored and training is fp32.

    Seeding: ``seed`` seeds the global torch RNG (weight init, dropout), the numpy ``Generator``
    passed to ``batches`` and, through a derived seed, the loss's ``generator``.

    Returns
    -------
    dict
        ``steps`` (reached), ``start_step`` (0 or the resumed step), ``final_loss`` (mean loss
        over the last log interval; NaN if no step ran), ``seconds`` (wall time of this call),
        ``checkpoint`` (path).

    Raises :class:`FloatingPointError` when the loss becomes NaN or infinite (checked at each
    log line and before each checkpoint, so no non-finite state is saved).
    """
    device = device if isinstance(device, torch.device) else device_from_config(device)
    settings = training_settings(config)
    resolved = plain_config(config)
    resolved["training"] = plain_config(settings)
    checkpoint_path = Path(checkpoint_path)
    resume_path = default_resume_path(checkpoint_path) if resume_path is None else Path(resume_path)
    steps = settings["steps"]
    seed = settings["seed"]
    started = time.perf_counter()

    torch.manual_seed(seed)
    data_rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(_loss_seed(seed))
    model = build_model(resolved).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    ema = EMA(model, decay=settings["ema_decay"], warmup=settings["ema_warmup"])
    step = 0
    last_loss = math.nan
    snapshots: dict[str, dict] = {}
    wanted = {int(s) for s in snapshot_steps}
    if resume_path.exists():
        resumed = _resume(
            resume_path, resolved, steps, model, ema, optimizer, data_rng, generator, log
        )
        if resumed is not None:
            step, last_loss, snapshots = resumed
    start_step = step

    bf16 = use_bf16(settings["bf16"], device, log)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "training %d parameters on %s (%s), steps %d..%d, checkpoint every %d steps to %s",
        n_params,
        device,
        precision_name(bf16),
        step,
        steps,
        settings["checkpoint_every"],
        resume_path,
    )

    def extra() -> dict:
        return {
            "data_rng": data_rng.bit_generator.state,
            "loss_rng": generator.get_state(),
            "loss_rng_device": device.type,
            "last_loss": progress.last_mean,
            "ema_snapshots": snapshots,
        }

    def save(path: Path) -> None:
        save_checkpoint(
            path,
            model=model,
            ema=ema,
            optimizer=optimizer,
            step=step,
            config=resolved,
            extra=extra(),
        )

    progress = _Progress(step)
    progress.last_mean = last_loss
    iterator = iter(batches(data_rng))
    model.train()
    while step < steps:
        batch, iterator = _next_batch(iterator, batches, data_rng)
        batch = _to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with bf16_autocast(bf16):
            loss = loss_fn(model, batch, generator)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        loss.backward()
        if settings["grad_clip"]:
            nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
        optimizer.step()
        ema.update(model)
        step += 1
        if step in wanted:
            snapshots[str(step)] = {
                k: v.detach().to("cpu", copy=True) for k, v in ema.shadow.state_dict().items()
            }
        progress.add(loss)
        if step % settings["log_every"] == 0 or step == steps:
            progress.flush(step, steps, log)
        if step % settings["checkpoint_every"] == 0 and step < steps:
            progress.check_finite(step)
            save(resume_path)
            log.info("checkpoint at step %d: %s", step, resume_path)

    progress.check_finite(step)
    save(checkpoint_path)
    if resume_path.resolve() != checkpoint_path.resolve():
        resume_path.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info("finished at step %d in %s; checkpoint %s", step, _duration(seconds), checkpoint_path)
    return {
        "steps": step,
        "start_step": start_step,
        "final_loss": progress.last_mean,
        "seconds": seconds,
        "checkpoint": str(checkpoint_path),
    }


def _resume(
    path: Path,
    resolved: dict,
    steps: int,
    model: nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    data_rng: np.random.Generator,
    generator: torch.Generator,
    log: logging.Logger,
) -> tuple[int, float, dict] | None:
    """Restore the state saved in ``path``; returns (step, last logged loss, EMA snapshots so
    far). A resume file of
    another model (another network, schedule or training set: the job reruns because that
    changed) is useless to this training: it is moved aside to ``<path>.stale``, with a
    warning, and None returned (train afresh)."""
    checkpoint = load_checkpoint(path)
    old = checkpoint["config"]
    uncompared = ("training", *PROVENANCE_KEYS)
    science = _config_differences(
        {k: v for k, v in old.items() if k not in uncompared},
        {k: v for k, v in resolved.items() if k not in uncompared},
    )
    if science:
        stale = path.with_name(path.name + ".stale")
        os.replace(path, stale)
        log.warning(
            "resume file %s was written for another model (%s): moved to %s; training afresh",
            path,
            "; ".join(science),
            stale,
        )
        return None
    changed = _config_differences(old.get("training", {}), resolved["training"], "training.")
    changed += _config_differences(
        {k: old[k] for k in PROVENANCE_KEYS if k in old},
        {k: resolved[k] for k in PROVENANCE_KEYS if k in resolved},
    )
    if changed:
        log.warning("settings changed since %s: %s", path, "; ".join(changed))
    step = int(checkpoint["step"])
    if step > steps:
        raise CheckpointError(
            f"resume file {path} is at step {step}, past training.steps = {steps}; "
            "delete it to train afresh"
        )
    try:
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"resume file {path} does not fit the network: {err}") from err
    # load_state_dict restored the saved hyperparameters: the current settings apply
    for group in optimizer.param_groups:
        group["lr"] = resolved["training"]["lr"]
        group["weight_decay"] = resolved["training"]["weight_decay"]

    rng = checkpoint["rng"]
    torch.set_rng_state(rng["torch_cpu"])
    if rng["torch_cuda"] is not None and torch.cuda.is_available():
        if len(rng["torch_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["torch_cuda"])
        else:
            log.warning("CUDA RNG states of %s not restored: device count differs", path)
    extra = checkpoint["extra"]
    data_rng.bit_generator.state = extra["data_rng"]
    if extra.get("loss_rng_device") == generator.device.type:
        generator.set_state(extra["loss_rng"])
    else:
        log.warning(
            "loss generator state of %s is from %s, not %s: not restored, the resumed run "
            "will not be bit-identical",
            path,
            extra.get("loss_rng_device"),
            generator.device.type,
        )
    log.info("resuming from %s at step %d", path, step)
    return step, float(extra.get("last_loss", math.nan)), dict(extra.get("ema_snapshots", {}))
