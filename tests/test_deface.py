"""Finalising a container tool's output, with a fake tool output (no container runs here)."""

import json

import nibabel as nib
import numpy as np
import pytest
from helpers import deface_outputs, fake_pydeface

from defaceaudit.deface.run import DefaceError, finalize_container_deface


def test_pydeface_output_is_finalised_with_its_inverted_mask(prepared, tmp_path):
    removed = fake_pydeface(prepared, tmp_path)
    out = deface_outputs(tmp_path / "out")
    record = finalize_container_deface(
        "pydeface",
        prepared,
        tmp_path / "raw.nii.gz",
        out,
        image="docker://poldracklab/pydeface@sha256:" + "0" * 64,
        params={"cost": "mutualinfo"},
        benchmark=tmp_path / "bench.tsv",
        raw_removed=tmp_path / "keep.nii.gz",
    )
    assert np.array_equal(nib.load(out["removed"]).get_fdata() > 0, removed)
    sidecar = json.loads(out["sidecar"].read_text())
    assert sidecar["backend"] == "container" and sidecar["seconds"] == 12.5
    assert sidecar["image"].endswith("0" * 64)
    assert record["status"] == "success"
    assert out["png"].stat().st_size > 1000


def test_output_on_another_grid_or_identical_is_a_failure(prepared, tmp_path):
    img = nib.load(prepared["t1w"])
    nib.save(nib.Nifti1Image(img.get_fdata()[:-1], img.affine), tmp_path / "small.nii.gz")
    with pytest.raises(
        DefaceError, match=r"^mri_deface output .*small.nii.gz: output is not on the voxel grid"
    ):
        finalize_container_deface(
            "mri_deface", prepared, tmp_path / "small.nii.gz", deface_outputs(tmp_path), "x.sif", {}
        )
    with pytest.raises(DefaceError, match="identical to its input"):
        finalize_container_deface(
            "mri_deface", prepared, prepared["t1w"], deface_outputs(tmp_path), "x.sif", {}
        )
    assert not any(p.exists() for p in deface_outputs(tmp_path).values())


def test_fsl_deface_removed_region_holds_every_voxel_the_tool_zeroed(prepared, tmp_path):
    face = fake_pydeface(prepared, tmp_path)  # the face zeroed in raw.nii.gz
    img = nib.load(prepared["t1w"])
    # fsl_deface's -d mask (1 = removed) with interpolated edges: some zeroed voxels below 0.5
    mask = face.astype(np.float32)
    edge = np.argwhere(face)[::7]
    mask[tuple(edge.T)] = 0.3
    nib.save(nib.Nifti1Image(mask, img.affine), tmp_path / "defacing_mask.nii.gz")
    out = deface_outputs(tmp_path / "out")
    finalize_container_deface(
        "fsl_deface",
        prepared,
        tmp_path / "raw.nii.gz",
        out,
        image="docker://brainlife/fsl@sha256:" + "0" * 64,
        params={},
        raw_removed=tmp_path / "defacing_mask.nii.gz",
    )
    assert np.array_equal(nib.load(out["removed"]).get_fdata() > 0, face)
