import numpy as np
import pandas as pd
import pytest

from defaceaudit.cohort.demo.plan import (
    BODY_PARTS,
    EXTERNAL_BASE,
    INTERNAL_BASES,
    PhenotypeModel,
    draw_phenotype,
    plan_demo_cohort,
)


def test_counts_splits_and_bases():
    plan = plan_demo_cohort(6, 2, 3, seed=1)
    splits = [p.split for p in plan]
    assert splits.count("train") == 6
    assert splits.count("internal_test") == 2
    assert splits.count("external_test") == 3
    assert len({p.subject for p in plan}) == len(plan)  # disjoint splits, unique ids
    internal = {p.base for p in plan if p.split != "external_test"}
    assert internal == set(INTERNAL_BASES)
    assert {p.base for p in plan if p.split == "external_test"} == {EXTERNAL_BASE}


def test_same_seed_same_plan_other_seed_other_plan():
    assert plan_demo_cohort(4, 1, 1, seed=3) == plan_demo_cohort(4, 1, 1, seed=3)
    assert plan_demo_cohort(4, 1, 1, seed=3) != plan_demo_cohort(4, 1, 1, seed=4)


def test_adding_a_subject_changes_no_other():
    small = {p.subject: p for p in plan_demo_cohort(4, 1, 1, seed=3)}
    large = {p.subject: p for p in plan_demo_cohort(5, 2, 1, seed=3)}
    assert set(large) - set(small) == {"tr05", "in02"}
    assert all(large[s] == small[s] for s in small)


def test_latents_in_documented_ranges():
    plan = plan_demo_cohort(40, 5, 5, seed=9, face_tissue_sd_mm=2.0)
    assert all(20 <= p.age <= 80 for p in plan)
    assert {p.sex for p in plan} == {"F", "M"}
    faces = np.array([p.face_tissue_mm for p in plan])
    assert np.abs(faces).max() <= 5.0 + 1e-9  # clipped at 2.5 SD
    assert 1.0 < faces.std() < 3.0


def test_phenotype_visits_and_ages():
    for p in plan_demo_cohort(10, 1, 1, seed=2):
        rows = draw_phenotype(p)
        assert 1 <= len(rows) <= 3
        assert list(rows["visit"]) == list(range(1, len(rows) + 1))
        assert rows["age"].iloc[0] == pytest.approx(p.age)
        assert np.all(np.diff(rows["age"]) >= 1.0)
        assert set(rows["participant_id"]) == {f"sub-{p.subject}"}
        assert draw_phenotype(p).equals(rows)  # deterministic


def test_phenotype_recovers_the_generative_coefficients():
    """OLS on many subjects' first visits recovers age, sex and face effects of the model."""
    model = PhenotypeModel()
    plan = plan_demo_cohort(1500, 1, 1, seed=5)
    first = pd.concat([draw_phenotype(p).iloc[:1] for p in plan], ignore_index=True)
    design = np.column_stack(
        [
            np.ones(len(plan)),
            first["age"] - model.reference_age,
            [p.sex == "F" for p in plan],
            [p.face_tissue_mm for p in plan],
        ]
    )
    for k, part in enumerate(BODY_PARTS):
        coef, *_ = np.linalg.lstsq(design, first[f"{part}_hu"].to_numpy(), rcond=None)
        assert coef[1] == pytest.approx(model.age_hu_per_year[k], abs=0.03)
        assert coef[2] == pytest.approx(model.female_hu[k], abs=0.7)
        assert coef[3] == pytest.approx(model.face_hu_per_mm[k], abs=0.15)


def test_demo_tables_writes_exactly_the_declared_files(tmp_path):
    """Every file of a demo dataset's tables is a declared output of write_demo_tables."""
    from defaceaudit import paths
    from defaceaudit.cohort.demo.build import write_demo_tables

    subjects = [p.as_params() for p in plan_demo_cohort(2, 1, 1, seed=1)]
    write_demo_tables(subjects, "internal", tmp_path, seed=1)
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(paths.DEMO_TABLES)


def test_a_killed_download_folder_is_removed_and_a_live_one_kept(tmp_path):
    import os
    import time

    from defaceaudit.cohort.demo.sources import STALE_DOWNLOAD_S, _remove_stale_downloads

    killed, live = tmp_path / ".download-killed", tmp_path / ".download-live"
    for folder in (killed, live):
        folder.mkdir()
        (folder / "part.whl").write_bytes(b"x")
    old = time.time() - STALE_DOWNLOAD_S - 60
    os.utime(killed, (old, old))
    (tmp_path / "cached.nii.gz").write_bytes(b"y")
    _remove_stale_downloads(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".download-live", "cached.nii.gz"]


def test_a_broken_cached_brain_mask_is_extracted_again(tmp_path, monkeypatch):
    import nibabel as nib
    import numpy as np
    from synthetic import synthetic_head

    from defaceaudit.cohort.demo import build
    from defaceaudit.cohort.demo.sources import BASE_HEADS

    img, brain = synthetic_head()
    head_file = tmp_path / "head.nii.gz"
    nib.save(img, head_file)
    monkeypatch.setattr(build, "fetch_package_file", lambda spec, cache: head_file)
    calls = []
    monkeypatch.setattr(build, "robex_brain_mask", lambda image: calls.append(1) or brain)
    spec = BASE_HEADS["robex"]
    cached = tmp_path / f"robex_{spec.sha256[:12]}_desc-robex_mask.nii.gz"
    cached.write_bytes(b"not a NIfTI file")
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("t1w", "brain", "head")}
    build.fetch_demo_base("robex", out["t1w"], out["brain"], out["head"], cache_dir=tmp_path)
    assert calls == [1] and np.array_equal(nib.load(cached).get_fdata() > 0, brain)
    build.fetch_demo_base("robex", out["t1w"], out["brain"], out["head"], cache_dir=tmp_path)
    assert calls == [1]  # the repaired cache serves the rerun
