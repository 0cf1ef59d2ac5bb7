"""The refacing cascade: intensity scaling, padding, stage batches, sampling with paste-back,
overfitting one tiny pair, and the refacing jobs on files."""

import json
import logging
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import TINY_UNET, randomise_zero_initialised
from synthetic import sphere_head

from defaceaudit.errors import ImageError, InputError
from defaceaudit.imaging.nifti import load_t1w, to_ras
from defaceaudit.reface.cascade import (
    AttackTraining,
    PairSet,
    SamplingSettings,
    diffusion_loss,
    sample_cascade,
    stage1_batches,
    stage2_batches,
)
from defaceaudit.reface.checkpoint import CheckpointError, load_checkpoint
from defaceaudit.reface.refacing import (
    known_voxels,
    load_pairs,
    load_sampler,
    sample_refaced,
    train_refacing_stage,
    training_envelope,
)
from defaceaudit.reface.region import attack_region
from defaceaudit.reface.schedule import DiffusionSchedule
from defaceaudit.reface.sizing import LOAD_WORKING_VOLUMES, training_job_mb, training_memory_mb
from defaceaudit.reface.slabs import SLAB_SIZE
from defaceaudit.reface.train import default_resume_path, train
from defaceaudit.reface.unet import build_unet, required_multiple
from defaceaudit.reface.volumes import (
    crop_volume,
    downsample,
    from_unit,
    intensity_scale,
    pad_volume,
    padded_shape,
    to_unit,
    upsample,
    upsample_window,
)


def tiny_net(in_channels, seed=0):
    net = build_unet(in_channels=in_channels, out_channels=1, **TINY_UNET)
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


def volumes(n=2, shape=(16, 16, 16), seed=0):
    """(inputs, targets), each [n, 1, *shape] float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    targets = torch.from_numpy(rng.uniform(-1, 1, (n, 1, *shape)).astype(np.float32))
    inputs = targets.clone()
    inputs[..., shape[1] // 2 :, :] = -1.0  # the "face" half removed
    return inputs, targets


def test_stage_batches_have_the_cascade_shapes():
    pairs = PairSet.from_volumes(*volumes(), factor=2)
    rng = np.random.default_rng(1)
    one = next(stage1_batches(pairs, batch_size=3)(rng))
    assert one["x0"].shape == (3, 1, 8, 8, 8) and one["cond"].shape == (3, 1, 8, 8, 8)
    two = next(stage2_batches(pairs, batch_size=3)(rng))
    assert two["x0"].shape == (3, 1, 16, 16, 8) and two["cond"].shape == (3, 2, 16, 16, 8)
    # the second condition channel is the defaced input, sliced like x0
    assert torch.all(two["cond"][:, 1][two["x0"][:, 0] != two["cond"][:, 1]] == -1)


def test_sampling_is_seeded_and_pastes_back_the_untouched_voxels():
    schedule = DiffusionSchedule()
    defaced, _ = volumes(n=1)
    keep = defaced > -1
    settings = SamplingSettings.from_config(
        dict(steps=3, eta=0.5, seed=7, paste_back=True, slab_batch=2)
    )
    args = (tiny_net(2), tiny_net(3, seed=1), schedule, schedule, defaced, keep, 2)
    first = sample_cascade(*args, settings, multiple=2)
    again = sample_cascade(*args, settings, multiple=2)
    assert first.shape == defaced.shape and torch.equal(first, again)
    assert torch.equal(first[keep], defaced[keep])  # paste-back: untouched voxels are exact
    assert not torch.equal(first[~keep], defaced[~keep])  # the removed region is generated
    free = sample_cascade(
        *args, SamplingSettings.from_config(dict(steps=3, seed=7, paste_back=False)), multiple=2
    )
    assert not torch.equal(free[keep], defaced[keep])


def test_stage_2_is_conditioned_as_in_training_on_the_stage_1_sample(monkeypatch):
    """Sampling feeds stage 2 [upsampled stage-1 SAMPLE, defaced] in that order, the order of
    stage2_batches' [coarse target, input] (not the downsampled input, not swapped)."""
    from defaceaudit.reface import cascade

    real, calls = cascade.ddim_sample, []

    def spy(predict, shape, cond, *args, **kwargs):
        out = real(predict, shape, cond, *args, **kwargs)
        calls.append({"cond": cond.clone(), "out": out.clone()})
        return out

    monkeypatch.setattr(cascade, "ddim_sample", spy)
    schedule = DiffusionSchedule()
    defaced, _ = volumes(n=1)
    keep = defaced > -1
    settings = SamplingSettings.from_config(dict(steps=2, seed=3, paste_back=False, slab_batch=2))
    sample_cascade(
        tiny_net(2), tiny_net(3, seed=1), schedule, schedule, defaced, keep, 2, settings, multiple=2
    )
    first, second = calls
    assert torch.equal(first["cond"], downsample(defaced, 2))
    expected_coarse = upsample(first["out"], defaced.shape[2:])
    assert not torch.equal(expected_coarse, upsample(downsample(defaced, 2), defaced.shape[2:]))
    assert torch.equal(second["cond"][:, :1], expected_coarse)
    assert torch.equal(second["cond"][:, 1:], defaced)
    # training's order: channel 0 the coarse target, channel 1 the defaced input
    pairs = PairSet.from_volumes(*volumes(), factor=2)
    batch = next(stage2_batches(pairs, batch_size=1)(np.random.default_rng(0)))
    assert not torch.equal(batch["cond"][:, 0], batch["cond"][:, 1])
    assert torch.all((batch["cond"][:, 1] == batch["x0"][:, 0]) | (batch["cond"][:, 1] == -1))


