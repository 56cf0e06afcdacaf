"""The registration's stages, in the order Registration runs them. Fields are (3, ...) mm of the fixed frame
on a Level's grid; a pose is a (4, 4) mm affine, fixed point -> moving point."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ModelConfig, RefineSettings
from .crop import Box, full_box
from .discrete import discrete_field
from .pyramid import FeaturePyramid, Level
from .refine import adam_refine
from .rigid import trimmed_fit
from .warp import apply_affine, min_jacobian_mm, min_jacobian_vox, resize_field, sample


@dataclass
class GlobalPose:
    matrix: torch.Tensor      # (4, 4) fixed mm -> moving mm
    passes: int = 0           # pyramid passes run (convergence check)
    rejected: bool = False    # the pose moved the fan more than max_mean_shift_mm: identity kept


@dataclass
class Deformation:
    field: torch.Tensor               # (3, ...) mm, applied before the pose: x -> pose(x + field(x))
    spacing: tuple[float, float, float]


def _fit_points(level: Level, matrix, step, min_weight):
    """Fan voxels trusted enough to fit a pose: (their positions, where the step sends them through the pose)."""
    x = level.identity()
    selected = level.weight[0] >= min_weight
    if int(selected.sum()) < 20:
        selected = level.weight[0] > 0
    return x[:, selected].t(), apply_affine(matrix, (x + step)[:, selected]).t(), selected


def global_pose(pyramid: FeaturePyramid, cfg: ModelConfig) -> GlobalPose:
    """Coarse-to-fine discrete search + trimmed rigid fit, iterated from the current pose: at least
    `iterations` passes, more (up to max_iterations) only while a pass still moves the fan by converge_mm."""
    g, dev = cfg.global_stage, pyramid.device
    matrix = torch.eye(4, device=dev)
    if not g.enabled:
        return GlobalPose(matrix)

    def fit_on(res_mm, radius, matrix, discrete=cfg.discrete):
        level = pyramid.at(res_mm)
        moved = level.warped_moving(apply_affine(matrix, level.identity()))
        step = discrete_field(level.fixed, moved, level.weight, level.spacing, radius, discrete)
        src, dst, selected = _fit_points(level, matrix, step, g.min_weight)
        return trimmed_fit(src, dst, level.weight[0][selected], g.trim_keep, g.trim_iterations), src

    passes = 0
    for passes in range(1, max(g.iterations, g.max_iterations or 0) + 1):
        start = matrix.clone()
        for res_mm, radius in zip(g.levels_mm, g.radii()):
            matrix, src = fit_on(res_mm, radius, matrix)
        if passes >= g.iterations:
            change = (apply_affine(matrix, src.t()) - apply_affine(start, src.t())).norm(dim=0).max()
            if float(change) < g.converge_mm:
                break
    if g.final_level_mm:  # one finer fit once the passes have settled: finer matches for the cost of one level
        # without the inverse-consistency pass: the trimmed rigid fit needs no plausible field, and it was
        # 2.5x faster and no less accurate (docs/HISTORY.md)
        matrix, src = fit_on(g.final_level_mm, g.final_radius, matrix,
                             dataclasses.replace(cfg.discrete, inverse_consistency=False))
    # brain shift plus navigation error is bounded: a pose that moves the fan further on average is a
    # false match (e.g. a fan with little tissue in it), so keep the identity pose instead
    mean_shift = float((apply_affine(matrix, src.t()) - src.t()).norm(dim=0).mean())
    if mean_shift > g.max_mean_shift_mm:
        return GlobalPose(torch.eye(4, device=dev), passes, rejected=True)
    return GlobalPose(matrix, passes)


def deformable_search(pyramid: FeaturePyramid, pose: GlobalPose, cfg: ModelConfig) -> Deformation | None:
    """Coupled-convex discrete search per level on the posed MR, each step composed with the field so far."""
    dd = cfg.deformable_discrete
    if not dd.enabled:
        return None
    deformation = None
    for res_mm in dd.levels_mm:
        level = pyramid.at(res_mm)
        x = level.identity()
        previous = torch.zeros_like(x) if deformation is None else resize_field(deformation.field, level.shape)
        moved = level.warped_moving(apply_affine(pose.matrix, x + previous))
        step = discrete_field(level.fixed, moved, level.weight, level.spacing, dd.radius, cfg.discrete)
        # compose: the new step first, then the old field
        deformation = Deformation(step + sample(previous, x + step, level.spacing), level.spacing)
    return deformation


def refine_stages(cfg: ModelConfig, pyramid: FeaturePyramid) -> list[RefineSettings]:
    """The Adam refinements to run, coarse then fine, each complete: `refine`, then `refine_fine` (its own
    level, iterations, regulariser and smoothing; lr and eps from `refine`). The fine stage is skipped
    where the working-voxel cap leaves its level hardly finer than the coarse one (voxel size above
    `max_spacing_ratio` x the coarse level's): on a box the fan fills (the challenge's 256^3 grid) it would cost
    a second full refinement for next to no detail; on the fan's box of a smaller fan it runs at about 1 mm."""
    stages = [cfg.refine] if cfg.refine.enabled else []
    fine = cfg.refine_fine
    if fine.enabled and _fine_level_is_finer(pyramid, cfg.refine.level_mm, fine.max_spacing_ratio, fine.level_mm):
        stages.append(fine.stage(cfg.refine))
    return stages


