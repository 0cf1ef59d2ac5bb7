import os
import re

import pytest
import yaml
from helpers import REPO, copy_workflow, run_snakemake

from defaceaudit import paths
from defaceaudit.config import canonical, load_config, validate_config
from defaceaudit.errors import InputError
from defaceaudit.workflow.plan import load_cohort
from defaceaudit.workflow.targets import all_targets


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
        assert set(paths.prepared_files(subject).values()) <= set(targets)
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
    from defaceaudit.workflow.deface_plan import defacer_plan

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
    from defaceaudit.workflow.deface_plan import defacer_plan
    from defaceaudit.workflow.metrics_plan import metric_plan

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


# --------------------------------------------------------------------------------------------
# the cli's config and plans: what Snakemake sees and builds

#: a demo whose radiodensity study can fit its mixed models (4 of 8 subjects in its train split)
SMALL_DEMO = {"demo": {"n_train": 6, "n_internal_test": 1, "n_external_test": 1}}


def rule_all_inputs(workdir, config: dict) -> list[str]:
    """The input of ``rule all`` in a dry-run of the workflow copy ``workdir`` with ``config``
    as ``--configfile`` (on top of its config.yaml), sorted."""
    done = run_snakemake(workdir, "--dry-run", config=config, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    block = re.search(r"^(?:local)?rule all:\n    input: (.*)$", done.stdout, re.M)
    assert block, done.stdout[-3000:]
    return sorted(block[1].split(", "))


def cli(workdir, capsys, *args: str) -> tuple[int, str, str]:
    """``defaceaudit <args>`` run in ``workdir``: exit code, stdout, stderr."""
    from defaceaudit.cli import main

    here = os.getcwd()
    os.chdir(workdir)
    try:
        code = main(list(args))
    finally:
        os.chdir(here)
    out, err = capsys.readouterr()
    return code, out, err


def containers_without_radiodensity() -> dict:
    config = yaml.safe_load((REPO / "tests/configs/containers.yaml").read_text())
    return {**config, "radiodensity": {"enabled": False}}


@pytest.mark.workflow
@pytest.mark.parametrize("scenario", ["small_demo", "containers"])
def test_targets_command_lists_what_rule_all_requests(tmp_path, capsys, scenario):
    config = SMALL_DEMO if scenario == "small_demo" else containers_without_radiodensity()
    workdir = copy_workflow(tmp_path)
    requested = rule_all_inputs(workdir, config)  # writes test_config.yaml
    code, out, _ = cli(workdir, capsys, "targets", "--config", "test_config.yaml")
    assert code == 0
    assert out.splitlines() == requested
    if scenario == "small_demo":  # every stage is there
        assert {paths.FACE_METRICS, paths.RADIODENSITY_FIGURE} <= set(requested)
        assert paths.reface_checkpoint("face", 2) in requested
        assert any(t.startswith(paths.FIGURES) for t in requested)


def test_run_config_is_config_yaml_with_the_users_file_on_top(tmp_path, monkeypatch):
    from defaceaudit.cli import run_config

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        yaml.safe_dump({"demo": {"n_train": 3}, "deface": {"defacers": ["skullstrip"]}})
    )
    assert run_config(mine)["demo"]["n_internal_test"] == 4  # the schema's default
    base = {"demo": {"n_internal_test": 2, "seed": 7}, "deface": {"defacers": ["quickshear"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base))
    config = run_config(mine)
    assert (config["demo"]["n_train"], config["demo"]["n_internal_test"]) == (3, 2)  # merged
    assert config["demo"]["seed"] == 7
    assert config["deface"]["defacers"] == ["skullstrip"]  # a list is replaced whole
    assert run_config("config.yaml")["deface"]["defacers"] == ["quickshear"]
    mine.write_text(yaml.safe_dump({"demo": {"n_train": 0}}))
    with pytest.raises(
        InputError, match=r"config\.yaml \+ .*mine\.yaml: config demo\.n_train: 0 is less"
    ):
        run_config(mine)
    mine.write_text(yaml.safe_dump({"input": {"bids": [{"path": "/d", "role": "training"}]}}))
    with pytest.raises(InputError, match=r"config input\.bids\[0\]\.role: 'training' is not"):
        run_config(mine)
    with pytest.raises(InputError, match="nope.yaml: cannot read"):
        run_config(tmp_path / "nope.yaml")
    mine.write_text("demo:\n  n_train: [3\n")
    with pytest.raises(InputError, match=r"mine\.yaml: not valid YAML at line 3, column 1"):
        run_config(mine)


def test_check_inputs_uses_config_yaml_and_builds_every_plan(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(SMALL_DEMO))
    code, out, _ = cli(tmp_path, capsys, "check-inputs")
    assert code == 0 and out.splitlines()[-1].split() == ["total", "8", "subjects"]
    lines = dict(line.split(None, 1) for line in out.splitlines()[:2])
    assert lines["defacers"].startswith("quickshear (native)")
    assert "face metrics" in out and "radiodensity" in out
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"radiodensity": {"enabled": False}}))
    _, out, _ = cli(tmp_path, capsys, "check-inputs", "--config", str(off))
    assert "radiodensity   off (radiodensity.enabled: false)" in out
    mine = tmp_path / "mine.yaml"
    problems = {
        "metrics.population_average": {"metrics": {"population_average": "mri_reface"}},
        "radiodensity.defacers": {"radiodensity": {"defacers": ["pydeface"]}},
        "config radiodensity:": {"demo": {"n_train": 2}},  # on top of config.yaml's 1 + 1
    }
    for problem, config in problems.items():
        mine.write_text(yaml.safe_dump(config))
        code, out, err = cli(tmp_path, capsys, "check-inputs", "--config", str(mine))
        assert code == 1 and not out
        assert err.startswith("defaceaudit: error: ") and problem in err, err
        assert len(err.splitlines()) == 1


