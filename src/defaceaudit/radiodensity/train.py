"""Training of one radiodensity network: one image type x one body part (paper section 3.3).

The network regresses the z-scored, age- and sex-adjusted radiodensity (:mod:`.targets`) from a
face crop (:mod:`.crop`). Training rows are drawn subject-balanced (:mod:`.sampler`), the loss
is the MSE on the normalised target, AdamW, and training stops early when the validation MSE has
not improved for ``patience`` epochs; the best epoch's weights are restored. The validation MSE
is subject-balanced like the sampler: the mean over validation subjects of each subject's mean
over its visits, so a subject with more visits does not weigh more in early stopping.

Tensors: crops ``[B, 1, X, Y, Z]`` float32 (z-normalised intensities, 0 outside the face
region), targets and predictions ``[B]`` in SD units of the training residuals.
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from defaceaudit import __version__
from defaceaudit.config import section_settings
from defaceaudit.devices import bf16_autocast, device_from_config, use_bf16
from defaceaudit.errors import DefaceAuditError
from defaceaudit.radiodensity.model import load_medicalnet, resnet10
from defaceaudit.radiodensity.sampler import balanced_sampler, subject_balanced_weights
from defaceaudit.radiodensity.splits import SPLITS
from defaceaudit.tables import atomic_path, read_tsv, write_tsv

__all__ = [
    "HISTORY_COLUMNS",
    "PREDICTION_COLUMNS",
    "EarlyStopping",
    "TrainingDivergedError",
    "train_radiodensity",
    "fit_radiodensity",
    "training_settings",
]

_LOG = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "train_loss", "validation_loss", "seconds")
PREDICTION_COLUMNS = (
    "participant_id",
    "visit",
    "split",
    "body_part",
    "image_type",
    "target",
    "prediction",
)
ARCHITECTURE = (
    "monai.networks.nets.resnet10(spatial_dims=3, n_input_channels=1, num_classes=1, "
    "shortcut_type='B', bias_downsample=False, conv1_t_stride=2)"
)


class TrainingDivergedError(DefaceAuditError):
    """No epoch reached a finite validation loss (NaN or infinite predictions every epoch)."""


def training_settings(settings: Mapping) -> dict:
    """``settings``: the config's ``radiodensity.training`` keys and ``device``
    (``radiodensity.device``), validated against the config schema, each key they lack filled
    with the schema's default; returned as one dict. A path may be an ``os.PathLike`` and a
    number a numpy scalar (as Python code passes them). Raises
    :class:`~defaceaudit.errors.InputError` naming the key, as for a config file."""

    def plain(value):
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value.item() if isinstance(value, np.generic) else value

    training = {key: plain(value) for key, value in settings.items() if key != "device"}
    section = {"training": training}
    if "device" in settings:
        section["device"] = settings["device"]
    resolved = section_settings("radiodensity", section)
    return {**resolved["training"], "device": resolved["device"]}


@dataclass
class EarlyStopping:
    """Early stopping on a loss to minimise: ``update(epoch, loss)`` returns True when ``loss``
    is the best so far (strictly lower; a NaN never is); ``stop`` is True once ``patience``
    epochs have passed since the best one."""

    patience: int
    best_epoch: int = 0
    best_loss: float = float("inf")
    last_epoch: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        self.last_epoch = epoch
        if loss < self.best_loss:  # False for NaN
            self.best_epoch, self.best_loss = epoch, float(loss)
            return True
        return False

    @property
    def stop(self) -> bool:
        return self.last_epoch - self.best_epoch >= self.patience


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``order``; a trailing batch of one row joins the one before it
    (batch norm cannot train on a single value per channel, which a 16^3 input reaches)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def fit_radiodensity(
    crops: np.ndarray,
    targets: np.ndarray,
    subjects: Sequence[str],
    splits: Sequence[str],
    settings: Mapping,
    log: logging.Logger | None = None,
    *,
    crop_index: Sequence[int] | None = None,
    build_model: Callable[[], nn.Module] | None = None,
) -> tuple[nn.Module, pd.DataFrame, np.ndarray]:
    """Train one network on face crops; returns ``(model, history, predictions)``.

    ``crops``: float32 ``[N, X, Y, Z]`` (one crop per row), or ``[M, X, Y, Z]`` with
    ``crop_index`` ``[N]`` giving each row's crop (a subject's one image serves all its visits
    without copies). ``targets`` ``[N]`` (normalised units), ``subjects`` ``[N]`` and ``splits``
    ``[N]`` (each "train", "validation" or "test"). ``settings``: see :func:`training_settings`
    (epochs = the most epochs, patience in epochs, device "auto"/"cpu"/"cuda", bf16 autocast on
    CUDA only). ``build_model`` makes the network (default :func:`~.model.resnet10`, with
    ``medicalnet_weights`` loaded when set); it is called after ``torch.manual_seed(seed)``.

    One epoch draws as many training rows as there are (subject-balanced, with replacement,
    from a generator seeded with ``seed``). After each epoch the validation MSE decides early
    stopping; like the sampler it is subject-balanced (mean over validation subjects of the mean
    squared error over each subject's rows). The returned model (eval mode) has the weights of
    the epoch with the lowest validation MSE. ``history`` has :data:`HISTORY_COLUMNS` (losses
    are MSEs in squared target units, ``seconds`` the epoch's wall time including validation)
    and ``history.attrs["best_epoch"]``. ``predictions`` ``[N]`` float64: every row, eval mode.
    Deterministic on CPU for a given seed and thread count. When every training and
    validation crop is the same (skull-stripped images: all 0) no network is trained
    (:func:`_constant_fit`). Raises
    :class:`TrainingDivergedError` when no epoch had a finite validation MSE.
    """
    log = log or _LOG
    s = training_settings(settings)
    targets = np.asarray(targets, dtype=np.float64)
    subjects = np.asarray([str(x) for x in subjects])
    splits = np.asarray([str(x) for x in splits])
    n = targets.shape[0]
    index = np.arange(n) if crop_index is None else np.asarray(crop_index, dtype=np.int64)
    if crops.ndim != 4:
        raise DefaceAuditError(f"crops must be [N, X, Y, Z], got shape {crops.shape}")
    if not (subjects.shape == splits.shape == index.shape == (n,)):
        raise DefaceAuditError(
            f"targets ({n}), subjects ({subjects.size}), splits ({splits.size}) and crop rows "
            f"({index.size}) differ in length"
        )
    if index.size and (index.min() < 0 or index.max() >= crops.shape[0]):
        raise DefaceAuditError(f"crop_index outside the {crops.shape[0]} crops")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise DefaceAuditError(f"unknown split name(s) {unknown}; expected {list(SPLITS)}")
    train_rows = np.flatnonzero(splits == "train")
    val_rows = np.flatnonzero(splits == "validation")
    if train_rows.size < 2 or val_rows.size < 1:
        raise DefaceAuditError(
            f"training needs >= 2 training rows and >= 1 validation row; got {train_rows.size} "
            f"and {val_rows.size}"
        )
    used = np.concatenate([train_rows, val_rows])
    if not np.all(np.isfinite(targets[used])):
        raise DefaceAuditError("training or validation targets contain NaN or infinity")

    used_crops = crops[np.unique(index[used])]
    if np.all(used_crops == used_crops[:1]):
        return _constant_fit(targets, subjects, train_rows, s, log, build_model)

    device = device_from_config(s["device"])
    cuda = device.type == "cuda"
    bf16 = use_bf16(s["bf16"], device, log)
    if cuda:
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(int(s["seed"]))
    model = (build_model or resnet10)()
    if s["medicalnet_weights"]:
        load_medicalnet(model, s["medicalnet_weights"])
        log.info("initialised from MedicalNet weights %s", s["medicalnet_weights"])
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(s["learning_rate"]),
        weight_decay=float(s["weight_decay"]),
        fused=device.type in ("cpu", "cuda"),
    )
    target_t = torch.tensor(targets, dtype=torch.float32)

    def inputs(rows: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(crops[index[rows]], dtype=np.float32))
        return x.unsqueeze(1).to(device, non_blocking=True)

    @torch.no_grad()
    def predict(rows: np.ndarray) -> np.ndarray:
        model.eval()
        out = [np.empty(0)]
        for batch in _batches(rows, int(s["batch_size"])):
            with bf16_autocast(bf16):
                out.append(model(inputs(batch)).float().squeeze(1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    sampler = balanced_sampler(subjects[train_rows], train_rows.size, int(s["seed"]))
    val_weights = subject_balanced_weights(subjects[val_rows])  # [n_validation_rows], sum 1
    stopper = EarlyStopping(int(s["patience"]))
    best_state = None
    records = []
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "training on %s: %d train rows (%d subjects), %d validation rows, %d parameters",
        device,
        train_rows.size,
        np.unique(subjects[train_rows]).size,
        val_rows.size,
        n_params,
    )
    for epoch in range(1, int(s["epochs"]) + 1):
        start = time.perf_counter()
        model.train()
        order = train_rows[np.fromiter(iter(sampler), dtype=np.int64, count=train_rows.size)]
        total = 0.0
        for batch in _batches(order, int(s["batch_size"])):
            optimizer.zero_grad(set_to_none=True)
            with bf16_autocast(bf16):
                pred = model(inputs(batch)).float().squeeze(1)
            loss = nn.functional.mse_loss(pred, target_t[batch].to(device))
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        train_loss = total / order.size
        val_loss = float(np.sum(val_weights * (predict(val_rows) - targets[val_rows]) ** 2))
        if stopper.update(epoch, val_loss):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        seconds = time.perf_counter() - start
        records.append((epoch, train_loss, val_loss, seconds))
        log.info(
            "epoch %d/%d: train loss %.4f, validation loss %.4f, %.1f s/epoch, best epoch %d",
            epoch,
            int(s["epochs"]),
            train_loss,
            val_loss,
            seconds,
            stopper.best_epoch,
        )
        if stopper.stop:
            log.info("early stop: no improvement for %d epochs", int(s["patience"]))
            break
    if best_state is None:
        raise TrainingDivergedError(
            f"no epoch of {len(records)} had a finite validation loss (predictions NaN or "
            "infinite): training diverged; try a lower learning_rate or check the crops"
        )
    model.load_state_dict(best_state)
    log.info("restored epoch %d (validation loss %.4f)", stopper.best_epoch, stopper.best_loss)
    history = pd.DataFrame.from_records(records, columns=list(HISTORY_COLUMNS))
    history.attrs["best_epoch"] = stopper.best_epoch
    predictions = predict(np.arange(n))
    return model.eval(), history, predictions


def _constant_fit(
    targets: np.ndarray,
    subjects: np.ndarray,
    train_rows: np.ndarray,
    settings: Mapping,
    log: logging.Logger,
    build_model: Callable[[], nn.Module] | None,
) -> tuple[nn.Module, pd.DataFrame, np.ndarray]:
    """What :func:`fit_radiodensity` returns when every training and validation crop is the
    same (skull-stripped images leave no facial voxel: every crop is 0). A network then sees
    one input and can only learn one value, so none is trained: every row's prediction is the
    subject-balanced mean of the training targets (the constant the training loss favours),
    the model is the untrained network (seeded: its checkpoint says ``best_epoch`` 0 and
    ``trained`` false), and the history has no epoch.
    Spearman's rho of such predictions is undefined, which the tables report as ``n/a``."""
    weights = subject_balanced_weights(subjects[train_rows])
    value = float(np.sum(weights * targets[train_rows]))
    log.warning(
        "every crop is identical (no facial voxel differs between subjects): no network is "
        "trained; every prediction is the training targets' subject-balanced mean %.4f",
        value,
    )
    torch.manual_seed(int(settings["seed"]))
    model = (build_model or resnet10)()
    history = pd.DataFrame(columns=list(HISTORY_COLUMNS))
    history.attrs["best_epoch"] = 0
    return model.eval(), history, np.full(targets.shape[0], value, dtype=np.float64)


def _participant(label: str) -> str:
    """BIDS participant_id of a subject label given with or without ``sub-``."""
    label = str(label)
    return label if label.startswith("sub-") else f"sub-{label}"


def _load_crop(path: str | os.PathLike, image_type: str) -> np.ndarray:
    """The ``image_type`` crop ``[X, Y, Z]`` float32 from an npz of
    :func:`~.crop.crop_radiodensity_face`. A missing, empty, truncated or corrupt file, or one
    without that crop, raises :class:`DefaceAuditError` naming the file."""
    try:
        with np.load(path) as data:
            if image_type not in data.files:
                raise DefaceAuditError(
                    f"{path}: no '{image_type}' crop; it holds {', '.join(data.files)}"
                )
            crop = np.asarray(data[image_type], dtype=np.float32)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise DefaceAuditError(f"{path}: not a readable crop file ({reason})") from err
    if crop.ndim != 3:
        raise DefaceAuditError(f"{path}: '{image_type}' crop has shape {crop.shape}, not 3-D")
    return crop


def train_radiodensity(
    crop_files: Mapping[str, str | os.PathLike],
    image_type: str,
    targets_tsv: str | os.PathLike,
    body_part: str,
    splits: Mapping[str, str] | None,
    settings: Mapping,
    out_predictions: str | os.PathLike,
    out_history: str | os.PathLike,
    out_model: str | os.PathLike | None = None,
    log: logging.Logger | None = None,
    *,
    build_model: Callable[[], nn.Module] | None = None,
) -> pd.DataFrame:
    """Train the network of one image type and body part from files; write its outputs.

    ``crop_files``: subject -> npz of :func:`~.crop.crop_radiodensity_face` (the ``image_type``
    crop is used); ``targets_tsv``: the long table of :func:`~.targets.lme_residual_targets`
    (its ``body_part`` rows); ``splits``: subject -> "train"/"validation"/"test", or None to
    take each subject's from the table's ``split`` column (as
    :func:`~.study.radiodensity_targets` writes it). Subjects may be given with or without ``sub-``.
    Every target row of a subject with a crop is used (the one image serves all visits); rows of
    subjects without a crop, or with a missing target, are left out (logged). Writes,
    atomically: ``out_predictions`` (TSV, :data:`PREDICTION_COLUMNS`), ``out_history`` (TSV,
    :data:`HISTORY_COLUMNS`) and, when given, ``out_model`` (torch.save of ``state_dict``,
    resolved ``settings``, architecture, image type, body part, crop shape, best epoch,
    ``trained`` (false when identical crops trained no network), package version).
    ``build_model`` as in :func:`fit_radiodensity`. Returns the predictions table.
    Unreadable inputs raise :class:`DefaceAuditError` naming the file; a
    diverged training :class:`TrainingDivergedError` naming the image type and body part
    (nothing is written then).
    """
    log = log or _LOG
    s = training_settings(settings)
    needed = ["participant_id", "visit", "body_part", "target"] + (
        ["split"] if splits is None else []
    )
    table = read_tsv(targets_tsv, "targets table", needed, dtype={"participant_id": str})
    rows = table.loc[table["body_part"] == body_part].copy()
    if rows.empty:
        raise DefaceAuditError(f"{targets_tsv}: no rows for body part {body_part!r}")
    files = {_participant(k): v for k, v in crop_files.items()}
    if splits is None:
        splits = dict(zip(table["participant_id"].astype(str), table["split"], strict=True))
    split_of = {_participant(k): v for k, v in splits.items()}
    rows["participant_id"] = rows["participant_id"].astype(str)
    no_crop = sorted(set(rows["participant_id"]) - set(files))
    if no_crop:
        log.warning("%d subject(s) with targets but no crop left out: %s", len(no_crop), no_crop)
    rows = rows.loc[rows["participant_id"].isin(files) & rows["target"].notna()]
    no_split = sorted(set(rows["participant_id"]) - set(split_of))
    if no_split:
        raise DefaceAuditError(f"subject(s) without a split: {', '.join(no_split)}")
    rows = rows.reset_index(drop=True)
    rows["split"] = rows["participant_id"].map(split_of)
    order = sorted(set(rows["participant_id"]))
    crops = [_load_crop(files[p], image_type) for p in order]
    shapes = {c.shape for c in crops}
    if len(shapes) > 1:
        raise DefaceAuditError(f"{image_type} crops differ in shape: {sorted(shapes)}")
    position = {p: i for i, p in enumerate(order)}
    try:
        model, history, predictions = fit_radiodensity(
            np.stack(crops),
            rows["target"].to_numpy(dtype=float),
            rows["participant_id"].tolist(),
            rows["split"].tolist(),
            s,
            log,
            crop_index=rows["participant_id"].map(position).to_numpy(),
            build_model=build_model,
        )
    except TrainingDivergedError as err:
        raise TrainingDivergedError(f"{image_type} model of the {body_part}: {err}") from err
    out = rows[["participant_id", "visit", "split"]].copy()
    out["body_part"] = body_part
    out["image_type"] = image_type
    out["target"] = rows["target"].to_numpy(dtype=float)
    out["prediction"] = predictions
    write_tsv(out, out_predictions)
    write_tsv(history, out_history)
    if out_model is not None:
        checkpoint = {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "settings": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in s.items()},
            "architecture": ARCHITECTURE if build_model is None else type(model).__name__,
            "image_type": image_type,
            "body_part": body_part,
            "crop_shape": list(crops[0].shape),
            "best_epoch": int(history.attrs["best_epoch"]),
            "trained": not history.empty,
            "defaceaudit_version": __version__,
        }
        with atomic_path(out_model) as tmp:
            torch.save(checkpoint, tmp)
    return out
