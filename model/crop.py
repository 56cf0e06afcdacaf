"""The registration box: the iUS fan's bounding box plus a margin, cut out of the full grid.

The challenge's 256^3 box holds a fan of about 50 mm: registering on the whole box spends most of the work on
empty space, and its coarse grids fall on the anatomy wherever the box size puts them (docs/MODEL.md, issue 15).
On the fan's box every working grid is placed on the fan, and the finer levels become affordable. Displacements
do not depend on where the frame's origin is, only the pose's translation does (`pose_in_full_frame`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import CropSettings


@dataclass(frozen=True)
class Box:
    """Voxel box [lo, hi) of the full grid (i, j, k)."""
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    full_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))

    @property
    def is_full(self) -> bool:
        return tuple(self.lo) == (0, 0, 0) and tuple(self.hi) == tuple(self.full_shape)

    def cut(self, array):
        """A view of an (i, j, k) array inside the box (no copy: any memory layout stays as it is)."""
        return array[tuple(slice(a, b) for a, b in zip(self.lo, self.hi))]

    def origin_mm(self, spacing) -> np.ndarray:
        return np.asarray(self.lo, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)


def full_box(shape) -> Box:
    shape = tuple(int(n) for n in shape)
    return Box((0, 0, 0), shape, shape)


def fan_box(fixed, spacing, crop: CropSettings, threshold: float) -> Box:
    """The fan's (fixed > threshold) bounding box plus margin_mm on every side, clipped to the grid. The whole
    grid when cropping is off, or when the fan is empty (nothing to place the box on: the stages decide)."""
    shape = tuple(int(n) for n in fixed.shape)
    if not crop.enabled:
        return full_box(shape)
    fan = np.asarray(fixed) > threshold
    if not fan.any():
        return full_box(shape)
    lo, hi = [], []
    for axis, s in enumerate(spacing):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(fan.any(axis=others))
        margin = int(np.ceil(crop.margin_mm / float(s) - 1e-9))
        lo.append(max(int(present[0]) - margin, 0))
        hi.append(min(int(present[-1]) + 1 + margin, shape[axis]))
    return Box(tuple(lo), tuple(hi), shape)


def pose_in_full_frame(matrix: torch.Tensor, box: Box, spacing) -> torch.Tensor:
    """A pose found in the box's frame (mm from the box's first voxel, fixed and moving alike) as a pose of the
    full grid's frame: y = A (x - o) + t + o, i.e. the same A and t + o - A o, with o the box origin in mm."""
    if box.is_full:
        return matrix
    o = torch.tensor(box.origin_mm(spacing), dtype=matrix.dtype, device=matrix.device)
    out = matrix.clone()
    out[:3, 3] = matrix[:3, 3] + o - matrix[:3, :3] @ o
    return out
