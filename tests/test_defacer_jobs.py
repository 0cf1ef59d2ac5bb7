"""The deface jobs' inputs and the logs that explain a missing QC record (defacers.jobs)."""

from pathlib import Path

from defaceaudit import paths
from defaceaudit.cohort import Subject
from defaceaudit.cohort.load import Cohort
from defaceaudit.workflow.deface_jobs import (
    container_finalize_inputs,
    container_params,
    deface_jobs,
    expected_qc_records,
    native_inputs,
    native_params,
    qc_records,
)

DEFACERS = {"quickshear": "native", "avgface": "native", "pydeface": "container"}
DEFACE = {"quickshear_buffer": 7, "pydeface_cost": "mutualinfo", "mri_deface_atlas_dir": "/a"}


def cohort(*ids: str) -> Cohort:
    subjects = {
        s: Subject(s, Path(f"/data/sub-{s}_T1w.nii.gz"), "train", 30.0, "F", "d") for s in ids
    }
    return Cohort(subjects)


def test_native_jobs_read_the_prepared_images_and_their_defacer_s_extra_files():
    prepared = {"t1w", "head_mask", "brain_mask"}
    assert set(native_inputs("quickshear", "01")) == prepared
    assert native_inputs("facemask", "01").keys() == prepared | set(paths.FACE_TEMPLATE)
    avgface = native_inputs("avgface", "01")
    assert avgface["average"] == paths.AVERAGE_HEAD
    assert avgface["facemask"] == paths.FACE_TEMPLATE["facemask"]
    assert "template" not in avgface  # the average head is its own template
    assert native_params("quickshear", DEFACE) == {"buffer": 7}
    assert native_params("facemask", DEFACE) == {}


def test_a_container_job_reads_the_tool_s_mask_only_where_the_tool_writes_one():
    pydeface = container_finalize_inputs("pydeface", "01")
    assert pydeface["raw_removed"] == paths.container_raw("pydeface", "01")["removed"]
    assert pydeface["benchmark"] == "results/benchmarks/deface_container_pydeface/01.tsv"
    assert "raw_removed" not in container_finalize_inputs("mri_deface", "01")
    assert container_params("quickshear", DEFACE) == {"buffer_voxels": 7}


def test_expected_qc_records_name_the_logs_that_explain_a_missing_record():
    run = cohort("01", "02")
    assert deface_jobs(run, DEFACERS) == [
        (d, s) for s in ("01", "02") for d in ("quickshear", "avgface", "pydeface")
    ]
    records = {(r["defacer"], r["subject"]): r for r in expected_qc_records(run, DEFACERS)}
    assert len(qc_records(run, DEFACERS)) == 6
    assert qc_records(run, DEFACERS)[-1] == (
        "results/deface/pydeface/sub-02/anat/sub-02_desc-pydeface_qc.json"
    )
    assert [r["qc"] for r in records.values()] == qc_records(run, DEFACERS)
    prepare = "results/logs/prepare_subject/02.log"
    quickshear = records["quickshear", "02"]
    assert quickshear["logs"] == ["results/logs/deface_native/quickshear_02_quickshear.log"]
    assert quickshear["upstream_logs"] == [prepare]
    # avgface waits for the average head (and the face template its mask comes from)
    assert records["avgface", "02"]["upstream_logs"] == [
        prepare,
        "results/logs/fetch_face_template/pydeface.log",
        "results/logs/build_average_head/train.log",
    ]
    pydeface = records["pydeface", "02"]
    assert pydeface["backend"] == "container"
    assert pydeface["logs"] == [  # the tool's own log first: it says why it wrote nothing
        "results/logs/deface_container_pydeface/02.log",
        "results/logs/finalize_container_deface/pydeface_02_pydeface.log",
    ]
    assert pydeface["upstream_logs"] == [prepare]
