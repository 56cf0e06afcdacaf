"""Deformable refinement: Adam instance optimisation of a smooth, diffusion-regularised field."""
from __future__ import annotations

import torch

from .config import RefineSettings
from .warp import apply_affine, box_mean, identity_mm, sample


class _SymmetricBox3(torch.autograd.Function):
    """3x3x3 box mean with a replicate border (warp.box_mean) whose backward is the same box mean of the
    gradient: per axis the 3-tap mean with a replicate border is a symmetric matrix (first row 2/3, 1/3, ...) and
    the three axes commute, so the operator is its own adjoint. No autograd node per slice, and no
    replication_pad3d / avg_pool3d backward (on CUDA those use atomicAdd: not deterministic)."""

    @staticmethod
    def forward(ctx, p):
        return box_mean(p, 1)

    @staticmethod
    def backward(ctx, grad):
        return box_mean(grad, 1)


def _smooth_param(p, passes):
    for _ in range(passes):  # repeated box filters ~ Gaussian: keeps the field smooth by construction
        p = _SymmetricBox3.apply(p)
    return p


def adam_refine(fixed: torch.Tensor, moving: torch.Tensor, weight: torch.Tensor, spacing, pose: torch.Tensor,
                start: torch.Tensor, settings: RefineSettings) -> torch.Tensor:
    """The field u ((3, i, j, k) mm of the level's frame) minimising
    mean_weight (fixed(x) - moving(pose(x + u(x))))^2 + diffusion_weight * |grad u|^2, from `start`.
    fixed, moving: (C, i, j, k) features on one level's grid with `spacing` (mm per voxel, i, j, k), the moving
    ones unwarped; weight: (1, i, j, k); pose: (4, 4) fixed mm -> moving mm."""
    x = identity_mm(fixed.shape[1:], spacing, fixed.device)
    mm_per_voxel = torch.tensor(spacing, device=fixed.device).view(3, 1, 1, 1)
    p = start.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=settings.lr)
    weight_sum = weight.sum().clamp_min(1.0)
    # the data term lives where weight > 0 (the fan): only those voxels are sampled (the same loss and
    # gradient; a fan fills a fraction of its box, and sampling is most of the work)
    inside = weight.reshape(-1) > 0
    if not bool(inside.any()):
        inside = torch.ones_like(inside)
    weight_in = weight.reshape(-1)[inside]
    fixed_in = fixed.float().reshape(fixed.shape[0], -1)[:, inside]
    x_in = x.reshape(3, -1)[:, inside]
    moving = moving.float()
    for it in range(settings.iterations):
        opt.zero_grad(set_to_none=True)
        u = _smooth_param(p, settings.smooth_passes)
        positions = apply_affine(pose, x_in + u.reshape(3, -1)[:, inside])
        warped = sample(moving, positions.view(3, -1, 1, 1), spacing).view(fixed_in.shape)
        data = ((fixed_in - warped).pow(2).mean(0) * weight_in).sum() / weight_sum
        u_vox = u / mm_per_voxel  # level voxels: the same weight means the same smoothness at every resolution
        # summed over the box, normalised by the fan weight like the data term: the balance does not
        # depend on how much empty box surrounds the fan (a mean over voxels would, 256^3 vs RESECT)
        reg = ((u_vox[:, 1:] - u_vox[:, :-1]).pow(2).sum() + (u_vox[:, :, 1:] - u_vox[:, :, :-1]).pow(2).sum()
               + (u_vox[:, :, :, 1:] - u_vox[:, :, :, :-1]).pow(2).sum()) / (3 * weight_sum)
        loss = data + settings.diffusion_weight * reg
        loss.backward()
        if it == 0 and settings.adam_eps_rel > 0:
            # Adam steps ~lr * sign(g) wherever |g| >> eps, so with a tiny absolute eps a voxel whose gradient
            # is rounding noise takes full steps in a random direction. An eps relative to the typical
            # in-fan gradient turns such voxels into small SGD steps (and is free of the loss scale).
            g_rms = p.grad.pow(2).sum(0, keepdim=True)[weight > 0].mean().sqrt()
            opt.param_groups[0]["eps"] = float(settings.adam_eps_rel * g_rms) + 1e-20
        opt.step()
    with torch.no_grad():
        return _smooth_param(p, settings.smooth_passes).detach()
