"""The radiodensity study end to end on a tiny real demo cohort (4 mm, 10 subjects, 2 epochs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_snakemake

from defaceaudit import paths

pytestmark = pytest.mark.workflow

TINY = {
    "demo": {"n_train": 8, "n_internal_test": 1, "n_external_test": 1, "voxel_size_mm": 4.0},
    "deface": {"defacers": ["quickshear", "skullstrip"]},
    "reface": {"enabled": False},
    "radiodensity": {
        "body_parts": ["abdomen"],
        "crop_shape": [40, 16, 48],
        "voxel_mm": 5.0,
        # exact sizes: 5 train (the mixed model needs 4), 2 validation, 3 test subjects
        "split": {"train": 0.5, "validation": 0.2, "test": 0.3},
        "training": {"epochs": 2, "batch_size": 4, "patience": 2},
        "n_bootstrap": 200,
    },
}


def test_tiny_radiodensity_study_trains_a_model_per_image_type(workdir):
    targets = [paths.RADIODENSITY_TABLES["table"], paths.RADIODENSITY_FIGURE]
    done = run_snakemake(workdir, *targets, "--cores", "2", config=TINY)
    assert done.returncode == 0, done.stderr[-3000:]

    study = pd.read_csv(workdir / paths.RADIODENSITY_TARGETS, sep="\t")
    assert study["subject"].nunique() == 10
    per_split = study.drop_duplicates("subject")["split"].value_counts().to_dict()
    assert per_split == {"train": 5, "validation": 2, "test": 3}
    assert set(study["split"]) == {"train", "validation", "test"}
    assert study.groupby("subject")["split"].nunique().max() == 1  # split by subject
    train = study[study["split"] == "train"]
    assert abs(train["target"].mean()) < 1e-6  # z-scored on the training rows

    crops = np.load(workdir / paths.radiodensity_crop_files("tr01")["crops"])
    assert set(crops.files) == {"original", "quickshear", "skullstrip"}
    assert crops["original"].shape == (40, 16, 48)
    assert not np.array_equal(crops["original"], crops["quickshear"])  # the face is gone

    for image_type in ("original", "quickshear", "skullstrip"):
        files = paths.radiodensity_model_files(image_type, "abdomen")
        predictions = pd.read_csv(workdir / files["predictions"], sep="\t")
        assert len(predictions) == len(study)  # every visit row of every subject
        assert np.isfinite(predictions["prediction"]).all()
        history = pd.read_csv(workdir / files["history"], sep="\t")
        checkpoint = torch.load(workdir / files["model"], weights_only=False)
        assert checkpoint["state_dict"]  # ResNet10 weights
        if image_type == "skullstrip":  # every crop 0: no network is trained, one prediction
            assert history.empty and predictions["prediction"].nunique() == 1
            assert not checkpoint["trained"] and checkpoint["best_epoch"] == 0
        else:
            assert 1 <= len(history) <= 2 and checkpoint["trained"]

    table = pd.read_csv(workdir / paths.RADIODENSITY_TABLES["table"], sep="\t")
    assert sorted(table["image_type"]) == ["original", "quickshear", "skullstrip"]
    kept = table[table["image_type"] != "skullstrip"]
    assert (kept["ci_low"] <= kept["ci_high"]).all()
    # skull-stripping leaves no facial voxel: one prediction for everyone, no rho
    stripped = table[table["image_type"] == "skullstrip"].iloc[0]
    assert np.isnan(stripped["rho"]) and np.isnan(stripped["ci_low"])
    markdown = (workdir / paths.RADIODENSITY_TABLES["markdown"]).read_text()
    assert "quickshear" in markdown and "skullstrip: no rho" in markdown
    assert (workdir / paths.RADIODENSITY_FIGURE).stat().st_size > 10_000

    # where the models run is not what they are: a new device retrains nothing
    moved = {**TINY, "radiodensity": {**TINY["radiodensity"], "device": "cpu"}}
    done = run_snakemake(workdir, *targets, "--dry-run", config=moved)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout, done.stdout[-2000:]
