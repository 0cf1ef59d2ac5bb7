"""The convergence guard of the refacing attack: a learning curve on held-out training subjects.

An under-trained attack returns noise further from the original than the defaced image, and a
report built on it would tell a data steward that defacing protects. So every model pair is
validated on a few subjects of the TRAINING split that its training never saw (never test
subjects): at each EMA snapshot kept during training
(:func:`defaceaudit.reface.train.train`, ``snapshot_steps``), the snapshot pair refaces
each validation subject's defaced images, and the face MASD of the refaced image to the original
(:mod:`defaceaudit.metrics.surface`, the paper's direction and symmetric) is written beside the
defaced image's. Snapshot ``k`` of stage 1 is paired with snapshot ``k`` of stage 2 (the same
fraction of each stage's training).

The verdict (``converged``): at the final snapshot (the trained checkpoint) the mean refaced
MASD is below the mean defaced MASD, in both directions. Where it is not, the DPM results of the
tables, face panels and report say "attack not converged: these numbers are not a risk
estimate" (:data:`NOT_CONVERGED`).

Distances in mm; images ``[X, Y, Z]`` on their prepared RAS grid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from defaceaudit.devices import device_from_config
from defaceaudit.imaging.masks import head_mask
from defaceaudit.imaging.nifti import (
    load_mask,
    load_on_grid,
    voxel_sizes_mm,
)
from defaceaudit.metrics.surface import (
    FaceCrop,
    face_vertices,
    masd_from_vertices,
)
from defaceaudit.reface.cascade import SamplingSettings
from defaceaudit.reface.checkpoint import CheckpointError, load_checkpoint
from defaceaudit.reface.refacing import (
    load_model_pair,
    reface_volume,
    scale_of,
)
from defaceaudit.tables import atomic_path, write_json, write_tsv

log = logging.getLogger(__name__)

#: what the DPM results carry where validation says the attack does not beat the defaced image
NOT_CONVERGED = "attack not converged: these numbers are not a risk estimate"

CURVE_COLUMNS = (
    "model",
    "snapshot",
    "stage1_step",
    "stage2_step",
    "subject",
    "defacer",
    "masd_defaced_mm",
    "masd_refaced_mm",
    "masd_symmetric_defaced_mm",
    "masd_symmetric_refaced_mm",
)


def snapshot_states(checkpoint: str | os.PathLike) -> list[tuple[int, dict]]:
    """``(step, EMA state dict)`` of every snapshot in a checkpoint, by step, ending with the
    final EMA weights at the checkpoint's own step (once, also when a snapshot was kept there)."""
    data = load_checkpoint(checkpoint)
    snaps = {int(k): v for k, v in data["extra"].get("ema_snapshots", {}).items()}
    snaps[int(data["step"])] = data["ema"]["shadow"]
    return sorted(snaps.items())


def _face_masd(original_faces: np.ndarray, image: np.ndarray, crop, spacing) -> dict:
    try:
        face = face_vertices(head_mask(image, spacing), crop, spacing)
        return masd_from_vertices(original_faces, face)
    except ValueError:  # no face surface left inside the crop
        return {"masd_mm": np.nan, "masd_symmetric_mm": np.nan}


