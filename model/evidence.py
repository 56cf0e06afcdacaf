"""Evidence before output: does the image pair support the chosen field better than chance?

Two sequences agreeing is not evidence (both agree on noise: each finds the same nothing). The images must
support the match: the chosen field's matching cost is compared with a null distribution of the SAME cost, the
same field and the same features, with the MR features mirrored along each combination of axes (seven nulls:
a mirror keeps every feature value, and the margin of the box stays in the margin, where a circular shift would
bring the MR's empty padding of a 256^3 box onto the fan and make a null cheaper than any real match). On images
that match, the aligned cost is far below the nulls' median; on an iUS of noise it is not. docs/MODEL.md.
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
    null_costs: tuple[float, ...]  # the same, with the MR features mirrored out of register

    @property
    def ratio(self) -> float:
        """match cost / the median null cost: 1 or more means no better than chance."""
        return self.match_cost / max(sorted(self.null_costs)[len(self.null_costs) // 2], 1e-12)


def _mirrored(level: Level, axes: tuple[int, ...]) -> Level:
    """The level with its MR features mirrored along `axes` (0, 1, 2 = i, j, k)."""
    moving = torch.flip(level.moving, dims=tuple(a + 1 for a in axes))
    return Level(level.shape, level.spacing, level.fixed, moving, level.weight)


def chance_figures(level: Level, positions_mm: torch.Tensor) -> ChanceFigures:
    """The matching cost at `positions_mm` ((3, ...) mm of the level's frame), and its seven nulls."""
    nulls = tuple(matching_cost(_mirrored(level, axes), positions_mm)
                  for n in (1, 2, 3) for axes in itertools.combinations(range(3), n))
    return ChanceFigures(matching_cost(level, positions_mm), nulls)
