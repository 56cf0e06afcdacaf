"""Evidence before output: does the image pair support the chosen field better than chance?

Two sequences agreeing is not evidence (both agree on noise: each finds the same nothing). The images must
support the match: the chosen field's matching cost is compared with a null distribution of the SAME cost, the
same field and the same features, with the MR features moved out of register by circular shifts of half the
box along each combination of axes (seven nulls; a circular shift keeps every feature value, so the null
differs from the match only in where the MR structures land). On images that match, the aligned cost is far
below every null; on an iUS of noise, or on an MR given as the iUS, it is not. docs/MODEL.md, "Evidence".
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .pyramid import Level
from .stages import matching_cost


@dataclass(frozen=True)
class ChanceFigures:
    match_cost: float            # the fan-weighted MIND SSD of the chosen positions
    null_costs: tuple[float, ...]  # the same, with the MR features rolled out of register

    @property
    def ratio(self) -> float:
        """match cost / the lowest null cost: 1 or more means no better than chance."""
        return self.match_cost / max(min(self.null_costs), 1e-12)


def _rolled(level: Level, axes: tuple[int, ...]) -> Level:
    """The level with its MR features circularly shifted by half the grid along `axes` (0, 1, 2 = i, j, k)."""
    shifts = tuple(level.shape[a] // 2 for a in axes)
    moving = torch.roll(level.moving, shifts=shifts, dims=tuple(a + 1 for a in axes))
    return Level(level.shape, level.spacing, level.fixed, moving, level.weight)


def chance_figures(level: Level, positions_mm: torch.Tensor) -> ChanceFigures:
    """The matching cost at `positions_mm` ((3, ...) mm of the level's frame), and its seven nulls."""
    nulls = tuple(matching_cost(_rolled(level, axes), positions_mm)
                  for n in (1, 2, 3) for axes in itertools.combinations(range(3), n))
    return ChanceFigures(matching_cost(level, positions_mm), nulls)
