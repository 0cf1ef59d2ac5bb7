"""Radiodensity study (paper section 3): targets, splits, sampler, MedicalNet loading, face crops,
training, bootstrap statistics, table and figure. Tiny synthetic data, CPU, seconds."""

from __future__ import annotations

import functools
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from scipy import stats
from synthetic import synthetic_head

from defaceaudit.errors import DefaceAuditError, ImageError, InputError
from defaceaudit.imaging.register import resample
from defaceaudit.radiodensity.crop import CropGeometry, crop_radiodensity_face
from defaceaudit.radiodensity.evaluate import (
    radiodensity_findings,
    radiodensity_table,
    spearman_bootstrap,
    subject_means,
    write_radiodensity_tables,
)
from defaceaudit.radiodensity.figure import difference_mark, plot_radiodensity
from defaceaudit.radiodensity.model import load_medicalnet, resnet10
from defaceaudit.radiodensity.sampler import balanced_sampler, subject_balanced_weights
from defaceaudit.radiodensity.splits import assign_subject_splits
from defaceaudit.radiodensity.study import evaluate_radiodensity, radiodensity_targets
from defaceaudit.radiodensity.targets import lme_residual_targets
from defaceaudit.radiodensity.train import (
    EarlyStopping,
    TrainingDivergedError,
    fit_radiodensity,
    train_radiodensity,
)

torch.set_num_threads(2)

FRACTIONS = {"train": 0.5, "validation": 0.17, "test": 0.33}


# --- targets (eq. 2) ------------------------------------------------------------------------------


def _phenotype(n_subjects=24, seed=3):
    """Visits of a mixed model: y = 40 - 0.3 age - 4 [F] + r_i + e_ij (HU)."""
    rng = np.random.default_rng(seed)
    rows, people = [], []
    for i in range(n_subjects):
        pid, sex = f"sub-{i:02d}", "F" if i % 2 else "M"
        people.append({"participant_id": pid, "sex": sex})
        r = rng.normal(0, 4)
        age = rng.uniform(20, 80)
        for visit in range(1, int(rng.integers(1, 4)) + 1):
            age += rng.uniform(1, 3)
            y = 40 - 0.3 * age - 4 * (sex == "F") + r + rng.normal(0, 2.5)
            rows.append({"participant_id": pid, "visit": visit, "age": age, "abdomen_hu": y})
    phen = pd.DataFrame(rows)
    phen["shin_hu"] = phen["abdomen_hu"] * 0.5 + 30
    return phen, pd.DataFrame(people)


def test_lme_targets_match_a_direct_mixedlm_fit():
    phen, people = _phenotype()
    train = [f"sub-{i:02d}" for i in range(16)]
    out = lme_residual_targets(phen, people, ["abdomen", "shin"], train)
    abd = out[out["body_part"] == "abdomen"].reset_index(drop=True)
    assert len(out) == 2 * len(phen)
    # direct fit with explicit design matrices (no formula), on the training rows only
    female = phen["participant_id"].map(people.set_index("participant_id")["sex"]).eq("F")
    exog = np.column_stack([np.ones(len(phen)), phen["age"], female.astype(float)])
    fit = phen["participant_id"].isin(train).to_numpy()
    result = sm.MixedLM(
        phen["abdomen_hu"].to_numpy()[fit], exog[fit], groups=phen["participant_id"][fit]
    ).fit(reml=True)
    fixed = exog @ np.asarray(result.fe_params)
    np.testing.assert_allclose(abd["fixed_hu"], fixed, rtol=0, atol=1e-4)
    residual = phen["abdomen_hu"].to_numpy() - fixed
    np.testing.assert_allclose(abd["residual_hu"], residual, atol=1e-4)
    # eq. 2 removes the fixed effects only: the random intercept stays in the residual
    assert np.abs(abd["residual_hu"].to_numpy()[fit] - np.asarray(result.resid)).max() > 1.0
    z = (residual - residual[fit].mean()) / residual[fit].std(ddof=1)
    np.testing.assert_allclose(abd["target"], z, atol=1e-4)
    assert abs(abd["target"][fit].mean()) < 1e-9 and abs(abd["target"][fit].std() - 1) < 1e-9
    assert list(out.columns) == [
        "participant_id",
        "visit",
        "age",
        "sex",
        "body_part",
        "y_hu",
        "fixed_hu",
        "residual_hu",
        "target",
    ]


def test_lme_targets_explain_their_errors():
    phen, people = _phenotype()
    train = people["participant_id"][:16]
    with pytest.raises(DefaceAuditError, match="thigh_hu"):
        lme_residual_targets(phen, people, ["thigh"], train)
    no_sex = people.copy()
    no_sex.loc[3, "sex"] = np.nan
    with pytest.raises(DefaceAuditError, match="sub-03: no sex"):
        lme_residual_targets(phen, no_sex, ["abdomen"], train)
    with pytest.raises(DefaceAuditError, match="2 training subject"):
        lme_residual_targets(phen, people, ["abdomen"], ["sub-00", "sub-01"])


# --- splits and sampling --------------------------------------------------------------------------