def test_sampling_shows_the_region_to_networks_trained_with_it(monkeypatch):
    """With mask channels, stage 1 gets [downsampled defaced, coarse region] and stage 2
    [coarse sample, defaced, region], the region as +1 / -1 (AttackTraining's batches)."""
    from defaceaudit.reface import cascade

    real, calls = cascade.ddim_sample, []

    def spy(predict, shape, cond, *args, **kwargs):
        calls.append({"shape": shape, "cond": cond.clone()})
        return real(predict, shape, cond, *args, **kwargs)

    monkeypatch.setattr(cascade, "ddim_sample", spy)
    schedule = DiffusionSchedule()
    defaced, _ = volumes(n=1)
    keep = defaced > -1
    settings = SamplingSettings.from_config(dict(steps=2, seed=3, paste_back=False, slab_batch=2))
    out = sample_cascade(
        tiny_net(3),
        tiny_net(4, seed=1),
        schedule,
        schedule,
        defaced,
        keep,
        2,
        settings,
        multiple=2,
        mask_channels=(True, True),
    )
    first, second = calls
    assert first["shape"] == (1, 1, 8, 8, 8) and out.shape == defaced.shape
    assert torch.equal(first["cond"][:, :1], downsample(defaced, 2))
    assert torch.equal(first["cond"][:, 1:], 2 * downsample((~keep).float(), 2) - 1)
    assert torch.equal(second["cond"][:, 1:2], defaced)
    assert torch.equal(second["cond"][:, 2:], torch.where(keep, -1.0, 1.0))


@pytest.mark.slow
def test_overfitting_one_pair_lowers_the_loss_and_moves_the_sample_to_the_target():
    torch.manual_seed(0)
    schedule = DiffusionSchedule()
    inputs, targets = volumes(n=1, shape=(8, 8, 8))
    batch = {"x0": targets, "cond": inputs}
    net = build_unet(in_channels=2, out_channels=1, **TINY_UNET)
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
    from defaceaudit.reface.ddim import ddim_sample, model_predictor

    sample = ddim_sample(
        model_predictor(net),
        tuple(targets.shape),
        inputs,
        schedule,
        steps=10,
        eta=0.0,
        generator=torch.Generator().manual_seed(1),
    )
    before = float(((inputs - targets) ** 2).mean())
    after = float(((sample - targets) ** 2).mean())
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
        "network": dict(TINY_UNET),
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
        "envelope_mm": None,
        "validation": {"snapshots": 0},
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


