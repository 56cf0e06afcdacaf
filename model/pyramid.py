"""The feature pyramid: MIND-SSC features of the iUS and one MR on a fine base grid, and each working level's
features made from them (made once per level, then reused by every stage)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig
from .features import coarsen, fixed_features, moving_features, pca_reduce
from .warp import downsample, identity_mm, level_grid, sample


@dataclass
class Level:
    """One working grid of the registration: its geometry and the features on it."""
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]   # mm per voxel of this level's grid
    fixed: torch.Tensor                   # (C, ...) iUS features
    moving: torch.Tensor                  # (C, ...) MR features, unwarped
    weight: torch.Tensor                  # (1, ...) similarity weight: fan mask x anechoic down-weighting

    def identity(self) -> torch.Tensor:
        """(3, ...) mm positions of the level's voxels."""
        return identity_mm(self.shape, self.spacing, self.fixed.device)

    def warped_moving(self, positions_mm: torch.Tensor) -> torch.Tensor:
        """The MR features sampled at `positions_mm` ((3, ...) mm of this level's frame)."""
        return sample(self.moving, positions_mm, self.spacing)


class FeaturePyramid:
    """`at(res_mm)` gives the Level of about res_mm (never finer than the input, at most max_working_voxels).
    `fixed_base`: the iUS features and weight on the base grid from an earlier pyramid of the same iUS
    (`self.fixed_base`), so a case's second sequence does not compute them again."""

    def __init__(self, fixed: torch.Tensor, moving: torch.Tensor, spacing, cfg: ModelConfig, fixed_base=None):
        self.shape, self.spacing, self.device = tuple(fixed.shape[1:]), spacing, fixed.device
        self.max_voxels = cfg.max_working_voxels
        # MIND on a fine base grid; coarser levels resample these features (robust across modalities)
        base_shape, self.base_spacing = level_grid(self.shape, spacing, cfg.feature_mm, cfg.max_feature_voxels)
        if fixed_base is None:
            us = downsample(fixed, spacing, base_shape, self.base_spacing)
            fixed_base = fixed_features(us, self.base_spacing, cfg.features)
        self.fixed_base = fixed_base
        ff, w = fixed_base
        mf = moving_features(downsample(moving, spacing, base_shape, self.base_spacing), cfg.features)
        ff, mf = pca_reduce(ff, mf, cfg.features.pca_channels, w)
        self._base = (ff, mf, w)
        self._levels: dict = {}

    def grid(self, res_mm: float) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
        """(shape, spacing) of the level `at(res_mm)` would give, without making its features."""
        return level_grid(self.shape, self.spacing, res_mm, self.max_voxels)

    def at(self, res_mm: float) -> Level:
        key = self.grid(res_mm)
        if key not in self._levels:
            shape, spacing = key
            self._levels[key] = Level(shape, spacing, *coarsen(*self._base, self.base_spacing, shape, spacing))
        return self._levels[key]