def test_splits_are_deterministic_disjoint_and_stable():
    subjects = [f"sub-{i:03d}" for i in range(300)]
    a = assign_subject_splits(subjects, FRACTIONS, seed=2025)
    assert a == assign_subject_splits(list(reversed(subjects)), FRACTIONS, seed=2025)
    assert list(a) == subjects and set(a.values()) == {"train", "validation", "test"}
    grown = assign_subject_splits([*subjects, "sub-new"], FRACTIONS, seed=2025)
    assert {s: grown[s] for s in subjects} == a
    counts = pd.Series(a).value_counts()
    for name, fraction in FRACTIONS.items():  # binomial counts within 4 SD
        assert abs(counts[name] - 300 * fraction) < 4 * np.sqrt(300 * fraction * (1 - fraction))
    assert assign_subject_splits(subjects, FRACTIONS, seed=1) != a
    for seed in range(20):  # small cohorts: every split gets someone
        small = assign_subject_splits(["a", "b", "c"], FRACTIONS, seed=seed)
        assert sorted(small.values()) == ["test", "train", "validation"]
    with pytest.raises(DefaceAuditError, match="sum to 1"):
        assign_subject_splits(subjects, {"train": 0.5, "validation": 0.2, "test": 0.2}, 0)


def test_quota_splits_have_exact_sizes():
    subjects = [f"sub-{i:02d}" for i in range(24)]
    for seed in range(10):
        quota = assign_subject_splits(subjects, FRACTIONS, seed, method="quota")
        assert pd.Series(quota).value_counts().to_dict() == {
            "train": 12,
            "test": 8,
            "validation": 4,
        }
        grown = assign_subject_splits([*subjects, "sub-new"], FRACTIONS, seed, method="quota")
        assert sum(grown[s] != quota[s] for s in subjects) <= 2
    tiny = assign_subject_splits(
        ["a", "b", "c"], {"train": 0.9, "validation": 0.05, "test": 0.05}, 0, method="quota"
    )
    assert sorted(tiny.values()) == ["test", "train", "validation"]


def test_sampler_draws_subjects_equally_often():
    visits = [1, 2, 3, 1, 4]
    ids = [f"s{i}" for i, v in enumerate(visits) for _ in range(v)]
    p = subject_balanced_weights(ids)
    expected = np.array([1 / (len(visits) * v) for v in visits for _ in range(v)])
    np.testing.assert_allclose(p, expected)
    assert p.sum() == pytest.approx(1.0)
    draws = 200_000
    sampler = balanced_sampler(ids, draws, seed=7)
    counts = np.bincount(np.fromiter(iter(sampler), dtype=np.int64), minlength=len(ids))
    # each row's count is binomial(draws, p): 5 SD leaves a false alarm below 1e-5 over 11 rows
    assert np.all(np.abs(counts / draws - p) < 5 * np.sqrt(p * (1 - p) / draws))
    again = np.fromiter(iter(balanced_sampler(ids, 50, seed=7)), dtype=np.int64)
    assert np.array_equal(again, np.fromiter(iter(balanced_sampler(ids, 50, 7)), dtype=np.int64))


# --- MedicalNet -----------------------------------------------------------------------------------


@functools.cache
def _encoder_state() -> dict:
    """A ResNet10 state dict in MedicalNet's layout: ``module.`` prefixes, no ``fc``."""
    torch.manual_seed(1)
    return {f"module.{k}": v for k, v in resnet10().state_dict().items() if not k.startswith("fc.")}


def _medicalnet_file(path, edit=None):
    state = dict(_encoder_state())
    if edit:
        edit(state)
    torch.save({"state_dict": state}, path)
    return state


def test_load_medicalnet_checks_keys_and_names_the_file(tmp_path):
    good = tmp_path / "resnet_10.pth"
    state = _medicalnet_file(good)
    model = resnet10()
    fc_before = model.fc.weight.detach().clone()
    load_medicalnet(model, good)
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            continue
        assert torch.equal(value, state[f"module.{key}"]), key
    assert torch.equal(model.fc.weight, fc_before)

    def fails(name, edit, pattern):
        path = tmp_path / name
        _medicalnet_file(path, edit)
        with pytest.raises(DefaceAuditError, match=pattern):
            load_medicalnet(model, path)  # checked before anything is loaded

    fails(
        "extra.pth",
        lambda s: s.update({"module.conv_seg.weight": torch.zeros(2)}),
        r"extra\.pth.*unexpected keys conv_seg\.weight",
    )
    fails(
        "renamed.pth",
        lambda s: s.update({"module.conv0.weight": s.pop("module.conv1.weight")}),
        r"renamed\.pth.*missing keys conv1\.weight",
    )
    fails(
        "shapes.pth",
        lambda s: s.update({"module.bn1.bias": torch.zeros(3)}),
        r"shapes\.pth.*bn1\.bias",
    )
    plain = tmp_path / "plain.pth"
    torch.save([1, 2], plain)
    with pytest.raises(DefaceAuditError, match=r"plain\.pth: not a MedicalNet file"):
        load_medicalnet(model, plain)


def test_load_medicalnet_accepts_a_file_without_batch_norm_counters(tmp_path):
    """Checkpoints from before torch 0.4.1 lack ``*.num_batches_tracked``; torch's batch-norm
    loader keeps the model's own counter then. Only those keys (and fc.*) may be absent."""

    def drop_counters(state):
        for key in [k for k in state if k.endswith(".num_batches_tracked")]:
            del state[key]

    old = tmp_path / "old.pth"
    state = _medicalnet_file(old, drop_counters)
    assert len(state) < len(_encoder_state())  # the counters are really gone
    model = resnet10()
    load_medicalnet(model, old)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key.removeprefix("module.")], value), key
    running = tmp_path / "running.pth"
    _medicalnet_file(running, lambda s: (drop_counters(s), s.pop("module.bn1.running_mean")))
    with pytest.raises(DefaceAuditError, match=r"running\.pth.*\(missing keys bn1\.running_mean\)"):
        load_medicalnet(model, running)


# --- face crops -----------------------------------------------------------------------------------