@pytest.mark.slow
def test_train_then_reface_files(tmp_path, caplog, monkeypatch):
    pairs = [_write_pair(tmp_path, f"s{i}", i) for i in range(2)]
    config = reface_config()
    checkpoints = {}
    with caplog.at_level(logging.INFO):
        for stage in (1, 2):
            checkpoints[stage] = tmp_path / f"stage{stage}.pt"
            summary = _train(stage, pairs, config, checkpoints[stage])
            assert summary["steps"] == 4 and checkpoints[stage].exists()
    # no reface.envelope_mm: both stages learn the envelope from the pairs (the box the defacer
    # zeroes reaches 5 voxels, 20 mm, from the rest: 20 + 5 mm of margin)
    envelope = training_envelope([p["original"] for p in pairs], [p["defaced"] for p in pairs])
    assert envelope == 25.0
    for stage in (1, 2):
        saved = load_checkpoint(checkpoints[stage])["config"]
        assert saved["envelope_mm"] == envelope and saved["attack"]["mask_channel"] is True
        assert saved["network"]["in_channels"] == (2 if stage == 1 else 3) + 1  # the region
    test = _write_pair(tmp_path, "test", 9)
    outputs = _outputs(tmp_path)
    sampling = {"steps": 2, "eta": 0.0, "seed": 0, "paste_back": True, "slab_batch": 4}
    sample_refaced(test["defaced"], checkpoints[1], checkpoints[2], outputs, sampling, "cpu")
    refaced = nib.load(outputs["t1w"]).get_fdata()
    defaced = nib.load(test["defaced"]).get_fdata()
    # the defacer's own mask, which sampling never reads: here (no zero background) it is the
    # attack region, every zero voxel lying within the envelope of the rest of the head
    removed = nib.load(test["removed"]).get_fdata() > 0
    assert np.array_equal(attack_region(defaced, (4.0, 4.0, 4.0), envelope), removed)
    assert refaced.shape == defaced.shape
    assert np.array_equal(refaced[~removed], defaced[~removed])
    assert (refaced[removed] > 0).any()  # something was generated in the removed region
    assert np.array_equal(nib.load(outputs["removed"]).get_fdata() > 0, removed)
    sidecar = json.loads(outputs["sidecar"].read_text())
    assert sidecar["envelope_mm"] == envelope and sidecar["voxels_generated"] == removed.sum()

    # without paste-back the whole volume is generated, and the mask says so
    free = _outputs(tmp_path, "free")
    sampling["paste_back"] = False
    args = (checkpoints[1], checkpoints[2], free, sampling)
    sample_refaced(test["defaced"], *args, device="cpu")
    assert (nib.load(free["removed"]).get_fdata() == 1).all()

    # a stage 2 trained on another stage-1 grid is no pair for this stage 1
    other = tmp_path / "stage2_factor1.pt"
    _train(2, pairs, {**reface_config(steps=1), "downsample_factor": 1}, other)
    with pytest.raises(CheckpointError, match=f"{other}.*downsample_factor 1.*{checkpoints[1]}"):
        sample_refaced(test["defaced"], checkpoints[1], other, free, sampling)

    # the cascade's [-1, 1] output goes back to the defaced image's units: a cascade that
    # returns 0 everywhere gives half the scale (the 99.5th percentile of its positive voxels)
    from defaceaudit.reface import refacing

    monkeypatch.setattr(
        refacing, "sample_cascade", lambda *args, **kwargs: torch.zeros_like(args[4])
    )
    zeros = _outputs(tmp_path, "zeros")
    sampling["paste_back"] = True
    sample_refaced(test["defaced"], checkpoints[1], checkpoints[2], zeros, sampling)
    scale = json.loads(zeros["sidecar"].read_text())["intensity_scale"]
    assert scale == pytest.approx(np.percentile(defaced[defaced > 0], 99.5), rel=1e-6)
    refaced = nib.load(zeros["t1w"]).get_fdata()
    np.testing.assert_allclose(refaced[removed], scale / 2, rtol=1e-6)
    assert np.array_equal(refaced[~removed], defaced[~removed])

    # a head on an exactly-zero background: the defacer's mask of the tissue it removed is the
    # face's silhouette; the voxels generated are instead every zero voxel within the envelope of
    # what is left, computed from the defaced image alone (air around the head included, air
    # further away not)
    original, flat, cap = sphere_head()
    affine = nib.load(test["defaced"]).affine
    nib.save(nib.Nifti1Image(flat, affine), tmp_path / "flat.nii.gz")
    flat_out = _outputs(tmp_path, "flat")
    sample_refaced(tmp_path / "flat.nii.gz", *checkpoints.values(), flat_out, sampling)
    generated = nib.load(flat_out["removed"]).get_fdata() > 0
    assert np.array_equal(generated, attack_region(flat, (4.0, 4.0, 4.0), envelope))
    assert generated[cap].all() and (generated & (original == 0)).any()  # not the silhouette
    assert not generated[0, 0, 0]  # a corner, 51 mm from the head: beyond the envelope
    assert not (generated & (flat != 0)).any()
    flat_refaced = nib.load(flat_out["t1w"]).get_fdata()
    assert np.array_equal(flat_refaced[~generated], flat[~generated])


