"""DDIM sampling with an x0-predicting network, paper section 2.1 and eq. 12 of Song et al. 2021.

The paper's models predict x0; at every step the noise estimate is derived from it
(``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``, first part of eq. 12) and eq. 12 gives the less
noisy image. The loop is written here over an explicit timestep list rather than taken from
MONAI's ``DDIMScheduler`` (1.6), which reads the wrong cumulative alpha for strided timesteps:
``set_timesteps(N)`` spaces them by rounding ``linspace(T - 1, 0, N)`` ([999, 874, ...] for
N = 9), while ``step`` takes the previous one as ``t - T // N``.

Tensors are ``[B, C, *spatial]``, intensities in [-1, 1]. The number of DDIM steps and eta are
chosen at sampling time, independent of training.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch

from defaceaudit.reface.schedule import DiffusionSchedule

#: ``predict_x0(x_t [B, C, *S], cond [B, C_cond, *S] | None, t [B] long) -> x0 [B, C, *S]``
Predictor = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]
#: ``x0_hook(x0 [B, C, *S], t: int) -> x0 [B, C, *S]``, applied to every x0 prediction
X0Hook = Callable[[torch.Tensor, int], torch.Tensor]


def ddim_timesteps(num_steps: int, num_timesteps: int = 1000) -> list[int]:
    """The DDIM timesteps, descending: ``num_steps`` integers evenly spaced from ``T - 1`` down to
    0 (rounded ``linspace(T - 1, 0, num_steps)``), e.g. ``[999, 888, ..., 111, 0]`` for 10 of 1000.

    Starting at ``T - 1`` begins from the noisiest level the model was trained on (``a_{T-1}``
    ~ 4e-5 for the reference schedule, i.e. pure noise), unlike the ``[0, 100, ..., 900]`` grid of
    the original DDIM code, whose first step would start from a noisy image that is not pure
    noise. Ending at 0 makes the last step go from ``a_0 = 1 - beta_0`` to ``a_prev = 1``, which
    returns the final x0 prediction. With ``num_steps == 1`` the list is ``[T - 1]``.

    Raises ValueError unless ``1 <= num_steps <= num_timesteps``.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"need 1 <= num_steps <= {num_timesteps}, got {num_steps}")
    if num_steps == 1:
        return [num_timesteps - 1]
    # the spacing is >= 1, so rounding keeps the values distinct
    return [int(v) for v in np.rint(np.linspace(num_timesteps - 1, 0, num_steps))]


