"""Provenance of defaced images (sidecars, dataset_description.json), the mideface licence
check, and the dry-run of the mideface / afni_refacer2 container scenario."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import REPO, deface_outputs, fake_pydeface, run_snakemake

from defaceaudit import paths
from defaceaudit.config import validate_config
from defaceaudit.deface.provenance import (
    dataset_description,
    describe_defaced_dataset,
    image_digest,
    refuse_overwrite,
    sidecar,
)
from defaceaudit.deface.run import deface_native, finalize_container_deface
from defaceaudit.errors import DefaceAuditError, InputError
from defaceaudit.workflow.deface_jobs import container_finalize_inputs, container_params
from defaceaudit.workflow.deface_plan import defacer_plan, freesurfer_license, license_bind

DIGEST = "sha256:" + "ab" * 32
SCENARIO = REPO / "tests" / "configs" / "mideface_afni.yaml"


def deface_section(**changes):
    """The config's deface section, the schema's defaults filled, with ``changes``."""
    return validate_config({"deface": dict(changes)})["deface"]


def test_sidecar_of_a_native_tool_names_its_package_and_call():
    record = sidecar(
        "quickshear",
        "native",
        {"buffer_voxels": 10},
        image=None,
        command=None,
        seconds=1.234,
        source="/data/t1w.nii.gz",
    )
    assert record["tool"] == "quickshear" and record["backend"] == "native"
    assert record["package"] == {"name": "quickshear", "version": "1.2.0"}
    assert record["version"] == "1.2.0" and record["image_digest"] is None
    assert record["command"].startswith("quickshear.quickshear(")
    assert record["parameters"] == {"buffer_voxels": 10} and record["seconds"] == 1.23
    own = sidecar("facemask", "native", {}, image=None, command=None, seconds=1, source="x")
    assert own["package"]["name"] == "defaceaudit"


def test_sidecar_of_a_container_tool_names_its_image_digest_and_command():
    image = f"docker://freesurfer/freesurfer:7.4.1@{DIGEST}"
    record = sidecar(
        "mideface",
        "container",
        {"ears": True},
        image=image,
        command="mideface --i a --o b",
        seconds=1,
        source="x",
    )
    assert record["image"] == image and record["image_digest"] == DIGEST
    assert record["package"] is None and record["version"] is None
    assert record["command"] == "mideface --i a --o b"
    assert image_digest("/images/afni.sif") is None and image_digest(None) is None


def test_dataset_description_is_a_derivative_generated_by_the_tool(tmp_path):
    niimath = dataset_description("niimath", "native")
    assert niimath["DatasetType"] == "derivative" and niimath["BIDSVersion"]
    tool, ours = niimath["GeneratedBy"]
    assert tool == {**tool, "Name": "niimath", "Version": "1.0.20261016"}
    assert ours["Name"] == "defaceaudit"
    image = f"docker://afni/afni_make_build@{DIGEST}"
    afni = dataset_description("afni_refacer2", "container", image)
    assert afni["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": image}
    local = dataset_description("mideface", "container", "/images/fs.sif")
    assert local["GeneratedBy"][0]["Container"]["Type"] == "apptainer"
    describe_defaced_dataset("niimath", tmp_path / "dataset_description.json", "native")
    assert json.loads((tmp_path / "dataset_description.json").read_text()) == niimath


def test_an_output_over_its_input_is_refused(tmp_path):
    source = tmp_path / "t1w.nii.gz"
    source.write_text("x")
    refuse_overwrite({"t1w": tmp_path / "out.nii.gz"}, [source])
    with pytest.raises(DefaceAuditError, match="originals are never overwritten"):
        refuse_overwrite({"t1w": tmp_path / "." / "t1w.nii.gz"}, [source])


def test_native_defacing_writes_the_provenance_sidecar(prepared, tmp_path):
    out = deface_outputs(tmp_path / "out")
    deface_native("quickshear", {k: str(v) for k, v in prepared.items()}, out, {"buffer": 4})
    record = json.loads(out["sidecar"].read_text())
    assert record["version"] == "1.2.0" and record["backend"] == "native"
    assert record["source"] == str(Path(prepared["t1w"]).absolute())
    # the prepared original is never a target
    with pytest.raises(DefaceAuditError, match="never overwritten"):
        deface_native(
            "quickshear",
            {k: str(v) for k, v in prepared.items()},
            {**out, "t1w": prepared["t1w"]},
            {"buffer": 4},
        )


def test_mideface_output_is_finalised_with_its_face_label_mask(prepared, tmp_path):
    face = fake_pydeface(prepared, tmp_path)  # the face zeroed in raw.nii.gz
    img = nib.load(prepared["t1w"])
    data = img.get_fdata(dtype=np.float32)
    # mideface fills the face with the background's mode (not 0) and labels it (1..5)
    filled = np.where(face, 7.0, data).astype(np.float32)
    nib.save(nib.Nifti1Image(filled, img.affine), tmp_path / "mideface.nii.gz")
    labels = np.where(face, 3, 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, img.affine), tmp_path / "face.nii.gz")
    (tmp_path / "command.txt").write_text("set -euo pipefail; mideface --i a --o b\n")
    out = deface_outputs(tmp_path / "out")
    finalize_container_deface(
        "mideface",
        prepared,
        tmp_path / "mideface.nii.gz",
        out,
        image=f"docker://freesurfer/freesurfer:7.4.1@{DIGEST}",
        params=container_params("mideface", deface_section()),
        benchmark=tmp_path / "bench.tsv",
        raw_removed=tmp_path / "face.nii.gz",
        command_file=tmp_path / "command.txt",
    )
    assert np.array_equal(nib.load(out["removed"]).get_fdata() > 0, face)
    record = json.loads(out["sidecar"].read_text())
    assert record["command"] == "set -euo pipefail; mideface --i a --o b"
    assert record["image_digest"] == DIGEST and record["parameters"]["ears"] is True


def test_container_params_record_the_afni_shell_and_mode():
    params = container_params("afni_refacer2", deface_section(afni_refacer2_mode="reface"))
    assert params == {"mode": "reface", "shell": "afni_refacer_shell_sym_2.1.nii.gz"}
    files = container_finalize_inputs("afni_refacer2", "01")
    assert files["command"] == paths.container_raw("afni_refacer2", "01")["command"]
    assert "raw_removed" not in files and "raw_removed" in container_finalize_inputs(
        "mideface", "01"
    )


def test_mideface_without_a_licence_file_is_a_one_line_error(tmp_path):
    section = deface_section(defacers=["mideface"], containers={"mideface": "/images/fs.sif"})
    with pytest.raises(InputError, match=r"^config deface.freesurfer_license: mideface needs"):
        defacer_plan(section)
    section["freesurfer_license"] = str(tmp_path / "missing.txt")
    with pytest.raises(InputError, match=r"missing.txt is not a file$"):
        defacer_plan(section)
    (tmp_path / "license.txt").write_text("x")
    section["freesurfer_license"] = str(tmp_path / "license.txt")
    assert defacer_plan(section) == {"mideface": "container"}
    assert freesurfer_license(section) == str(tmp_path / "license.txt")
    # other defacers need no licence
    assert defacer_plan(deface_section(defacers=["niimath"])) == {"niimath": "native"}


def test_licence_bind_is_read_only_and_added_once():
    args = license_bind("--nv", "/opt/fs/license.txt")
    assert args == "--nv --bind /opt/fs/license.txt:/opt/fs/license.txt:ro"
    assert license_bind(args, "/opt/fs/license.txt") == args


@pytest.mark.workflow
def test_dry_run_plans_mideface_and_afni_refacer2_from_local_images(tmp_path):
    workdir = paths.copy_workflow(REPO, tmp_path / "wf")
    shutil.copy2(SCENARIO, workdir / SCENARIO.name)
    scenario = yaml.safe_load(SCENARIO.read_text())
    images = scenario["deface"]["containers"]
    (workdir / "license.txt").write_text("stand-in licence\n")
    done = run_snakemake(workdir, "-n", "-p", "--configfile", SCENARIO.name, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [line for line in done.stdout.splitlines() if line.startswith("Shell command:")]
    subjects = [f"tr{i:02d}" for i in range(1, 7)] + ["in01", "ex01"]
    licence = str((workdir / "license.txt").absolute())
    for subject in subjects:
        prepared_t1w = f"results/prepare/sub-{subject}/anat/sub-{subject}_desc-prepared_T1w.nii.gz"
        mideface = [c for c in commands if f"/mideface/raw/sub-{subject}_T1w" in c]
        assert len(mideface) == 1, subject
        assert f"image: {images['mideface']}" in mideface[0]
        assert f"export FS_LICENSE={licence}" in mideface[0]
        assert f"mideface --i {prepared_t1w} --o results/deface/mideface/raw/" in mideface[0]
        afni = [c for c in commands if f"/afni_refacer2/raw/sub-{subject}_T1w" in c]
        assert len(afni) == 1, subject
        assert f"image: {images['afni_refacer2']}" in afni[0]
        assert (
            f"afni_refacer2 -input {prepared_t1w} -mode_deface "
            "-shell afni_refacer_shell_sym_2.1.nii.gz" in afni[0]
        )
    assert done.stdout.count("rule finalize_container_deface:") == 2 * len(subjects)
    assert "describe_defaced_dataset" in done.stdout
    # without the licence file: one line, at DAG time
    (workdir / "license.txt").unlink()
    done = run_snakemake(workdir, "-n", "--configfile", SCENARIO.name, timeout=300)
    assert done.returncode == 1
    lines = [
        line for line in (done.stdout + done.stderr).splitlines() if "freesurfer_license" in line
    ]
    assert lines == ["config deface.freesurfer_license: license.txt is not a file"]
