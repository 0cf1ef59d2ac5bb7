"""The refacing attack's convergence guard (reface.validation) and the held-out training
subjects it is measured on (workflow.reface_jobs)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_UNET
from synthetic import synthetic_head

from defaceaudit import paths
from defaceaudit.config import validate_config
from defaceaudit.imaging.masks import head_mask
from defaceaudit.reface import validation
from defaceaudit.reface.checkpoint import load_checkpoint
from defaceaudit.reface.refacing import train_refacing_stage
from defaceaudit.reface.validation import (
    CURVE_COLUMNS,
    NOT_CONVERGED,
    learning_curve,
    snapshot_states,
    validate_refacing,
    verdict,
)
from defaceaudit.workflow import reface_jobs as jobs
from defaceaudit.workflow.deface_plan import defacer_plan
from defaceaudit.workflow.metrics_plan import metric_plan
from defaceaudit.workflow.plan import load_cohort

# -- the verdict ---------------------------------------------------------------------------


def curve(final_refaced, final_symmetric, earlier=(9.0, 9.0), pairs=2):
    """Two snapshots x ``pairs`` rows; defaced MASD 5 mm (paper) and 4 mm (symmetric)."""
    rows = []
    for snapshot, (refaced, symmetric) in enumerate([earlier, (final_refaced, final_symmetric)]):
        for p in range(pairs):
            rows.append(
                {
                    "model": "face",
                    "snapshot": snapshot + 1,
                    "stage1_step": 10 * (snapshot + 1),
                    "stage2_step": 20 * (snapshot + 1),
                    "subject": f"tr0{p}",
                    "defacer": "facemask",
                    "masd_defaced_mm": 5.0,
                    "masd_refaced_mm": refaced,
                    "masd_symmetric_defaced_mm": 4.0,
                    "masd_symmetric_refaced_mm": symmetric,
                }
            )
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def test_converged_when_the_final_snapshot_beats_the_defaced_images_both_ways():
    result = verdict(curve(2.0, 3.0))
    assert result["converged"] and result["note"] == ""
    assert result["snapshot"] == 2 and result["stage1_step"] == 20 and result["stage2_step"] == 40
    assert result["validation_pairs"] == 2 and result["mean_masd_refaced_mm"] == 2.0
    assert result["model"] == "face"


@pytest.mark.parametrize(
    ("final", "earlier"),
    [
        ((6.0, 3.0), (9.0, 9.0)),  # worse than defaced in the paper's direction
        ((2.0, 4.0), (9.0, 9.0)),  # not below defaced in the symmetric one (equal)
        ((9.0, 9.0), (1.0, 1.0)),  # an earlier snapshot beat it: only the final one counts
        ((np.nan, 3.0), (1.0, 1.0)),  # a refaced image with no face
    ],
)
def test_not_converged(final, earlier):
    result = verdict(curve(*final, earlier=earlier))
    assert not result["converged"] and result["note"] == NOT_CONVERGED


def test_one_faceless_refaced_pair_is_not_converged_even_if_the_mean_beats():
    table = curve(1.0, 1.0)
    table.loc[len(table) - 1, "masd_refaced_mm"] = np.nan  # one pair of the final snapshot
    assert not verdict(table)["converged"]


# -- the learning curve, end to end --------------------------------------------------------

SHAPE, VOXEL = (32, 40, 36), 6.0


def write_head(folder, name, seed):
    """A synthetic head (6 mm voxels), its head mask and its face-removed copy (the voxels in
    front of Y = 30 mm below Z = 0 zeroed): paths ``original``, ``head_mask``, ``defaced``."""
    img, _ = synthetic_head(SHAPE, VOXEL, seed=seed)
    data = np.asarray(img.dataobj)
    y, z = np.meshgrid(np.arange(SHAPE[1]), np.arange(SHAPE[2]), indexing="ij")
    world_y, world_z = [img.affine[a, a] * i + img.affine[a, 3] for a, i in ((1, y), (2, z))]
    face = (world_y > 30) & (world_z < 0)
    defaced = np.where(face[None], 0.0, data).astype(np.float32)
    files = {k: folder / f"{name}_{k}.nii.gz" for k in ("original", "head_mask", "defaced")}
    nib.save(img, files["original"])
    mask = head_mask(data, (VOXEL,) * 3).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, img.affine), files["head_mask"])
    nib.save(nib.Nifti1Image(defaced, img.affine), files["defaced"])
    return {k: str(v) for k, v in files.items()}


def tiny_reface(snapshots, steps=4):
    training = {
        "steps": steps,
        "batch_size": 1,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema_decay": 0.9,
        "checkpoint_every": 100,
        "log_every": 100,
        "seed": 0,
        "bf16": False,
    }
    stage = {"network": dict(TINY_UNET), "training": training}
    return {
        "downsample_factor": 2,
        "schedule": {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "stage1": stage,
        "stage2": stage,
        "slab_patch": 16,
        "envelope_mm": None,
        "attack": {"region_weight": 5.0, "focus": 0.5},
        "validation": {"snapshots": snapshots},
    }


SAMPLING = {"steps": 2, "eta": 0.0, "seed": 0, "paste_back": True, "slab_batch": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model pair trained 4 steps per stage on one head, with 2 EMA snapshots (steps 2
    and 4), and two held-out heads."""
    folder = tmp_path_factory.mktemp("validation")
    train = write_head(folder, "tr01", 0)
    checkpoints = {s: folder / f"stage{s}.pt" for s in (1, 2)}
    for stage in (1, 2):
        train_refacing_stage(
            stage,
            [train["original"]],
            [train["defaced"]],
            tiny_reface(snapshots=2),
            checkpoints[stage],
            device="cpu",
        )
    pairs = [
        {"subject": s, "defacer": "facemask", **write_head(folder, s, seed)}
        for s, seed in (("tr02", 1), ("tr03", 2))
    ]
    return folder, checkpoints, pairs


