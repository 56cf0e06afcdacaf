"""What every benchmark peer's `register` returns: the fields process.run reads from the model's result."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PeerResult:
    displacement: np.ndarray  # float32 (i, j, k, 3) voxel field on the fixed grid
    stage_seconds: dict = field(default_factory=dict)
    device: str = "cpu"
