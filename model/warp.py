"""Grids and field utilities. Every working grid is align_corners-consistent with the full grid:
level voxel o sits at full index o * (N - 1) / (M - 1), so corners coincide and nothing shifts at edges.
Internal fields are channel-first (3, D, H, W) in mm of the fixed frame (index * spacing)."""
import math

import torch
import torch.nn.functional as F


def level_grid(shape, spacing, res_mm, max_voxels=None):
    """Shape and per-axis spacing of a working level at about res_mm (never finer than the input)."""
    res = float(res_mm)
    while True:
        m = [max(2, min(n, int(round((n - 1) * s / res)) + 1)) for n, s in zip(shape, spacing)]
        if max_voxels is None or math.prod(m) <= max_voxels:
            break
        res *= 1.05
    sp = [(n - 1) * s / (mm - 1) for n, s, mm in zip(shape, spacing, m)]
    return tuple(m), tuple(sp)


def identity_mm(shape, spacing, device=None, dtype=torch.float32):
    axes = [torch.arange(n, device=device, dtype=dtype) * s for n, s in zip(shape, spacing)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)


def _normalised(pos_vox, shape):
    # grid_sample wants (..., 3) in (k, j, i) order, [-1, 1] with align_corners=True
    g = [2.0 * pos_vox[c] / max(shape[c] - 1, 1) - 1.0 for c in range(3)]
    return torch.stack(g[::-1], -1)


def sample(vol, pos_mm, spacing, mode="bilinear", padding="border"):
    """vol (C, D, H, W) on a grid with `spacing`; pos_mm (3, ...) -> (C, ...)."""
    shape = vol.shape[1:]
    pos_vox = pos_mm / torch.tensor(spacing, device=pos_mm.device, dtype=pos_mm.dtype).view(3, 1, 1, 1)
    grid = _normalised(pos_vox, shape).unsqueeze(0).to(vol.dtype)
    out = F.grid_sample(vol.unsqueeze(0), grid, mode=mode, padding_mode=padding, align_corners=True)
    return out[0]


def resize_field(u, shape):
    """Resample a (3, ...) mm field to another align_corners-consistent grid of the same box."""
    if tuple(u.shape[1:]) == tuple(shape):
        return u
    return F.interpolate(u.unsqueeze(0), size=tuple(shape), mode="trilinear", align_corners=True)[0]


def _pad_odd(x, pad):
    """Point-symmetric (odd) reflection padding: keeps linear trends across the border, so box
    averages near the edge are not biased towards the edge value (replicate padding would be)."""
    x5 = x.unsqueeze(0)
    if all(p < n for p, n in zip(pad[::2][::-1], x.shape[1:])) and all(
            p < n for p, n in zip(pad[1::2][::-1], x.shape[1:])):
        return (2 * F.pad(x5, pad, mode="replicate") - F.pad(x5, pad, mode="reflect"))[0]
    return F.pad(x5, pad, mode="replicate")[0]


