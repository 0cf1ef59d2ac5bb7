"""The config schema is the only validator and the only source of defaults: what the code would
refuse at run time the schema refuses first, in one line naming the key, and the settings the
library takes from Python callers are the schema's, with its defaults."""

from dataclasses import asdict

import pytest

from defaceaudit.config import section_settings, validate_config
from defaceaudit.errors import InputError
from defaceaudit.radiodensity import train as radiodensity_train
from defaceaudit.reface import train as reface_train
from defaceaudit.reface.cascade import AttackTraining, SamplingSettings


def nested(path: str, value) -> dict:
    """``{"a": {"b": value}}`` for ``path`` "a.b"."""
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


def one_line_error(config: dict) -> str:
    with pytest.raises(InputError) as err:
        validate_config(config)
    message = str(err.value)
    assert "\n" not in message
    return message


# key, a value the code refuses at run time (or one of the wrong type), what the schema says
REFUSED = [
    # the EMA needs a decay below 1 (defaceaudit.reface.train.EMA)
    ("reface.stage1.training.ema_decay", 1, "1 is greater than or equal to the maximum of 1"),
    ("reface.stage2.training.ema_decay", 1.0, "1.0 is greater than or equal to the maximum of 1"),
    ("reface.stage1.training.ema_decay", -0.1, "-0.1 is less than the minimum of 0"),
    ("reface.stage2.training.grad_clip", -1, "-1 is less than the minimum of 0"),
    ("reface.stage1.training.grad_clip", "off", "'off' is not of type 'number', 'null'"),
    ("reface.stage1.training.ema_warmup", "yes", "'yes' is not of type 'boolean'"),
    ("radiodensity.training.bf16", "no", "'no' is not of type 'boolean'"),
]


@pytest.mark.parametrize(("key", "value", "reason"), REFUSED)
def test_the_schema_refuses_what_training_would_in_one_line_naming_the_key(key, value, reason):
    assert one_line_error(nested(key, value)) == f"config {key}: {reason}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("reface.stage1.training.grad_clip", 0),  # off
        ("reface.stage2.training.grad_clip", None),  # off
        ("reface.stage1.training.grad_clip", 0.5),
        ("reface.stage1.training.ema_decay", 0.9999),
        ("reface.stage1.training.ema_decay", 0),
        ("reface.stage2.training.ema_warmup", False),
        ("radiodensity.training.bf16", False),
    ],
)
def test_the_schema_accepts_what_training_takes(key, value):
    config = validate_config(nested(key, value))
    section = config
    for part in key.split("."):
        section = section[part]
    assert section == value


def test_the_schema_has_one_default_for_each_training_setting():
    config = validate_config({})
    for stage in ("stage1", "stage2"):
        training = config["reface"][stage]["training"]
        assert training["ema_warmup"] is True and training["grad_clip"] == 1.0
        assert 0 <= training["ema_decay"] < 1
    assert config["radiodensity"]["training"]["bf16"] is True


def test_an_ema_decay_of_one_is_refused_by_the_schema_and_by_the_ema_alike():
    import torch

    assert "ema_decay: 1 is greater than or equal" in one_line_error(
        nested("reface.stage1.training.ema_decay", 1)
    )
    with pytest.raises(ValueError, match=r"EMA decay must be in \[0, 1\), got 1"):
        reface_train.EMA(torch.nn.Linear(1, 1), decay=1, warmup=True)


def test_section_settings_fill_the_schemas_defaults_and_leave_the_input_alone():
    schema = validate_config({})["reface"]["sampling"]
    given = {"steps": 7}
    assert section_settings("reface.sampling", given) == {**schema, "steps": 7}
    assert given == {"steps": 7}
    with pytest.raises(InputError, match=r"^config reface\.sampling: Additional properties"):
        section_settings("reface.sampling", {"stepz": 7})


def test_python_callers_get_the_schemas_defaults_and_its_messages():
    config = validate_config({})
    # the refacing training loop: the stage's training section
    assert (
        reface_train.training_settings({"training": {}}) == config["reface"]["stage1"]["training"]
    )
    with pytest.raises(InputError) as err:
        reface_train.training_settings({"stage": 2, "training": {"ema_decay": 1}})
    assert str(err.value) == one_line_error(nested("reface.stage2.training.ema_decay", 1))
    # the radiodensity networks: bf16 (and every other key) defaults as in the schema
    settings = radiodensity_train.training_settings({})
    radiodensity = config["radiodensity"]
    assert settings == {**radiodensity["training"], "device": radiodensity["device"]}
    assert settings["bf16"] is True
    with pytest.raises(InputError) as err:
        radiodensity_train.training_settings({"bf16": "no"})
    assert str(err.value) == one_line_error(nested("radiodensity.training.bf16", "no"))
    # sampling and the attack
    assert asdict(SamplingSettings.from_config({})) == config["reface"]["sampling"]
    assert asdict(AttackTraining.from_config({})) == config["reface"]["attack"]


# keys that are valid one by one but not together: refused when the run is planned, before any
# job starts, in one line naming the key (defaceaudit.reface.sizing.check_reface_config)
CROSS_KEY = [
    (
        {"stage1": {"network": {"channels": [8, 16], "attention_levels": [False] * 3}}},
        "config reface.stage1.network.attention_levels: 3 entries",
    ),
    (
        {"stage2": {"network": {"channels": [6, 12], "attention_levels": [False, False]}}},
        "config reface.stage2.network.channels: [6, 12] must all be divisible by",
    ),
    (
        {"stage1": {"network": {"attention_levels": [False, True, False], "num_head_channels": 5}}},
        "config reface.stage1.network.num_head_channels: 5 must divide",
    ),
    (
        {"schedule": {"beta_start": 0.05, "beta_end": 0.02}},
        "config reface.schedule.beta_start: 0.05 is above reface.schedule.beta_end = 0.02",
    ),
    (
        {"stage2": {"network": {"channels": [8] * 5, "attention_levels": [False] * 5}}},
        "config reface.stage2.network.channels: 5 levels need sizes divisible by 16",
    ),
]


@pytest.mark.parametrize(("reface", "message"), CROSS_KEY)
def test_keys_that_only_fit_together_are_refused_before_any_job(reface, message):
    from defaceaudit.reface.sizing import check_reface_config
    from defaceaudit.workflow.plan import plan_run

    config = validate_config({"reface": reface})  # each key alone is valid
    with pytest.raises(InputError) as err:
        check_reface_config(config["reface"])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="^config reface"):
        plan_run(config)  # the workflow, check-inputs and targets all plan with it


def test_the_default_refacing_networks_fit_together():
    from defaceaudit.reface.sizing import check_reface_config

    check_reface_config(validate_config({})["reface"])


@pytest.mark.parametrize("overlay", ["config_paper.yaml", "config_attack.yaml"])
def test_the_shipped_config_overlays_are_valid_on_top_of_the_demo_config(overlay):
    """Each overlay at the repository's root, layered on config.yaml as the docs tell users to
    run it, passes the schema and the cross-key refacing checks."""
    from pathlib import Path

    from defaceaudit.config import load_config
    from defaceaudit.reface.sizing import check_reface_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "config.yaml", root / overlay)
    check_reface_config(config["reface"])
    assert config["reface"]["stage1"]["training"]["steps"] > 1500
