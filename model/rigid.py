"""Robust (trimmed, weighted) rigid or affine fit of point correspondences, in mm."""
import torch


def _fit_rigid(src, dst, w):
    ws = w / w.sum()
    cs, cd = (ws[:, None] * src).sum(0), (ws[:, None] * dst).sum(0)
    h = ((src - cs) * ws[:, None]).t() @ (dst - cd)
    u, _, vt = torch.linalg.svd(h)
    dfix = torch.eye(3, dtype=src.dtype, device=src.device)
    dfix[2, 2] = torch.sign(torch.det(vt.t() @ u.t()))  # a rotation, never a reflection
    r = vt.t() @ dfix @ u.t()
    a = torch.eye(4, dtype=src.dtype, device=src.device)
    a[:3, :3] = r
    a[:3, 3] = cd - r @ cs
    return a


# Brain shift and resection do not stretch or shrink the brain by more than about a quarter across the fan: an
# affine fit beyond this (e.g. a 2x magnification that matches speckle on RESECT-24's real fan) is refused.
AFFINE_STRETCH_LIMITS = (0.75, 1.0 / 0.75)


def affine_is_plausible(linear: torch.Tensor) -> bool:
    """Every principal stretch (singular value) of the 3x3 linear part within AFFINE_STRETCH_LIMITS, no reflection."""
    stretches = torch.linalg.svdvals(linear)
    low, high = AFFINE_STRETCH_LIMITS
    return bool(torch.det(linear) > 0 and stretches.min() >= low and stretches.max() <= high)


def _fit_affine(src, dst, w):
    x = torch.cat([src, torch.ones_like(src[:, :1])], 1)
    sw = w.sqrt()[:, None]
    sol = torch.linalg.lstsq(x * sw, dst * sw).solution  # (4, 3)
    a = torch.eye(4, dtype=src.dtype, device=src.device)
    a[:3, :] = sol.t()
    if not affine_is_plausible(a[:3, :3]):  # folding, collapse or implausible stretch: fall back to rigid
        return _fit_rigid(src, dst, w)
    return a


def trimmed_fit(src, dst, w, model="rigid", keep=0.6, iterations=5):
    """Fit dst ~ A src; each round refits on the `keep` fraction with the smallest residuals
    (trimmed least squares), so the resection area and wrong matches do not pull the pose."""
    src, dst, w = src.double(), dst.double(), w.double()
    fit = _fit_affine if model == "affine" else _fit_rigid
    sel = torch.ones_like(w, dtype=torch.bool)
    a = torch.eye(4, dtype=torch.float64, device=src.device)
    if src.shape[0] < 6:
        return a.float()
    for _ in range(max(1, iterations)):
        a = fit(src[sel], dst[sel], w[sel])
        res = ((src @ a[:3, :3].t() + a[:3, 3]) - dst).norm(dim=1)
        n = max(6, int(keep * src.shape[0]))
        thr = torch.kthvalue(res, min(n, res.numel())).values
        sel = res <= thr
    return a.float()
