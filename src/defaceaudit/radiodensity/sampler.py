"""Subject-balanced sampling of training rows (paper section 3.3).

A subject with several visits has several rows (one CT per visit, the same face image). Drawing
rows uniformly would favour subjects with more visits; instead each subject is drawn equally
often and a drawn subject's rows equally often: row ``r`` of subject ``s`` has probability
``1 / (n_subjects * n_rows(s))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["balanced_sampler", "subject_balanced_weights"]


def subject_balanced_weights(subject_ids: Sequence[str]) -> np.ndarray:
    """Row probabilities ``[N]`` (float64, sum 1): ``1 / (n_subjects * rows of that subject)``.

    ``subject_ids`` gives each row's subject. Raises ValueError for an empty sequence.
    """
    ids = np.asarray([str(s) for s in subject_ids])
    if ids.size == 0:
        raise ValueError("subject_balanced_weights needs at least one row")
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return 1.0 / (counts.size * counts[inverse].astype(np.float64))


def balanced_sampler(
    subject_ids: Sequence[str], num_samples: int, seed: int
) -> WeightedRandomSampler:
    """A sampler of ``num_samples`` row indices per pass, drawn with replacement with
    :func:`subject_balanced_weights`, from a ``torch.Generator`` seeded with ``seed`` (each
    ``iter()`` continues the generator's stream: successive epochs differ, reruns repeat)."""
    weights = torch.as_tensor(subject_balanced_weights(subject_ids), dtype=torch.double)
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        weights, num_samples=int(num_samples), replacement=True, generator=generator
    )
