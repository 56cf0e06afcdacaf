"""Deformable refinement: Adam instance optimisation of a smooth, diffusion-regularised field."""
import torch
import torch.nn.functional as F

from .warp import apply_affine, identity_mm, sample


def _smooth_param(p, passes):
    for _ in range(passes):  # repeated box filters ~ Gaussian: keeps the field smooth by construction
        p = F.avg_pool3d(F.pad(p.unsqueeze(0), [1] * 6, mode="replicate"), 3, 1)[0]
    return p


def adam_refine(ff, mfs, w, spacing, A, u0, rcfg):
    """Minimise sum_seq sw * mean_w (ff - mf(A(x + u)))^2 + lambda * |grad u|^2 over u (mm, (3, ...)).
    mfs = [(moving feats on the same level grid, unwarped, sequence weight)]."""
    x = identity_mm(ff.shape[1:], spacing, ff.device)
    sp = torch.tensor(spacing, device=ff.device).view(3, 1, 1, 1)
    p = u0.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=rcfg["lr"])
    wsum = w.sum().clamp_min(1.0)
    ffl = ff.float()
    for _ in range(int(rcfg["iterations"])):
        opt.zero_grad(set_to_none=True)
        u = _smooth_param(p, rcfg["smooth_passes"])
        pos = apply_affine(A, x + u)
        data = 0.0
        for mf, sw in mfs:
            warped = sample(mf.float(), pos, spacing)
            data = data + sw * ((ffl - warped).pow(2).mean(0, keepdim=True) * w).sum() / wsum
        uv = u / sp  # level voxels: the same weight means the same smoothness at every resolution
        # summed over the box, normalised by the fan weight like the data term: the balance does not
        # depend on how much empty box surrounds the fan (a mean over voxels would, 256^3 vs RESECT)
        reg = ((uv[:, 1:] - uv[:, :-1]).pow(2).sum() + (uv[:, :, 1:] - uv[:, :, :-1]).pow(2).sum()
               + (uv[:, :, :, 1:] - uv[:, :, :, :-1]).pow(2).sum()) / (3 * wsum)
        loss = data + rcfg["diffusion_weight"] * reg
        loss.backward()
        opt.step()
    with torch.no_grad():
        return _smooth_param(p, rcfg["smooth_passes"]).detach()