def test_padding_is_known_and_the_window_stays_off_the_padded_end():
    from defaceaudit.reface.cascade import generation_window

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
        sample_refaced(empty, missing, missing, _outputs(tmp_path), {})


@pytest.mark.slow
def test_resume_needs_the_same_pairs_but_not_the_same_version(tmp_path, caplog, monkeypatch):
    pairs = [_write_pair(tmp_path, f"s{i}", i) for i in range(3)]
    checkpoint = tmp_path / "stage1.pt"
    _train(1, pairs[:2], reface_config(steps=2), checkpoint)
    # stands in for a run killed at step 2 of 4
    resume = default_resume_path(checkpoint)
    checkpoint.rename(resume)
    saved = resume.read_bytes()
    with caplog.at_level(logging.INFO):  # as many pairs, other data: not this model's state
        other = _train(1, [pairs[0], pairs[2]], reface_config(steps=4), checkpoint)
    assert other["start_step"] == 0 and "pairs_sha256" in caplog.text
    stale = resume.with_name(resume.name + ".stale")
    assert stale.read_bytes() == saved
    stale.rename(resume)  # the killed run's file again, for the same pairs
    checkpoint.unlink()
    caplog.clear()
    monkeypatch.setattr("defaceaudit.reface.refacing.__version__", "99.0")
    with caplog.at_level(logging.INFO):
        summary = _train(1, pairs[:2], reface_config(steps=4), checkpoint)
    assert summary["start_step"] == 2 and "resuming from" in caplog.text


def test_stage2_sizes_are_checked_before_pairs_are_loaded(tmp_path):
    missing = [tmp_path / "none.nii.gz"]
    config = reface_config()
    config["stage2"] = {**config["stage2"], "network": {**TINY_UNET, "channels": [8] * 5}}
    config["stage2"]["network"]["attention_levels"] = [False] * 5
    for stage in (1, 2):
        with pytest.raises(InputError, match=r"reface\.stage2\.network\.channels: 5 levels"):
            train_refacing_stage(stage, missing, missing, config, tmp_path / "x.pt", "cpu")
    config = {**reface_config(), "slab_patch": 6}
    config["stage2"] = {**config["stage2"], "network": {**TINY_UNET, "channels": [8] * 3}}
    config["stage2"]["network"]["attention_levels"] = [False] * 3
    with pytest.raises(InputError, match=r"reface\.slab_patch: 6 is not a multiple of 4"):
        train_refacing_stage(2, missing, missing, config, tmp_path / "x.pt", "cpu")