def _save(data, affine, path):
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def test_crop_geometry_sits_on_the_front_of_the_head():
    head, _ = synthetic_head()  # scalp ellipsoid to y = 95 mm, nose to y = 120, z centre 10
    geo = CropGeometry.from_template(head, (44, 10, 50), 4.0, anterior_margin_mm=0.0)
    assert geo.shape == (44, 10, 50)
    np.testing.assert_allclose(geo.affine[:3, :3], 4.0 * np.eye(3))
    centre = geo.affine[:3, 3] + 4.0 * (np.array(geo.shape) - 1) / 2
    assert abs(centre[0]) < 4.0  # left-right symmetric head
    front = geo.affine[1, 3] + 4.0 * (geo.shape[1] - 1) + 2.0
    assert 112 <= front <= 128  # the nose tip, within two 4 mm voxels
    assert front - geo.affine[1, 3] == pytest.approx(10 * 4.0 - 2.0)  # 40 mm deep: the front
    wider = CropGeometry.from_template(head, (44, 10, 50), 4.0)  # default: 12 mm of air in front
    assert wider.affine[1, 3] - geo.affine[1, 3] == pytest.approx(12.0)


@pytest.mark.slow
def test_subject_face_crops_register_mask_and_normalise(tmp_path):
    template, _ = synthetic_head(seed=0)
    head, brain = synthetic_head(seed=1)
    shift = np.array([8.7, -12.3, 4.5])  # the subject's world: the template's moved (off grid)
    affine = template.affine.copy()
    affine[:3, 3] += shift
    data = np.asarray(head.dataobj)
    t_path = _save(template.dataobj, template.affine, tmp_path / "template.nii.gz")
    o_path = _save(data, affine, tmp_path / "orig.nii.gz")
    b_path = _save(brain, affine, tmp_path / "brain.nii.gz")
    defaced = data.copy()
    defaced[:, 45:, :26] = 0.0  # lower front of the head removed
    d_path = _save(defaced, affine, tmp_path / "defaced.nii.gz")
    stripped = _save(data * (np.asarray(brain) > 0), affine, tmp_path / "stripped.nii.gz")
    shape = (40, 16, 44)
    crops = crop_radiodensity_face(
        o_path,
        b_path,
        {"defaced": d_path, "skullstrip": stripped},
        t_path,
        shape,
        4.0,
        out_crops=tmp_path / "crops.npz",
        out_transform=tmp_path / "transform.json",
    )
    assert set(crops) == {"original", "defaced", "skullstrip"}
    # skull-stripping leaves no face: not even the rim where brain and scalp share a voxel
    assert not crops.pop("skullstrip").any()
    info = json.loads((tmp_path / "transform.json").read_text())
    transform = np.array(info["template_to_subject_ras_mm"])
    np.testing.assert_allclose(transform[:3, 3], shift, atol=2.0)  # the known shift, in mm
    assert abs(transform[:3, :3] - np.eye(3)).max() < 0.03
    with np.load(tmp_path / "crops.npz") as saved:
        assert sorted(saved.files) == ["defaced", "original", "skullstrip"]
        np.testing.assert_array_equal(saved["original"], crops["original"])
    geo = CropGeometry.from_template(template, shape, 4.0)
    assert info["crop_affine"] == np.round(geo.affine, 6).tolist()
    # crop voxel centres -> template world; the template's own brain there is zeroed
    ijk = np.indices(shape).reshape(3, -1).T
    world = nib.affines.apply_affine(geo.affine, ijk)
    x, y, z = world.T
    in_brain = ((x / 62) ** 2 + (y / 80) ** 2 + ((z - 20) / 60) ** 2 <= 0.9).reshape(shape)
    assert in_brain.sum() > 50
    for crop in crops.values():
        assert crop.dtype == np.float32 and crop.shape == shape
        assert np.all(crop[in_brain] == 0)
        values = crop[crop != 0]
        assert abs(values.mean()) < 1e-5 and abs(values.std() - 1) < 1e-4
    # the shifted subject lands where the template is: the crops of its head agree
    reference = np.asarray(template.dataobj)
    ref_crop = resample((reference, template.affine), (shape, geo.affine))
    scalp = (crops["original"] != 0) & (ref_crop > 400)
    assert scalp.sum() > 100
    assert stats.pearsonr(crops["original"][scalp], ref_crop[scalp])[0] > 0.6
    # the removed part is empty in the defaced crop
    removed = nib.affines.apply_affine(np.linalg.inv(affine), world + shift)
    gone = ((removed[:, 1] >= 45.5) & (removed[:, 2] <= 24.5)).reshape(shape)
    assert np.all(crops["defaced"][gone] == 0) and (crops["original"][gone] != 0).sum() > 20

    # even inside the original's head mask, no voxel with any brain in it survives
    rim = crop_radiodensity_face(
        o_path, b_path, {"skullstrip": stripped}, t_path, shape, 4.0, head_region="original"
    )
    assert not rim["skullstrip"].any()

    other = _save(data[:-2], affine, tmp_path / "other_grid.nii.gz")
    with pytest.raises(ImageError, match="other_grid.nii.gz"):
        crop_radiodensity_face(o_path, b_path, {"x": other}, t_path, shape, 4.0)
    empty = _save(np.zeros_like(data), affine, tmp_path / "empty.nii.gz")
    with pytest.raises(ImageError, match="empty.nii.gz"):
        crop_radiodensity_face(o_path, b_path, {"x": empty}, t_path, shape, 4.0)


# --- training -------------------------------------------------------------------------------------