def only_test_subjects(tmp_path, **sections) -> dict:
    (tmp_path / "a.nii.gz").write_bytes(b"")
    manifest = tmp_path / "cohort.tsv"
    manifest.write_text("subject\tt1w\tsplit\tage\tsex\na\ta.nii.gz\texternal_test\t30\tF\n")
    return validate_config({"input": {"source": "manifest", "manifest": str(manifest)}, **sections})


def test_training_stages_need_train_subjects(tmp_path):
    with pytest.raises(InputError, match="config input: the cohort has no train subjects") as err:
        load_cohort(only_test_subjects(tmp_path))
    assert "reface.enabled is true" in str(err.value) and "avgface" in str(err.value)
    no_reface = {"reface": {"enabled": False}}
    with pytest.raises(InputError, match="deface.defacers has avgface") as err:
        load_cohort(only_test_subjects(tmp_path, **no_reface))
    assert "reface" not in str(err.value)
    quickshear = {"deface": {"defacers": ["quickshear"]}}
    with pytest.raises(InputError, match="reface.enabled is true"):
        load_cohort(only_test_subjects(tmp_path, **quickshear))
    assert load_cohort(only_test_subjects(tmp_path, **quickshear, **no_reface)).ids() == ["a"]
    # the population-average refacers are not refaced: no model to train
    mri_reface = {"deface": {"defacers": ["mri_reface"]}}
    assert load_cohort(only_test_subjects(tmp_path, **mri_reface)).ids() == ["a"]


def test_radiodensity_needs_enough_subjects_for_its_train_split():
    from defaceaudit.workflow.plan import plan_run

    with pytest.raises(InputError, match=r"config radiodensity: its train split would hold 2 of"):
        plan_run(
            validate_config({"demo": {"n_train": 2, "n_internal_test": 1, "n_external_test": 1}})
        )
    assert plan_run(validate_config(SMALL_DEMO)).radiodensity is not None
    off = validate_config({"demo": {"n_train": 2}, "radiodensity": {"enabled": False}})
    assert plan_run(off).radiodensity is None
    uneven = {"split": {"train": 0.5, "validation": 0.5, "test": 0.5}}
    with pytest.raises(InputError, match="config radiodensity.split: .*sum to 1"):
        plan_run(validate_config({**SMALL_DEMO, "radiodensity": uneven}))


def _reid(config):
    from defaceaudit.workflow.deface_plan import defacer_plan
    from defaceaudit.workflow.metrics_jobs import reidentification_plan
    from defaceaudit.workflow.metrics_plan import metric_plan

    config = validate_config(config)
    cohort = load_cohort(config)
    plan = metric_plan(defacer_plan(config["deface"]), config["metrics"])
    return cohort, plan, reidentification_plan(cohort, plan)


