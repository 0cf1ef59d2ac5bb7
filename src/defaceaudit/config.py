"""Load a config file and validate it against the packaged JSON schema, which fills defaults."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

import yaml

from defaceaudit.errors import InputError

SCHEMA = files("defaceaudit") / "schemas" / "config.schema.yaml"


def schema_path() -> str:
    """Absolute path of the config schema (Snakemake's ``validate`` takes a path)."""
    return str(SCHEMA)


def validate_config(config: dict) -> dict:
    """Validate ``config`` in place, filling defaults (Snakemake's own validator); returns it."""
    from snakemake.utils import validate

    try:
        validate(config, schema_path(), set_default=True)
    except Exception as err:  # WorkflowError with the jsonschema message over several lines
        cause = err.__cause__ or err.__context__
        key = getattr(cause, "json_path", "$").removeprefix("$").removeprefix(".")
        message = getattr(cause, "message", None)
        if message is None:
            reason = [line for line in str(err).splitlines() if line.startswith("ValidationError")]
            message = (reason or [str(err)])[0]
        raise InputError(f"config{' ' + key if key else ''}: {message}") from err
    return config


def section_settings(path: str, values: Mapping) -> dict:
    """``values`` validated as the config section at the dotted ``path`` (e.g.
    ``"reface.stage1.training"``) and returned as a new dict, each key it lacks filled with the
    schema's default.

    The settings a library function takes from a Python caller go through the same schema, with
    the same one-line :class:`InputError` naming the key (``config reface.stage1.training.
    ema_decay: ...``), as a config file: the schema is the only validator and the only source
    of defaults. Raises InputError.
    """
    keys = path.split(".")
    config: dict = copy.deepcopy(dict(values))
    for key in reversed(keys):
        config = {key: config}
    validate_config(config)
    for key in keys:
        config = config[key]
    return config


def load_config(*paths: str | Path) -> dict:
    """Read YAML config files, each on top of the ones before (as Snakemake layers
    ``configfile:`` and ``--configfile``: mappings merged key by key, lists and values replaced),
    and validate the result (InputError naming the files on failure)."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in map(Path, paths):
        try:
            update_config(config, yaml.safe_load(path.read_text()) or {})
        except OSError as err:
            raise InputError(f"config {path}: cannot read ({type(err).__name__})") from err
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or type(err).__name__
            raise InputError(f"config {path}: not valid YAML{where} ({problem})") from err
    try:
        return validate_config(config)
    except InputError as err:
        raise InputError(f"{' + '.join(map(str, paths))}: {err}") from err


def canonical(value):
    """``value`` with every mapping's keys sorted, recursively (lists keep their order).

    Snakemake decides that a job's params changed by comparing their printed form, which keeps
    a dict's key order: the same settings written in another order (or with a default spelled
    out in a config file) would rerun the job. Rules pass config sections through this so that
    only a changed value reruns them.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    return value