class TinyNet(torch.nn.Module):
    """A 3-D CNN of a few hundred parameters: enough to read a blob's brightness."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


def _blob_problem(n_subjects=30, visits=2, size=12, seed=0):
    """Crops with a central blob whose brightness a_s is the subject's target (+ visit noise)."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3) - (size - 1) / 2
    blob = (grid**2).sum(axis=0) <= 9
    brightness = rng.normal(0, 1, n_subjects)
    crops = rng.normal(0, 0.3, (n_subjects, size, size, size)).astype(np.float32)
    crops[:, blob] += brightness[:, None].astype(np.float32) + 1.0
    index = np.repeat(np.arange(n_subjects), visits)
    targets = brightness[index] + rng.normal(0, 0.1, index.size)
    subjects = [f"sub-{i:02d}" for i in index]
    split_of = np.array(["train"] * 18 + ["validation"] * 6 + ["test"] * 6)
    return crops, index, targets, subjects, split_of[index]


SETTINGS = {
    "epochs": 60,
    "batch_size": 8,
    "learning_rate": 0.02,
    "weight_decay": 0.0,
    "patience": 4,
    "seed": 0,
    "device": "cpu",
}


@pytest.mark.slow
def test_train_learns_a_blob_and_restores_the_best_epoch():
    crops, index, targets, subjects, splits = _blob_problem()
    args = (crops, targets, subjects, splits)
    model, history, pred = fit_radiodensity(*args, SETTINGS, crop_index=index, build_model=TinyNet)
    assert list(history.columns) == ["epoch", "train_loss", "validation_loss", "seconds"]
    test = splits == "test"
    assert stats.spearmanr(pred[test], targets[test])[0] > 0.7
    best = history.attrs["best_epoch"]
    assert best == int(history["epoch"][history["validation_loss"].idxmin()])
    assert len(history) == best + SETTINGS["patience"] < SETTINGS["epochs"]  # stopped early
    val = splits == "validation"
    assert np.mean((pred[val] - targets[val]) ** 2) == pytest.approx(
        history["validation_loss"].min(), rel=1e-5
    )
    # a rerun that simply ends at the best epoch gives the same weights: restoration is exact
    _, short, again = fit_radiodensity(
        *args, {**SETTINGS, "epochs": best}, crop_index=index, build_model=TinyNet
    )
    np.testing.assert_array_equal(again, pred)
    pd.testing.assert_frame_equal(
        short.drop(columns="seconds"), history.drop(columns="seconds")[:best]
    )


def test_identical_crops_train_no_network_and_predict_the_balanced_training_mean():
    """Skull-stripped crops are all 0: no epoch runs, every prediction is one value (the
    subject-balanced mean of the training targets) and rho over them is undefined."""
    crops, index, targets, subjects, splits = _blob_problem()
    crops[:] = 0.0
    _, history, pred = fit_radiodensity(
        crops, targets, subjects, splits, SETTINGS, crop_index=index, build_model=TinyNet
    )
    assert history.empty and history.attrs["best_epoch"] == 0
    train = np.asarray(splits) == "train"
    per_subject = pd.Series(targets[train]).groupby(np.asarray(subjects)[train]).mean()
    np.testing.assert_allclose(pred, per_subject.mean())
    # one differing crop is enough for a real training run
    crops[index[0]] += 1.0
    _, history, _ = fit_radiodensity(
        crops,
        targets,
        subjects,
        splits,
        {**SETTINGS, "epochs": 1},
        crop_index=index,
        build_model=TinyNet,
    )
    assert len(history) == 1


@pytest.mark.slow
def test_training_sees_only_train_rows_and_samples_them_by_subject(monkeypatch):
    from defaceaudit.radiodensity import train as train_module

    crops, index, targets, subjects, splits = _blob_problem()
    _, history, pred = fit_radiodensity(
        crops, targets, subjects, splits, SETTINGS, crop_index=index, build_model=TinyNet
    )
    # new test-split targets (and crops) change nothing: neither is ever trained on
    test = np.asarray(splits) == "test"
    shuffled = targets.copy()
    shuffled[test] = np.random.default_rng(9).permutation(targets[test]) + 100.0
    noisy = crops.copy()
    noisy[index[test]] = np.random.default_rng(10).normal(size=noisy[index[test]].shape)
    _, again, pred_again = fit_radiodensity(
        noisy, shuffled, subjects, splits, SETTINGS, crop_index=index, build_model=TinyNet
    )
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), history.drop(columns="seconds"))
    np.testing.assert_array_equal(pred_again[~test], pred[~test])
    # the sampler the loop draws from is the subject-balanced one over the train rows only
    seen = {}
    real = train_module.balanced_sampler

    def spy(row_subjects, n_samples, seed):
        seen["subjects"] = list(row_subjects)
        return real(row_subjects, n_samples, seed)

    monkeypatch.setattr(train_module, "balanced_sampler", spy)
    fit_radiodensity(
        crops, targets, subjects, splits, SETTINGS, crop_index=index, build_model=TinyNet
    )
    train = np.asarray(splits) == "train"
    assert seen["subjects"] == list(np.asarray(subjects)[train])


def test_early_stopping_rule():
    stopper = EarlyStopping(patience=2)
    flags = [stopper.update(e, loss) for e, loss in enumerate([3.0, 2.0, 2.5, float("nan")], 1)]
    assert flags == [True, True, False, False] and stopper.best_epoch == 2 and stopper.stop


