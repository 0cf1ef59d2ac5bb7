"""The DDIM sampler against an independent implementation: Hugging Face diffusers'
``DDIMScheduler`` with ``prediction_type="sample"`` (x0 prediction), a test-only dependency.

Both samplers walk the same explicit timestep list from the same x_T, with the same z per step
(``variance_noise`` in diffusers) and a network with random weights, so the comparison cannot
pass on an all-zero prediction. diffusers' ``step`` finds the next timestep itself, as
``t - num_train_timesteps // num_inference_steps`` (and ``final_alpha_cumprod`` below 0): the
lists compared here are ones on which that rule gives the next element of the list, either
diffusers' own ``set_timesteps`` grids or :func:`ddim_timesteps` grids with an even gap. Its
schedule is float32 (``linspace`` betas, ``cumprod``), ours float64, hence float32 tolerances;
one test puts our float64 alphas into diffusers to compare the update alone, in float64.
"""

import math

import pytest
import torch
from diffusers import DDIMScheduler
from torch import nn

from defaceaudit.reface.ddim import ddim_sample, ddim_timesteps, model_predictor
from defaceaudit.reface.schedule import DiffusionSchedule
from defaceaudit.reface.unet import unet_from_config

T = 1000
SHAPE = (2, 1, 6, 6, 6)  # [B, C, X, Y, Z]
COND_CHANNELS = 2
#: float32 tolerance for the whole trajectory: the float32 schedule of diffusers differs from
#: ours by up to 4e-7 relative in a_t, but 1 - a_t is a difference (2e-4 relative error in
#: 1 - a_0 = 1e-4), so the step that lands on t = 0 is good to about 1e-5 only and the network
#: amplifies that (measured: <= 1e-5 up to 10 steps, 6e-5 with 50). With our float64 alphas put
#: into diffusers, the float32 trajectories agree bit for bit (measured; the last test compares
#: them so in float64).
ATOL32 = 1e-4


class RandomX0Net(nn.Module):
    """A small x0 predictor with random weights (``forward(x [B, C + C_cond, *S], t [B])``):
    a 3-D convolution, a sinusoidal timestep embedding added per channel, SiLU, a second
    convolution and ``1.5 tanh``, so that some predictions fall outside [-1, 1] and the clamp
    of x0 is exercised. Weights are drawn from ``generator``, none are zero-initialised."""

    def __init__(self, generator: torch.Generator, in_channels: int, width: int = 8):
        super().__init__()
        self.conv_in = nn.Conv3d(in_channels, width, 3, padding=1)
        self.time = nn.Linear(8, width)
        self.conv_out = nn.Conv3d(width, SHAPE[1], 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=generator) * 2 / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.tensor([1.0, 3.0, 10.0, 30.0], dtype=x.dtype)
        angles = t.to(x.dtype)[:, None] / T * freqs
        emb = self.time(torch.cat([angles.sin(), angles.cos()], dim=1))
        h = nn.functional.silu(self.conv_in(x) + emb[:, :, None, None, None])
        return 1.5 * torch.tanh(self.conv_out(h))


def _random_unet(seed: int) -> nn.Module:
    """A tiny MONAI ``DiffusionModelUNet`` with every zero-initialised parameter (the output
    layer, the second convolution of each residual block, ...) redrawn at random: untrained, it
    would otherwise return 0 for every input."""
    torch.manual_seed(seed)  # MONAI's default initialisation uses the global RNG
    model = unet_from_config(
        {
            "spatial_dims": 3,
            "in_channels": SHAPE[1] + COND_CHANNELS,
            "out_channels": SHAPE[1],
            "channels": [8, 16],
            "attention_levels": [False, True],
            "num_res_blocks": 1,
            "num_head_channels": 8,
            "norm_num_groups": 8,
        }
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not torch.any(p):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model.eval()


def _scheduler(clip: bool, **config) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=T,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="sample",
        clip_sample=clip,
        clip_sample_range=1.0,
        thresholding=False,
        set_alpha_to_one=True,  # after the last timestep a_prev = 1: the result is x0
        rescale_betas_zero_snr=False,
        **config,
    )


def _cond(seed: int, dtype=torch.float32) -> torch.Tensor:
    shape = (SHAPE[0], COND_CHANNELS, *SHAPE[2:])
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=dtype).clamp(-1, 1)


def _ours(net, cond, schedule, timesteps, eta, seed, clip):
    """defaceaudit's sample, and the (t, x_t) its predictor was called with: the trajectory."""
    calls = []
    predict = model_predictor(net)

    def recording(x_t, c, t):
        calls.append((t.tolist(), x_t.clone()))
        return predict(x_t, c, t)

    sample = ddim_sample(
        recording,
        SHAPE,
        cond,
        schedule,
        steps=timesteps,
        eta=eta,
        generator=torch.Generator().manual_seed(seed),
        clip=clip,
    )
    return sample, calls


