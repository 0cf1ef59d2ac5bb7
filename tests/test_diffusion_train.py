"""The training loop and checkpoints on a tiny 3-D conv net, CPU, synthetic regression batches."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from defaceaudit.config import validate_config
from defaceaudit.devices import device_from_config
from defaceaudit.errors import InputError
from defaceaudit.reface import checkpoint as ckpt_mod
from defaceaudit.reface.checkpoint import (
    REQUIRED_KEYS,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from defaceaudit.reface.train import (
    EMA,
    default_resume_path,
    train,
    training_settings,
)

LOGGER = "defaceaudit.reface.train"


def make_config(steps=12, **training):
    return {
        "network": {"channels": 4, "dropout": 0.1},
        "schedule": {"kind": "linear", "timesteps": 1000},
        "training": {
            "steps": steps,
            "lr": 3e-3,
            "weight_decay": 0.01,
            "grad_clip": 1.0,
            "ema_decay": 0.9,
            "checkpoint_every": 4,
            "log_every": 4,
            "seed": 7,
            "bf16": False,
            "batch_size": 2,  # the caller's batches use it
            **training,
        },
    }


def build_model(config):
    """[B, 1, 8, 8, 8] -> [B, 1, 8, 8, 8]; dropout exercises the global torch RNG."""
    c = config["network"]["channels"]
    return nn.Sequential(
        nn.Conv3d(1, c, 3, padding=1),
        nn.SiLU(),
        nn.Dropout(config["network"]["dropout"]),
        nn.Conv3d(c, 1, 3, padding=1),
    )


def loss_fn(model, batch, generator):
    """Denoising regression: noise from ``generator``, target a fixed function of the input."""
    x, y = batch
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return nn.functional.mse_loss(model(x + 0.1 * noise), y)


def random_batches(rng):
    """Endless batches drawn lazily from ``rng``: (x, y) each [2, 1, 8, 8, 8] float32."""
    while True:
        x = torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8), dtype=np.float32))
        yield x, 0.5 * x + 0.25


class Killed(Exception):
    """Stands in for a preemption."""


def killed_after(n_batches):
    def batches(rng):
        for i, batch in enumerate(random_batches(rng)):
            if i == n_batches:
                raise Killed
            yield batch

    return batches


def run(tmp_path, config, name="model.pt", batches=random_batches, **kwargs):
    return train(
        build_model=build_model,
        loss_fn=loss_fn,
        batches=batches,
        config=config,
        checkpoint_path=tmp_path / name,
        **kwargs,
    )


def test_loss_goes_down_on_one_fixed_batch(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    fixed = next(random_batches(np.random.default_rng(0)))

    def one_batch(rng):
        while True:
            yield fixed

    config = make_config(steps=50, log_every=10, checkpoint_every=100)
    config["network"]["dropout"] = 0.0
    summary = run(tmp_path, config, batches=one_batch)
    losses = [r.args[2] for r in caplog.records if r.msg.startswith("step ")]
    assert len(losses) == 5
    assert summary["steps"] == 50 and summary["start_step"] == 0
    assert summary["final_loss"] == losses[-1]
    assert losses[-1] < 0.2 * losses[0]
    assert "steps/s" in caplog.text and " left" in caplog.text


def test_resume_after_kill_is_exact(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    config = make_config(steps=12, checkpoint_every=4)
    straight = run(tmp_path / "a", config)
    assert straight["steps"] == 12

    # killed while drawing the 11th batch: the resume file holds step 8, no output exists
    with pytest.raises(Killed):
        run(tmp_path / "b", config, batches=killed_after(10))
    output = tmp_path / "b" / "model.pt"
    resume = default_resume_path(output)
    assert resume.name == "model.pt.resume.pt"
    assert not output.exists()
    assert load_checkpoint(resume)["step"] == 8

    resumed = run(tmp_path / "b", config)
    assert f"resuming from {resume} at step 8" in caplog.text
    assert resumed["start_step"] == 8 and resumed["steps"] == 12
    assert not resume.exists()  # removed once the final checkpoint is written

    a = load_checkpoint(tmp_path / "a" / "model.pt")
    b = load_checkpoint(output)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"]["shadow"][key], b["ema"]["shadow"][key]), key
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == 12
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    for index in state_a:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[index][key], state_b[index][key])
    assert a["extra"]["data_rng"] == b["extra"]["data_rng"]


def _other_state(kind):
    if kind == "data_rng":
        return np.random.default_rng(99).bit_generator.state
    return torch.Generator().manual_seed(99).get_state()


@pytest.mark.parametrize("kind", ["data_rng", "loss_rng", "torch_cpu"])
def test_resume_needs_each_saved_rng_state(tmp_path, kind):
    """Guard for the test above: replace one saved RNG state and the resumed run differs."""
    config = make_config(steps=8, checkpoint_every=4)
    run(tmp_path / "a", config)
    with pytest.raises(Killed):
        run(tmp_path / "b", config, batches=killed_after(6))
    resume = default_resume_path(tmp_path / "b" / "model.pt")
    saved = torch.load(resume, weights_only=True)
    section = saved["rng"] if kind == "torch_cpu" else saved["extra"]
    section[kind] = _other_state(kind)
    torch.save(saved, resume)
    run(tmp_path / "b", config)
    a = load_checkpoint(tmp_path / "a" / "model.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "model.pt")["model"]
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_holds_every_key_and_the_config(tmp_path):
    config = make_config(steps=4)
    run(tmp_path, config)
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert set(REQUIRED_KEYS) <= set(checkpoint)
    assert checkpoint["step"] == 4
    expected = make_config(steps=4)
    expected["training"]["ema_warmup"] = True  # the schema's default, in the resolved config
    assert checkpoint["config"] == expected
    assert checkpoint["torch_version"] == torch.__version__
    assert isinstance(checkpoint["defaceaudit_version"], str)
    assert isinstance(checkpoint["rng"]["torch_cpu"], torch.Tensor)
    assert {"data_rng", "loss_rng", "last_loss"} <= set(checkpoint["extra"])
    assert checkpoint["optimizer"]["state"]  # AdamW moments saved
    # sampling rebuilds the network from the checkpoint's own config, with EMA weights
    model, saved_config = model_from_checkpoint(tmp_path / "model.pt", build_model)
    assert saved_config == expected and not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["ema"]["shadow"][key])
    # no temporaries left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_corrupt_or_incomplete_checkpoint_names_the_file(tmp_path):
    run(tmp_path, make_config(steps=2))
    path = tmp_path / "model.pt"
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt.*unreadable"):
        load_checkpoint(truncated)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(junk)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {}, "step": 3}, partial)
    with pytest.raises(CheckpointError, match=r"partial\.pt lacks keys: format, ema, optimizer"):
        load_checkpoint(partial)
    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    # a damaged resume file stops training rather than silently starting again
    resume = default_resume_path(tmp_path / "again.pt")
    resume.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=r"again\.pt\.resume\.pt"):
        run(tmp_path, make_config(steps=2), name="again.pt")


def test_save_is_atomic(tmp_path, monkeypatch):
    config = make_config()
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters())
    ema = EMA(model, decay=0.9, warmup=True)
    path = tmp_path / "c.pt"
    save_checkpoint(path, model=model, ema=ema, optimizer=optimizer, step=1, config=config)
    before = path.read_bytes()

    def dies_midway(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, ema=ema, optimizer=optimizer, step=2, config=config)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_resume_file_from_another_config_is_set_aside_and_training_starts_afresh(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with pytest.raises(Killed):
        run(tmp_path, make_config(steps=12), batches=killed_after(5))
    resume = tmp_path / "model.pt.resume.pt"
    saved = resume.read_bytes()
    other = make_config(steps=12)
    other["network"]["channels"] = 8
    result = run(tmp_path, other)
    assert "written for another model (network.channels: 4 -> 8)" in caplog.text
    assert "resuming from" not in caplog.text and result["start_step"] == 0
    assert (tmp_path / "model.pt.resume.pt.stale").read_bytes() == saved  # kept, out of the way
    (tmp_path / "fresh").mkdir()
    run(tmp_path / "fresh", other)  # the same as training it where nothing was left
    afresh, fresh = (load_checkpoint(d / "model.pt") for d in (tmp_path, tmp_path / "fresh"))
    assert afresh["step"] == fresh["step"] == 12
    for key, value in fresh["model"].items():
        assert torch.equal(afresh["model"][key], value), key


def test_changed_training_settings_apply_on_resume(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with pytest.raises(Killed):
        run(tmp_path, make_config(steps=12), batches=killed_after(5))  # resume file at step 4
    changed = make_config(steps=12, lr=1e-4, weight_decay=0.5, ema_decay=0.5)
    run(tmp_path, changed)
    assert "resuming from" in caplog.text and "training.lr: 0.003 -> 0.0001" in caplog.text
    final = load_checkpoint(tmp_path / "model.pt")
    for group in final["optimizer"]["param_groups"]:
        assert group["lr"] == 1e-4 and group["weight_decay"] == 0.5
    assert final["ema"]["decay"] == 0.5


def test_another_version_resumes_and_is_recorded(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with pytest.raises(Killed):
        run(
            tmp_path,
            make_config(steps=12) | {"defaceaudit_version": "0.1"},
            batches=killed_after(5),
        )
    run(tmp_path, make_config(steps=12) | {"defaceaudit_version": "0.2"})
    assert "resuming from" in caplog.text and "defaceaudit_version: '0.1' -> '0.2'" in caplog.text
    assert load_checkpoint(tmp_path / "model.pt")["config"]["defaceaudit_version"] == "0.2"


def test_ema_matches_hand_computation():
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9, warmup=True)
    plain = EMA(model, decay=0.9, warmup=False)
    expected_warm, expected_plain = 1.0, 1.0
    for n, w in enumerate([2.0, -1.0, 4.0, 0.5]):
        with torch.no_grad():
            model.weight.fill_(w)
        d = min(0.9, (1 + n) / (10 + n))  # 0.1, 0.1818..., 0.25, 0.3077...
        expected_warm = d * expected_warm + (1 - d) * w
        expected_plain = 0.9 * expected_plain + 0.1 * w
        ema.update(model)
        plain.update(model)
        assert ema.shadow.weight.item() == pytest.approx(expected_warm, rel=1e-12)
        assert plain.shadow.weight.item() == pytest.approx(expected_plain, rel=1e-12)
    assert ema.num_updates == 4
    assert not ema.module.training and not ema.shadow.weight.requires_grad
    # state round trip and copy_to
    restored = EMA(model, decay=0.9, warmup=True)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 4
    restored.copy_to(model)
    assert model.weight.item() == pytest.approx(expected_warm, rel=1e-12)


def test_device_from_config(monkeypatch):
    assert device_from_config("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "", 0):
        with pytest.raises(InputError, match="device must be"):
            device_from_config(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_from_config("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available"):
        device_from_config("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_from_config("auto") == torch.device("cuda")
    assert device_from_config("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match="has 2 CUDA device"):
        device_from_config("cuda:2")


def test_training_settings_are_the_config_schemas(tmp_path):
    # a key left out takes the schema's default; a bad value fails in one line naming the key
    # (the stage's, from config["stage"]), as in a config file
    schema = validate_config({})["reface"]["stage1"]["training"]
    config = make_config()
    del config["training"]["grad_clip"]
    assert training_settings(config)["grad_clip"] == schema["grad_clip"]
    assert training_settings(make_config())["ema_warmup"] is schema["ema_warmup"] is True
    steps = r"^config reface\.stage1\.training\.steps: 0 is less than the minimum of 1$"
    with pytest.raises(InputError, match=steps):
        training_settings(make_config(steps=0))
    decay = r"^config reface\.stage2\.training\.ema_decay: 1\.0 is greater than or equal to the"
    with pytest.raises(InputError, match=decay):
        training_settings({**make_config(ema_decay=1.0), "stage": 2})
    with pytest.raises(InputError, match=r"^config reface\.stage1\.training: Additional prop"):
        training_settings(make_config(ema=0.9))
    # gradient clipping off: 0 or None
    for off in (0, None):
        assert training_settings(make_config(grad_clip=off))["grad_clip"] == off
    assert run(tmp_path, make_config(steps=2, grad_clip=None))["steps"] == 2


def test_bf16_autocast_only_on_gpus_with_bf16_tensor_cores(monkeypatch):
    from defaceaudit.devices import bf16_supported

    assert not bf16_supported(torch.device("cpu"))
    for capability, expected in (((7, 0), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert bf16_supported(torch.device("cuda:0")) is expected, capability


def test_a_bf16_request_the_device_cannot_honour_runs_fp32_and_says_so(monkeypatch, caplog):
    import contextlib

    from defaceaudit.devices import bf16_autocast, precision_name, use_bf16

    caplog.set_level(logging.INFO, logger="defaceaudit.devices")
    assert use_bf16(True, torch.device("cpu")) is False
    assert caplog.text == ""  # the CPU ignores bf16, as the config documents: nothing to say
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 0))
    assert use_bf16(True, torch.device("cuda:0")) is False
    assert "bf16 requested but cuda:0 has no bf16 tensor cores" in caplog.text
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    assert use_bf16(True, torch.device("cuda:0")) is True
    assert use_bf16(False, torch.device("cuda:0")) is False
    assert (precision_name(True), precision_name(False)) == ("bf16 autocast", "fp32")
    assert isinstance(bf16_autocast(False), contextlib.nullcontext)
    on = bf16_autocast(True)
    assert isinstance(on, torch.autocast)
    assert (on.device, on.fast_dtype) == ("cuda", torch.bfloat16)


def ema_history(monkeypatch):
    """EMA weights after every update of the runs that follow: ``[state dict]``, step order."""
    history = []
    real = EMA.update

    def update(self, model):
        real(self, model)
        history.append({k: v.detach().clone() for k, v in self.shadow.state_dict().items()})

    monkeypatch.setattr(EMA, "update", update)
    return history


def test_snapshots_are_the_ema_at_their_steps_and_survive_a_resume(tmp_path, monkeypatch):
    config = make_config(steps=12, checkpoint_every=4)
    history = ema_history(monkeypatch)
    run(tmp_path / "a", config, snapshot_steps=[2, 6, 10])
    straight = load_checkpoint(tmp_path / "a" / "model.pt")["extra"]["ema_snapshots"]
    assert sorted(straight) == ["10", "2", "6"]
    for step, state in straight.items():
        for key, value in history[int(step) - 1].items():
            assert torch.equal(state[key], value), (step, key)
    assert not torch.equal(straight["2"]["0.weight"], straight["10"]["0.weight"])

    # killed while drawing the 11th batch: the resume file at step 8 holds the snapshots so far
    with pytest.raises(Killed):
        run(tmp_path / "b", config, batches=killed_after(10), snapshot_steps=[2, 6, 10])
    resume = default_resume_path(tmp_path / "b" / "model.pt")
    assert sorted(load_checkpoint(resume)["extra"]["ema_snapshots"]) == ["2", "6"]
    run(tmp_path / "b", config, snapshot_steps=[2, 6, 10])
    resumed = load_checkpoint(tmp_path / "b" / "model.pt")["extra"]["ema_snapshots"]
    assert sorted(resumed) == sorted(straight)
    for step in straight:
        for key in straight[step]:
            assert torch.equal(resumed[step][key], straight[step][key]), (step, key)
    # no snapshots asked: none kept
    run(tmp_path / "c", make_config(steps=4))
    assert load_checkpoint(tmp_path / "c" / "model.pt")["extra"]["ema_snapshots"] == {}