@pytest.mark.slow
def test_resnet10_with_medicalnet_weights_trains_one_epoch(tmp_path):
    weights = tmp_path / "resnet_10.pth"
    _medicalnet_file(weights)
    rng = np.random.default_rng(0)
    crops = rng.normal(size=(4, 16, 16, 16)).astype(np.float32)
    settings = {**SETTINGS, "epochs": 1, "batch_size": 2, "medicalnet_weights": str(weights)}
    model, history, pred = fit_radiodensity(
        crops,
        np.array([0.0, 1.0, -1.0, 0.5]),
        ["a", "a", "b", "c"],
        ["train"] * 3 + ["validation"],
        settings,
    )
    assert sum(p.numel() for p in model.parameters()) > 14_000_000
    assert len(history) == 1 and pred.shape == (4,) and np.all(np.isfinite(pred))
    # the encoder started from the file: with a negligible learning rate it is still there
    state = _medicalnet_file(weights)
    model, _, _ = fit_radiodensity(
        crops,
        np.array([0.0, 1.0, -1.0, 0.5]),
        ["a", "a", "b", "c"],
        ["train"] * 3 + ["validation"],
        {**settings, "learning_rate": 1e-12, "weight_decay": 0.0},
    )
    np.testing.assert_allclose(
        model.conv1.weight.detach().numpy(), state["module.conv1.weight"].numpy(), atol=1e-6
    )


def test_train_raises_when_no_epoch_has_a_finite_validation_loss(tmp_path):
    class NaNNet(TinyNet):
        def forward(self, x):
            return super().forward(x) * float("nan")

    crops, index, targets, subjects, splits = _blob_problem()
    with pytest.raises(TrainingDivergedError, match="no epoch of 2 had a finite validation loss"):
        fit_radiodensity(
            crops,
            targets,
            subjects,
            splits,
            {**SETTINGS, "epochs": 2},
            crop_index=index,
            build_model=NaNNet,
        )
    files, split_of = _training_files(tmp_path)
    outputs = [tmp_path / "pred.tsv", tmp_path / "history.tsv", tmp_path / "model.pt"]
    with pytest.raises(TrainingDivergedError, match="^original model of the abdomen: no epoch"):
        train_radiodensity(
            files,
            "original",
            tmp_path / "targets.tsv",
            "abdomen",
            split_of,
            {**SETTINGS, "epochs": 2},
            *outputs,
            build_model=NaNNet,
        )
    assert not any(path.exists() for path in outputs)


def test_validation_loss_weighs_every_subject_equally():
    """Validation subjects with 1 or 3 visits count alike, as in the training sampler."""
    crops, index, targets, subjects, splits = _blob_problem(visits=3)
    subjects = np.array(subjects)
    val_subjects = np.unique(subjects[splits == "validation"])
    drop = np.isin(subjects, val_subjects[:3]) & (np.arange(index.size) % 3 > 0)
    keep = ~drop  # three validation subjects keep one visit, three keep all three
    index, targets, subjects, splits = index[keep], targets[keep], subjects[keep], splits[keep]
    _, history, pred = fit_radiodensity(
        crops,
        targets,
        subjects,
        splits,
        {**SETTINGS, "epochs": 1},
        crop_index=index,
        build_model=TinyNet,
    )
    val = splits == "validation"
    errors = pd.Series((pred[val] - targets[val]) ** 2).groupby(subjects[val])
    per_subject = errors.mean().mean()
    assert history["validation_loss"][0] == pytest.approx(per_subject, rel=1e-6)
    assert per_subject != pytest.approx(np.mean((pred[val] - targets[val]) ** 2), rel=1e-2)


def _training_files(tmp_path):
    """Crop files of the blob problem's 30 subjects (original and an all-zero quickshear),
    their splits and ``targets.tsv`` (plus a subject without a crop)."""
    crops, _, targets, subjects, splits = _blob_problem(n_subjects=30, visits=2)
    files, split_of = {}, {}
    for i in range(30):
        files[f"{i:02d}"] = tmp_path / f"sub-{i:02d}.npz"  # labels without "sub-" work too
        np.savez(files[f"{i:02d}"], original=crops[i], quickshear=crops[i] * 0)
        split_of[f"sub-{i:02d}"] = splits[2 * i]
    rows = pd.DataFrame(
        {
            "participant_id": subjects,
            "visit": [1, 2] * 30,
            "body_part": "abdomen",
            "target": targets,
        }
    )
    rows.loc[len(rows)] = ["sub-99", 1, "abdomen", 0.3]  # no crop: left out
    rows.to_csv(tmp_path / "targets.tsv", sep="\t", index=False)
    return files, split_of


@pytest.mark.slow
def test_run_training_writes_predictions_history_and_model(tmp_path):
    files, split_of = _training_files(tmp_path)
    out = train_radiodensity(
        files,
        "original",
        tmp_path / "targets.tsv",
        "abdomen",
        split_of,
        {**SETTINGS, "epochs": 3},
        tmp_path / "pred.tsv",
        tmp_path / "history.tsv",
        tmp_path / "model.pt",
        build_model=TinyNet,
    )
    written = pd.read_csv(tmp_path / "pred.tsv", sep="\t")
    assert list(written.columns) == [
        "participant_id",
        "visit",
        "split",
        "body_part",
        "image_type",
        "target",
        "prediction",
    ]
    assert len(written) == 60 and set(written["image_type"]) == {"original"}
    np.testing.assert_allclose(written["prediction"], out["prediction"], rtol=1e-6)
    assert len(pd.read_csv(tmp_path / "history.tsv", sep="\t")) == 3
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["settings"]["epochs"] == 3 and checkpoint["crop_shape"] == [12, 12, 12]
    TinyNet().load_state_dict(checkpoint["state_dict"])
    # splits=None: each subject's split from the table's split column (as the workflow runs it)
    table = pd.read_csv(tmp_path / "targets.tsv", sep="\t", dtype={"participant_id": str})
    table["split"] = table["participant_id"].map(split_of).fillna("test")
    table.to_csv(tmp_path / "targets_split.tsv", sep="\t", index=False)
    from_table = train_radiodensity(
        files,
        "original",
        tmp_path / "targets_split.tsv",
        "abdomen",
        None,
        {**SETTINGS, "epochs": 3},
        tmp_path / "pred2.tsv",
        tmp_path / "history2.tsv",
        build_model=TinyNet,
    )
    pd.testing.assert_frame_equal(from_table, out)
    with pytest.raises(DefaceAuditError, match="no column"):
        train_radiodensity(
            files,
            "original",
            tmp_path / "targets.tsv",
            "abdomen",
            None,
            SETTINGS,
            tmp_path / "p3.tsv",
            tmp_path / "h3.tsv",
            build_model=TinyNet,
        )
    with pytest.raises(DefaceAuditError, match="no 'avgface' crop"):
        train_radiodensity(
            files,
            "avgface",
            tmp_path / "targets.tsv",
            "abdomen",
            split_of,
            SETTINGS,
            tmp_path / "p2.tsv",
            tmp_path / "h2.tsv",
            build_model=TinyNet,
        )