@pytest.mark.slow
def test_snapshot_states_end_with_the_trained_weights(trained):
    _, checkpoints, _ = trained
    for stage in (1, 2):
        states = snapshot_states(checkpoints[stage])
        assert [step for step, _ in states] == [2, 4]  # the final snapshot is the checkpoint
        final = load_checkpoint(checkpoints[stage])["ema"]["shadow"]
        for key in final:
            assert torch.equal(states[-1][1][key], final[key])


@pytest.mark.slow
def test_learning_curve_refaces_every_pair_at_every_snapshot(trained, monkeypatch):
    _, checkpoints, pairs = trained
    seen = []
    real = validation.reface_volume

    def spy(data, spacing, sampler, settings, scale):
        seen.append(next(sampler.model1.parameters()).detach().clone())
        return real(data, spacing, sampler, settings, scale)

    monkeypatch.setattr(validation, "reface_volume", spy)
    table = learning_curve("face", checkpoints[1], checkpoints[2], pairs, SAMPLING, "cpu")
    assert list(table.columns) == list(CURVE_COLUMNS) and len(table) == 2 * 2
    assert table["snapshot"].tolist() == [1, 1, 2, 2]
    assert table["stage1_step"].tolist() == table["stage2_step"].tolist() == [2, 2, 4, 4]
    assert table["subject"].tolist() == ["tr02", "tr03", "tr02", "tr03"]
    # each snapshot's weights were loaded before its pairs were refaced
    assert len(seen) == 4 and torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    states = snapshot_states(checkpoints[1])
    first_key = next(iter(states[0][1]))
    assert torch.equal(seen[0], states[0][1][first_key])
    assert torch.equal(seen[2], states[1][1][first_key])
    # the defaced image's MASD does not depend on the snapshot, and a removed face is far away
    defaced = table.pivot(index="snapshot", columns="subject", values="masd_defaced_mm")
    assert np.allclose(defaced.loc[1], defaced.loc[2]) and (defaced > 1.0).all().all()


