"""Face metrics of one subject and defacer (M5 face area, rows) and re-identification."""

import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from synthetic import synthetic_head

from defaceaudit.errors import ImageError, InputError
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import voxel_sizes_mm
from defaceaudit.metrics.face_rows import COLUMNS, compute_face_metrics, face_area
from defaceaudit.metrics.template_space import apply_transform, load_faces, to_world
from defaceaudit.workflow.metrics_plan import metric_plan


def test_face_area_is_the_intersection_of_the_four_masks():
    shape = (6, 6, 6)
    masks = [np.zeros(shape, bool) for _ in range(4)]
    for i, mask in enumerate(masks):
        mask[i:, :, :] = True
    area = face_area(masks[0], masks[2], masks[1], masks[3])
    assert area.sum() == 3 * 36 and area[3:].all()
    assert face_area(masks[0], masks[2]).sum() == 4 * 36  # no population average: M1 & M3


def _write_subject(folder, shift_vox=0):
    """A synthetic original, its head mask, a copy with the front zeroed (defaced), and a copy
    with the front replaced by a shifted face (a stand-in population average)."""
    img, _ = synthetic_head(shape=(40, 50, 44), voxel_mm=4.0, seed=3)
    data = img.get_fdata(dtype=np.float32)
    head = head_mask(data, voxel_sizes_mm(img.affine))
    removed = np.zeros(data.shape, bool)
    removed[:, 34:, :22] = True  # anterior, inferior block: the face
    removed &= data > 0
    defaced = np.where(removed, 0.0, data).astype(np.float32)
    average = data.copy()
    average[removed] = np.roll(data, shift_vox, axis=1)[removed] * 0.9
    files = {}
    for name, arr in (
        ("t1w", data),
        ("head", head),
        ("defaced", defaced),
        ("removed", removed),
        ("average", average),
    ):
        files[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr.astype(np.float32), img.affine), files[name])
    transform = folder / "xfm.json"
    transform.write_text(json.dumps({"subject_to_template_ras_mm": np.eye(4).tolist()}))
    files["transform"] = transform
    return files


def _images(files):
    return {
        "defaced": {"image": "cutter", "t1w": files["defaced"], "removed": files["removed"]},
        "population_average": {
            "image": "avgface",
            "t1w": files["average"],
            "removed": files["removed"],
        },
    }


def test_rows_of_one_subject_have_the_paper_columns_and_sane_values(tmp_path):
    files = _write_subject(tmp_path, shift_vox=1)
    out = tmp_path / "rows.tsv"
    faces = tmp_path / "faces.npz"
    rows = compute_face_metrics(
        "s1",
        "internal_test",
        "cutter",
        {"t1w": files["t1w"], "head_mask": files["head"]},
        _images(files),
        template=files["t1w"],
        out_rows=out,
        out_faces=faces,
    )
    assert list(rows.columns) == list(COLUMNS)
    assert list(rows["image_type"]) == ["defaced", "population_average"]
    defaced, average = rows.iloc[0], rows.iloc[1]
    # removing the face moves the surface further than a nearly-right replacement
    assert defaced["masd_mm"] > average["masd_mm"] > 0
    assert defaced["psnr_face_db"] < average["psnr_face_db"]
    assert defaced["ssim_head"] < 1 and defaced["n_face_voxels"] > 0
    written = pd.read_csv(out, sep="\t")
    assert len(written) == 2 and written["image"].tolist() == ["cutter", "avgface"]
    assert set(load_faces(faces)) == {"defaced__cutter", "population_average__avgface"}


def test_an_unchanged_image_has_zero_distance_and_infinite_psnr(tmp_path):
    files = _write_subject(tmp_path)
    images = {"defaced": {"image": "none", "t1w": files["t1w"], "removed": files["removed"]}}
    rows = compute_face_metrics(
        "s1", "external_test", "none", {"t1w": files["t1w"], "head_mask": files["head"]}, images
    )
    row = rows.iloc[0]
    assert row["masd_mm"] == 0.0 and row["masd_symmetric_mm"] == 0.0
    assert row["ssim_head"] == pytest.approx(1.0) and row["psnr_head_db"] == float("inf")
    assert row["ssim_face"] == pytest.approx(1.0)


def test_an_image_on_another_grid_is_refused_with_both_names(tmp_path):
    files = _write_subject(tmp_path)
    other = tmp_path / "cropped.nii.gz"
    img = nib.load(files["defaced"])
    nib.save(nib.Nifti1Image(img.get_fdata()[:-1], img.affine), other)
    images = {"defaced": {"image": "x", "t1w": other, "removed": files["removed"]}}
    with pytest.raises(ImageError, match="not on the voxel grid of the original") as err:
        compute_face_metrics(
            "s1", "internal_test", "x", {"t1w": files["t1w"], "head_mask": files["head"]}, images
        )
    assert str(other) in str(err.value) and str(files["t1w"]) in str(err.value)


def test_world_vertices_follow_the_affine_and_transform():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    verts = np.array([[2.0, 3.0, 4.0]])  # voxel (1, 1, 1) times spacing
    world = to_world(verts, (2.0, 3.0, 4.0), affine)
    assert np.allclose(world, [[12, 23, 34]])
    shift = np.eye(4)
    shift[:3, 3] = [1, -1, 0]
    assert np.allclose(apply_transform(world, shift), [[13, 22, 34]])


