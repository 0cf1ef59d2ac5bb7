"""The diffusion process, DDIM sampler (eq. 12 of Song et al. 2021), UNet factory and slab tiling.

Tiny CPU tensors only; networks have their zero-initialised output layer randomised so that
equivalence tests cannot pass on an all-zero prediction.
"""

import math

import pytest
import torch
from helpers import randomise_output_layer, randomise_zero_initialised

from defaceaudit.reface.ddim import (
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    model_predictor,
    paste_known_hook,
)
from defaceaudit.reface.schedule import DiffusionSchedule
from defaceaudit.reface.slabs import (
    extract_slabs,
    merge_slabs,
    slab_predictor,
    slab_starts,
)
from defaceaudit.reface.unet import required_multiple, unet_from_config

TINY = {
    "spatial_dims": 3,
    "in_channels": 2,
    "out_channels": 1,
    "channels": [8, 16],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 8,
}


def _tiny_unet(seed: int = 0, dtype=torch.float64, **overrides):
    torch.manual_seed(seed)  # MONAI's default initialisation uses the global RNG
    model = unet_from_config({**TINY, **overrides})
    randomise_output_layer(model, torch.Generator().manual_seed(seed + 1))
    return model.to(dtype).eval()


def _gaussian(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _eq12(x_t, x0, a_t, a_prev, eta, z):
    """Eq. 12 of Song et al. (2021), written out in float64 with math on Python floats."""
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    out = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
    return out + sigma * z if eta > 0 else out


# -- schedule -----------------------------------------------------------------------------------


def test_schedule_linear_betas_and_round_trip():
    schedule = DiffusionSchedule()
    assert schedule.alphas_cumprod.dtype == torch.float64
    assert schedule.alphas_cumprod.shape == (1000,)
    assert schedule.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    assert torch.all(schedule.alphas_cumprod[1:] < schedule.alphas_cumprod[:-1])
    # linear betas 1e-4 to 0.02 over T = 1000 (Ho et al. 2020, section 4), alpha-bar_T by hand
    betas = [1e-4 + (0.02 - 1e-4) * t / 999 for t in range(1000)]
    assert schedule.as_dict()["beta_end"] == 0.02
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(math.prod(1 - b for b in betas))
    assert 3e-5 < schedule.alphas_cumprod[-1].item() < 5e-5
    again = DiffusionSchedule.from_dict(schedule.as_dict())
    assert torch.equal(again.alphas_cumprod, schedule.alphas_cumprod)
    with pytest.raises(ValueError, match="unknown"):
        DiffusionSchedule.from_dict({**schedule.as_dict(), "cosine_s": 0.008})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_eps_from_x0_inverts_q_sample(dtype):
    schedule = DiffusionSchedule()
    x0 = _gaussian((3, 1, 4, 4, 4), 0, dtype).clamp(-1, 1)
    noise = _gaussian(x0.shape, 1, dtype)
    t = torch.tensor([0, 500, 999])
    x_t = schedule.q_sample(x0, t, noise)
    assert x_t.dtype == dtype
    a = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)
    expected = a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(x_t.double(), expected, rtol=0, atol=tol)
    # at t = 0 sqrt(1 - a) = 0.01 amplifies float32 round-off 100-fold
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(schedule.eps_from_x0(x_t, t, x0), noise, rtol=0, atol=tol)