def test_generation_window_covers_the_removed_region_on_valid_sizes():
    from defaceaudit.reface.cascade import generation_window

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
    pairs = PairSet.from_volumes(*volumes(shape=(16, 24, 16)), factor=2)
    batch = next(stage2_batches(pairs, batch_size=2, patch=8)(np.random.default_rng(0)))
    assert batch["x0"].shape == (2, 1, 8, 8, 8) and batch["cond"].shape == (2, 2, 8, 8, 8)


# The training data as they were built before PairSet stored them for memory (float32, every
# pair's original again, the coarse condition as one full-resolution volume): the reference.


def old_load_pairs(originals, defaced, config):
    """(inputs, targets), each [N, 1, X, Y, Z] float32: the former ``load_pairs``."""
    factor = config["downsample_factor"]
    m1 = required_multiple(config["stage1"]["network"]["channels"])
    m2 = required_multiple(config["stage2"]["network"]["channels"])
    volumes = []
    for original_path, defaced_path in zip(originals, defaced, strict=True):
        original = to_ras(load_t1w(original_path))
        other = to_ras(load_t1w(defaced_path))
        d = np.asarray(other.dataobj, dtype=np.float32)
        scale = intensity_scale(d)
        volumes.append((to_unit(d, scale), to_unit(np.asarray(original.dataobj), scale)))
    shape = np.max([padded_shape(v[0].shape, factor, m1, m2) for v in volumes], axis=0)
    inputs = torch.from_numpy(np.stack([pad_volume(v[0], shape) for v in volumes]))[:, None]
    targets = torch.from_numpy(np.stack([pad_volume(v[1], shape) for v in volumes]))[:, None]
    return inputs, targets


def old_stage1_batch(inputs, targets, factor, batch_size, rng):
    low_targets, low_inputs = downsample(targets, factor), downsample(inputs, factor)
    index = torch.as_tensor(rng.integers(0, len(targets), batch_size))
    return {"x0": low_targets[index], "cond": low_inputs[index]}


def old_stage2_batch(inputs, targets, factor, batch_size, patch, rng):
    coarse = upsample(downsample(targets, factor), targets.shape[2:])
    conditions = torch.cat([coarse, inputs], dim=1)
    nx, ny, depth = targets.shape[2:]
    px, py = (min(patch, nx), min(patch, ny)) if patch > 0 else (nx, ny)
    x0, cond = [], []
    # the draws of stage2_batches without an attack: the pairs, then per pair the focus draw
    # (never taken at focus 0) and the window's X, Y and Z starts
    for i in rng.integers(0, len(targets), batch_size):
        rng.random()
        x, y = int(rng.integers(0, nx - px + 1)), int(rng.integers(0, ny - py + 1))
        s = int(rng.integers(0, depth - SLAB_SIZE + 1))
        window = (slice(x, x + px), slice(y, y + py), slice(s, s + SLAB_SIZE))
        x0.append(targets[i, :, *window])
        cond.append(conditions[i, :, *window])
    return {"x0": torch.stack(x0), "cond": torch.stack(cond)}


#: float16 storage of the full-resolution volumes: < 2**-12 * gain (gain < 2 here)
F16 = 5e-4


