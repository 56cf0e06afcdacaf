"""Discrete displacement search with coupled convex regularisation and inverse consistency.

Features are (C, i, j, k) tensors on one level's grid; `spacing` is its mm per voxel; offsets are integer
voxels of that grid; fields returned are (3, i, j, k) in mm."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import DiscreteSettings
from .warp import box_mean, identity_mm, sample, smooth


def displacement_set(radius: int, spacing, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every integer offset within `radius` level voxels: ((K, 3) voxels, (K, 3) mm)."""
    r = torch.arange(-radius, radius + 1, device=device)
    off = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    return off, off.float() * torch.tensor(spacing, device=device, dtype=torch.float32)


def cost_volume(fixed: torch.Tensor, moving: torch.Tensor, weight: torch.Tensor | None, offsets: torch.Tensor,
                box_radius: int) -> torch.Tensor:
    """Weighted MIND SSD for every integer offset: (K, i, j, k) with cost[k](x) =
    mean_c (fixed(x) - moving(x + offsets[k]))^2, times weight(x) (None: 1), aggregated over a small box.
    Offsets are exact integer shifts on the level grid (replicate padding), so no grid misplacement.
    Each offset's plane is weighted and box-filtered as soon as it is made, while it is still in cache."""
    r = int(offsets.abs().max())
    d, h, wd = fixed.shape[1:]
    out = torch.empty((offsets.shape[0], d, h, wd), device=fixed.device, dtype=torch.float32)
    padded = F.pad(moving.unsqueeze(0).float(), [r] * 6, mode="replicate")[0].to(moving.dtype)
    for k, o in enumerate((offsets + r).tolist()):
        diff = torch.sub(fixed, padded[:, o[0]:o[0] + d, o[1]:o[1] + h, o[2]:o[2] + wd]).square_()
        plane = diff.float().sum(0).mul_(1.0 / fixed.shape[0])
        if weight is not None:
            plane.mul_(weight[0])
        out[k] = box_mean(plane[None], box_radius)[0]
    return out


