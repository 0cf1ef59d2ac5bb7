"""The forward (noising) process and the x0-prediction training loss, paper section 2.1.

The noise process is a plain object that takes the network as an argument (as in
openai/improved-diffusion), so the same schedule serves the 3-D stage-1 model and the 2.5-D
stage-2 slab model. Following the paper, the network predicts the clean image x0 (not the noise);
the noise estimate that DDIM needs is derived from x0 with the first part of eq. 12 of Song et
al. (2021), see :meth:`DiffusionSchedule.eps_from_x0`.

Tensors are ``[B, C, *spatial]`` (``[B, C, X, Y, Z]`` for both stages), intensities in [-1, 1];
timesteps ``t`` are ``[B]`` integer (long) tensors in ``[0, T)``. The schedule itself is kept in
float64 on the CPU and converted per call to the tensor's device and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

#: the only beta schedule implemented: linear betas from 1e-4 to 0.02 over T = 1000 steps, the
#: configuration of Ho et al. 2020 (section 4) and of the paper's refacing models
LINEAR = "linear"


class DiffusionSchedule:
    """Linear beta schedule ``beta_t = linspace(beta_start, beta_end, T)`` and its cumulative
    alphas ``a_t = prod_{s <= t} (1 - beta_s)`` (``a`` in eq. 12 of Song et al. 2021).

    Attributes:
        num_timesteps: T, the number of diffusion steps.
        betas: [T] float64 (CPU).
        alphas_cumprod: [T] float64 (CPU), decreasing from ``1 - beta_start`` towards 0.
    """

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.num_timesteps = int(num_timesteps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.betas = torch.linspace(
            self.beta_start, self.beta_end, self.num_timesteps, dtype=torch.float64
        )
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def __repr__(self) -> str:
        return (
            f"DiffusionSchedule(num_timesteps={self.num_timesteps}, "
            f"beta_start={self.beta_start}, beta_end={self.beta_end})"
        )

    # -- checkpoints -------------------------------------------------------------------------

    def as_dict(self) -> dict:
        """The settings that rebuild this schedule (for self-describing checkpoints)."""
        return {
            "schedule": LINEAR,
            "num_timesteps": self.num_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }

    @classmethod
    def from_dict(cls, settings: Mapping) -> DiffusionSchedule:
        """Inverse of :meth:`as_dict`. Raises ValueError on an unknown key or schedule."""
        settings = dict(settings)
        kind = settings.pop("schedule", LINEAR)
        if kind != LINEAR:
            raise ValueError(f"unknown beta schedule {kind!r} (only {LINEAR!r})")
        unknown = set(settings) - {"num_timesteps", "beta_start", "beta_end"}
        if unknown:
            raise ValueError(f"unknown schedule settings: {sorted(unknown)}")
        return cls(**settings)

    # -- the forward process -----------------------------------------------------------------

    def _take(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``a_t`` in float64 on the CPU, [B, 1, ..., 1] (``like.ndim`` dimensions)."""
        t = torch.as_tensor(t).reshape(-1).long().cpu()
        if t.numel() != like.shape[0]:
            raise ValueError(f"{t.numel()} timesteps for a batch of {like.shape[0]}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps}), got {t.tolist()}")
        return self.alphas_cumprod[t].reshape(-1, *([1] * (like.ndim - 1)))

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``a_t`` for a batch of timesteps, shaped to broadcast against ``like``.

        Args:
            t: [B] integer timesteps in ``[0, T)``.
            like: [B, C, *spatial]; gives the device, dtype and number of dimensions.
        Returns:
            [B, 1, ..., 1] (``like.ndim`` dimensions) on ``like``'s device and dtype.
        """
        return self._take(t, like).to(device=like.device, dtype=like.dtype)

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor):
        """``sqrt(a_t)`` and ``sqrt(1 - a_t)``, computed in float64, then cast to ``like``."""
        a = self._take(t, like)
        return (
            a.sqrt().to(device=like.device, dtype=like.dtype),
            (1.0 - a).sqrt().to(device=like.device, dtype=like.dtype),
        )

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse clean images to step t: ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise``.

        Args:
            x0: [B, C, *spatial] clean images in [-1, 1].
            t: [B] integer timesteps in ``[0, T)``.
            noise: [B, C, *spatial] standard Gaussian noise.
        Returns:
            x_t: [B, C, *spatial], same dtype and device as ``x0``.
        """
        sqrt_a, sqrt_one_minus_a = self._coefficients(t, x0)
        return sqrt_a * x0 + sqrt_one_minus_a * noise

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise implied by a (predicted) clean image, first part of eq. 12 (Song et al.
        2021) as the paper's section 2.1 uses it: ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``.

        Args:
            x_t: [B, C, *spatial] noisy images at step t.
            t: [B] integer timesteps.
            x0: [B, C, *spatial] (predicted) clean images in [-1, 1].
        Returns:
            eps: [B, C, *spatial]; exactly the ``noise`` of :meth:`q_sample` for the true x0.
        """
        sqrt_a, sqrt_one_minus_a = self._coefficients(t, x_t)
        return (x_t - sqrt_a * x0) / sqrt_one_minus_a

    # -- training ----------------------------------------------------------------------------

    def x0_loss(
        self,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        cond: torch.Tensor | None,
        generator: torch.Generator | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The x0-prediction loss (paper section 2.1): ``mean (model(x_t | cond, t) - x0)^2``,
        or with ``weight`` the weighted mean ``sum w (.)^2 / sum w``.

        ``t`` is drawn uniformly from ``[0, T)`` per sample, then the noise (both from
        ``generator`` when given, on the generator's device, so a seeded generator reproduces the
        draws); the network sees ``torch.cat([x_t, cond], dim=1)`` (conditioning by channel
        concatenation) and the timesteps, as ``model(x, timesteps)``.

        Args:
            model: network with ``model(x [B, C + C_cond, *spatial], t [B]) -> [B, C, *spatial]``.
            x0: [B, C, *spatial] clean targets in [-1, 1].
            cond: [B, C_cond, *spatial] conditioning images in [-1, 1], or None (unconditional).
            generator: optional seeded ``torch.Generator``.
            weight: optional [B, 1 or C, *spatial] non-negative voxel weights (the region to
                generate weighted up); None = every voxel alike.
        Returns:
            scalar (0-d) float32 tensor, the (weighted) mean squared error over all voxels.
        """
        draw_device = generator.device if generator is not None else x0.device
        t = torch.randint(
            0, self.num_timesteps, (x0.shape[0],), generator=generator, device=draw_device
        ).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=draw_device, dtype=x0.dtype).to(
            x0.device
        )
        x_t = self.q_sample(x0, t, noise)
        inputs = x_t if cond is None else torch.cat([x_t, cond.to(x_t)], dim=1)
        predicted = model(inputs, t)
        if weight is None:
            return F.mse_loss(predicted.float(), x0.float())
        error = (predicted.float() - x0.float()) ** 2
        weight = weight.float().expand_as(error)
        return (weight * error).sum() / weight.sum().clamp_min(1e-12)