def _fine_level_is_finer(pyramid: FeaturePyramid, coarse_mm: float, ratio: float | None, fine_mm: float) -> bool:
    if ratio is None:
        return True
    return max(pyramid.grid(fine_mm)[1]) <= ratio * max(pyramid.grid(coarse_mm)[1])


def adam_refinement(pyramid: FeaturePyramid, pose: GlobalPose, deformation: Deformation | None,
                    settings: RefineSettings) -> Deformation | None:
    """Adam instance optimisation of a smooth, diffusion-regularised field from the discrete result (or the
    previous refinement's), on the level of `settings`."""
    level = pyramid.at(settings.level_mm)
    start = (torch.zeros((3,) + level.shape, device=level.fixed.device) if deformation is None
             else resize_field(deformation.field, level.shape))
    with torch.enable_grad():
        field = adam_refine(level.fixed, level.moving, level.weight, level.spacing, pose.matrix, start, settings)
    return Deformation(field, level.spacing)


def plausible_scale(deformation: Deformation | None, cfg: ModelConfig) -> float:
    """1, or the halving of the deformable part that keeps its Jacobian above min_jacobian (0: none does)."""
    plausibility = cfg.plausibility
    if deformation is None:
        return 1.0
    scale = 1.0
    for _ in range(plausibility.max_scale_halvings + 1):
        if min_jacobian_mm(deformation.field * scale, deformation.spacing) > plausibility.min_jacobian:
            return scale
        scale *= 0.5
    return 0.0


def evidence_level_mm(cfg: ModelConfig, pyramid: FeaturePyramid) -> float:
    """The level results are compared with the identity on: the finest level a deformable stage worked on."""
    stages = refine_stages(cfg, pyramid)
    return stages[-1].level_mm if stages else cfg.deformable_discrete.levels_mm[-1]


def voxel_cost(level: Level, positions_mm: torch.Tensor) -> torch.Tensor:
    """(1, ...) per voxel: the channel-mean MIND SSD of the MR features sampled at `positions_mm` against the
    iUS features, times the similarity weight (0 outside the fan)."""
    difference = level.fixed.float() - sample(level.moving.float(), positions_mm, level.spacing)
    return (difference ** 2).mean(0, keepdim=True) * level.weight


