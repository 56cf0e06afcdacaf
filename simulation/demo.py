"""One small SIMULATED case for the README demo (MNI152 anatomy, needs no ../shared data)."""
from __future__ import annotations

import os

from .cases import make_simulated_case, write_dataset


def make_demo_dataset(out_dir: str, shape: int = 80, seed: int = 1) -> str:
    """Write case 0001 (iUS + ceT1 + T2, landmarks, ground truth) at shape^3, 128 mm field of view.

    Returns the dataset folder (containing ReMIND2Reg_dataset.json)."""
    case = make_simulated_case(seed, anatomy="mni152", shape=(shape,) * 3, spacing=128.0 / shape)
    write_dataset([case], out_dir, start_id=1, extra={"demo": True})
    return os.path.abspath(out_dir)