def test_the_demo_gallery_is_a_second_session_of_each_test_subject():
    from defaceaudit.workflow import metrics_jobs as jobs

    cohort, plan, reid = _reid({"demo": {"n_train": 2, "n_internal_test": 3, "n_external_test": 4}})
    assert reid.gallery == {
        "internal_test": ("in01", "in02", "in03"),
        "external_test": ("ex01", "ex02", "ex03", "ex04"),
    }
    assert reid.notes == ()
    assert cohort.subjects["in01"].gallery_t1w.as_posix() == paths.demo_gallery_t1w("in01")
    assert cohort.subjects["tr01"].gallery_t1w is None  # nothing per train subject
    # skull-stripping removes the scalp too: not part of the face region; the average face is
    assert reid.region_defacers == ("quickshear", "facemask", "avgface")
    assert jobs.face_metric_probe_types(reid, plan, "quickshear", "in01") == (
        "defaced",
        "dpm_refaced",
        "population_average",
    )
    inputs = jobs.reidentification_inputs(cohort, plan, reid)
    assert len(inputs["gallery"]) == 7 and inputs["mask"] == paths.FACE_REGION["mask"]
    # each subject's original (the ceiling) and its three metric jobs' faces
    assert len(inputs["probes"]) == 7 + 7 * 3
    assert paths.template_alignment_files("in01")["faces"] in inputs["probes"]
    region = jobs.face_region_inputs(reid)
    assert len(region["transforms"]) == 7 and len(region["removed"]) == 7 * 3
    assert paths.defaced_files("skullstrip", "in01")["removed"] not in region["removed"]
    assert jobs.gallery_alignment_inputs(cohort, "ex04")["t1w"] == paths.demo_gallery_t1w("ex04")
    targets = all_targets(cohort, {"quickshear": "native"}, plan)
    assert paths.gallery_alignment_files("ex04")["faces"] in targets
    assert paths.FACE_REGION["mask"] in targets


def test_reidentification_is_off_without_enough_gallery_images_and_says_why():
    from defaceaudit.workflow import metrics_jobs as jobs

    cohort, plan, reid = _reid({"demo": {"n_train": 2, "n_internal_test": 2, "n_external_test": 3}})
    assert list(reid.gallery) == ["external_test"]
    assert "internal_test: off: 2 of its 2 subjects" in reid.notes[0]
    assert jobs.face_metric_probe_types(reid, plan, "quickshear", "in01") == ()  # no registration
    off = {"demo": {"n_train": 2, "n_internal_test": 3, "n_external_test": 3}}
    cohort, plan, reid = _reid({**off, "demo": {**off["demo"], "gallery": {"enabled": False}}})
    assert reid.gallery == {} and len(reid.notes) == 2
    assert jobs.reidentification_inputs(cohort, plan, reid) == {}
    assert paths.FACE_REGION["mask"] not in all_targets(cohort, {"quickshear": "native"}, plan)
    assert paths.REIDENTIFICATION["markdown"] in all_targets(cohort, {"quickshear": "native"}, plan)
    _, _, reid = _reid({**off, "deface": {"defacers": ["skullstrip"]}})
    assert reid.gallery == {} and "no configured defacer removes the face" in reid.notes[0]


def test_bids_gallery_options_reach_the_cohort(tmp_path):
    root = tmp_path / "ds"
    for label in ("01", "02", "03"):
        for ses in ("1", "2"):
            path = root / f"sub-{label}/ses-{ses}/anat/sub-{label}_ses-{ses}_T1w.nii.gz"
            path.parent.mkdir(parents=True)
            path.write_bytes(b"")
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsex\nsub-01\t30\tF\nsub-02\t40\tM\nsub-03\t50\tF\n"
    )
    entry = {"path": str(root), "role": "internal_test", "session": "1", "gallery_session": "2"}
    config = {
        "input": {"source": "bids", "bids": [entry]},
        "deface": {"defacers": ["quickshear"]},
        "reface": {"enabled": False},
        "radiodensity": {"enabled": False},
    }
    cohort, _, reid = _reid(config)
    assert reid.gallery == {"internal_test": ("01", "02", "03")}
    assert cohort.subjects["02"].gallery_t1w.name == "sub-02_ses-2_T1w.nii.gz"
