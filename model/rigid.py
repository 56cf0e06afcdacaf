"""Robust (trimmed, weighted) rigid fit of point correspondences, in mm."""
import torch


def _fit_rigid(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted Kabsch: the (4, 4) rotation + translation taking src points (N, 3) closest to dst."""
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


def trimmed_fit(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, keep: float = 0.6,
                iterations: int = 5) -> torch.Tensor:
    """The rigid pose (4, 4) with dst ~ A src, points (N, 3) in mm; each round refits on the `keep` fraction with
    the smallest residuals (trimmed least squares), so the resection area and wrong matches do not pull it.
    (An affine fit was tried and removed: docs/HISTORY.md.)"""
    src, dst, w = src.double(), dst.double(), weight.double()
    sel = torch.ones_like(w, dtype=torch.bool)
    a = torch.eye(4, dtype=torch.float64, device=src.device)
    if src.shape[0] < 6:
        return a.float()
    for _ in range(max(1, iterations)):
        a = _fit_rigid(src[sel], dst[sel], w[sel])
        res = ((src @ a[:3, :3].t() + a[:3, 3]) - dst).norm(dim=1)
        n = max(6, int(keep * src.shape[0]))
        thr = torch.kthvalue(res, min(n, res.numel())).values
        sel = res <= thr
    return a.float()