def test_x0_loss_is_the_seeded_x0_mse():
    schedule = DiffusionSchedule()
    model = _tiny_unet()
    x0 = _gaussian((2, 1, 8, 8, 8), 2).clamp(-1, 1)
    cond = _gaussian((2, 1, 8, 8, 8), 3).clamp(-1, 1)
    loss = schedule.x0_loss(model, x0, cond, generator=torch.Generator().manual_seed(7))
    assert loss.ndim == 0 and torch.isfinite(loss)
    # the same draws by hand: t first, then the noise
    gen = torch.Generator().manual_seed(7)
    t = torch.randint(0, 1000, (2,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    with torch.no_grad():
        predicted = model(torch.cat([schedule.q_sample(x0, t, noise), cond], 1), t)
    assert loss.item() == pytest.approx(((predicted - x0) ** 2).mean().item(), rel=1e-6)


# -- DDIM ---------------------------------------------------------------------------------------


def test_ddim_timesteps():
    steps = ddim_timesteps(10)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 10
    assert all(b < a for a, b in zip(steps, steps[1:], strict=False))
    gaps = {a - b for a, b in zip(steps, steps[1:], strict=False)}
    assert max(gaps) - min(gaps) <= 1  # evenly spaced up to rounding
    assert ddim_timesteps(1000) == list(range(999, -1, -1))
    assert ddim_timesteps(1) == [999]
    assert ddim_timesteps(2, 50) == [49, 0]
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            ddim_timesteps(bad)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_eq12_with_a_random_unet(eta):
    schedule = DiffusionSchedule()
    model = _tiny_unet()
    x_t = _gaussian((2, 1, 8, 8, 8), 10)
    cond = _gaussian((2, 1, 8, 8, 8), 11).clamp(-1, 1)
    t, t_prev = 666, 555
    with torch.no_grad():
        x0 = model_predictor(model)(x_t, cond, torch.full((2,), t)).clamp(-1, 1)
    assert x0.abs().max() > 1e-2  # the randomised output layer: not the trivial zero
    a_t, a_prev = float(schedule.alphas_cumprod[t]), float(schedule.alphas_cumprod[t_prev])
    z = _gaussian(x_t.shape, 12)
    got = ddim_step(x_t, x0, a_t, a_prev, eta, z)
    torch.testing.assert_close(got, _eq12(x_t, x0, a_t, a_prev, eta, z), rtol=0, atol=1e-12)
    # after the last timestep a_prev = 1: the step returns x0 itself
    torch.testing.assert_close(ddim_step(x_t, x0, a_t, 1.0, eta, z), x0, rtol=0, atol=1e-12)


def test_ddim_sample_follows_eq12_and_its_draw_order():
    """Two steps [700, 300] with eta = 1, recomputed by hand from the same generator."""
    schedule = DiffusionSchedule()
    model = _tiny_unet()
    cond = _gaussian((1, 1, 8, 8, 8), 20).clamp(-1, 1)
    predict = model_predictor(model)
    got = ddim_sample(
        predict,
        (1, 1, 8, 8, 8),
        cond,
        schedule,
        steps=[700, 300],
        eta=1.0,
        generator=torch.Generator().manual_seed(5),
    )
    gen = torch.Generator().manual_seed(5)
    x_t = torch.randn((1, 1, 8, 8, 8), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        x0 = predict(x_t, cond, torch.tensor([700])).clamp(-1, 1)
        z = torch.randn(x_t.shape, generator=gen, dtype=torch.float64)
        a = schedule.alphas_cumprod
        x_prev = _eq12(x_t, x0, float(a[700]), float(a[300]), 1.0, z)
        expected = predict(x_prev, cond, torch.tensor([300])).clamp(-1, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([300, 700], "strictly descending"),
        ([700, 700], "strictly descending"),
        ([], "non-empty"),
        ([1000, 300], r"lie in \[0, 1000\)"),
        ([300, -1], r"lie in \[0, 1000\)"),
        (0, "1 <= num_steps <= 1000"),
    ],
)
def test_ddim_sample_refuses_timestep_lists_it_cannot_walk(steps, problem):
    schedule = DiffusionSchedule()
    with pytest.raises(ValueError, match=problem):
        ddim_sample(
            model_predictor(_tiny_unet()),
            (1, 1, 8, 8, 8),
            None,
            schedule,
            steps=steps,
            eta=0.0,
            generator=torch.Generator().manual_seed(0),
        )


def test_seeded_ddim_sample_is_deterministic_and_hooked():
    schedule = DiffusionSchedule()
    model = _tiny_unet(dtype=torch.float32)
    cond = _gaussian((1, 1, 8, 8, 8), 30, torch.float32).clamp(-1, 1)

    def sample(seed, **kwargs):
        return ddim_sample(
            model_predictor(model),
            (1, 1, 8, 8, 8),
            cond,
            schedule,
            steps=3,
            eta=kwargs.pop("eta", 0.5),
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )

    first, again, other = sample(1), sample(1), sample(2)
    assert first.shape == (1, 1, 8, 8, 8) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.abs().max() <= 1.0
    # paste-back through the hook: the known voxels come out unchanged
    keep = torch.zeros((1, 1, 8, 8, 8), dtype=torch.bool)
    keep[..., :4] = True
    pasted = sample(1, x0_hook=paste_known_hook(cond, keep))
    assert torch.equal(pasted[keep], cond[keep])
    assert not torch.equal(pasted[~keep], cond[~keep])


# -- network ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(16, 16, 16), (16, 12, 8)])
def test_tiny_unet_from_config_keeps_the_shape(spatial):
    model = _tiny_unet(dtype=torch.float32)
    x = _gaussian((2, 2, *spatial), 40, torch.float32)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 900]))
    assert out.shape == (2, 1, *spatial)
    assert out.abs().max() > 0  # the output layer was randomised