def assert_batches_match_the_old_ones(pairs, inputs, targets, factor, patch, seed=3):
    new1 = stage1_batches(pairs, 3)(np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    for _ in range(3):
        old, new = old_stage1_batch(inputs, targets, factor, 3, rng), next(new1)
        assert torch.equal(new["x0"], old["x0"]) and torch.equal(new["cond"], old["cond"])
        assert torch.equal(new["weight"], torch.ones_like(old["x0"]))  # the paper's recipe
    new2 = stage2_batches(pairs, 3, patch)(np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    for _ in range(6):
        old, new = old_stage2_batch(inputs, targets, factor, 3, patch, rng), next(new2)
        assert new["x0"].shape == old["x0"].shape and new["cond"].shape == old["cond"].shape
        assert new["x0"].dtype == new["cond"].dtype == torch.float32
        assert torch.allclose(new["cond"][:, :1], old["cond"][:, :1], rtol=0, atol=1e-6)
        assert torch.allclose(new["cond"][:, 1:], old["cond"][:, 1:], rtol=0, atol=2.0**-12)
        assert torch.allclose(new["x0"], old["x0"], rtol=0, atol=F16)
        assert torch.equal(new["weight"], torch.ones_like(new["x0"]))


@pytest.mark.parametrize("patch", [0, 8, 100])
def test_stage_batches_equal_the_float32_construction(patch):
    inputs, targets = volumes(n=3, shape=(16, 24, 16), seed=5)
    for factor in (2, 4):
        pairs = PairSet.from_volumes(inputs, targets, factor)
        assert_batches_match_the_old_ones(pairs, inputs, targets, factor, patch)


def test_upsample_window_is_the_window_of_the_full_upsample():
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for factor in (1, 2, 3, 4):
        low = torch.rand(2, 1, 5, 7, 4, generator=generator) * 2 - 1
        size = [factor * n for n in low.shape[2:]]
        full = upsample(low, size)
        windows = [
            tuple(slice(0, n) for n in size),  # the whole volume (patch = 0)
            tuple(slice(n - factor, n) for n in size),  # the last voxels
            tuple(slice(0, 1) for _ in size),  # the first voxel
        ]
        for _ in range(200):
            starts = [int(rng.integers(0, n)) for n in size]
            windows.append(
                tuple(
                    slice(a, int(rng.integers(a + 1, n + 1)))
                    for a, n in zip(starts, size, strict=True)
                )
            )
        for window in windows:
            got = upsample_window(low, factor, window)
            assert torch.allclose(got, full[..., *window], rtol=0, atol=1e-6)
            if factor != 3:  # powers of two: the same arithmetic, bit for bit
                assert torch.equal(got, full[..., *window])
        assert torch.equal(upsample_window(low[0], factor, windows[0]), full[0])


def _write_training_set(folder, shape=(12, 14, 10)):
    """Two originals (the second on a smaller grid, stored with permuted axes) x three
    "defacers" whose intensity scales differ: (originals, defaced), one path per pair, defacer
    by defacer as the workflow lists them."""
    rng = np.random.default_rng(0)
    permuted = np.array([[0, 4, 0, 0], [4, 0, 0, 0], [0, 0, 4, 0], [0, 0, 0, 1.0]])
    grids = [(shape, np.diag([4.0, 4.0, 4.0, 1.0])), ((shape[0] - 2, shape[1] + 2, 9), permuted)]
    defacers = {"zero": 0.0, "bright": 130.0, "dim": None}  # the face: 0, 130 or halved
    subjects = []
    for k, (grid, affine) in enumerate(grids):
        original = rng.uniform(50, 100, grid).astype(np.float32)
        original[0] = 0  # background
        files = {"original": folder / f"s{k}_original.nii.gz"}
        nib.save(nib.Nifti1Image(original, affine), files["original"])
        face = (slice(None), slice(grid[1] // 2, None), slice(0, grid[2] // 2))
        for name, value in defacers.items():
            data = original.copy()
            data[face] = data[face] * 0.5 if value is None else value
            files[name] = folder / f"s{k}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(data, affine), files[name])
        subjects.append(files)
    pairs = [(files["original"], files[name]) for name in defacers for files in subjects]
    return [str(p[0]) for p in pairs], [str(p[1]) for p in pairs]


def test_load_pairs_stores_each_original_once_and_batches_as_before(tmp_path):
    originals, defaced = _write_training_set(tmp_path)
    config = reface_config()
    inputs, targets = old_load_pairs(originals, defaced, config)
    assert inputs.shape == (6, 1, 16, 16, 12)  # the second subject's RAS grid is 16 x 10 x 9
    full = load_pairs(originals, defaced, config)
    assert len(full) == 6 and full.shape == (16, 16, 12) and full.originals.shape[0] == 2
    assert full.original_index.tolist() == [0, 1, 0, 1, 0, 1]
    assert (full.gain >= 1).all() and len(set(full.gain.tolist())) > 2  # the scales differ
    window = tuple(slice(0, n) for n in full.shape)
    for i in range(6):
        assert torch.allclose(full.target_window(i, window), targets[i], rtol=0, atol=F16)
        assert torch.allclose(full.input_window(i, window), inputs[i], rtol=0, atol=2.0**-12)
    assert_batches_match_the_old_ones(full, inputs, targets, factor=2, patch=8)
    # each stage keeps what its batches read, and the same values
    one, two = load_pairs(originals, defaced, config, 1), load_pairs(originals, defaced, config, 2)
    assert one.inputs is None and one.originals is None and two.low_inputs is None
    assert torch.equal(one.low_inputs, full.low_inputs)
    assert torch.equal(one.low_targets, full.low_targets)
    assert torch.equal(two.inputs, full.inputs) and torch.equal(two.originals, full.originals)
    with pytest.raises(ValueError, match="stage 2 needs"):
        stage2_batches(one, 2)
    with pytest.raises(ValueError, match="stage 1 needs"):
        stage1_batches(two, 2)


@pytest.mark.parametrize("stage", [1, 2])
def test_loading_stays_under_the_memory_estimate(tmp_path, stage):
    originals, defaced = _write_training_set(tmp_path, shape=(40, 46, 36))
    config = reface_config()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pairs = load_pairs(originals, defaced, config, stage)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    stored = (pairs.low_targets, pairs.low_inputs, pairs.inputs, pairs.originals)
    kept = sum(t.nbytes for t in (*stored, pairs.regions, pairs.low_regions) if t is not None)
    estimate = training_memory_mb(stage, 6, 2, pairs.shape, 2, overhead_mb=0)
    volume = np.prod(pairs.shape) * 4
    assert kept <= peak <= estimate * 1e6  # tracemalloc sees the stored tensors
    assert estimate * 1e6 - kept == pytest.approx(LOAD_WORKING_VOLUMES * volume, rel=0.01)
    if stage == 2:  # two originals for six pairs, and the regions in bool (1 byte a voxel)
        full = sum(t.nbytes for t in (pairs.inputs, pairs.originals, pairs.regions))
        assert pairs.originals.shape[0] == 2 and full < 6 * 2 * volume / 2
    paper = [training_memory_mb(s, 720, 180, (224, 256, 256), 4) for s in (1, 2)]
    # stage 2 at paper scale: 31 GB of float16 volumes, and 10.6 GB of attack regions (bool)
    assert paper[0] < 16_000 and paper[1] < 0.21 * 210_000
    # what the workflow asks for, from the files' headers (the rule lists each original once)
    job = training_job_mb(sorted(set(originals)), defaced, config, stage)
    assert job == np.ceil(training_memory_mb(stage, 6, 2, pairs.shape, 2))


def test_a_pair_whose_images_do_not_overlay_is_named(tmp_path):
    originals, defaced = _write_training_set(tmp_path)
    image = nib.load(defaced[0])
    shifted = image.affine.copy()
    shifted[:3, 3] += 4.0  # one voxel along each axis: same grid, other place
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), shifted), defaced[0])
    with pytest.raises(
        ImageError, match="affine differs by up to 4 mm; a defacer that moves"
    ) as err:
        load_pairs(originals, defaced, reface_config(), 1)
    assert defaced[0] in str(err.value) and originals[0] in str(err.value)
    other = nib.load(defaced[1])  # the second original's pair: shape differs from the first
    nib.save(nib.Nifti1Image(np.asanyarray(other.dataobj)[:-1], other.affine), defaced[0])
    with pytest.raises(ImageError, match="not on the voxel grid"):
        load_pairs(originals, defaced, reface_config(), 1)


# -- a toy attack that must learn ----------------------------------------------------------

#: the intensity of the removed sphere in [-1, 1], which the toy attack must learn
FILL = 0.6


def sphere_pairs(n, shape=(8, 8, 8), radius=2.2, seed=0):
    """(inputs, targets) [n, 1, *shape]: a textured volume in [-0.6, 0.2] holding a sphere of
    intensity :data:`FILL` at a random place; the input has the sphere removed (-1, a 0 of the
    image)."""
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape)
    targets = rng.uniform(-0.6, 0.2, (n, 1, *shape)).astype(np.float32)
    inputs = targets.copy()
    for i in range(n):
        centre = rng.uniform(radius + 1, np.asarray(shape) - radius - 1)
        ball = sum((ijk[a] - centre[a]) ** 2 for a in range(3)) <= radius**2
        targets[i, 0][ball] = FILL
        inputs[i, 0][ball] = -1.0
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def _train_toy_stage(stage, pairs, attack, steps, path):
    config = {
        "network": {**TINY_UNET, "in_channels": (2 if stage == 1 else 3) + 1, "out_channels": 1},
        "schedule": {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "training": {
            "steps": steps,
            "lr": 5e-3,
            "weight_decay": 0.0,
            "grad_clip": 1.0,
            "ema_decay": 0.9,
            "checkpoint_every": steps,
            "log_every": steps,
            "seed": stage,
            "bf16": False,
        },
    }
    batches = (
        stage1_batches(pairs, 4, attack) if stage == 1 else stage2_batches(pairs, 4, 0, attack)
    )
    train(
        build_model=lambda cfg: build_unet(**cfg["network"]),
        loss_fn=diffusion_loss(DiffusionSchedule(**config["schedule"])),
        batches=batches,
        config=config,
        checkpoint_path=path,
    )
    return load_sampler(path, torch.device("cpu"))[0]


@pytest.mark.slow
def test_a_toy_attack_learns_to_fill_a_removed_sphere_and_keeps_the_known_voxels(tmp_path):
    inputs, targets = sphere_pairs(16)
    pairs = PairSet.from_volumes(inputs, targets, factor=2)
    attack = AttackTraining(mask_channel=True, region_weight=10.0)
    # 40 steps per stage: the fill's mean error falls to about 0.05 by 30 steps (0.56 for 0.6)
    trained = [_train_toy_stage(s, pairs, attack, 40, tmp_path / f"s{s}.pt") for s in (1, 2)]
    untrained = [tiny_net(3, seed=0), tiny_net(4, seed=1)]
    defaced, original = sphere_pairs(1, seed=99)
    keep = defaced > -1
    schedule = DiffusionSchedule()
    settings = SamplingSettings.from_config(
        dict(steps=10, eta=0.0, seed=0, paste_back=True, slab_batch=4)
    )

    def reface(nets):
        return sample_cascade(
            *nets,
            schedule,
            schedule,
            defaced,
            keep,
            2,
            settings,
            multiple=2,
            mask_channels=(True, True),
        )

    refaced = reface(trained)
    assert torch.equal(refaced[keep], defaced[keep])  # the known voxels, bit for bit
    assert abs(float(refaced[~keep].mean()) - FILL) < 0.15
    assert float((refaced[~keep] - FILL).abs().mean()) < 0.25
    # an untrained pair fills the sphere with something else (the test can fail)
    guess = reface(untrained)
    assert torch.equal(guess[keep], defaced[keep])
    assert abs(float(guess[~keep].mean()) - FILL) > 0.3
