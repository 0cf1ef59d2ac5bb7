"""The refacing cascade: intensity scaling, padding, stage batches, sampling with paste-back,
overfitting one tiny pair, and the refacing jobs on files."""

import logging

import nibabel as nib
import numpy as np
import pytest
import torch

from defaceaudit.diffusion.cascade import (
    PairSet,
    SamplingSettings,
    diffusion_loss,
    sample_cascade,
    stage1_batches,
    stage2_batches,
)
from defaceaudit.diffusion.checkpoint import CheckpointError
from defaceaudit.diffusion.refacing import (
    known_voxels,
    load_pairs,
    reface_subject,
    train_refacing_stage,
)
from defaceaudit.diffusion.schedule import DiffusionSchedule
from defaceaudit.diffusion.train import default_resume_path
from defaceaudit.diffusion.unet import build_unet, randomise_zero_initialised
from defaceaudit.diffusion.volumes import (
    crop_volume,
    from_unit,
    intensity_scale,
    pad_volume,
    padded_shape,
    to_unit,
)
from defaceaudit.errors import ImageError, InputError

TINY = {
    "channels": [8, 8],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 4,
}


def tiny_net(in_channels, seed=0):
    net = build_unet(in_channels=in_channels, out_channels=1, **TINY)
    randomise_zero_initialised(net, torch.Generator().manual_seed(seed))
    return net.eval()


def test_unit_scaling_round_trips_and_uses_the_defaced_percentile():
    rng = np.random.default_rng(0)
    volume = rng.random((10, 10, 10)).astype(np.float32) * 100
    volume[:2] = 0  # removed voxels do not lower the scale
    scale = intensity_scale(volume)
    assert scale == pytest.approx(np.percentile(volume[volume > 0], 99.5))
    unit = to_unit(volume, scale)
    assert unit.min() >= -1 and unit.max() <= 1 and unit[0, 0, 0] == -1
    inside = volume <= scale
    assert np.allclose(from_unit(unit, scale)[inside], volume[inside], atol=1e-3)
    with pytest.raises(ValueError, match="no positive voxels"):
        intensity_scale(np.zeros((4, 4, 4)))


def test_padded_shape_divides_both_stages_and_holds_a_slab():
    shape = padded_shape((45, 67, 5), factor=2, multiple_low=4, multiple_high=2)
    assert shape == (48, 72, 8)
    volume = np.ones((45, 67, 5), np.float32)
    padded = pad_volume(volume, shape)
    assert padded.shape == shape and padded[-1, -1, -1] == -1
    assert np.array_equal(crop_volume(padded, volume.shape), volume)