def downsample(vol, spacing, shape_out, spacing_out):
    """Anti-aliased resampling of vol (C, D, H, W) onto a coarser level grid.
    Box-average by an integer factor k after odd-reflection padding of k voxels in front and
    >= k at the end (to a multiple of k): pooled cell o is centred exactly at full index
    o*k - k + (k-1)/2, and every level position is then sampled inside the pooled grid, so sizes that
    do not divide give no shift at the edges (a linear ramp is reproduced exactly)."""
    k = [max(1, int(so / s)) for s, so in zip(spacing, spacing_out)]
    x = vol
    lo = [kk if kk > 1 else 0 for kk in k]
    if max(k) > 1:
        pad = []
        for c in (2, 1, 0):
            n = x.shape[1 + c] + 2 * lo[c]
            pad += [lo[c], lo[c] + (-n) % k[c]]
        x = _pad_odd(x, pad)
        x = F.avg_pool3d(x.unsqueeze(0), kernel_size=k, stride=k)[0]
    pooled_shape = x.shape[1:]
    axes = []
    for c in range(3):
        full = torch.arange(shape_out[c], device=vol.device, dtype=torch.float32) * (spacing_out[c] / spacing[c])
        axes.append((full + lo[c] - (k[c] - 1) / 2.0) / k[c])
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)
    grid = _normalised(pos, pooled_shape).unsqueeze(0).to(x.dtype)
    return F.grid_sample(x.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def box_mean(x, radius):
    """Mean over the (2 radius + 1)^3 box around each voxel of (C, D, H, W), replicate border: avg_pool3d of the
    replicate-padded volume, computed as three 1-D sums over slices (a third faster on the CPU)."""
    if radius <= 0:
        return x
    p = F.pad(x.unsqueeze(0), [radius] * 6, mode="replicate")[0]
    for dim in (1, 2, 3):
        n = p.shape[dim] - 2 * radius
        total = torch.add(p.narrow(dim, 0, n), p.narrow(dim, 1, n))
        for offset in range(2, 2 * radius + 1):
            total.add_(p.narrow(dim, offset, n))
        p = total
    return p.div_(float((2 * radius + 1) ** 3))


def gaussian_kernel1d(sigma, device=None):
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def smooth(x, sigma):
    """Separable Gaussian smoothing of (C, D, H, W), replicate border (no pull towards zero at edges): per axis,
    a weighted sum of shifted slices (a depthwise conv3d with a 1-D kernel is up to 10x slower on the CPU)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, x.device).to(x.dtype)
    weights = k.tolist()
    r = (len(weights) - 1) // 2
    for dim in (1, 2, 3):
        pad = [0] * 6
        pad[2 * (3 - dim)] = pad[2 * (3 - dim) + 1] = r
        padded = F.pad(x.unsqueeze(0), pad, mode="replicate")[0]
        n = x.shape[dim]
        x = padded.narrow(dim, 0, n) * weights[0]
        for t in range(1, len(weights)):
            x.add_(padded.narrow(dim, t, n), alpha=weights[t])
    return x


def jacobian_det_vox(u_vox):
    """J of x -> x + u for a channel-first voxel field, central differences (one-sided at the borders)."""
    g = [list(torch.gradient(u_vox[c], dim=(0, 1, 2))) for c in range(3)]  # g[c][d] = d u_c / d x_d
    for c in range(3):
        g[c][c] += 1.0
    (a, b, c), (d, e, f), (p, q, r) = g
    # det = a (e r - f q) - b (d r - f p) + c (d q - e p), in place: a few slab-sized temporaries only
    det = (e * r).sub_(f * q).mul_(a)
    det.sub_((d * r).sub_(f * p).mul_(b))
    return det.add_((d * q).sub_(e * p).mul_(c))


def min_jacobian_mm(u_mm, spacing, chunk=32):
    """Smallest J of a (3, D, H, W) mm field (voxel field = mm / spacing)."""
    sp = torch.tensor(spacing, dtype=u_mm.dtype, device=u_mm.device).view(3, 1, 1, 1)
    return min_jacobian_vox(u_mm / sp, chunk)


def min_jacobian_vox(u_vox, chunk=32, channels_reversed=False):
    """Smallest J of a voxel field, in slabs along axis 0 so a 256^3 field needs little extra memory.
    channels_reversed: component c is the displacement along spatial axis 2 - c (a field stored in the NIfTI
    writer's (3, k, j, i) order); each slab's channels are put back in axis order (J is the same)."""
    n = u_vox.shape[1]
    jmin = float("inf")
    for s in range(0, n, chunk):
        lo, hi = max(0, s - 1), min(n, s + chunk + 1)
        slab = u_vox[:, lo:hi]
        j = jacobian_det_vox(slab.flip(0) if channels_reversed else slab)
        a, b = s - lo, s - lo + min(chunk, n - s)
        jmin = min(jmin, float(j[a:b].min()))
    return jmin


def apply_affine(A, pts):
    """A (4, 4) mm affine on (3, ...) points."""
    shp = pts.shape
    p = pts.reshape(3, -1)
    return (A[:3, :3] @ p + A[:3, 3:4]).reshape(shp)
