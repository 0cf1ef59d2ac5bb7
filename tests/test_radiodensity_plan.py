"""Which models the radiodensity study trains, and the targets it adds
(workflow.radiodensity_plan)."""

from pathlib import Path

import pytest

from defaceaudit import paths
from defaceaudit.config import validate_config
from defaceaudit.errors import InputError
from defaceaudit.workflow.deface_plan import defacer_plan
from defaceaudit.workflow.plan import load_cohort
from defaceaudit.workflow.radiodensity_plan import radiodensity_plan
from defaceaudit.workflow.targets import all_targets

TINY = {"n_train": 2, "n_internal_test": 1, "n_external_test": 1}


def plan_for(config):
    config = validate_config(config)
    cohort = load_cohort(config)
    defacers = defacer_plan(config["deface"])
    return cohort, radiodensity_plan(cohort, defacers, config["radiodensity"])


def test_demo_plan_has_original_and_every_defacer_for_every_body_part():
    cohort, plan = plan_for({"demo": TINY})
    assert plan.image_types == ("original", "quickshear", "facemask", "avgface", "skullstrip")
    assert plan.body_parts == ("abdomen", "thigh", "shin")
    assert len(plan.models()) == 15
    assert plan.phenotype == (
        "results/demo/bids/external/phenotype/ct_muscle.tsv",
        "results/demo/bids/internal/phenotype/ct_muscle.tsv",
    )
    targets = all_targets(cohort, radiodensity=plan)
    assert paths.radiodensity_model_files("skullstrip", "shin")["predictions"] in targets
    assert paths.radiodensity_crop_files("ex01")["crops"] in targets
    assert paths.RADIODENSITY_FIGURE in targets


def test_chosen_defacers_and_body_parts():
    settings = {"defacers": ["skullstrip"], "body_parts": ["thigh"]}
    _, plan = plan_for({"demo": TINY, "radiodensity": settings})
    assert plan.models() == [("original", "thigh"), ("skullstrip", "thigh")]
    with pytest.raises(InputError, match="radiodensity.defacers: pydeface not among"):
        plan_for({"demo": TINY, "radiodensity": {"defacers": ["pydeface"]}})


def manifest_config(tmp_path, radiodensity):
    for name in ("a", "b"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    manifest = tmp_path / "cohort.tsv"
    manifest.write_text(
        "subject\tt1w\tsplit\tage\tsex\na\ta.nii.gz\ttrain\t30\tF\nb\tb.nii.gz\ttrain\t41\tM\n"
    )
    source = {"source": "manifest", "manifest": str(manifest)}
    return {"input": source, "radiodensity": radiodensity}


def test_own_cohort_runs_the_study_only_with_a_phenotype_table(tmp_path):
    _, plan = plan_for(manifest_config(tmp_path, {}))
    assert plan is None  # auto without a phenotype: no study
    with pytest.raises(InputError, match="radiodensity.phenotype names no table"):
        plan_for(manifest_config(tmp_path, {"enabled": True}))
    table = str(tmp_path / "ct.tsv")
    with pytest.raises(InputError, match=f"radiodensity.phenotype: {table} not found"):
        plan_for(manifest_config(tmp_path, {"phenotype": table}))
    Path(table).write_text("participant_id\tvisit\tage\tabdomen_hu\n")
    _, plan = plan_for(manifest_config(tmp_path, {"phenotype": table}))
    assert plan.phenotype == (table,)
    _, plan = plan_for({"demo": TINY, "radiodensity": {"enabled": False}})
    assert plan is None