def test_run_training_names_unreadable_crop_and_target_files(tmp_path):
    files, split_of = _training_files(tmp_path)
    targets = tmp_path / "targets.tsv"

    def fails(pattern):
        args = (files, "original", targets, "abdomen", split_of, SETTINGS)
        with pytest.raises(DefaceAuditError, match=pattern):
            train_radiodensity(*args, tmp_path / "p.tsv", tmp_path / "h.tsv", build_model=TinyNet)

    crop = files["05"]
    crop.write_bytes(b"")  # empty: numpy raises EOFError
    fails(r"sub-05\.npz: not a readable crop file")
    crop.write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # a broken zip: zipfile.BadZipFile
    fails(r"sub-05\.npz: not a readable crop file")
    np.savez(crop, original=np.zeros((12, 12, 12), np.float32))
    targets.write_text("")
    fails(r"targets\.tsv: cannot read the targets table")
    header = "participant_id\tvisit\tbody_part\ttarget\n"
    targets.write_text(header + "sub-00\t1\tabdomen\t0.1\nsub-01\t1\tabdomen\t0.2\t9\n")
    fails(r"targets\.tsv: cannot read the targets table \(.*Expected 4 fields")
    targets.write_text("participant_id\tvisit\ttarget\nsub-00\t1\t0.1\n")
    fails(r"targets\.tsv: the targets table has no column\(s\) body_part")


def test_write_targets_fits_on_the_study_train_split_and_labels_every_subject(tmp_path):
    phen, people = _phenotype()
    phen.to_csv(tmp_path / "phen.tsv", sep="\t", index=False)
    cohort = people.assign(subject=people["participant_id"].str.removeprefix("sub-"))
    cohort[["subject", "sex"]].to_csv(tmp_path / "subjects.tsv", sep="\t", index=False)
    split = {**FRACTIONS, "seed": 5}
    out = radiodensity_targets(
        [tmp_path / "phen.tsv"], tmp_path / "subjects.tsv", ["abdomen"], split, tmp_path / "t.tsv"
    )
    subjects = sorted(people["participant_id"])
    splits = assign_subject_splits(subjects, FRACTIONS, 5, method="quota")
    assert out.groupby("participant_id")["split"].first().to_dict() == splits
    assert (out["subject"] == out["participant_id"].str.removeprefix("sub-")).all()
    train = [s for s in subjects if splits[s] == "train"]
    expected = lme_residual_targets(phen, people, ["abdomen"], train)
    np.testing.assert_allclose(out["target"], expected["target"], rtol=1e-10)
    # a model fitted on every subject would give other targets: the test split stays unseen
    everyone = lme_residual_targets(phen, people, ["abdomen"], subjects)
    assert not np.allclose(out["target"], everyone["target"], rtol=1e-6)
    written = pd.read_csv(tmp_path / "t.tsv", sep="\t", dtype={"subject": str})
    assert len(written) == len(phen) and set(written["split"]) == {"train", "validation", "test"}