def test_unet_config_is_checked_and_timesteps_matter():
    with pytest.raises(ValueError, match="unknown keys"):
        unet_from_config({**TINY, "chanels": [8, 16]})
    with pytest.raises(ValueError, match="missing keys"):
        unet_from_config({k: v for k, v in TINY.items() if k != "channels"})
    assert required_multiple([8, 16]) == 2 and required_multiple([16, 32, 64, 64]) == 8
    torch.manual_seed(0)
    model = unet_from_config(TINY).eval()
    randomise_zero_initialised(model, torch.Generator().manual_seed(1))
    x = _gaussian((1, 2, 8, 8, 8), 41, torch.float32)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([10])), model(x, torch.tensor([900])))


@pytest.mark.parametrize("depth", [8, 9, 12, 13, 50])
def test_slab_tiling_and_merging_reproduce_the_volume(depth):
    starts = slab_starts(depth)
    assert starts[0] == 0 and starts[-1] == depth - 8  # the last slab ends with the volume
    assert all(0 < b - a <= 4 for a, b in zip(starts, starts[1:], strict=False))
    volume = _gaussian((2, 3, 4, 5, depth), depth, torch.float32)
    slabs = extract_slabs(volume, starts, 8)
    assert slabs.shape == (2 * len(starts), 3, 4, 5, 8)
    last = len(starts) - 1  # batch-major order: slab s of volume b at b * S + s
    assert torch.equal(slabs[len(starts) + last], volume[1, ..., depth - 8 :])
    identity = slabs.clone()  # an identity model on every slab
    assert torch.equal(merge_slabs(identity, starts, depth, batch=2), volume)


def test_slab_starts_and_merge_checks():
    assert slab_starts(13) == [0, 4, 5]
    assert slab_starts(8) == [0]
    with pytest.raises(ValueError, match="fewer than one slab"):
        slab_starts(7)
    with pytest.raises(ValueError):
        slab_starts(20, size=8, stride=9)  # would leave gaps
    slabs = torch.ones((1, 1, 2, 2, 8))
    merged = merge_slabs(torch.cat([slabs, 3 * slabs]), [0, 4], 12, batch=1)
    assert merged[0, 0, 0, 0].tolist() == [1.0] * 4 + [2.0] * 4 + [3.0] * 4  # overlap averaged


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_slab_predictor_sampling_equals_whole_volume_sampling(eta):
    """A pointwise x0 model has no border effects, so sampling slab by slab with the volume as
    the sampling state must equal sampling the whole volume at once (same seeded draws)."""
    schedule = DiffusionSchedule()
    depth = 13
    cond = _gaussian((1, 2, 4, 4, depth), 60).clamp(-1, 1)

    def pointwise(x_t, c, t):
        scale = 1 - t.to(x_t.dtype).reshape(-1, 1, 1, 1, 1) / 2000
        return torch.tanh(0.3 * x_t + c[:, :1] - 0.5 * c[:, 1:]) * scale

    def sample(predict):
        return ddim_sample(
            predict,
            (1, 1, 4, 4, depth),
            cond,
            schedule,
            steps=4,
            eta=eta,
            generator=torch.Generator().manual_seed(3),
        )

    whole = sample(pointwise)
    slabwise = sample(slab_predictor(pointwise, max_slabs=2))
    torch.testing.assert_close(slabwise, whole, rtol=0, atol=1e-12)