@pytest.mark.slow
def test_validate_refacing_writes_the_curve_its_verdict_and_figure(trained):
    folder, checkpoints, pairs = trained
    outputs = {
        k: folder / "out" / name
        for k, name in (("curve", "c.tsv"), ("verdict", "v.json"), ("figure", "f.png"))
    }
    result = validate_refacing(
        "face", checkpoints[1], checkpoints[2], pairs, SAMPLING, outputs, "cpu"
    )
    written = pd.read_csv(outputs["curve"], sep="\t")
    assert list(written.columns) == list(CURVE_COLUMNS) and len(written) == 4
    saved = json.loads(outputs["verdict"].read_text())
    again = verdict(written)  # the verdict of the curve as written
    assert saved["converged"] == result["converged"] == again["converged"]
    assert saved["validation_pairs"] == 2 and saved["snapshot"] == 2
    assert saved["note"] == ("" if saved["converged"] else NOT_CONVERGED)
    for key in ("mean_masd_defaced_mm", "mean_masd_refaced_mm"):
        assert saved[key] == pytest.approx(again[key], nan_ok=True)
    assert outputs["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_validation_pairs_is_not_converged_and_says_why(tmp_path):
    outputs = {k: tmp_path / f"x.{k}" for k in ("curve", "verdict", "figure")}
    missing = tmp_path / "none.pt"  # nothing is read without pairs
    result = validate_refacing("face", missing, missing, [], SAMPLING, outputs, "cpu")
    assert result["converged"] is False and result["validation_pairs"] == 0
    assert result["note"].startswith(NOT_CONVERGED) and "no held-out" in result["note"]
    assert json.loads(outputs["verdict"].read_text()) == result
    assert pd.read_csv(outputs["curve"], sep="\t").empty
    assert outputs["figure"].stat().st_size > 0


# -- the held-out subjects -----------------------------------------------------------------


def demo_run(n_train):
    config = validate_config(
        {"demo": {"n_train": n_train, "n_internal_test": 1, "n_external_test": 1}}
    )
    cohort = load_cohort(config)
    return cohort, metric_plan(defacer_plan(config["deface"]), config["metrics"])


@pytest.mark.parametrize(("n_train", "held_out"), [(1, 2), (2, 2), (3, 2), (4, 2), (4, 0), (4, 9)])
def test_validation_subjects_never_take_every_train_subject(n_train, held_out):
    cohort, plan = demo_run(n_train)
    train = cohort.ids("train")
    held = jobs.validation_subjects(cohort, held_out)
    training = jobs.training_subjects(cohort, held_out)
    assert len(held) == min(held_out, n_train - 1) and held == train[len(train) - len(held) :]
    assert training and set(training).isdisjoint(held) and set(training) | set(held) == set(train)
    # the models train on the training subjects only, and are validated on the others
    for model in jobs.models_needed(plan):
        originals = jobs.training_inputs(cohort, plan, model, held_out)["originals"]
        assert originals == [paths.prepared_files(s)["t1w"] for s in training]
        pairs = jobs.validation_pairs(cohort, plan, model, held_out)
        assert {p["subject"] for p in pairs} == set(held)
        inputs = jobs.validation_inputs(cohort, plan, model, held_out)
        assert inputs["defaced"] == [p["defaced"] for p in pairs]
        assert inputs["stage1"] == paths.reface_checkpoint(model, 1)


def test_sampling_reads_nothing_derived_from_the_original():
    inputs = jobs.sample_inputs("facemask", "in01")
    assert set(inputs) == {"defaced", "stage1", "stage2"}
    assert inputs["defaced"] == paths.defaced_files("facemask", "in01")["t1w"]
    assert "removed" not in str(inputs.values())


def test_every_model_is_validated():
    cohort, plan = demo_run(2)
    targets = jobs.reface_targets(cohort, plan, ["in01"])
    for model in jobs.models_needed(plan):
        assert set(paths.reface_validation_files(model).values()) <= set(targets)


def test_a_verdict_without_a_refaced_face_is_strict_json():
    result = verdict(curve(np.nan, np.nan))
    assert not result["converged"]
    assert result["mean_masd_refaced_mm"] is None
    json.dumps(result, allow_nan=False)  # NaN would raise: not JSON