def pair_set(n=2, shape=(16, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    targets = torch.from_numpy(rng.uniform(-1, 1, (n, 1, *shape)).astype(np.float32))
    inputs = targets.clone()
    inputs[..., shape[1] // 2 :, :] = -1.0  # the "face" half removed
    return PairSet(inputs, targets)


def test_stage_batches_have_the_cascade_shapes():
    pairs = pair_set()
    rng = np.random.default_rng(1)
    one = next(stage1_batches(pairs, factor=2, batch_size=3)(rng))
    assert one["x0"].shape == (3, 1, 8, 8, 8) and one["cond"].shape == (3, 1, 8, 8, 8)
    two = next(stage2_batches(pairs, factor=2, batch_size=3)(rng))
    assert two["x0"].shape == (3, 1, 16, 16, 8) and two["cond"].shape == (3, 2, 16, 16, 8)
    # the second condition channel is the defaced input, sliced like x0
    assert torch.all(two["cond"][:, 1][two["x0"][:, 0] != two["cond"][:, 1]] == -1)


def test_sampling_is_seeded_and_pastes_back_the_untouched_voxels():
    schedule = DiffusionSchedule()
    pairs = pair_set(n=1)
    defaced = pairs.inputs
    keep = defaced > -1
    settings = SamplingSettings(steps=3, eta=0.5, seed=7, paste_back=True, slab_batch=2)
    args = (tiny_net(2), tiny_net(3, seed=1), schedule, schedule, defaced, keep, 2)
    first = sample_cascade(*args, settings, multiple=2)
    again = sample_cascade(*args, settings, multiple=2)
    assert first.shape == defaced.shape and torch.equal(first, again)
    assert torch.equal(first[keep], defaced[keep])  # paste-back: untouched voxels are exact
    assert not torch.equal(first[~keep], defaced[~keep])  # the removed region is generated
    free = sample_cascade(*args, SamplingSettings(steps=3, seed=7, paste_back=False), multiple=2)
    assert not torch.equal(free[keep], defaced[keep])


def test_overfitting_one_pair_lowers_the_loss_and_moves_the_sample_to_the_target():
    torch.manual_seed(0)
    schedule = DiffusionSchedule()
    pairs = pair_set(n=1, shape=(8, 8, 8))
    batch = {"x0": pairs.targets, "cond": pairs.inputs}
    net = build_unet(in_channels=2, out_channels=1, **TINY)
    loss_fn = diffusion_loss(schedule)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        loss = loss_fn(net, batch, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    net.eval()
    from defaceaudit.diffusion.ddim import ddim_sample, model_predictor

    sample = ddim_sample(
        model_predictor(net),
        tuple(pairs.targets.shape),
        pairs.inputs,
        schedule,
        steps=10,
        eta=0.0,
        generator=torch.Generator().manual_seed(1),
    )
    before = float(((pairs.inputs - pairs.targets) ** 2).mean())
    after = float(((sample - pairs.targets) ** 2).mean())
    assert after < 0.5 * before


def _write_pair(folder, name, seed):
    rng = np.random.default_rng(seed)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    original = rng.uniform(50, 100, (12, 14, 10)).astype(np.float32)
    defaced = original.copy()
    defaced[:, 9:, :5] = 0
    removed = (defaced == 0) & (original != 0)
    paths = {}
    for key, data in (("original", original), ("defaced", defaced), ("removed", removed)):
        paths[key] = folder / f"{name}_{key}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), paths[key])
    return paths


def reface_config(steps=4):
    stage = {
        "network": dict(TINY),
        "training": {
            "steps": steps,
            "batch_size": 1,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "grad_clip": 1.0,
            "ema_decay": 0.9,
            "checkpoint_every": 2,
            "log_every": 2,
            "seed": 0,
            "bf16": True,
        },
    }
    return {
        "downsample_factor": 2,
        "schedule": {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "stage1": stage,
        "stage2": stage,
    }


def _train(stage, pairs, config, checkpoint):
    return train_refacing_stage(
        stage,
        [p["original"] for p in pairs],
        [p["defaced"] for p in pairs],
        config,
        checkpoint,
        device="cpu",
    )


def _outputs(folder, name="refaced"):
    return {
        "t1w": folder / f"{name}.nii.gz",
        "removed": folder / f"{name}_generated.nii.gz",
        "sidecar": folder / f"{name}.json",
    }


def test_train_then_reface_files(tmp_path, caplog):
    pairs = [_write_pair(tmp_path, f"s{i}", i) for i in range(2)]
    config = reface_config()
    checkpoints = {}
    with caplog.at_level(logging.INFO):
        for stage in (1, 2):
            checkpoints[stage] = tmp_path / f"stage{stage}.pt"
            summary = _train(stage, pairs, config, checkpoints[stage])
            assert summary["steps"] == 4 and checkpoints[stage].exists()
    test = _write_pair(tmp_path, "test", 9)
    outputs = _outputs(tmp_path)
    sampling = {"steps": 2, "eta": 0.0, "seed": 0, "paste_back": True, "slab_batch": 4}
    reface_subject(
        test["defaced"],
        test["removed"],
        checkpoints[1],
        checkpoints[2],
        outputs,
        sampling,
        device="cpu",
    )
    refaced = nib.load(outputs["t1w"]).get_fdata()
    defaced = nib.load(test["defaced"]).get_fdata()
    removed = nib.load(test["removed"]).get_fdata() > 0
    assert refaced.shape == defaced.shape
    assert np.allclose(refaced[~removed], defaced[~removed])
    assert (refaced[removed] > 0).any()  # something was generated in the removed region
    assert np.array_equal(nib.load(outputs["removed"]).get_fdata() > 0, removed)

    # without paste-back the whole volume is generated, and the mask says so
    free = _outputs(tmp_path, "free")
    sampling["paste_back"] = False
    args = (checkpoints[1], checkpoints[2], free, sampling)
    reface_subject(test["defaced"], test["removed"], *args, device="cpu")
    assert (nib.load(free["removed"]).get_fdata() == 1).all()

    # a stage 2 trained on another stage-1 grid is no pair for this stage 1
    other = tmp_path / "stage2_factor1.pt"
    _train(2, pairs, {**reface_config(steps=1), "downsample_factor": 1}, other)
    with pytest.raises(CheckpointError, match=f"{other}.*downsample_factor 1.*{checkpoints[1]}"):
        reface_subject(test["defaced"], test["removed"], checkpoints[1], other, free, sampling)


def test_padding_is_known_and_the_window_stays_off_the_padded_end():
    from defaceaudit.diffusion.cascade import generation_window

    generated = np.zeros((40, 44, 36), dtype=bool)
    generated[10:20, 30:40, 0:10] = True  # the removed region, far from the grid's end
    shape = padded_shape(generated.shape, factor=2, multiple_low=4, multiple_high=4)
    assert shape == (40, 48, 40)  # padded along Y and Z
    keep = known_voxels(generated, shape)
    assert keep.shape == shape and keep[:, 44:].all() and keep[..., 36:].all()
    assert np.array_equal(keep[:40, :44, :36], ~generated)
    window = generation_window(torch.from_numpy(keep), multiple=4, margin=2)
    assert [(w.start, w.stop) for w in window] == [(8, 24), (28, 44), (0, 12)]


def test_a_defaced_image_without_positive_voxels_is_named(tmp_path):
    pair = _write_pair(tmp_path, "s0", 0)
    empty = tmp_path / "empty.nii.gz"
    negative = -np.random.default_rng(0).uniform(1, 2, (12, 14, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(negative, np.diag([4.0, 4.0, 4.0, 1.0])), empty)
    with pytest.raises(ImageError, match=f"{empty}: no positive voxel"):
        load_pairs([pair["original"]], [empty], reface_config())
    missing = tmp_path / "none.pt"  # the image is checked before the checkpoints are read
    with pytest.raises(ImageError, match=f"{empty}: no positive voxel"):
        reface_subject(empty, pair["removed"], missing, missing, _outputs(tmp_path), {})


def test_resume_needs_the_same_pairs_but_not_the_same_version(tmp_path, caplog, monkeypatch):
    pairs = [_write_pair(tmp_path, f"s{i}", i) for i in range(3)]
    checkpoint = tmp_path / "stage1.pt"
    _train(1, pairs[:2], reface_config(steps=2), checkpoint)
    # stands in for a run killed at step 2 of 4
    checkpoint.rename(default_resume_path(checkpoint))
    with pytest.raises(CheckpointError, match="pairs_sha256.*delete it"):
        _train(1, [pairs[0], pairs[2]], reface_config(steps=4), checkpoint)  # as many pairs
    monkeypatch.setattr("defaceaudit.diffusion.refacing.__version__", "99.0")
    with caplog.at_level(logging.INFO):
        summary = _train(1, pairs[:2], reface_config(steps=4), checkpoint)
    assert summary["start_step"] == 2 and "resuming from" in caplog.text


def test_stage2_sizes_are_checked_before_pairs_are_loaded(tmp_path):
    missing = [tmp_path / "none.nii.gz"]
    config = reface_config()
    config["stage2"] = {**config["stage2"], "network": {**TINY, "channels": [8] * 5}}
    config["stage2"]["network"]["attention_levels"] = [False] * 5
    for stage in (1, 2):
        with pytest.raises(InputError, match=r"reface\.stage2\.network\.channels: 5 levels"):
            train_refacing_stage(stage, missing, missing, config, tmp_path / "x.pt", "cpu")
    config = {**reface_config(), "slab_patch": 6}
    config["stage2"] = {**config["stage2"], "network": {**TINY, "channels": [8] * 3}}
    config["stage2"]["network"]["attention_levels"] = [False] * 3
    with pytest.raises(InputError, match=r"reface\.slab_patch: 6 is not a multiple of 4"):
        train_refacing_stage(2, missing, missing, config, tmp_path / "x.pt", "cpu")


def test_generation_window_covers_the_removed_region_on_valid_sizes():
    from defaceaudit.diffusion.cascade import generation_window

    keep = torch.ones(32, 48, 40, dtype=torch.bool)
    keep[20:27, 30:44, 3:9] = False
    window = generation_window(keep, multiple=4, margin=2)
    inside = torch.zeros_like(keep)
    inside[window] = True
    assert inside[~keep].all()  # every voxel to generate is in the window
    sizes = [w.stop - w.start for w in window]
    assert sizes[0] % 4 == 0 and sizes[1] % 4 == 0 and sizes[2] >= 8
    assert sizes[0] < 32 and sizes[1] < 48  # smaller than the volume
    assert all(w.start >= 0 and w.stop <= n for w, n in zip(window, keep.shape, strict=True))


def test_stage2_trains_on_in_plane_crops():
    pairs = pair_set(shape=(16, 24, 16))
    batch = next(stage2_batches(pairs, factor=2, batch_size=2, patch=8)(np.random.default_rng(0)))
    assert batch["x0"].shape == (2, 1, 8, 8, 8) and batch["cond"].shape == (2, 2, 8, 8, 8)