def learning_curve(
    model: str,
    stage1: str | os.PathLike,
    stage2: str | os.PathLike,
    pairs: Sequence[dict],
    sampling: dict,
    device: str = "auto",
) -> pd.DataFrame:
    """The validation rows of one model pair, :data:`CURVE_COLUMNS`.

    ``pairs``: dicts with ``subject``, ``defacer``, ``original`` (prepared T1w), ``head_mask``
    (the original's) and ``defaced`` (paths), validation subjects only. ``sampling``: the
    run's ``reface.sampling`` keys
    (:meth:`~defaceaudit.reface.cascade.SamplingSettings.from_config`; the curve measures the
    attack as it is run on the test subjects).
    """
    torch_device = device_from_config(device)
    sampler = load_model_pair(stage1, stage2, torch_device)
    states1, states2 = snapshot_states(stage1), snapshot_states(stage2)
    if len(states1) != len(states2):
        raise CheckpointError(
            f"{stage1} holds {len(states1)} snapshots and {stage2} {len(states2)}: "
            "not one model pair's validation (retrain both stages)"
        )
    settings = SamplingSettings.from_config(sampling)
    loaded = []
    for pair in pairs:
        original_img, original = load_on_grid(pair["original"])
        spacing = voxel_sizes_mm(original_img.affine)
        head = load_mask(
            pair["head_mask"], original_img, canonical=True, reference_name=pair["original"]
        )
        crop = FaceCrop.from_head(head, spacing)
        faces = face_vertices(head, crop, spacing)
        _, defaced = load_on_grid(pair["defaced"], original_img, pair["original"])
        loaded.append((pair, spacing, crop, faces, defaced, scale_of(defaced, pair["defaced"])))
    rows = []
    for k, ((step1, state1), (step2, state2)) in enumerate(zip(states1, states2, strict=True)):
        with torch.no_grad():
            sampler.model1.load_state_dict(state1)
            sampler.model2.load_state_dict(state2)
        for pair, spacing, crop, faces, defaced, scale in loaded:
            refaced, _, _ = reface_volume(defaced, spacing, sampler, settings, scale)
            before = _face_masd(faces, defaced, crop, spacing)
            after = _face_masd(faces, refaced, crop, spacing)
            rows.append(
                {
                    "model": model,
                    "snapshot": k + 1,
                    "stage1_step": step1,
                    "stage2_step": step2,
                    "subject": pair["subject"],
                    "defacer": pair["defacer"],
                    "masd_defaced_mm": before["masd_mm"],
                    "masd_refaced_mm": after["masd_mm"],
                    "masd_symmetric_defaced_mm": before["masd_symmetric_mm"],
                    "masd_symmetric_refaced_mm": after["masd_symmetric_mm"],
                }
            )
            log.info("%s snapshot %d (steps %d/%d): %s", model, k + 1, step1, step2, rows[-1])
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def verdict(curve: pd.DataFrame) -> dict:
    """Whether the attack converged, from a :func:`learning_curve`: at its final snapshot the
    mean refaced MASD is below the mean defaced MASD in both directions (a refaced image with no
    face counts as not beating). Returns ``{"model", "converged", "snapshot", "stage1_step",
    "stage2_step", "validation_pairs", the four mean MASDs (mm), "note"}``."""
    last = curve[curve["snapshot"] == curve["snapshot"].max()]
    means = {
        column: float(last[column].mean())
        for column in CURVE_COLUMNS[6:]
        if len(last) and not last[column].isna().all()
    }
    refaced_ok = not last[["masd_refaced_mm", "masd_symmetric_refaced_mm"]].isna().any().any()
    converged = bool(
        len(last)
        and refaced_ok
        and len(means) == 4
        and means["masd_refaced_mm"] < means["masd_defaced_mm"]
        and means["masd_symmetric_refaced_mm"] < means["masd_symmetric_defaced_mm"]
    )
    return {
        "model": str(last["model"].iloc[0]) if len(last) else "",
        "converged": converged,
        "snapshot": int(last["snapshot"].iloc[0]) if len(last) else 0,
        "stage1_step": int(last["stage1_step"].iloc[0]) if len(last) else 0,
        "stage2_step": int(last["stage2_step"].iloc[0]) if len(last) else 0,
        "validation_pairs": int(len(last)),
        # None, not NaN, where a mean is missing: the verdict is strict JSON
        **{f"mean_{column}": means.get(column) for column in CURVE_COLUMNS[6:]},
        "note": "" if converged else NOT_CONVERGED,
    }


def plot_learning_curve(
    curve: pd.DataFrame, out_png: str | os.PathLike, converged: bool | None = None
) -> None:
    """Validation MASD (mm, paper direction) against stage-1 training steps, one line per
    validation pair, refaced solid and defaced dashed (the level the attack must beat)."""
    fig = Figure(figsize=(6.4, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    model = str(curve["model"].iloc[0]) if len(curve) else ""
    for index, ((subject, defacer), group) in enumerate(curve.groupby(["subject", "defacer"])):
        colour = f"C{index % 10}"
        group = group.sort_values("snapshot")
        label = f"{subject} / {defacer}"
        ax.plot(group["stage1_step"], group["masd_refaced_mm"], "o-", color=colour, label=label)
        ax.axhline(float(group["masd_defaced_mm"].iloc[0]), color=colour, ls="--", lw=0.8)
    ax.set_xlabel("training steps (stage 1; stage 2 at the same fraction)")
    ax.set_ylabel("face MASD to the original (mm)")
    if converged is None:
        converged = bool(len(curve)) and verdict(curve)["converged"]
    state = "converged" if converged else "NOT converged"
    ax.set_title(f"Refacing model '{model}' on held-out training subjects: {state}", fontsize=9)
    ax.set_ylim(bottom=0)
    if len(curve):
        ax.legend(fontsize=7, title="solid: refaced; dashed: defaced", title_fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")


def validate_refacing(
    model: str,
    stage1: str | os.PathLike,
    stage2: str | os.PathLike,
    pairs: Sequence[dict],
    sampling: dict,
    outputs: dict,
    device: str = "auto",
) -> dict:
    """Write a model pair's learning curve (``outputs["curve"]``, TSV), its verdict
    (``outputs["verdict"]``, JSON: :func:`verdict`) and figure (``outputs["figure"]``, PNG).
    Without validation pairs the verdict says so and ``converged`` is false."""
    if pairs:
        curve = learning_curve(model, stage1, stage2, pairs, sampling, device)
        result = verdict(curve)
    else:
        curve = pd.DataFrame(columns=list(CURVE_COLUMNS))
        result = {
            "model": model,
            "converged": False,
            "validation_pairs": 0,
            "note": NOT_CONVERGED + " (no held-out training subject to validate on)",
        }
    write_tsv(curve, outputs["curve"])
    write_json(result, outputs["verdict"])
    plot_learning_curve(curve, outputs["figure"], converged=result["converged"])
    log.info("%s: %s", model, result)
    return result
