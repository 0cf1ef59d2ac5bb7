"""What every native defacer returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DefaceResult:
    """A defaced volume on the input's grid.

    defaced: [X, Y, Z] float32, same grid and intensity units as the input T1w.
    removed: [X, Y, Z] bool, voxels the defacer removed or altered (its own mask where it has
        one, else the changed voxels).
    params: the parameters that produced it (recorded in the JSON sidecar).
    """

    defaced: np.ndarray
    removed: np.ndarray
    params: dict = field(default_factory=dict)