def shifted_stack(vol: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(K, D, H, W): vol (1, D, H, W) read at x + offset_k for every integer offset (replicate border)."""
    r = int(offsets.abs().max())
    d, h, w = vol.shape[1:]
    padded = F.pad(vol.unsqueeze(0), [r] * 6, mode="replicate")[0, 0]
    out = torch.empty((offsets.shape[0], d, h, w), device=vol.device, dtype=vol.dtype)
    for k, o in enumerate((offsets + r).tolist()):
        out[k] = padded[o[0]:o[0] + d, o[1]:o[1] + h, o[2]:o[2] + w]
    return out


def coupled_convex(cost: torch.Tensor, disp_mm: torch.Tensor, spacing, lambdas, sigma: float, temperature: float,
                   conf: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """(3, ...) mm field from a (K, ...) cost volume over the (K, 3) mm candidates `disp_mm`: alternate a smooth
    field v (confidence-weighted Gaussian of u, sigma in level voxels) and a per-voxel soft argmin of
    cost + lambda |d - v|^2 (distances in level voxels, so lambda means the same at every level).
    Weighting by conf keeps voxels with a flat cost (outside the fan, cavity) from pulling v to zero."""
    k, d, h, w = cost.shape
    n = d * h * w
    dev = cost.device
    c = cost.reshape(k, -1)
    if conf is None:
        conf = torch.ones((1, d, h, w), device=dev)
    # scale costs so the temperature and lambdas mean the same for any feature/weight scale: the
    # confidence-weighted mean, NOT the mean over the box (a large box with a small fan, e.g. 256^3 at
    # 0.5 mm, would otherwise dilute the scale and sharpen the soft argmin / weaken the coupling)
    cw = conf.float().reshape(-1)
    scale = ((c.mean(0) * cw).sum() / cw.sum().clamp_min(1e-8)).clamp_min(1e-8)
    sp = torch.tensor(spacing, device=dev, dtype=torch.float32)
    dv = disp_mm / sp  # (K, 3) level voxels
    conf = conf.float().clamp_min(1e-3)
    den = smooth(conf, sigma)
    # softmax logits -(c / scale + lam |d - v|^2) / T = base + [d, |d|^2] . [2 lam v / T, -lam / T]: the
    # |v|^2 term is the same for every candidate and cancels in the softmax, so each lambda costs one fused
    # multiply-add per candidate; voxels go in chunks so the (K, chunk) block stays in cache
    base = c * (-1.0 / (scale * temperature))
    a = torch.cat([dv, dv.pow(2).sum(1, keepdim=True)], 1)  # (K, 4)
    v = torch.zeros(3, n, device=dev)
    block = torch.empty(k, min(chunk, n), device=dev)
    for lam in lambdas:
        b_scale = torch.tensor([2 * lam / temperature] * 3 + [-lam / temperature], device=dev).view(4, 1)
        vb = torch.cat([v, torch.ones(1, n, device=dev)], 0) * b_scale
        u = torch.empty(3, n, device=dev)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            logits = torch.addmm(base[:, s:e], a, vb[:, s:e], out=block[:, :e - s])
            torch.mm(dv.t(), torch.softmax(logits, 0), out=u[:, s:e])
        v = (smooth(u.reshape(3, d, h, w) * conf, sigma) / den).reshape(3, -1)
    return v.reshape(3, d, h, w) * sp.view(3, 1, 1, 1)


def compose_ic(uf: torch.Tensor, ub: torch.Tensor, spacing, iterations: int) -> torch.Tensor:
    """Symmetrise the forward field uf and the backward field ub ((3, ...) mm): uf <- (uf - ub o (x + uf)) / 2
    and vice versa."""
    x = identity_mm(uf.shape[1:], spacing, uf.device)
    for _ in range(iterations):
        uf_new = 0.5 * (uf - sample(ub, x + uf, spacing))
        ub_new = 0.5 * (ub - sample(uf, x + ub, spacing))
        uf, ub = uf_new, ub_new
    return uf


def discrete_field(fixed: torch.Tensor, moving: torch.Tensor, weight: torch.Tensor, spacing, radius: int,
                   settings: DiscreteSettings) -> torch.Tensor:
    """Field (3, ...) in mm: fixed x -> current moving x + u(x), from one level's features, `moving` already
    warped by the current estimate; candidates within `radius` level voxels."""
    offsets, disp_mm = displacement_set(radius, spacing, fixed.device)
    cost = cost_volume(fixed, moving, weight, offsets, settings.cost_box_radius)
    args = (spacing, settings.coupled_lambdas, settings.smooth_sigma_vox, settings.softmin_temperature)
    forward = coupled_convex(cost, disp_mm, *args, weight)
    del cost
    if not settings.inverse_consistency:
        return forward
    # backward problem: moving features as "fixed". The fixed side is only known where w > 0, so a
    # candidate landing outside the fan gets the average cost (unknown), never a free zero cost.
    backward_cost = cost_volume(moving, fixed, None, offsets, 0)
    # average cost over the candidates that land in the fan (independent of the box size)
    landed = shifted_stack(weight, offsets)  # (K, ...) the fan weight at each candidate's landing voxel
    mean_cost = float((backward_cost * landed).sum()) / max(float(landed.sum()), 1e-8)
    for k in range(backward_cost.shape[0]):  # plane by plane, in cache: c * landed + (1 - landed) * mean, boxed
        plane = backward_cost[k].sub_(mean_cost).mul_(landed[k]).add_(mean_cost)
        backward_cost[k] = box_mean(plane[None], settings.cost_box_radius)[0]
    backward = coupled_convex(backward_cost, disp_mm, *args, landed.amax(0, keepdim=True))
    return compose_ic(forward, backward, spacing, settings.ic_iterations)
