"""Deformable refinement: Adam instance optimisation of a smooth, diffusion-regularised field."""
import torch

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


def adam_refine(ff, mfs, w, spacing, A, u0, rcfg):
    """Minimise sum_seq sw * mean_w (ff - mf(A(x + u)))^2 + lambda * |grad u|^2 over u (mm, (3, ...)).
    mfs = [(moving feats on the same level grid, unwarped, sequence weight)]."""
    x = identity_mm(ff.shape[1:], spacing, ff.device)
    sp = torch.tensor(spacing, device=ff.device).view(3, 1, 1, 1)
    p = u0.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=rcfg["lr"])
    wsum = w.sum().clamp_min(1.0)
    # the data term lives where w > 0 (the fan): only those voxels are sampled (the same loss and gradient;
    # a fan fills a fraction of its box, and sampling is most of the work)
    inside = w.reshape(-1) > 0
    if not bool(inside.any()):
        inside = torch.ones_like(inside)
    wi, ffi = w.reshape(-1)[inside], ff.float().reshape(ff.shape[0], -1)[:, inside]
    xi = x.reshape(3, -1)[:, inside]
    for it in range(int(rcfg["iterations"])):
        opt.zero_grad(set_to_none=True)
        u = _smooth_param(p, rcfg["smooth_passes"])
        pos = apply_affine(A, xi + u.reshape(3, -1)[:, inside])
        data = 0.0
        for mf, sw in mfs:
            warped = sample(mf.float(), pos.view(3, -1, 1, 1), spacing).view(ffi.shape)
            data = data + sw * ((ffi - warped).pow(2).mean(0) * wi).sum() / wsum
        uv = u / sp  # level voxels: the same weight means the same smoothness at every resolution
        # summed over the box, normalised by the fan weight like the data term: the balance does not
        # depend on how much empty box surrounds the fan (a mean over voxels would, 256^3 vs RESECT)
        reg = ((uv[:, 1:] - uv[:, :-1]).pow(2).sum() + (uv[:, :, 1:] - uv[:, :, :-1]).pow(2).sum()
               + (uv[:, :, :, 1:] - uv[:, :, :, :-1]).pow(2).sum()) / (3 * wsum)
        loss = data + rcfg["diffusion_weight"] * reg
        loss.backward()
        if it == 0 and rcfg["adam_eps_rel"] > 0:
            # Adam steps ~lr * sign(g) wherever |g| >> eps, so with a tiny absolute eps a voxel whose gradient
            # is rounding noise takes full steps in a random direction. An eps relative to the typical
            # in-fan gradient turns such voxels into small SGD steps (and is free of the loss scale).
            g_rms = p.grad.pow(2).sum(0, keepdim=True)[w > 0].mean().sqrt()
            opt.param_groups[0]["eps"] = float(rcfg["adam_eps_rel"] * g_rms) + 1e-20
        opt.step()
    with torch.no_grad():
        return _smooth_param(p, rcfg["smooth_passes"]).detach()
