"""Tests for defaceaudit.cohort: BIDS datasets, manifests and the merged cohort."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from defaceaudit.cohort import (
    SPLITS,
    Subject,
    check_cohort,
    cohort_frame,
    read_bids_dataset,
    read_manifest,
)
from defaceaudit.errors import InputError

PARTICIPANTS_HEADER = ("participant_id", "age", "sex")


# --------------------------------------------------------------------------------------------
# helpers


def touch(path: Path) -> Path:
    """An empty file (no image is opened at DAG time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_nifti(path: Path) -> Path:
    """A tiny real 3x3x3 NIfTI file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), dtype=np.uint8), np.eye(4)), path)
    return path


def write_tsv(path: Path, header: tuple[str, ...] | list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_bids(root: Path, t1w: dict[str, list[str]], participants: list[tuple] | None) -> Path:
    """A BIDS tree: ``t1w`` maps ``sub-XX`` to paths relative to the subject folder."""
    root.mkdir(parents=True, exist_ok=True)
    for subject, files in t1w.items():
        (root / subject).mkdir(exist_ok=True)
        for rel in files:
            touch(root / subject / rel)
    if participants is not None:
        write_tsv(root / "participants.tsv", PARTICIPANTS_HEADER, participants)
    return root


def expect_error(call, *fragments: str) -> str:
    """Run ``call``; it must raise a one-line InputError containing every fragment."""
    with pytest.raises(InputError, match=re.escape(fragments[0])) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    """Two subjects without sessions, plus a participants row that has no images."""
    return make_bids(
        tmp_path / "ds1",
        {"sub-01": ["anat/sub-01_T1w.nii.gz"], "sub-02": ["anat/sub-02_T1w.nii"]},
        [("sub-02", "61", "female"), ("sub-01", "34.5", "M"), ("sub-99", "n/a", "n/a")],
    )


# --------------------------------------------------------------------------------------------
# BIDS: valid datasets


def test_bids_without_sessions(ds: Path) -> None:
    subjects = read_bids_dataset(ds, "train")
    assert subjects == [
        Subject("01", ds / "sub-01/anat/sub-01_T1w.nii.gz", "train", 34.5, "M", "ds1", None),
        Subject("02", ds / "sub-02/anat/sub-02_T1w.nii", "train", 61.0, "F", "ds1", None),
    ]
    assert all(s.t1w.is_absolute() for s in subjects)


def test_bids_relative_path_is_made_absolute(ds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ds.parent)
    subjects = read_bids_dataset("ds1/", "internal_test", dataset="mine")
    assert [s.t1w for s in subjects] == [
        ds / "sub-01/anat/sub-01_T1w.nii.gz",
        ds / "sub-02/anat/sub-02_T1w.nii",
    ]
    assert {s.dataset for s in subjects} == {"mine"}
    assert {s.split for s in subjects} == {"internal_test"}


def test_bids_real_nifti_and_sex_spellings(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "ds", {}, [("sub-a", "20", "MALE"), ("sub-b", "30", "f")])
    write_nifti(root / "sub-a/anat/sub-a_T1w.nii.gz")
    write_nifti(root / "sub-b/anat/sub-b_T1w.nii.gz")
    assert [(s.subject, s.sex, s.age) for s in read_bids_dataset(root, "train")] == [
        ("a", "M", 20.0),
        ("b", "F", 30.0),
    ]


def test_bids_participant_id_without_prefix_is_accepted(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "ds", {"sub-01": ["anat/sub-01_T1w.nii.gz"]}, [("01", "5", "F")])
    assert read_bids_dataset(root, "train")[0].age == 5.0


def test_bids_with_one_session(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {
            "sub-01": [
                "ses-pre/anat/sub-01_ses-pre_T1w.nii.gz",
                "ses-pre/anat/sub-01_ses-pre_T2w.nii",
            ]
        },
        [("sub-01", "40", "F")],
    )
    [subject] = read_bids_dataset(root, "external_test")
    assert subject.t1w == root / "sub-01/ses-pre/anat/sub-01_ses-pre_T1w.nii.gz"


@pytest.mark.parametrize("session", ["2", "ses-2"])
def test_bids_session_picks_one_of_several(tmp_path: Path, session: str) -> None:
    root = make_bids(
        tmp_path / "ds",
        {
            "sub-01": [
                "anat/sub-01_T1w.nii.gz",
                "ses-1/anat/sub-01_ses-1_T1w.nii.gz",
                "ses-2/anat/sub-01_ses-2_acq-mprage_T1w.nii.gz",
            ]
        },
        [("sub-01", "40", "F")],
    )
    [subject] = read_bids_dataset(root, "train", session=session)
    assert subject.t1w == root / "sub-01/ses-2/anat/sub-01_ses-2_acq-mprage_T1w.nii.gz"


def test_bids_prefix_and_dataset_name(ds: Path) -> None:
    subjects = read_bids_dataset(ds, "external_test", dataset="ext-site", subject_prefix="ext")
    assert [(s.subject, s.dataset) for s in subjects] == [
        ("ext01", "ext-site"),
        ("ext02", "ext-site"),
    ]


def test_bids_brain_masks_from_derivatives(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {
            "sub-01": ["anat/sub-01_T1w.nii.gz"],
            "sub-02": ["anat/sub-02_T1w.nii.gz"],
            "sub-03": ["ses-a/anat/sub-03_ses-a_T1w.nii.gz"],
        },
        [("sub-01", "20", "M"), ("sub-02", "30", "F"), ("sub-03", "40", "F")],
    )
    masks = root / "derivatives" / "masks"
    touch(masks / "sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    touch(masks / "sub-01/anat/sub-01_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    touch(masks / "sub-02/anat/sub-02_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    touch(masks / "sub-03/ses-a/anat/sub-03_ses-a_desc-brain_mask.nii")
    by_id = {
        s.subject: s for s in read_bids_dataset(root, "train", brain_mask_dir="derivatives/masks")
    }
    assert by_id["01"].brain_mask == masks / "sub-01/anat/sub-01_desc-brain_mask.nii.gz"
    assert by_id["02"].brain_mask is None  # only a template-space mask: the pipeline computes one
    assert by_id["03"].brain_mask == masks / "sub-03/ses-a/anat/sub-03_ses-a_desc-brain_mask.nii"


def test_bids_session_t1w_falls_back_to_the_subjects_anat_mask(tmp_path: Path) -> None:
    """fMRIPrep's layout for subjects with several sessions: one mask in sub-X/anat."""
    root = make_bids(
        tmp_path / "ds",
        {
            "sub-01": ["ses-a/anat/sub-01_ses-a_T1w.nii.gz", "ses-b/anat/sub-01_ses-b_T1w.nii.gz"],
            "sub-02": ["ses-a/anat/sub-02_ses-a_T1w.nii.gz"],
            "sub-03": ["ses-a/anat/sub-03_ses-a_T1w.nii.gz"],
        },
        [("sub-01", "20", "M"), ("sub-02", "30", "F"), ("sub-03", "40", "F")],
    )
    masks = root / "derivatives/masks"
    subject_level = touch(masks / "sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    touch(masks / "sub-02/anat/sub-02_desc-brain_mask.nii.gz")
    session_level = touch(masks / "sub-02/ses-a/anat/sub-02_ses-a_desc-brain_mask.nii.gz")
    touch(masks / "sub-03/anat/sub-03_ses-b_desc-brain_mask.nii.gz")  # another session's
    (session_b,) = read_bids_dataset(
        root, "train", session="b", brain_mask_dir=masks, exclude_subjects=["02", "03"]
    )
    assert session_b.brain_mask == subject_level
    session_a = read_bids_dataset(root, "train", session="a", brain_mask_dir=masks)
    assert [s.brain_mask for s in session_a] == [
        subject_level,
        session_level,  # the session's own folder comes first
        None,  # another session's mask is not this session's
    ]


def test_bids_mask_named_like_the_chosen_run(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {"sub-01": ["anat/sub-01_run-1_T1w.nii.gz", "anat/sub-01_run-2_T1w.nii.gz"]},
        [("sub-01", "40", "F")],
    )
    masks = root / "derivatives/masks"
    touch(masks / "sub-01/anat/sub-01_run-1_desc-brain_mask.nii.gz")
    second = touch(masks / "sub-01/anat/sub-01_run-2_desc-brain_mask.nii.gz")
    [subject] = read_bids_dataset(root, "train", run="highest", brain_mask_dir=masks)
    assert subject.brain_mask == second


def test_bids_mask_of_another_run_or_acquisition_is_not_taken(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {
            "sub-01": ["anat/sub-01_run-1_T1w.nii.gz", "anat/sub-01_run-2_T1w.nii.gz"],
            "sub-02": ["anat/sub-02_acq-mprage_run-02_T1w.nii.gz"],
            "sub-03": ["anat/sub-03_acq-mprage_T1w.nii.gz"],
        },
        [("sub-01", "40", "F"), ("sub-02", "50", "M"), ("sub-03", "60", "F")],
    )
    masks = root / "derivatives/masks"
    touch(masks / "sub-01/anat/sub-01_run-1_desc-brain_mask.nii.gz")  # run-1's only
    same_run = touch(masks / "sub-02/anat/sub-02_run-2_desc-brain_mask.nii.gz")  # 2 == 02
    touch(masks / "sub-03/anat/sub-03_acq-fast_desc-brain_mask.nii.gz")  # another acquisition
    subjects = read_bids_dataset(root, "train", run="highest", brain_mask_dir=masks)
    assert [s.brain_mask for s in subjects] == [None, same_run, None]


def test_bids_missing_mask_is_a_warning_naming_the_subject_and_folders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_bids(
        tmp_path / "ds",
        {"sub-01": ["ses-a/anat/sub-01_ses-a_T1w.nii.gz"], "sub-02": ["anat/sub-02_T1w.nii.gz"]},
        [("sub-01", "20", "M"), ("sub-02", "30", "F")],
    )
    masks = root / "derivatives/masks"
    touch(masks / "sub-02/anat/sub-02_desc-brain_mask.nii.gz")
    with caplog.at_level(logging.WARNING, logger="defaceaudit.cohort"):
        subjects = read_bids_dataset(root, "train", brain_mask_dir=masks)
    assert [s.brain_mask is None for s in subjects] == [True, False]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "no brain mask for subject sub-01" in record.getMessage()
    assert f"in {masks}/sub-01/ses-a/anat or {masks}/sub-01/anat" in record.getMessage()
    assert "ROBEX computes one" in record.getMessage()
    caplog.clear()
    read_bids_dataset(root, "train")  # no brain_mask_dir: ROBEX for everyone, nothing to say
    assert not caplog.records


def test_bids_brain_mask_dir_absolute(ds: Path, tmp_path: Path) -> None:
    masks = tmp_path / "elsewhere"
    touch(masks / "sub-02/anat/sub-02_desc-brain_mask.nii.gz")
    subjects = read_bids_dataset(ds, "train", brain_mask_dir=masks)
    assert [s.brain_mask for s in subjects] == [
        None,
        masks / "sub-02/anat/sub-02_desc-brain_mask.nii.gz",
    ]


# --------------------------------------------------------------------------------------------
# BIDS: errors


def test_bids_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    expect_error(lambda: read_bids_dataset(missing, "train"), str(missing), "not found")


def test_bids_unknown_role(ds: Path) -> None:
    expect_error(
        lambda: read_bids_dataset(ds, "test"),
        str(ds),
        "'test'",
        "train, internal_test, external_test",
    )


def test_bids_no_subjects(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "empty", {}, [("sub-01", "20", "M")])
    expect_error(lambda: read_bids_dataset(root, "train"), str(root), "no subjects")


def test_bids_subject_folder_without_t1w(ds: Path) -> None:
    touch(ds / "sub-03/anat/sub-03_T2w.nii.gz")
    expect_error(lambda: read_bids_dataset(ds, "train"), str(ds / "sub-03"), "no T1w")


def test_bids_session_missing_for_a_subject(ds: Path) -> None:
    expect_error(
        lambda: read_bids_dataset(ds, "train", session="1"),
        str(ds / "sub-01"),
        "need ses-1/anat/sub-01_ses-1*_T1w.nii[.gz], as `session` asks",
    )


def test_bids_two_sessions_need_session(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {"sub-01": ["ses-1/anat/sub-01_ses-1_T1w.nii.gz", "ses-2/anat/sub-01_ses-2_T1w.nii.gz"]},
        [("sub-01", "40", "F")],
    )
    expect_error(
        lambda: read_bids_dataset(root, "train"),
        "sub-01",
        str(root / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"),
        str(root / "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"),
        "session",
    )


def test_bids_two_runs_name_the_keys_that_pick_one(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {"sub-01": ["anat/sub-01_run-1_T1w.nii.gz", "anat/sub-01_run-2_T1w.nii.gz"]},
        [("sub-01", "40", "F")],
    )
    message = expect_error(
        lambda: read_bids_dataset(root, "train"),
        "sub-01 has 2 T1w images",
        str(root / "sub-01/anat/sub-01_run-2_T1w.nii.gz"),
        "`acq`, `rec` (none: the image without one) or `run` (a run number, lowest or highest)",
        "`exclude_subjects`",
    )
    assert "session" not in message  # the subject has no sessions


def test_bids_rec_picks_the_raw_or_the_reconstructed_image(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {
            "sub-01": ["anat/sub-01_T1w.nii.gz", "anat/sub-01_rec-norm_T1w.nii.gz"],
            "sub-02": ["anat/sub-02_acq-a_T1w.nii.gz", "anat/sub-02_T1w.nii.gz"],
        },
        [("sub-01", "40", "F"), ("sub-02", "50", "M")],
    )
    raw, _ = read_bids_dataset(root, "train", rec="none", exclude_subjects=["02"]) + [None]
    assert raw.t1w == root / "sub-01/anat/sub-01_T1w.nii.gz"
    [norm] = read_bids_dataset(root, "train", rec="rec-norm", exclude_subjects=["02"])
    assert norm.t1w == root / "sub-01/anat/sub-01_rec-norm_T1w.nii.gz"
    _, plain = read_bids_dataset(root, "train", rec="none", acq="none")
    assert plain.t1w == root / "sub-02/anat/sub-02_T1w.nii.gz"


# --------------------------------------------------------------------------------------------
# BIDS: several T1w images, left-out subjects


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """sub-01: two runs of one protocol and one of another; sub-02: one image (acq-fast)."""
    return make_bids(
        tmp_path / "runs",
        {
            "sub-01": [
                "anat/sub-01_acq-mprage_run-1_T1w.nii.gz",
                "anat/sub-01_acq-mprage_run-02_T1w.nii.gz",
                "anat/sub-01_acq-fast_run-3_T1w.nii.gz",
            ],
            "sub-02": ["anat/sub-02_acq-fast_T1w.nii.gz"],
        },
        [("sub-01", "40", "F"), ("sub-02", "50", "M")],
    )


@pytest.mark.parametrize(
    ("options", "chosen"),
    [
        ({"run": "highest"}, "acq-fast_run-3"),
        ({"run": "lowest"}, "acq-mprage_run-1"),
        ({"run": 2}, "acq-mprage_run-02"),
        ({"run": "run-2"}, "acq-mprage_run-02"),
        ({"acq": "fast"}, "acq-fast_run-3"),
        ({"acq": "acq-mprage", "run": "highest"}, "acq-mprage_run-02"),
    ],
)
def test_bids_acq_and_run_pick_one_of_several(runs: Path, options: dict, chosen: str) -> None:
    first, second = read_bids_dataset(runs, "train", **options)
    assert first.t1w == runs / f"sub-01/anat/sub-01_{chosen}_T1w.nii.gz"
    assert second.t1w == runs / "sub-02/anat/sub-02_acq-fast_T1w.nii.gz"  # its only image


@pytest.mark.parametrize(
    ("options", "left"),
    [
        ({}, ""),
        ({"acq": "mprage"}, "acq='mprage' leaves 2"),
        ({"acq": "other", "run": "highest"}, "acq='other', run='highest' leave 0"),
        ({"run": 7}, "run=7 leaves 0"),
    ],
)
def test_bids_acq_and_run_that_leave_several_or_none(runs: Path, options, left) -> None:
    expect_error(
        lambda: read_bids_dataset(runs, "train", **options),
        "sub-01 has 3 T1w images",
        str(runs / "sub-01/anat/sub-01_acq-fast_run-3_T1w.nii.gz"),
        left,
        "`exclude_subjects`",
    )


def test_bids_highest_run_needs_a_run_on_every_image(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {"sub-01": ["anat/sub-01_T1w.nii.gz", "anat/sub-01_run-2_T1w.nii.gz"]},
        [("sub-01", "40", "F")],
    )
    expect_error(lambda: read_bids_dataset(root, "train", run="highest"), "2 T1w images")


def test_bids_invalid_run(runs: Path) -> None:
    expect_error(lambda: read_bids_dataset(runs, "train", run="last"), str(runs), "'last'")


def test_bids_sessions_in_the_error_only_when_images_span_sessions(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds",
        {"sub-01": ["ses-1/anat/sub-01_ses-1_T1w.nii.gz", "ses-2/anat/sub-01_ses-2_T1w.nii.gz"]},
        [("sub-01", "40", "F")],
    )
    expect_error(
        lambda: read_bids_dataset(root, "train", run="highest"),
        "sub-01 has 2 T1w images",
        "`session`, `acq`, `rec` (none: the image without one) or `run`",
    )


def test_bids_exclude_subjects(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    touch(runs / "sub-03/anat/sub-03_T2w.nii.gz")  # no T1w and no participants row: skipped
    with caplog.at_level(logging.WARNING, logger="defaceaudit.cohort"):
        [kept] = read_bids_dataset(runs, "train", exclude_subjects=["sub-01", "03", "sub-09"])
    assert kept.subject == "02"
    assert f"BIDS dataset {runs}: exclude_subjects leaves out sub-01, sub-03" in caplog.text
    assert "exclude_subjects names sub-09, which has no subject folder" in caplog.text


def test_bids_exclude_subjects_is_before_the_prefix(runs: Path) -> None:
    subjects = read_bids_dataset(runs, "train", subject_prefix="x", exclude_subjects=["01"])
    assert [s.subject for s in subjects] == ["x02"]


def test_bids_selection_keys_from_the_config(runs: Path) -> None:
    from defaceaudit.config import validate_config
    from defaceaudit.workflow.plan import load_cohort

    entry = {"path": str(runs), "role": "train", "run": "highest", "exclude_subjects": ["02"]}
    config = validate_config({"input": {"source": "bids", "bids": [entry]}})
    cohort = load_cohort(config)
    assert [s.t1w.name for s in cohort.subjects.values()] == ["sub-01_acq-fast_run-3_T1w.nii.gz"]


def test_bids_missing_participants_tsv(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "ds", {"sub-01": ["anat/sub-01_T1w.nii.gz"]}, None)
    expect_error(
        lambda: read_bids_dataset(root, "train"), str(root / "participants.tsv"), "not found"
    )


def test_bids_participants_missing_column(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "ds", {"sub-01": ["anat/sub-01_T1w.nii.gz"]}, None)
    write_tsv(root / "participants.tsv", ("participant_id", "age"), [("sub-01", "20")])
    expect_error(lambda: read_bids_dataset(root, "train"), str(root / "participants.tsv"), "sex")


def test_bids_subject_without_participants_row(ds: Path) -> None:
    touch(ds / "sub-03/anat/sub-03_T1w.nii.gz")
    expect_error(
        lambda: read_bids_dataset(ds, "train"), str(ds / "participants.tsv"), "sub-03", "no row"
    )


def test_bids_duplicate_participants_row(ds: Path) -> None:
    with (ds / "participants.tsv").open("a") as f:
        f.write("sub-01\t35\tM\n")
    expect_error(
        lambda: read_bids_dataset(ds, "train"), str(ds / "participants.tsv"), "sub-01", "2 rows"
    )


@pytest.mark.parametrize("age", ["abc", "n/a", "", "0", "120", "-3", "nan", "inf", "89+"])
def test_bids_invalid_age(tmp_path: Path, age: str) -> None:
    root = make_bids(
        tmp_path / "ds", {"sub-07": ["anat/sub-07_T1w.nii.gz"]}, [("sub-07", age, "M")]
    )
    expect_error(
        lambda: read_bids_dataset(root, "train"),
        f"participants.tsv {root / 'participants.tsv'}: subject sub-07 has ",
        f"age {age!r}",
        "between 0 and 120",
    )


@pytest.mark.parametrize("sex", ["n/a", "", "x", "other", "MF"])
def test_bids_invalid_sex(tmp_path: Path, sex: str) -> None:
    root = make_bids(
        tmp_path / "ds", {"sub-07": ["anat/sub-07_T1w.nii.gz"]}, [("sub-07", "9", sex)]
    )
    expect_error(
        lambda: read_bids_dataset(root, "train"),
        str(root / "participants.tsv"),
        "sub-07",
        f"invalid sex {sex!r}",
    )


def test_bids_invalid_prefix(ds: Path) -> None:
    expect_error(lambda: read_bids_dataset(ds, "train", subject_prefix="ext-"), str(ds), "'ext-'")


def test_bids_invalid_subject_label(ds: Path) -> None:
    touch(ds / "sub-0.3/anat/sub-0.3_T1w.nii.gz")
    expect_error(lambda: read_bids_dataset(ds, "train"), str(ds / "sub-0.3"), "'0.3'")


def test_bids_missing_brain_mask_dir(ds: Path) -> None:
    expect_error(
        lambda: read_bids_dataset(ds, "train", brain_mask_dir="derivatives/nope"),
        str(ds / "derivatives/nope"),
        "not found",
    )


def test_bids_two_native_brain_masks(ds: Path) -> None:
    masks = ds / "derivatives/masks"
    first = touch(masks / "sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    second = touch(masks / "sub-01/anat/sub-01_acq-x_desc-brain_mask.nii.gz")
    expect_error(
        lambda: read_bids_dataset(ds, "train", brain_mask_dir=masks),
        "sub-01",
        str(first),
        str(second),
    )


# --------------------------------------------------------------------------------------------
# manifest

MANIFEST_HEADER = ("subject", "t1w", "split", "age", "sex")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """tmp_path/data/img/{a,b,c}.nii.gz and a mask."""
    for name in ("a", "b", "c", "a_mask"):
        touch(tmp_path / "data" / "img" / f"{name}.nii.gz")
    return tmp_path / "data"


def test_manifest_happy_path(images: Path, tmp_path: Path) -> None:
    manifest = images / "cohort.tsv"
    absolute_c = images / "img/c.nii.gz"
    manifest.write_text(
        "subject\tt1w\tsplit\tage\tsex\tdataset\tbrain_mask\n"
        "sub-01\timg/a.nii.gz\ttrain\t30\tM\t\timg/a_mask.nii.gz\n"
        "\n"
        "02\t./img/../img/b.nii.gz\texternal_test\t41.5\tfemale\tsiteB\t\n"
        f"03\t{absolute_c}\tinternal_test\t 7 \tf\t\t\n"
    )
    assert read_manifest(manifest) == [
        Subject(
            "01",
            images / "img/a.nii.gz",
            "train",
            30.0,
            "M",
            "cohort",
            images / "img/a_mask.nii.gz",
        ),
        Subject("02", images / "img/b.nii.gz", "external_test", 41.5, "F", "siteB", None),
        Subject("03", absolute_c, "internal_test", 7.0, "F", "cohort", None),
    ]


def test_manifest_relative_to_its_folder_not_cwd(images: Path, tmp_path: Path, monkeypatch) -> None:
    write_tsv(images / "m.tsv", MANIFEST_HEADER, [("01", "img/a.nii.gz", "train", 30, "M")])
    monkeypatch.chdir(tmp_path)
    [subject] = read_manifest("data/m.tsv")
    assert subject.t1w == images / "img/a.nii.gz"
    assert subject.dataset == "m"
    assert subject.brain_mask is None


def test_manifest_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.tsv"
    expect_error(lambda: read_manifest(missing), str(missing), "not found")


def test_manifest_missing_t1w(images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv",
        MANIFEST_HEADER,
        [("01", "img/a.nii.gz", "train", 30, "M"), ("sub-02", "img/zz.nii.gz", "train", 30, "M")],
    )
    expect_error(
        lambda: read_manifest(manifest),
        f"manifest {manifest} line 3",
        "subject 02",
        str(images / "img/zz.nii.gz"),
    )


def test_manifest_missing_brain_mask(images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv",
        (*MANIFEST_HEADER, "brain_mask"),
        [("01", "img/a.nii.gz", "train", 30, "M", "img/nomask.nii.gz")],
    )
    expect_error(
        lambda: read_manifest(manifest),
        f"manifest {manifest} line 2",
        "brain_mask",
        str(images / "img/nomask.nii.gz"),
    )


def test_manifest_missing_columns(images: Path) -> None:
    manifest = write_tsv(images / "m.tsv", ("subject", "t1w", "age"), [("01", "img/a.nii.gz", 3)])
    message = expect_error(lambda: read_manifest(manifest), str(manifest), "split", "sex")
    assert "missing column" in message


@pytest.mark.parametrize(
    "text", ["subject\tt1w\tsplit\tage\tsex\n", "subject\tt1w\tsplit\tage\tsex\n\n", ""]
)
def test_manifest_empty(tmp_path: Path, text: str) -> None:
    manifest = tmp_path / "m.tsv"
    manifest.write_text(text)
    expect_error(lambda: read_manifest(manifest), str(manifest))


def test_manifest_unknown_split(images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv", MANIFEST_HEADER, [("01", "img/a.nii.gz", "test", 30, "M")]
    )
    expect_error(
        lambda: read_manifest(manifest),
        f"manifest {manifest} line 2",
        "subject 01",
        "'test'",
        ", ".join(SPLITS),
    )


@pytest.mark.parametrize("age", ["abc", "n/a", "", "0", "150"])
def test_manifest_invalid_age(images: Path, age: str) -> None:
    manifest = write_tsv(
        images / "m.tsv",
        MANIFEST_HEADER,
        [("01", "img/a.nii.gz", "train", 30, "M"), ("07", "img/b.nii.gz", "train", age, "M")],
    )
    expect_error(
        lambda: read_manifest(manifest),
        f"manifest {manifest} line 3: subject 07 has ",
        f"age {age!r}",
    )


def test_manifest_invalid_sex(images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv", MANIFEST_HEADER, [("07", "img/a.nii.gz", "train", 3, "n/a")]
    )
    expect_error(
        lambda: read_manifest(manifest), f"manifest {manifest} line 2", "subject 07", "sex 'n/a'"
    )


@pytest.mark.parametrize("label", ["0_1", "sub-", "a-b", "sub-x y"])
def test_manifest_invalid_subject(images: Path, label: str) -> None:
    manifest = write_tsv(
        images / "m.tsv", MANIFEST_HEADER, [(label, "img/a.nii.gz", "train", 3, "M")]
    )
    expect_error(lambda: read_manifest(manifest), f"manifest {manifest} line 2", repr(label))


def test_manifest_line_numbers_count_blank_lines(images: Path) -> None:
    manifest = images / "m.tsv"
    manifest.write_text(
        "subject\tt1w\tsplit\tage\tsex\n01\timg/a.nii.gz\ttrain\t3\tM\n\n\n02\timg/b.nii.gz\ttrain\tx\tM\n"
    )
    expect_error(lambda: read_manifest(manifest), f"manifest {manifest} line 5", "subject 02")


def test_manifest_subject_in_two_splits(images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv",
        MANIFEST_HEADER,
        [
            ("01", "img/a.nii.gz", "train", 3, "M"),
            ("sub-01", "img/b.nii.gz", "external_test", 3, "M"),
        ],
    )
    expect_error(
        lambda: read_manifest(manifest),
        f"manifest {manifest} line 3",
        "subject 01 is in two splits (train, external_test)",
        "line 2",
    )


def test_manifest_duplicate_subject(images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv",
        MANIFEST_HEADER,
        [("01", "img/a.nii.gz", "train", 3, "M"), ("01", "img/b.nii.gz", "train", 3, "M")],
    )
    message = expect_error(
        lambda: read_manifest(manifest), f"manifest {manifest} line 3", "duplicate subject id 01"
    )
    assert "two splits" not in message


# --------------------------------------------------------------------------------------------
# cohort


def subject(sid: str, split: str, t1w: str = "/x.nii.gz", mask: str | None = None) -> Subject:
    return Subject(sid, Path(t1w), split, 30.0, "F", "d", Path(mask) if mask else None)


def test_check_cohort_merges_sources_and_sorts(ds: Path, images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv",
        MANIFEST_HEADER,
        [("b", "img/b.nii.gz", "internal_test", 3, "M"), ("a", "img/a.nii.gz", "train", 3, "M")],
    )
    ext = read_bids_dataset(ds, "external_test", subject_prefix="ext")
    cohort = check_cohort([*ext, *read_manifest(manifest), *read_bids_dataset(ds, "train")])
    assert [(s.split, s.subject) for s in cohort] == [
        ("train", "01"),
        ("train", "02"),
        ("train", "a"),
        ("internal_test", "b"),
        ("external_test", "ext01"),
        ("external_test", "ext02"),
    ]


def test_check_cohort_two_splits_across_sources(ds: Path, images: Path) -> None:
    manifest = write_tsv(
        images / "m.tsv", MANIFEST_HEADER, [("02", "img/b.nii.gz", "external_test", 3, "M")]
    )
    expect_error(
        lambda: check_cohort([*read_bids_dataset(ds, "train"), *read_manifest(manifest)]),
        "subject 02 is in two splits (train, external_test)",
        str(ds / "sub-02/anat/sub-02_T1w.nii"),
        str(images / "img/b.nii.gz"),
    )


def test_check_cohort_duplicate_across_sources(ds: Path, tmp_path: Path) -> None:
    other = make_bids(
        tmp_path / "ds2", {"sub-01": ["anat/sub-01_T1w.nii.gz"]}, [("sub-01", "9", "M")]
    )
    message = expect_error(
        lambda: check_cohort([*read_bids_dataset(ds, "train"), *read_bids_dataset(other, "train")]),
        "duplicate subject id 01",
        str(ds / "sub-01/anat/sub-01_T1w.nii.gz"),
        str(other / "sub-01/anat/sub-01_T1w.nii.gz"),
    )
    assert "two splits" not in message


def test_check_cohort_empty() -> None:
    expect_error(lambda: check_cohort([]), "cohort", "no subjects")


def test_check_cohort_unknown_split() -> None:
    expect_error(lambda: check_cohort([subject("01", "valid")]), "subject 01", "'valid'")


def test_cohort_frame_order_and_columns() -> None:
    frame = cohort_frame(
        [
            subject("b", "external_test", "/d/b.nii.gz"),
            subject("z", "train", "/d/z.nii.gz", mask="/d/z_mask.nii.gz"),
            subject("c", "internal_test", "/d/c.nii.gz"),
            subject("a", "train", "/d/a.nii.gz"),
        ]
    )
    assert list(frame.columns) == [
        "subject",
        "t1w",
        "split",
        "age",
        "sex",
        "dataset",
        "brain_mask",
        "gallery_t1w",
    ]
    assert list(frame["subject"]) == ["a", "z", "c", "b"]
    assert list(frame["split"]) == ["train", "train", "internal_test", "external_test"]
    assert list(frame["t1w"]) == ["/d/a.nii.gz", "/d/z.nii.gz", "/d/c.nii.gz", "/d/b.nii.gz"]
    assert list(frame["brain_mask"]) == ["", "/d/z_mask.nii.gz", "", ""]
    assert all(isinstance(v, str) for v in frame["t1w"])
    assert frame["age"].dtype == float
    assert list(frame.index) == [0, 1, 2, 3]


def test_cohort_frame_empty() -> None:
    frame = cohort_frame([])
    assert frame.empty
    assert list(frame.columns)[-2:] == ["brain_mask", "gallery_t1w"]


# --------------------------------------------------------------------------------------------
# re-identification gallery: an independent acquisition of each subject


def test_bids_gallery_from_a_second_session_or_run(tmp_path: Path, caplog) -> None:
    root = make_bids(
        tmp_path / "ds",
        {
            "sub-01": ["ses-1/anat/sub-01_ses-1_T1w.nii.gz", "ses-2/anat/sub-01_ses-2_T1w.nii.gz"],
            "sub-02": ["ses-1/anat/sub-02_ses-1_T1w.nii.gz"],  # no second session
        },
        [("sub-01", "40", "F"), ("sub-02", "50", "M")],
    )
    with caplog.at_level(logging.WARNING):
        first, second = read_bids_dataset(root, "external_test", session="1", gallery_session="2")
    assert first.t1w == root / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"
    assert first.gallery_t1w == root / "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"
    assert second.gallery_t1w is None and "sub-02 has no gallery image" in caplog.text
    assert all(s.gallery_t1w is None for s in read_bids_dataset(root, "train", session="1"))

    runs = make_bids(
        tmp_path / "runs",
        {"sub-01": ["anat/sub-01_run-1_T1w.nii.gz", "anat/sub-01_run-2_T1w.nii.gz"]},
        [("sub-01", "40", "F")],
    )
    [subject] = read_bids_dataset(runs, "internal_test", run=1, gallery_run="run-2")
    assert subject.t1w.name == "sub-01_run-1_T1w.nii.gz"
    assert subject.gallery_t1w.name == "sub-01_run-2_T1w.nii.gz"
    expect_error(
        lambda: read_bids_dataset(runs, "internal_test", run=1, gallery_run=1),
        "its own T1w",
        "another acquisition",
    )


def test_bids_gallery_from_a_gallery_dataset(tmp_path: Path) -> None:
    root = make_bids(
        tmp_path / "ds", {"sub-01": ["anat/sub-01_T1w.nii.gz"]}, [("sub-01", "40", "F")]
    )
    make_bids(tmp_path / "retest", {"sub-01": ["anat/sub-01_T1w.nii.gz"]}, None)
    [subject] = read_bids_dataset(root, "internal_test", gallery_path="../retest")
    assert subject.gallery_t1w == tmp_path / "retest/sub-01/anat/sub-01_T1w.nii.gz"
    expect_error(
        lambda: read_bids_dataset(root, "internal_test", gallery_path="../nowhere"),
        "gallery_path",
        "not found",
    )


def test_manifest_gallery_column(images: Path) -> None:
    manifest = images / "cohort.tsv"
    manifest.write_text(
        "subject\tt1w\tsplit\tage\tsex\tgallery_t1w\n"
        "01\timg/a.nii.gz\tinternal_test\t30\tM\timg/b.nii.gz\n"
        "02\timg/c.nii.gz\tinternal_test\t31\tF\t\n"
    )
    first, second = read_manifest(manifest)
    assert first.gallery_t1w == images / "img/b.nii.gz" and second.gallery_t1w is None
    assert list(cohort_frame([first, second])["gallery_t1w"]) == [str(images / "img/b.nii.gz"), ""]
    manifest.write_text(
        "subject\tt1w\tsplit\tage\tsex\tgallery_t1w\n"
        "01\timg/a.nii.gz\tinternal_test\t30\tM\timg/a.nii.gz\n"
    )
    expect_error(lambda: read_manifest(manifest), "line 2", "another acquisition")
    manifest.write_text(
        "subject\tt1w\tsplit\tage\tsex\tgallery_t1w\n"
        "01\timg/a.nii.gz\tinternal_test\t30\tM\timg/missing.nii.gz\n"
    )
    expect_error(lambda: read_manifest(manifest), "gallery_t1w file not found")
