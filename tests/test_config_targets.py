import pytest
from conftest import REPO

from defaceaudit.cohort import load_cohort
from defaceaudit.config import canonical, load_config, validate_config
from defaceaudit.errors import InputError
from defaceaudit.targets import all_targets, prepared_files


def test_default_config_validates_and_gets_defaults():
    config = load_config(REPO / "config.yaml")
    assert config["input"]["source"] == "demo"
    assert config["demo"]["fov_mm"] == [192, 272, 224]  # filled from the schema
    assert config["demo"]["cache_dir"] is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"input": {"source": "nifti"}}, "is not one of"),
        ({"input": {"source": "bids"}}, "bids. is a required property"),
        ({"input": {"source": "manifest"}}, "'manifest' is a required property"),
        ({"input": {"source": "manifest", "manifest": None}}, "is not of type 'string'"),
        ({"demo": {"n_train": 0}}, "less than the minimum"),
        ({"demo": {"voxel_sizee_mm": 2}}, "Additional properties"),
        ({"input": {"source": "bids", "bids": [{"path": "x", "role": "test"}]}}, "not one of"),
    ],
)
def test_invalid_configs_fail_in_one_line(config, message):
    with pytest.raises(InputError, match=message) as err:
        validate_config(config)
    assert "\n" not in str(err.value)


def test_unreadable_config_names_the_file(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(InputError, match=str(bad)):
        load_config(bad)


def test_targets_cover_every_subject_and_the_demo_tables():
    config = validate_config({"demo": {"n_train": 2, "n_internal_test": 1, "n_external_test": 1}})
    cohort = load_cohort(config)
    targets = all_targets(cohort)
    assert targets == sorted(set(targets))
    assert cohort.ids() == ["tr01", "tr02", "in01", "ex01"]
    for subject in cohort.ids():
        assert set(prepared_files(subject).values()) <= set(targets)
    assert "results/demo/bids/internal/phenotype/ct_muscle.tsv" in targets
    assert "results/demo/bids/external/participants.tsv" in targets
    assert "results/cohort/subjects.tsv" in targets
    assert len(targets) == 4 * 4 + 2 * 7 + 1  # 4 prepared files per subject, 7 tables per dataset


def test_manifest_cohort_has_no_demo_tables(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    manifest = tmp_path / "cohort.tsv"
    manifest.write_text(
        "subject\tt1w\tsplit\tage\tsex\na\ta.nii.gz\ttrain\t30\tF\nb\tb.nii.gz\texternal_test\t41\tM\n"
    )
    config = validate_config({"input": {"source": "manifest", "manifest": str(manifest)}})
    targets = all_targets(load_cohort(config))
    assert not [t for t in targets if "demo" in t]
    assert len(targets) == 2 * 4 + 1


def test_defacer_plan_checks_backends_and_images():
    from defaceaudit.defacers.plan import defacer_plan

    default = validate_config({})["deface"]
    assert defacer_plan(default) == dict.fromkeys(
        ["quickshear", "facemask", "avgface", "skullstrip"], "native"
    )
    tagged = validate_config(
        {
            "deface": {
                "defacers": ["pydeface"],
                "containers": {"pydeface": "docker://poldracklab/pydeface:latest"},
            }
        }
    )["deface"]
    with pytest.raises(InputError, match="deface.containers.pydeface"):
        defacer_plan(tagged)
    pinned = dict(
        tagged, containers={"pydeface": "docker://poldracklab/pydeface@sha256:" + "a" * 64}
    )
    assert defacer_plan(pinned) == {"pydeface": "container"}
    native_fsl = dict(tagged, defacers=["fsl_deface"], backends={"fsl_deface": "native"})
    with pytest.raises(InputError, match="fsl_deface has no native backend"):
        defacer_plan(native_fsl)


def test_targets_include_every_subject_and_defacer():
    config = validate_config({"demo": {"n_train": 2, "n_internal_test": 1, "n_external_test": 1}})
    cohort = load_cohort(config)
    targets = all_targets(cohort, {"quickshear": "native", "fsl_deface": "container"})
    assert "results/deface/qc_table.tsv" in targets
    assert "results/deface/fsl_deface/sub-ex01/anat/sub-ex01_desc-fsldeface_T1w.nii.gz" in targets
    deface = [t for t in targets if t.startswith("results/deface/") and "/sub-" in t]
    assert len(deface) == 4 * 2 * 5


def test_metric_targets_cover_every_test_subject_and_defacer_row():
    from defaceaudit import paths
    from defaceaudit.defacers.plan import defacer_plan
    from defaceaudit.metrics.plan import metric_plan

    config = validate_config({"demo": {"n_train": 2, "n_internal_test": 1, "n_external_test": 1}})
    cohort = load_cohort(config)
    defacers = defacer_plan(config["deface"])
    plan = metric_plan(defacers, config["metrics"])
    targets = all_targets(cohort, defacers, plan, n_panel_subjects=1)
    for subject in ("in01", "ex01"):
        for defacer in ("quickshear", "facemask", "skullstrip"):
            assert paths.face_metric_files(defacer, subject)["rows"] in targets
        assert paths.face_panel_file(subject) in targets
    assert not any("sub-tr01" in t for t in targets if t.startswith(paths.METRICS))
    assert not any("avgface" in t for t in targets if t.startswith(paths.METRICS))
    assert {paths.FACE_METRICS, paths.FACE_TABLES_HTML, *paths.FIGURE_FILES.values()} <= set(
        targets
    )
    assert all_targets(cohort, defacers) == [
        t for t in targets if not t.startswith((paths.METRICS, paths.FIGURES))
    ]


def test_canonical_params_print_the_same_for_reordered_settings():
    a = {"sampling": {"steps": 5, "eta": 0.0}, "stage1": {"training": {"lr": 1, "steps": 2}}}
    b = {"stage1": {"training": {"steps": 2, "lr": 1}}, "sampling": {"eta": 0.0, "steps": 5}}
    assert repr(a) != repr(b)  # what Snakemake compares for params
    assert repr(canonical(a)) == repr(canonical(b))
    assert canonical(a) == a  # same values
    assert canonical({"x": [{"b": 1, "a": 2}]}) == {"x": [{"a": 2, "b": 1}]}
    assert list(canonical({"x": [{"b": 1, "a": 2}]})["x"][0]) == ["a", "b"]