def _diffusers(net, cond, scheduler, timesteps, eta, seed, clip):
    """The same sampling with ``scheduler.step``: x_T and then one z per step (none after the
    last) from the same seed. With ``clip`` the noise estimate is taken from the clamped x0, as
    in defaceaudit (``use_clipped_model_output``). Returns the final ``prev_sample`` (the step
    after the last timestep goes to ``final_alpha_cumprod``) and the x_t of every step."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=gen, dtype=cond.dtype)
    # noise for the last step, which must not use it (sigma = 0 there): an extra draw
    spare = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 999), dtype=x.dtype)
    trajectory = []
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            trajectory.append(x)
            out = net(torch.cat([x, cond], dim=1), torch.full((SHAPE[0],), t, dtype=torch.long))
            last = i == len(timesteps) - 1
            z = torch.randn(SHAPE, generator=gen, dtype=x.dtype) if eta > 0 and not last else spare
            x = scheduler.step(
                out, t, x, eta=eta, use_clipped_model_output=clip, variance_noise=z
            ).prev_sample
    return x, trajectory


def _compare(ours, theirs, timesteps, atol):
    sample, calls = ours
    final, trajectory = theirs
    assert [t for t, _ in calls] == [[t] * SHAPE[0] for t in timesteps]
    assert len(trajectory) == len(calls)
    for i, ((_, x_t), expected) in enumerate(zip(calls, trajectory, strict=True)):
        torch.testing.assert_close(x_t, expected, rtol=0, atol=atol, msg=lambda m, i=i: f"{i}: {m}")
    torch.testing.assert_close(sample, final, rtol=0, atol=atol)


# -- the schedule -------------------------------------------------------------------------------


def test_linear_schedule_matches_diffusers():
    ours, theirs = DiffusionSchedule(), _scheduler(clip=False)
    assert ours.num_timesteps == theirs.config.num_train_timesteps == T
    assert theirs.betas.dtype == torch.float32  # diffusers' schedule is float32
    torch.testing.assert_close(theirs.betas.double(), ours.betas, rtol=2e-7, atol=0)
    torch.testing.assert_close(
        theirs.alphas_cumprod.double(), ours.alphas_cumprod, rtol=1e-6, atol=0
    )
    assert theirs.final_alpha_cumprod.item() == 1.0


# -- sampling on diffusers' own grids -----------------------------------------------------------


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(
    ("spacing", "offset", "num_steps"),
    [
        ("trailing", 0, 1),  # one step from t = 999: x0 of pure noise
        ("leading", 0, 7),  # 852, 710, ..., 142, 0 (gap 1000 // 7)
        ("leading", 1, 10),  # 901, 801, ..., 1
        ("trailing", 0, 4),  # 999, 749, 499, 249
        ("leading", 0, 50),  # 980, 960, ..., 0
    ],
)
def test_ddim_sample_matches_diffusers_on_its_timesteps(spacing, offset, num_steps, eta, clip):
    scheduler = _scheduler(clip, timestep_spacing=spacing, steps_offset=offset)
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.tolist()
    assert len(timesteps) == num_steps
    net = RandomX0Net(torch.Generator().manual_seed(num_steps), SHAPE[1] + COND_CHANNELS)
    cond = _cond(num_steps + 1)
    seed = 100 + num_steps
    ours = _ours(net, cond, DiffusionSchedule(), timesteps, eta, seed, clip)
    assert ours[0].abs().max() > 0.1  # a real prediction, not the trivial zero
    if clip:
        assert ours[0].abs().max() <= 1.0
    theirs = _diffusers(net, cond, scheduler, timesteps, eta, seed, clip)
    _compare(ours, theirs, timesteps, ATOL32)


# -- sampling on defaceaudit's own grid ---------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("num_steps", [4, 10])
def test_default_timesteps_match_diffusers_stepped_by_hand(num_steps, eta):
    """:func:`ddim_timesteps` (999 down to 0) with an even gap, on the tiny MONAI UNet: diffusers
    is given the explicit list, with ``num_inference_steps`` set so that its rule for the next
    timestep (``t - T // num_inference_steps``) lands on the list's next element."""
    timesteps = ddim_timesteps(num_steps, T)
    gap = timesteps[0] - timesteps[1]
    assert {a - b for a, b in zip(timesteps, timesteps[1:], strict=False)} == {gap}
    scheduler = _scheduler(clip=True)
    # e.g. 9 for the gap of 111 of 10 steps (none exists for the gap of 999 of 2 steps)
    inference_steps = next(n for n in range(1, T + 1) if T // n == gap)
    scheduler.set_timesteps(inference_steps)
    model = _random_unet(num_steps)
    cond = _cond(num_steps + 2)
    seed = 200 + num_steps
    ours = _ours(model, cond, DiffusionSchedule(), timesteps, eta, seed, True)
    assert ours[0].abs().max() > 0.1
    theirs = _diffusers(model, cond, scheduler, timesteps, eta, seed, True)
    _compare(ours, theirs, timesteps, ATOL32)


# -- the update alone, in float64 ---------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_update_matches_diffusers_in_float64_with_our_alphas(eta):
    """diffusers given defaceaudit's float64 cumulative alphas and float64 tensors: any
    difference left is the update rule itself, so the tolerance is float64 round-off."""
    schedule = DiffusionSchedule()
    scheduler = _scheduler(clip=True, timestep_spacing="leading")
    scheduler.alphas_cumprod = schedule.alphas_cumprod.clone()
    scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    scheduler.set_timesteps(20)
    timesteps = scheduler.timesteps.tolist()
    net = RandomX0Net(torch.Generator().manual_seed(7), SHAPE[1] + COND_CHANNELS).double()
    cond = _cond(8, torch.float64)
    ours = _ours(net, cond, schedule, timesteps, eta, 9, True)
    assert ours[0].dtype == torch.float64 and ours[0].abs().max() > 0.1
    theirs = _diffusers(net, cond, scheduler, timesteps, eta, 9, True)
    _compare(ours, theirs, timesteps, 1e-10)
