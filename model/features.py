"""Masks, inpainting outside masks, and MIND-SSC features (torch, any device).

Images and features are (C, i, j, k) tensors on one level's grid; `spacing` is that grid's mm per voxel."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import FeatureSettings
from .warp import box_mean, smooth


def robust_normalise(img, mask):
    """Map the 1..99 % intensity range inside the mask to 0..1 (modality-agnostic scale)."""
    v = img[mask > 0.5]
    if v.numel() < 10:
        v = img.flatten()
    if v.numel() > 200000:  # quantile on a deterministic subsample: fast and fine for scaling
        v = v[:: v.numel() // 200000 + 1]
    lo, hi = torch.quantile(v.float(), torch.tensor([0.01, 0.99], device=v.device))
    return ((img - lo) / (hi - lo).clamp_min(1e-6)).clamp(-0.5, 1.5)


def erode(mask, r):
    """Binary erosion of a (1, D, H, W) float mask by a cube of radius r voxels."""
    if r <= 0:
        return mask
    return 1.0 - F.max_pool3d((1.0 - mask).unsqueeze(0), 2 * r + 1, 1, r)[0]


def dilate(mask, r):
    if r <= 0:
        return mask
    return F.max_pool3d(mask.unsqueeze(0), 2 * r + 1, 1, r)[0]


def inpaint(img, mask, levels=6):
    """Push-pull fill: values outside the mask come from mask-weighted averages at coarser scales,
    so the mask border is not an intensity step (no false MIND edge at the fan border)."""
    num, den = [img * mask], [mask]
    for _ in range(levels):
        n, d = num[-1], den[-1]
        if min(n.shape[1:]) < 2:
            break
        num.append(F.avg_pool3d(n.unsqueeze(0), 2, 2, ceil_mode=True)[0])
        den.append(F.avg_pool3d(d.unsqueeze(0), 2, 2, ceil_mode=True)[0])
    fill = num[-1] / den[-1].clamp_min(1e-6)
    if float(den[-1].max()) <= 0:
        fill = torch.zeros_like(fill)
    for lvl in range(len(num) - 2, -1, -1):
        shp = num[lvl].shape[1:]
        up = F.interpolate(fill.unsqueeze(0), size=shp, mode="trilinear", align_corners=False)[0]
        d = den[lvl]
        val = num[lvl] / d.clamp_min(1e-6)
        a = d.clamp(0, 1)
        fill = a * val + (1 - a) * up  # partial coverage blends with the coarser estimate
    return mask * img + (1 - mask) * fill


def _shift(x, off, r):
    """x padded by r; return the window shifted by offset off (3 ints)."""
    d, h, w = x.shape[1] - 2 * r, x.shape[2] - 2 * r, x.shape[3] - 2 * r
    return x[:, r + off[0]: r + off[0] + d, r + off[1]: r + off[1] + h, r + off[2]: r + off[2] + w]


# MIND-SSC: the 12 pairs of the 6-neighbourhood whose members are sqrt(2) apart (edges of an octahedron)
_SIX = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
_PAIRS = [(a, b) for a in range(6) for b in range(a + 1, 6)
          if sum((_SIX[a][i] - _SIX[b][i]) ** 2 for i in range(3)) == 2]


def mind_ssc(img, dilation=1, patch_radius=1):
    """img (1, D, H, W) -> (12, D, H, W) self-similarity context descriptor in [0, 1]."""
    r = dilation
    xp = F.pad(img.unsqueeze(0), [r] * 6, mode="replicate")[0]
    chans = []
    for a, b in _PAIRS:
        oa = [v * r for v in _SIX[a]]
        ob = [v * r for v in _SIX[b]]
        chans.append((_shift(xp, oa, r) - _shift(xp, ob, r)) ** 2)
    ssd = torch.cat(chans, 0)
    ssd = box_mean(ssd, patch_radius)  # patch distance = box-filtered squared differences
    ssd = ssd - ssd.min(0, keepdim=True).values
    var = ssd.mean(0, keepdim=True)
    # variance floor: keeps flat regions (and fp noise) from producing random descriptors
    var = var.clamp(min=float(var.mean()) * 0.001 + 1e-6, max=float(var.mean()) * 1000 + 1e-6)
    mind = torch.exp(-ssd / var)
    return mind / mind.max(0, keepdim=True).values.clamp_min(1e-6)


def multi_mind(img, dilations, patch_radius):
    return torch.cat([mind_ssc(img, d, patch_radius) for d in dilations], 0)


def anechoic_weight(us: torch.Tensor, fan: torch.Tensor, spacing, settings: FeatureSettings) -> torch.Tensor:
    """Weight in (0, 1]: low where the iUS is dark inside the fan (fluid-filled cavity = missing tissue)."""
    sig = [settings.anechoic_smooth_mm / s for s in spacing]
    s = smooth(us * fan, sum(sig) / 3) / smooth(fan, sum(sig) / 3).clamp_min(1e-3)
    inside = us[fan > 0.5]
    if inside.numel() < 10:
        return torch.ones_like(us)
    med = torch.median(inside)
    dark = ((s < settings.anechoic_rel_threshold * med) & (fan > 0.5)).float()
    r = int(round(settings.anechoic_dilate_mm / (sum(spacing) / 3)))
    dark = dilate(dark, r) * fan
    return 1.0 - (1.0 - settings.anechoic_weight) * dark


def pca_reduce(fixed: torch.Tensor, moving: torch.Tensor, k: int, weight: torch.Tensor | None = None):
    """(fixed, moving) features projected on the top-k principal directions of their joint channel
    covariance: SSD is nearly kept, and every cost volume gets C/k times cheaper. With a weight the
    covariance is taken where weight > 0 (the fan), so empty box around the fan does not steer the PCA."""
    ff, w = fixed, weight
    c = ff.shape[0]
    if k is None or k <= 0 or k >= c:
        return ff, moving
    sel = None if w is None else (w.reshape(-1) > 0)
    if sel is not None and int(sel.sum()) < 1000:
        sel = None
    pick = (lambda v: v) if sel is None else (lambda v: v[:, sel])
    xs = [pick(ff.reshape(c, -1)), pick(moving.reshape(c, -1))]
    x = torch.cat([v[:, :: max(1, v.shape[1] // 100000)] for v in xs], 1).double()
    x = x - x.mean(1, keepdim=True)
    evals, evecs = torch.linalg.eigh(x @ x.t() / x.shape[1])
    p = evecs[:, -k:].flip(1)
    p = p * torch.sign(p.sum(0, keepdim=True) + 1e-12)  # fixed sign: deterministic across devices
    p = p.t().float().to(ff.dtype)
    proj = lambda v: (p @ v.reshape(c, -1).float().to(p.dtype)).reshape((k,) + v.shape[1:])
    return proj(ff), proj(moving)


def coarsen(fixed: torch.Tensor, moving: torch.Tensor, weight: torch.Tensor, spacing, shape_out, spacing_out):
    """Features of a coarser level = anti-aliased resampling of the fine features (more robust across
    modalities than MIND of a blurred image), on the align_corners-consistent level grid."""
    from .warp import downsample
    dn = lambda v: downsample(v.float(), spacing, shape_out, spacing_out).to(v.dtype)
    return dn(fixed), dn(moving), dn(weight)


def fixed_features(us: torch.Tensor, spacing, settings: FeatureSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The iUS on the base grid -> its features and a similarity weight (1, ...) (fan mask x anechoic
    down-weighting). They depend on the iUS alone, so every sequence's registration of a case shares them."""
    fan = (us > settings.fixed_mask_threshold).float()
    # interpolation blurs the fan border: treat partial voxels as outside, then erode a little more
    fan = (smooth(fan, 0.5) > 0.99).float()
    r = int(round(settings.mask_erode_mm / (sum(spacing) / 3)))
    fan_e = erode(fan, r)
    if float(fan_e.sum()) < 27:  # tiny fans: fall back to the whole box
        fan_e = torch.ones_like(fan)
    usn = robust_normalise(us, fan_e)
    if settings.inpaint:
        usn = inpaint(usn, fan_e)
    ff = multi_mind(usn, settings.mind_dilations, settings.mind_patch_radius)
    w = fan_e
    if settings.anechoic_downweight:
        w = w * anechoic_weight(us, fan, spacing, settings)
    return ff, w


def moving_features(mr: torch.Tensor, settings: FeatureSettings) -> torch.Tensor:
    """An MR image (1, ...) on the base grid -> its features (C, ...), normalised inside the head."""
    p99 = torch.quantile(mr.flatten()[:: max(1, mr.numel() // 200000)].float(), 0.99)
    head = (mr > settings.moving_mask_rel_threshold * p99).float()
    if float(head.mean()) < 0.05:
        head = torch.ones_like(mr)
    normalised = robust_normalise(mr, head)
    if settings.inpaint:
        normalised = inpaint(normalised, head)
    return multi_mind(normalised, settings.mind_dilations, settings.mind_patch_radius)