def test_study_steps_name_unreadable_tables(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    phen, people = _phenotype()
    phen.to_csv(tmp_path / "phen.tsv", sep="\t", index=False)
    cohort = people.assign(subject=people["participant_id"].str.removeprefix("sub-"))
    cohort[["subject", "sex"]].to_csv(tmp_path / "subjects.tsv", sep="\t", index=False)
    split = {**FRACTIONS, "seed": 0}
    targets = tmp_path / "targets.tsv"
    with pytest.raises(InputError, match=r"empty\.tsv: cannot read the phenotype table"):
        radiodensity_targets([empty], tmp_path / "subjects.tsv", ["abdomen"], split, targets)
    with pytest.raises(InputError, match=r"empty\.tsv: cannot read the cohort table"):
        radiodensity_targets([tmp_path / "phen.tsv"], empty, ["abdomen"], split, targets)
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("participant_id\tprediction\nsub-00\t0.1\nsub-01\t0.2\t7\n")
    outputs = [tmp_path / name for name in ("t.tsv", "t.md", "b.tsv", "p.tsv", "f.png")]
    for bad in (empty, ragged):
        with pytest.raises(DefaceAuditError, match=rf"{bad.name}: cannot read the predictions"):
            evaluate_radiodensity([bad], *outputs, n_resamples=10)


# --- statistics, table, figure --------------------------------------------------------------------


def _predictions(n_subjects=25, seed=0):
    """Two visits per subject: a target per visit, one prediction per subject (one MRI)."""
    rng = np.random.default_rng(seed)
    subject = np.repeat([f"sub-{i:02d}" for i in range(n_subjects)], 2)
    level = rng.normal(size=n_subjects)
    target = np.repeat(level, 2) + rng.normal(0, 0.3, subject.size)
    good = np.repeat(level + rng.normal(0, 0.4, n_subjects), 2)
    bad = np.repeat(rng.normal(size=n_subjects), 2)
    frames = []
    for image_type, pred in (("original", good), ("quickshear", bad)):
        frames.append(
            pd.DataFrame(
                {
                    "participant_id": subject,
                    "split": "test",
                    "body_part": "abdomen",
                    "image_type": image_type,
                    "target": target,
                    "prediction": pred,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_subject_means_average_the_visits_of_one_mri():
    """A subject with two visits (one MRI, so one prediction) gives one row: the mean target."""
    frame = pd.DataFrame(
        {
            "participant_id": ["sub-02", "sub-01", "sub-02", "sub-03"],
            "target": [1.0, -0.5, 3.0, np.nan],
            "prediction": [0.7, 0.1, 0.7, 0.2],
        }
    )
    means = subject_means(frame)
    assert means["participant_id"].tolist() == ["sub-01", "sub-02"]  # sub-03: NaN target
    assert means["target"].tolist() == [-0.5, 2.0]
    assert means["prediction"].tolist() == [0.1, 0.7]
    assert means["n_visits"].tolist() == [1, 2]


def test_one_value_for_everyone_stays_constant_over_any_number_of_visits():
    """(0.1 + 0.1 + 0.1) / 3 != 0.1 in floating point: a subject with three visits must not
    make a model that predicts one value for everyone look as if it ranked the subjects."""
    frame = pd.DataFrame(
        {
            "participant_id": ["a", "a", "a", "b", "b", "c"],
            "target": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "prediction": [0.1] * 6,
        }
    )
    assert subject_means(frame)["prediction"].tolist() == [0.1, 0.1, 0.1]
    assert np.isnan(spearman_bootstrap(frame, n_resamples=20)["rho"])


def test_spearman_is_over_subjects_not_visit_rows():
    """Visits must not weigh a subject: rho of 3 subjects, one of them with 5 visits, is the rho
    of the 3 subject means (1.0 here), not of the 7 visit rows (duplicated predictions)."""
    frame = pd.DataFrame(
        {
            "participant_id": ["a"] * 5 + ["b", "c"],
            "target": [0.0, 0.1, -0.1, 0.05, -0.05, 1.0, 2.0],
            "prediction": [0.3] * 5 + [0.4, 0.9],
        }
    )
    res = spearman_bootstrap(frame, n_resamples=50, seed=0)
    assert res["rho"] == pytest.approx(1.0)
    assert (res["n_subjects"], res["n_rows"]) == (3, 7)
    rows_rho = stats.spearmanr(frame["target"], frame["prediction"])[0]
    assert rows_rho != pytest.approx(1.0)  # what the visit rows would have said


def test_spearman_bootstrap_resamples_subjects_and_pairs_replicates():
    frame = _predictions()
    orig = frame[frame["image_type"] == "original"]
    res = spearman_bootstrap(orig, n_resamples=500, seed=3)
    means = orig.groupby("participant_id")[["target", "prediction"]].mean()
    assert res["rho"] == pytest.approx(stats.spearmanr(means["target"], means["prediction"])[0])
    assert res["ci_low"] < res["rho"] < res["ci_high"]
    assert res["n_subjects"] == 25 and res["n_rows"] == 50 and res["boot"].shape == (500,)
    shuffled = orig.sample(frac=1.0, random_state=1)  # row order must not matter
    np.testing.assert_allclose(spearman_bootstrap(shuffled, 500, seed=3)["boot"], res["boot"])
    assert not np.allclose(spearman_bootstrap(orig, 500, seed=4)["boot"], res["boot"])
    # the first replicate by hand: draw SUBJECTS, each bringing its one (visit-mean) row
    subjects = sorted(set(orig["participant_id"]))
    drawn = np.random.default_rng(3).integers(0, len(subjects), (500, len(subjects)))[0]
    rows = means.loc[[subjects[k] for k in drawn]]
    by_hand = stats.spearmanr(rows["target"], rows["prediction"])[0]
    assert res["boot"][0] == pytest.approx(by_hand, abs=1e-12)


def test_an_image_type_with_no_face_left_has_no_rho_and_says_so(tmp_path):
    frame = _predictions(n_subjects=12)
    stripped = frame[frame["image_type"] == "original"].assign(
        image_type="skullstrip",
        prediction=0.25,  # one value for every subject
    )
    table, boot = radiodensity_table(pd.concat([frame, stripped]), n_resamples=50, seed=0)
    row = table[table["image_type"] == "skullstrip"].iloc[0]
    assert np.isnan(row["rho"]) and np.isnan(row["ci_low"])
    assert np.isnan(row["replicate_wilcoxon_p"])
    (finding,) = radiodensity_findings(table)
    assert "skullstrip: no rho (the model predicts one value for every subject" in finding
    assert "quickshear" in finding  # the others are still compared
    plot_radiodensity(table, boot, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_radiodensity_table_tests_against_the_original(tmp_path):
    frame = _predictions()
    table, boot = radiodensity_table(frame, n_resamples=400, seed=0)
    assert list(table["image_type"]) == ["original", "quickshear"]
    ref, defaced = table.iloc[0], table.iloc[1]
    assert np.isnan(ref["replicate_wilcoxon_p"]) and np.isnan(ref["mean_difference"])
    assert defaced["replicate_wilcoxon_p"] < 1e-10 and defaced["mean_difference"] < -0.4
    assert "p_value" not in table.columns  # the replicate test is labelled as what it is
    assert table["ci_note"].isna().all()  # 25 subjects
    assert defaced["diff_ci_high"] < 0
    assert len(boot) == 800 and set(boot.columns) == {"body_part", "image_type", "replicate", "rho"}
    paired = boot.pivot(index="replicate", columns="image_type", values="rho")
    assert np.mean(paired["quickshear"] - paired["original"]) == pytest.approx(
        defaced["mean_difference"]
    )
    # the test and the CI are those of the paired replicates, not of anything else
    from defaceaudit.stats import wilcoxon_paired

    expected = wilcoxon_paired(paired["quickshear"], paired["original"])
    assert defaced["replicate_wilcoxon_p"] == expected["p_value"]
    assert defaced["replicate_wilcoxon_statistic"] == expected["statistic"]
    low, high = np.quantile(paired["quickshear"] - paired["original"], [0.025, 0.975])
    assert (defaced["diff_ci_low"], defaced["diff_ci_high"]) == pytest.approx((low, high))
    write_radiodensity_tables(table, tmp_path / "t.tsv", tmp_path / "t.md")
    md = (tmp_path / "t.md").read_text()
    assert "| abdomen" in md and "e-" in md
    assert "Wilcoxon p over bootstrap replicates (paper's method)" in md
    assert "it is not a test of the data" in md and "one row per subject" in md
    assert "\u2020" not in md.split("## Findings")[0].split("\n\n")[1]  # no CI flagged
    (finding,) = radiodensity_findings(table)
    assert finding in md and "## Findings" in md
    assert "original rho" in finding and "is significantly positive" in finding
    assert "quickshear" in finding and finding.endswith("lower than the original.")
    assert len(pd.read_csv(tmp_path / "t.tsv", sep="\t")) == 2
    plot_radiodensity(table, boot, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    fewer = frame.drop(frame.index[(frame["image_type"] == "quickshear")][:2])
    with pytest.raises(DefaceAuditError, match="other subjects"):
        radiodensity_table(fewer, n_resamples=10)


def test_radiodensity_table_refuses_a_missing_prediction():
    """A NaN prediction must not drop its subject from one image type only: the replicates of
    that image type would resample other subjects than the original's and stop pairing."""
    frame = _predictions(n_subjects=10)
    nan = (frame["image_type"] == "quickshear") & (frame["participant_id"] == "sub-03")
    res = spearman_bootstrap(frame[nan | (frame["image_type"] == "original")], 10)
    assert res["n_subjects"] == 10 and "sub-03" in res["subjects"]
    frame.loc[nan, "prediction"] = np.nan
    quick = spearman_bootstrap(frame[frame["image_type"] == "quickshear"], 10)
    assert quick["n_subjects"] == 9 and "sub-03" not in quick["subjects"]
    with pytest.raises(DefaceAuditError, match=r"^abdomen: quickshear: 2 test row.*sub-03;"):
        radiodensity_table(frame, n_resamples=10)
    frame.loc[nan, "prediction"] = np.inf
    with pytest.raises(DefaceAuditError, match=r"^abdomen: quickshear: 2 test row.*sub-03;"):
        radiodensity_table(frame, n_resamples=10)


def test_radiodensity_findings_reads_the_confidence_intervals():
    def row(image_type, rho, low, high, d_low=np.nan, d_high=np.nan):
        return {
            "body_part": "shin",
            "image_type": image_type,
            "rho": rho,
            "ci_low": low,
            "ci_high": high,
            "mean_difference": (d_low + d_high) / 2,
            "diff_ci_low": d_low,
            "diff_ci_high": d_high,
        }

    table = pd.DataFrame(
        [
            row("original", 0.3, -0.2, 0.7),
            row("facemask", 0.5, 0.1, 0.8, 0.05, 0.4),
            row("skullstrip", 0.1, -0.5, 0.6, -0.6, 0.2),
        ]
    )
    (finding,) = radiodensity_findings(table)
    assert "original rho (95% CI) 0.30 [-0.20, 0.70], is not significantly different" in finding
    assert "facemask (0.50, difference 0.23 [0.05, 0.40]): higher than the original." in finding
    assert "skullstrip (0.10, difference -0.20 [-0.60, 0.20]): not distinguishable" in finding


def test_few_test_subjects_flag_the_cis_and_findings_ignore_the_replicate_p(tmp_path):
    """8 test subjects: CIs flagged as rough; the mark and the finding come from the CI of the
    difference, even where the replicate Wilcoxon p is tiny (it shrinks with the resamples)."""
    frame = _predictions(n_subjects=8, seed=0)
    original = frame[frame["image_type"] == "original"]
    noise = np.repeat(np.random.default_rng(0).normal(0, 0.5, 8), 2)  # one per subject
    noisy = original.assign(image_type="facemask", prediction=original["prediction"] + noise)
    table, boot = radiodensity_table(pd.concat([frame, noisy]), n_resamples=1000, seed=0)
    assert (table["ci_note"].str.contains("fewer than 10 subjects")).all()
    facemask = table.set_index("image_type").loc["facemask"]
    assert facemask["diff_ci_low"] < 0 < facemask["diff_ci_high"]
    assert facemask["replicate_wilcoxon_p"] < 1e-20  # the paper's test "finds" a difference
    (finding,) = radiodensity_findings(table)
    assert "Only 8 test subjects: the percentile CIs are too narrow" in finding
    assert "facemask (" in finding and "not distinguishable from the original" in finding
    write_radiodensity_tables(table, tmp_path / "t.tsv", tmp_path / "t.md")
    md = (tmp_path / "t.md").read_text()
    assert "]\u2020" in md and "fewer than 10 subjects" in md
    tsv = pd.read_csv(tmp_path / "t.tsv", sep="\t", na_values=["n/a"])
    assert "replicate_wilcoxon_p" in tsv.columns and "p_value" not in tsv.columns


def test_difference_mark_reads_the_ci_not_a_p():
    assert difference_mark(-0.5, -0.1) == "lower"
    assert difference_mark(0.1, 0.5) == "higher"
    assert difference_mark(-0.1, 0.5) == "ns"
    assert difference_mark(np.nan, np.nan) == ""