def ddim_step(
    x_t: torch.Tensor,
    x0_pred: torch.Tensor,
    a_t: float | torch.Tensor,
    a_prev: float | torch.Tensor,
    eta: float,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """One reverse step, eq. 12 of Song et al. (2021) with the x0 parameterisation:

    ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z`` with
    ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)`` and
    ``s = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)`` (eq. 16).

    ``eta = 0`` is the deterministic DDIM, ``eta = 1`` the DDPM posterior variance. With
    ``a_prev = 1`` (the step after t = 0) ``s = 0`` and the result is ``x0_pred``.

    Args:
        x_t: [B, C, *spatial] current noisy images.
        x0_pred: [B, C, *spatial] predicted clean images in [-1, 1].
        a_t: cumulative alpha at t, a float or a tensor broadcasting against ``x_t``.
        a_prev: cumulative alpha at the next (less noisy) timestep; 1 after the last.
        eta: stochasticity, >= 0.
        noise: [B, C, *spatial] standard Gaussian z; may be None when ``s == 0``.
    Returns:
        x_prev: [B, C, *spatial], dtype and device of ``x_t``. The coefficients are computed in
        float64 before the cast.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    a_t = torch.as_tensor(a_t, dtype=torch.float64, device=x_t.device)
    a_prev = torch.as_tensor(a_prev, dtype=torch.float64, device=x_t.device)
    sigma = eta * torch.sqrt((1.0 - a_prev) / (1.0 - a_t)) * torch.sqrt(1.0 - a_t / a_prev)
    # 1 - a_prev - s^2 >= 0 analytically for eta <= 1; clamp the round-off (and eta > 1)
    direction = torch.sqrt(torch.clamp(1.0 - a_prev - sigma**2, min=0.0))
    eps = (x_t - torch.sqrt(a_t).to(x_t.dtype) * x0_pred) / torch.sqrt(1.0 - a_t).to(x_t.dtype)
    x_prev = torch.sqrt(a_prev).to(x_t.dtype) * x0_pred + direction.to(x_t.dtype) * eps
    if bool(torch.any(sigma > 0)):
        if noise is None:
            raise ValueError("eta > 0 needs noise")
        x_prev = x_prev + sigma.to(x_t.dtype) * noise
    return x_prev


def model_predictor(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Predictor:
    """Wrap a network ``model(x, timesteps)`` that predicts x0 from ``cat([x_t, cond], 1)``
    into the ``predict_x0(x_t, cond, t)`` callable of :func:`ddim_sample`. The prediction comes
    back in the inputs' dtype (under bf16 autocast the network's bf16 output is cast back, so
    overlapping slabs are averaged and the DDIM step taken in full precision)."""

    def predict_x0(x_t: torch.Tensor, cond: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        inputs = x_t if cond is None else torch.cat([x_t, cond], dim=1)
        return model(inputs, t).to(inputs.dtype)

    return predict_x0


def paste_known_hook(known: torch.Tensor, keep: torch.Tensor) -> X0Hook:
    """An ``x0_hook`` that writes the known voxels into every x0 prediction (paste-back, so
    only the voxels outside ``keep`` are generated).

    Args:
        known: [B, C, *spatial] known image in [-1, 1].
        keep: [B, C or 1, *spatial] bool, True where ``known`` is kept.
    """

    def hook(x0: torch.Tensor, t: int) -> torch.Tensor:
        return torch.where(keep, known.to(x0), x0)

    return hook


def _timestep_list(steps: int | Sequence[int], num_timesteps: int) -> list[int]:
    if isinstance(steps, numbers.Integral):
        return ddim_timesteps(steps, num_timesteps)
    out = [int(s) for s in steps]
    if not out or any(b >= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"timesteps must be a non-empty strictly descending list, got {out}")
    if out[0] >= num_timesteps or out[-1] < 0:
        raise ValueError(f"timesteps must lie in [0, {num_timesteps}), got {out}")
    return out


@torch.no_grad()
def ddim_sample(
    predict_x0: Predictor,
    shape: Sequence[int],
    cond: torch.Tensor | None,
    schedule: DiffusionSchedule,
    *,
    steps: int | Sequence[int],
    eta: float,
    generator: torch.Generator,
    clip: bool = True,
    x0_hook: X0Hook | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sample by DDIM (eq. 12 of Song et al. 2021) with an x0-predicting model, paper section 2.1.

    Starts from Gaussian noise ``x_T`` of ``shape``; for each timestep t of the list: predict
    ``x0 = predict_x0(x_t, cond, t)``, clamp it to [-1, 1] (``clip``), pass it through
    ``x0_hook(x0, t)`` (the 2.5-D stage averages overlapping slabs there, and paste-back writes
    the known voxels), then step to the next timestep with :func:`ddim_step` (``a_prev = 1``
    after the last, so the result is the last hooked x0).

    Random draws, all from ``generator`` on its own device (so a seed reproduces a sample): the
    initial noise, then when ``eta > 0`` one z per step except the last.

    Args:
        predict_x0: ``(x_t [B, C, *S], cond, t [B] long) -> x0 [B, C, *S]``, e.g.
            :func:`model_predictor` (model).
        shape: ``(B, C, *S)`` of the sample.
        cond: [B, C_cond, *S] conditioning in [-1, 1], passed through untouched; or None.
        schedule: the training schedule (its cumulative alphas).
        steps: number of DDIM steps (:func:`ddim_timesteps`) or an explicit strictly descending
            timestep list.
        eta: 0 for deterministic DDIM, 1 for DDPM-like sampling.
        generator: seeded ``torch.Generator``.
        clip: clamp every x0 prediction to [-1, 1].
        x0_hook: optional ``(x0, t) -> x0`` applied after the clamp at every step.
        device, dtype: of the sample; default ``cond``'s (else CPU, float32).
    Returns:
        [B, C, *S] sample in [-1, 1] (when ``clip``).
    """
    timesteps = _timestep_list(steps, schedule.num_timesteps)
    if device is None:
        device = cond.device if cond is not None else torch.device("cpu")
    if dtype is None:
        dtype = cond.dtype if cond is not None else torch.float32
    shape = tuple(int(n) for n in shape)

    def gaussian() -> torch.Tensor:
        z = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
        return z.to(device)

    x_t = gaussian()
    alphas = schedule.alphas_cumprod
    for i, t in enumerate(timesteps):
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0 = predict_x0(x_t, cond, t_batch).to(dtype)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        if x0_hook is not None:
            x0 = x0_hook(x0, t)
        if i == len(timesteps) - 1:
            break  # eq. 12 with a_prev = 1 after t = 0: the result is x0 itself
        a_t = float(alphas[t])
        a_prev = float(alphas[timesteps[i + 1]])
        noise = gaussian() if eta > 0 else None
        x_t = ddim_step(x_t, x0, a_t, a_prev, eta, noise)
    return x0