def matching_cost(level: Level, positions_mm: torch.Tensor) -> float:
    """Fan-weighted MIND SSD of the MR features sampled at `positions_mm` against the iUS features."""
    total_weight = level.weight.sum().clamp_min(1.0)
    return float(voxel_cost(level, positions_mm).sum() / total_weight)


def matches_worse_than_identity(pyramid: FeaturePyramid, pose: GlobalPose, deformation: Deformation | None,
                                scale: float, cfg: ModelConfig) -> bool:
    """Safety net, part 1: the weighted MIND SSD the model optimised, of the result against doing nothing."""
    level = pyramid.at(evidence_level_mm(cfg, pyramid))
    x = level.identity()
    field = 0 if deformation is None else scale * resize_field(deformation.field, level.shape)
    return matching_cost(level, apply_affine(pose.matrix, x + field)) > matching_cost(level, x)


def full_resolution_field(pose: GlobalPose, deformation: Deformation | None, scale: float, shape, spacing,
                          box: Box | None = None, gain: float = 1.0):
    """The voxel field on the full fixed grid: (i, j, k, 3) as a view of a (3, k, j, i) float32 block (the
    NIfTI writer's order and the DSPF array, so neither transposes the field on the CPU), its smallest Jacobian,
    and the deformable scale used (halved again until no fold, the pose alone as a last resort).

    Built directly in that block's order: the pose's part (A - I) x + t is an affine function of the index,
    summed from its three axes by broadcasting; the deformable part A u is the upsampled working field, whose
    axes are reversed before upsampling (trilinear interpolation works per axis, so this commutes).
    `pose` is in the full grid's frame; a deformation found on a `box` (model/crop.py) covers that box and is
    continued outside it by its border values (replicate), so the field stays smooth across the box's faces.
    `gain` < 1 writes the whole displacement scaled toward the identity (the small-shift gate, model/safety.py)."""
    dev = pose.matrix.device
    writer_shape = tuple(int(n) for n in shape[::-1])             # (k, j, i)
    mm_per_voxel = torch.tensor(spacing, device=dev, dtype=torch.float32)
    linear, shift = pose.matrix[:3, :3].float(), pose.matrix[:3, 3].float()
    axes = [torch.arange(n, device=dev, dtype=torch.float32) * s for n, s in zip(shape, spacing)]  # i, j, k mm
    upsampled = None
    if deformation is not None:
        box = box or full_box(shape)
        upsampled = resize_field(deformation.field.permute(0, 3, 2, 1), box.shape[::-1])
        if not box.is_full:  # F.pad's order: last axis (i) first
            pad = [p for axis in range(3) for p in (box.lo[axis], box.full_shape[axis] - box.hi[axis])]
            upsampled = F.pad(upsampled[None], pad, mode="replicate")[0]
    while True:
        planes = torch.empty((3,) + writer_shape, device=dev, dtype=torch.float32)
        for c in range(3):  # component c in mm: sum_d (A - I)[c, d] x_d + t_c over the (k, j, i) grid
            row = linear[c] - torch.eye(3, device=dev)[c]
            plane = (row[0] * axes[0]).view(1, 1, -1) + (row[1] * axes[1]).view(1, -1, 1) + shift[c]
            torch.add(plane, (row[2] * axes[2]).view(-1, 1, 1), out=planes[c])
        if upsampled is not None and scale != 0:
            planes.view(3, -1).addmm_(linear * scale, upsampled.reshape(3, -1))
        planes /= mm_per_voxel.view(3, 1, 1, 1)
        if gain != 1.0:
            planes *= gain
        # the Jacobian over the (k, j, i) axes of the (k, j, i) components equals that over (i, j, k)
        jmin = min_jacobian_vox(planes, channels_reversed=True)
        if jmin > 0 or scale == 0 or upsampled is None:
            break
        scale = scale * 0.5 if scale > 1.0 / 64 else 0.0
    return planes.cpu().numpy().transpose(3, 2, 1, 0), jmin, scale
