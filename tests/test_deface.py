"""Finalising a container tool's output, with a fake tool output (no container runs here)."""

import json

import nibabel as nib
import numpy as np
import pytest
from synthetic import synthetic_head

from defaceaudit.deface.run import DefaceError, finalize_container_deface
from defaceaudit.prepare.subject import prepare_subject


@pytest.fixture
def prepared(tmp_path):
    img, brain = synthetic_head()
    nib.save(img, tmp_path / "in.nii.gz")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), tmp_path / "mask.nii.gz")
    files = {k: tmp_path / f"{k}.nii.gz" for k in ("t1w", "head_mask", "brain_mask")}
    prepare_subject(
        tmp_path / "in.nii.gz", {**files, "summary": tmp_path / "s.json"}, tmp_path / "mask.nii.gz"
    )
    return files


def outputs(folder):
    names = {"t1w": "d.nii.gz", "removed": "r.nii.gz", "sidecar": "d.json", "qc": "q.json"}
    return {**{k: folder / v for k, v in names.items()}, "png": folder / "q.png"}


def fake_pydeface(prepared, folder):
    """The face (y > 60 mm, z < 0 mm) zeroed, and pydeface's kept mask (1 = keep)."""
    img = nib.load(prepared["t1w"])
    xyz = nib.affines.apply_affine(img.affine, np.indices(img.shape).reshape(3, -1).T)
    face = ((xyz[:, 1] > 60) & (xyz[:, 2] < 0)).reshape(img.shape)
    data = img.get_fdata(dtype=np.float32)
    nib.save(nib.Nifti1Image(np.where(face, 0, data), img.affine), folder / "raw.nii.gz")
    nib.save(nib.Nifti1Image((~face).astype(np.uint8), img.affine), folder / "keep.nii.gz")
    (folder / "bench.tsv").write_text("s\th:m:s\n12.5\t0:00:12\n")
    return face & (data != 0)


def test_pydeface_output_is_finalised_with_its_inverted_mask(prepared, tmp_path):
    removed = fake_pydeface(prepared, tmp_path)
    out = outputs(tmp_path / "out")
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
            "mri_deface", prepared, tmp_path / "small.nii.gz", outputs(tmp_path), "x.sif", {}
        )
    with pytest.raises(DefaceError, match="identical to its input"):
        finalize_container_deface(
            "mri_deface", prepared, prepared["t1w"], outputs(tmp_path), "x.sif", {}
        )
    assert not any(p.exists() for p in outputs(tmp_path).values())


def test_fsl_deface_removed_region_holds_every_voxel_the_tool_zeroed(prepared, tmp_path):
    face = fake_pydeface(prepared, tmp_path)  # the face zeroed in raw.nii.gz
    img = nib.load(prepared["t1w"])
    # fsl_deface's -d mask (1 = removed) with interpolated edges: some zeroed voxels below 0.5
    mask = face.astype(np.float32)
    edge = np.argwhere(face)[::7]
    mask[tuple(edge.T)] = 0.3
    nib.save(nib.Nifti1Image(mask, img.affine), tmp_path / "defacing_mask.nii.gz")
    out = outputs(tmp_path / "out")
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
