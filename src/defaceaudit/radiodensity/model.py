"""The radiodensity network: a 3-D ResNet10 with MedicalNet initialisation (paper section 3.3).

MedicalNet (Chen et al. 2019, "Med3D") publishes encoder weights trained on 23 medical datasets
as ``{"state_dict": {"module.<key>": tensor}}`` (saved from ``nn.DataParallel``, without a
classification head). MONAI's ``resnet10(pretrained=True)`` downloads them; this module never
downloads anything: the weights file is a configured path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from monai.networks.nets import resnet10 as monai_resnet10

from defaceaudit.errors import DefaceAuditError

__all__ = ["load_medicalnet", "resnet10"]


def resnet10(in_channels: int = 1) -> torch.nn.Module:
    """MONAI's 3-D ResNet10 in MedicalNet's layout with one regression output.

    Input ``[B, in_channels, X, Y, Z]`` (any size from about 16 voxels per axis; 201x87x261 for
    the paper's crops), output ``[B, 1]``. Shortcut type B (1x1x1 convolutions), no bias in the
    downsampling convolutions and a stride-2 first convolution, as MedicalNet's weights expect;
    14.4 M parameters.
    """
    return monai_resnet10(
        spatial_dims=3,
        n_input_channels=int(in_channels),
        num_classes=1,
        shortcut_type="B",
        bias_downsample=False,
        conv1_t_stride=2,
    )


def _may_be_absent(key: str) -> bool:
    """Whether a MedicalNet file may lack model key ``key``: the head or a batch-norm counter."""
    return key.startswith("fc.") or key.endswith(".num_batches_tracked")


def load_medicalnet(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load MedicalNet encoder weights from ``path`` into ``model`` (a :func:`resnet10`), in place.

    The file is read with ``torch.load(weights_only=True)`` (tensors only, no code), unwrapped
    from ``{"state_dict": ...}`` and stripped of the ``module.`` prefix. Every key must exist in
    the model with the same shape, and the only model keys the file may lack are the regression
    head's ``fc.*`` (left at their random initialisation) and batch norm's
    ``*.num_batches_tracked`` counters, which checkpoints from before torch 0.4.1 lack (torch's
    batch-norm loader keeps the model's own counter then). Anything else raises
    :class:`DefaceAuditError` naming the file: a missing or unreadable file, a file that is not
    such a dict, unexpected keys, missing encoder keys, or shape mismatches.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise DefaceAuditError(f"{path}: MedicalNet weights file missing")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and unsafe-global errors all land here
        message = " ".join(str(err).split())[:300]
        raise DefaceAuditError(
            f"{path}: not a readable weights file ({type(err).__name__}: {message})"
        ) from err
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise DefaceAuditError(
            f"{path}: not a MedicalNet file (expected {{'state_dict': {{name: tensor}}}})"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not _may_be_absent(k))
    if unexpected or missing:
        parts = []
        if unexpected:
            parts.append(f"unexpected keys {', '.join(unexpected[:5])}")
        if missing:
            parts.append(f"missing keys {', '.join(missing[:5])}")
        raise DefaceAuditError(
            f"{path}: does not match the ResNet10 ({'; '.join(parts)}); only fc.* and "
            "*.num_batches_tracked may be absent"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise DefaceAuditError(
            f"{path}: {len(wrong)} shape mismatch(es), e.g. {k}: file {tuple(state[k].shape)}, "
            f"model {tuple(own[k].shape)}"
        )
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and all(_may_be_absent(k) for k in result.missing_keys)
