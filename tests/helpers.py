"""Helpers shared by the tests: running the workflow in a temporary copy of it, and tiny
networks. A plain module (``from helpers import ...``); the fixtures are in conftest.py, the
synthetic volumes in synthetic.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from defaceaudit import paths
from defaceaudit.imaging.register import resample

if TYPE_CHECKING:  # torch is imported by the network helpers only, when called
    import torch

REPO = Path(__file__).resolve().parents[1]
#: the venv's bin folder (snakemake, the defacers' Python stand-ins)
BIN = Path(sys.executable).parent
#: refacing settings of the tiny real runs: the demo's networks, few steps (plumbing only)
FAST_REFACE = {
    "stage1": {"training": {"steps": 6, "checkpoint_every": 3, "log_every": 3}},
    "stage2": {"training": {"steps": 6, "checkpoint_every": 3, "log_every": 3}},
    "sampling": {"steps": 2},
}
#: the tiny demo run: 2 train, 1 internal-test and 1 external-test subject at 4 mm. Two training
#: subjects cannot fit the radiodensity mixed model (test_workflow_radiodensity.py covers it).
TINY_DEMO_CONFIG = {
    "demo": {"n_train": 2, "n_internal_test": 1, "n_external_test": 1, "voxel_size_mm": 4.0},
    "reface": FAST_REFACE,
    "radiodensity": {"enabled": False},
}
#: keyword arguments of ``defaceaudit.reface.unet.build_unet`` for a tiny UNet (two levels of 8
#: channels, no attention): a forward pass on 16^3 takes milliseconds on the CPU
TINY_UNET = {
    "channels": [8, 8],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 4,
}


# -- the workflow in a temporary copy ----------------------------------------------------------


def copy_workflow(dest: Path) -> Path:
    """A copy of this checkout's workflow in ``dest`` with an empty results folder; returns
    ``dest``."""
    return paths.copy_workflow(REPO, dest)


def copy_run(src: Path, dest: Path) -> Path:
    """A copy of a finished run (workflow, results/ and Snakemake's .snakemake/ records) that
    Snakemake sees as up to date: file modification times are kept, as Snakemake compares them
    to decide what to rerun. Returns ``dest``."""
    shutil.copytree(src, dest, symlinks=True)  # copy2: contents, modes and mtimes
    return dest


def run_snakemake(workdir: Path, *args: str, config: dict | None = None, timeout=900):
    """Run the venv's snakemake in ``workdir`` (a copy of the workflow); returns the process."""
    cmd = [str(BIN / "snakemake"), "--directory", str(workdir), *args]
    if config is not None:
        path = workdir / "test_config.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


def job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry-run."""
    table = stdout.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@dataclass(frozen=True)
class TinyRun:
    """A finished tiny demo run. Treat ``path`` as read-only: a test that runs or changes
    anything works on its own ``copy_run`` of it, so tests do not see each other's changes."""

    path: Path
    config: dict
    process: subprocess.CompletedProcess


# -- synthetic heads: coordinates, a moved copy, a defacing's outputs ---------------------------


def world(img):
    """World coordinates (RAS mm) of every voxel centre, [3, X, Y, Z]."""
    ijk = np.indices(img.shape[:3]).reshape(3, -1)
    xyz = img.affine[:3, :3] @ ijk + img.affine[:3, 3:]
    return xyz.reshape((3, *img.shape[:3]))


def subject_of(img, brain, *, angles=(4.0, -3.0, 5.0), shift=(5.0, -6.0, 3.0)):
    """A rigidly moved copy of a synthetic head; returns (image, brain, subject->template 4x4)."""
    t = np.eye(4)
    t[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    t[:3, 3] = shift
    data = resample(img, img, t)  # subject(q) = template(t @ q)
    moved_brain = resample((brain.astype(np.float32), img.affine), img, t) > 0.5
    return nib.Nifti1Image(data, img.affine), moved_brain, t


def expected_region(subject, t):
    """The face box (template y > 80, z < 0) in subject voxels, given subject->template t."""
    xyz = world(subject).reshape(3, -1)
    tx = t[:3, :3] @ xyz + t[:3, 3:]
    return ((tx[1] > 80) & (tx[2] < 0)).reshape(subject.shape)


def dice(a, b):
    """Dice overlap of two boolean arrays."""
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def deface_outputs(folder: Path) -> dict[str, Path]:
    """The output paths of one defacing job in ``folder`` (t1w, removed, sidecar, qc, png)."""
    names = {"t1w": "d.nii.gz", "removed": "r.nii.gz", "sidecar": "d.json", "qc": "q.json"}
    return {**{k: folder / v for k, v in names.items()}, "png": folder / "q.png"}


def fake_pydeface(prepared, folder):
    """A fake pydeface output in ``folder`` for the prepared subject ``prepared`` (the fixture of
    conftest.py): raw.nii.gz with the face (y > 60 mm, z < 0 mm) zeroed, pydeface's kept mask
    keep.nii.gz (1 = keep) and a Snakemake benchmark file; returns the removed voxels (bool)."""
    img = nib.load(prepared["t1w"])
    xyz = nib.affines.apply_affine(img.affine, np.indices(img.shape).reshape(3, -1).T)
    face = ((xyz[:, 1] > 60) & (xyz[:, 2] < 0)).reshape(img.shape)
    data = img.get_fdata(dtype=np.float32)
    nib.save(nib.Nifti1Image(np.where(face, 0, data), img.affine), folder / "raw.nii.gz")
    nib.save(nib.Nifti1Image((~face).astype(np.uint8), img.affine), folder / "keep.nii.gz")
    (folder / "bench.tsv").write_text("s\th:m:s\n12.5\t0:00:12\n")
    return face & (data != 0)


# -- networks with random weights --------------------------------------------------------------


def _randomise(params: Sequence[torch.nn.Parameter], generator: torch.Generator, std: float):
    import torch

    with torch.no_grad():
        for p in params:
            values = torch.randn(p.shape, generator=generator, dtype=torch.float64) * std
            p.copy_(values.to(p))


def randomise_output_layer(model, generator: torch.Generator, std: float = 0.1):
    """Draw the output convolution's weight and bias of a MONAI ``DiffusionModelUNet`` from
    ``N(0, std^2)``.

    MONAI zero-initialises that convolution, so an untrained network returns 0 everywhere and a
    test comparing two code paths on it passes trivially. ``generator`` is a CPU generator.
    Returns ``model`` (changed in place)."""
    conv = model.out[-1].conv
    _randomise([conv.weight, conv.bias], generator, std)
    return model


def randomise_zero_initialised(
    model: torch.nn.Module, generator: torch.Generator, std: float = 0.1
) -> torch.nn.Module:
    """Redraw from ``N(0, std^2)`` every convolution weight that is all zero.

    Besides the output layer, MONAI zero-initialises the second convolution of each residual
    block, the only path through which the timestep embedding reaches the output; after this the
    output depends on ``t`` as well. Returns ``model`` (changed in place)."""
    import torch

    params = []
    for module in model.modules():
        is_conv = isinstance(module, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d)
        if is_conv and not bool(torch.any(module.weight != 0)):
            params.append(module.weight)
            if module.bias is not None:
                params.append(module.bias)
    _randomise(params, generator, std)
    return model