def test_metric_plan_takes_the_population_average_refacer_as_a_column():
    plan = metric_plan(
        {"quickshear": "native", "avgface": "native"}, {"population_average": "auto"}
    )
    assert plan.removing == ("quickshear",) and plan.population_average == "avgface"
    both = {"mri_reface": "container", "avgface": "native", "pydeface": "container"}
    assert metric_plan(both, {"population_average": "auto"}).population_average == "mri_reface"
    assert metric_plan(both, {"population_average": "avgface"}).population_average == "avgface"
    assert metric_plan(both, {"population_average": "none"}).population_average is None
    with pytest.raises(InputError, match="metrics.population_average: mri_reface"):
        metric_plan({"quickshear": "native"}, {"population_average": "mri_reface"})


def test_partial_tables_after_failed_jobs_say_what_they_lack(tmp_path):
    from defaceaudit import paths
    from defaceaudit.metrics.aggregate import aggregate_available_rows

    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        rows = pd.DataFrame(
            [
                {
                    "subject": f"s{i}",
                    "test_set": "internal_test",
                    "defacer": "cutter",
                    "image_type": kind,
                    "image": image,
                    **{c: rng.random() for c in COLUMNS[5:-1]},
                    "n_face_voxels": 10,
                }
                for kind, image in (("defaced", "cutter"), ("population_average", "avgface"))
            ],
            columns=list(COLUMNS),
        )
        files.append(tmp_path / f"s{i}.tsv")
        if i < 3:  # the fourth job failed
            rows.to_csv(files[-1], sep="\t", index=False)
    out = {k: tmp_path / "tables" / v.rsplit("/", 1)[1] for k, v in paths.FACE_TABLES.items()}
    missing = aggregate_available_rows(files, tmp_path / "rows.tsv", out, n_resamples=100)
    assert missing == [str(files[3])]
    assert len(pd.read_csv(tmp_path / "rows.tsv", sep="\t")) == 6
    table1 = out["table1_masd_md"].read_text()
    assert "Internal (N=3)" in table1 and "PARTIAL: 1 of 4" in table1 and "s3.tsv" in table1
    assert aggregate_available_rows(files[:3], tmp_path / "again.tsv", out) == []
    assert not (tmp_path / "again.tsv").exists()  # complete: the rule itself writes the tables
    # rows of an earlier run whose input changed since (its job did not run again) are left out
    image = tmp_path / "s1_defaced.nii.gz"
    image.write_bytes(b"new")
    os.utime(files[1], (1e9, 1e9))  # the rows predate the image
    inputs = {str(f): [image] for f in files[:3]}
    os.utime(files[0], None)  # made after the image: current
    os.utime(files[2], None)
    left_out = aggregate_available_rows(
        files[:3], tmp_path / "stale.tsv", out, inputs=inputs, n_resamples=100
    )
    assert left_out == [str(files[1])]
    assert set(pd.read_csv(tmp_path / "stale.tsv", sep="\t")["subject"]) == {"s0", "s2"}
    assert "PARTIAL: 1 of 3" in out["table1_masd_md"].read_text()
    image.unlink()  # an input gone: no row of it is current
    assert aggregate_available_rows(files[:3], tmp_path / "x.tsv", out, inputs=inputs) == [
        str(f) for f in files[:3]
    ]


def test_the_shared_population_average_is_registered_in_one_row_only(tmp_path):
    from defaceaudit.workflow.metrics_jobs import probe_types

    plan = metric_plan(
        {"quickshear": "native", "facemask": "native", "avgface": "native"},
        {"population_average": "auto"},
    )
    assert "population_average" in probe_types(plan, "quickshear")
    assert "population_average" not in probe_types(plan, "facemask")
    files = _write_subject(tmp_path, shift_vox=1)
    faces = tmp_path / "faces.npz"
    compute_face_metrics(
        "s1",
        "internal_test",
        "cutter",
        {"t1w": files["t1w"], "head_mask": files["head"]},
        _images(files),
        template=files["t1w"],
        out_faces=faces,
        probes=probe_types(plan, "facemask"),
    )
    assert set(load_faces(faces)) == {"defaced__cutter"}


def test_each_rows_file_knows_the_files_its_job_read():
    from pathlib import Path

    from defaceaudit import paths
    from defaceaudit.cohort import Subject
    from defaceaudit.cohort.load import Cohort
    from defaceaudit.workflow.metrics_jobs import face_metric_row_inputs

    def subject(name, split):
        return Subject(name, Path(f"/d/{name}.nii.gz"), split, 40.0, "M", "d")

    cohort = Cohort(
        {s: subject(s, split) for s, split in (("t1", "train"), ("e1", "external_test"))}
    )
    plan = metric_plan(
        {"quickshear": "native", "avgface": "native"}, {"population_average": "auto"}, True
    )
    inputs = face_metric_row_inputs(cohort, plan)
    rows = paths.face_metric_files("quickshear", "e1")["rows"]
    assert list(inputs) == [rows]  # test subjects only, defacers that remove a face only
    read = set(inputs[rows])
    assert paths.defaced_files("quickshear", "e1")["t1w"] in read
    assert paths.defaced_files("avgface", "e1")["t1w"] in read  # the population average
    assert paths.refaced_files("quickshear", "e1")["t1w"] in read  # the DPM-refaced image
    assert not any("sub-t1" in p for p in read)  # nothing of the train subject
