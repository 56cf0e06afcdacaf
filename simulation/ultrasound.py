"""Post-resection iUS renderer (SIMULATED): fan geometry, echogenicity, speckle, attenuation, shadowing.

Rendering is done in beam coordinates (depth r, lateral angle a, elevation angle b) like a real 3-D probe,
then scan-converted onto the fixed grid (trilinear), which also reproduces the smoothing of the organisers'
resampling.  Outside the fan the image is exactly 0; inside it is >= `floor`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULTS = dict(
    dr_mm=0.4, dang_deg=0.6,           # beam-grid sampling
    psf_axial_mm=0.45, psf_lat_deg=0.9, psf_elev_deg=1.3,  # Gaussian PSF sigmas (anisotropic along the beam)
    w_base=1.0, w_iface=14.0, w_rim=12.0, w_texture=0.35,
    mu_db_cm=0.45,                       # net attenuation after TGC, dB/cm (one way, folded)
    shadow_k=0.3,                        # extra attenuation per unit interface strength per mm
    bone_echo=12.0, bone_mu=0.6,          # beyond the brain (skull): bright and shadowing
    gap_mm=25.0,
    gamma=0.6, target_median=30.0, floor=1.0, out_max=255.0,
)


def _frame(fan):
    b = np.asarray(fan["axis"], np.float64)
    b = b / np.linalg.norm(b)
    a = np.array([1.0, 0, 0]) if abs(b[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(b, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(b, e1)
    t = fan.get("lat_dir", 0.0)
    return b, np.cos(t) * e1 + np.sin(t) * e2, -np.sin(t) * e1 + np.cos(t) * e2


def fan_coords(pts, fan):
    """(r, lateral angle, elevation angle) of N x 3 fixed-voxel points."""
    b, e1, e2 = _frame(fan)
    d = np.asarray(pts, np.float64) - fan["apex"]
    z = d @ b
    return np.linalg.norm(d, axis=1), np.arctan2(d @ e1, z), np.arctan2(d @ e2, z), z


def in_fan(pts, fan, margin_vox=0.0, min_depth_vox=0.0):
    r, a, e, z = fan_coords(pts, fan)
    rs = np.maximum(r, 1e-6)
    return ((z > 0) & (r <= fan["depth"] - margin_vox) & (r >= min_depth_vox)
            & (np.abs(a) <= fan["half_lat"] - margin_vox / rs)
            & (np.abs(e) <= fan["half_elev"] - margin_vox / rs))


def echogenicity(src, cav, rim, P, rng):
    """Echogenicity and interface strength maps on the source grid."""
    wm, gm, csf, tum, brain = src["wm"], src["gm"], src["csf"], src["tumour"], src["brain"]
    sp = src["spacing"]
    Z = 1.0 * wm + 0.8 * gm + 0.15 * csf + 1.15 * tum
    grad = ndimage.gaussian_gradient_magnitude(Z, sigma=0.6 / sp)
    ref = np.percentile(grad[brain > 0.5], 95) + 1e-6
    iface = np.clip(grad / ref, 0, 2.5) ** 1.5
    texture = ndimage.gaussian_filter(rng.normal(size=wm.shape).astype(np.float32), 1.5 / sp)
    texture /= texture.std() + 1e-6
    base = 0.6 * wm + 0.42 * gm + 0.04 * csf + 0.9 * tum
    E = P["w_base"] * base * np.clip(1 + P["w_texture"] * texture, 0.2, 3) + P["w_iface"] * iface
    E = E * (1 - cav) + P["w_rim"] * rim
    return E.astype(np.float32), (iface + rim).astype(np.float32)


def render(src, cav_src, rim_src, fix_to_src, u, fan, sp, shape, rng, params=None):
    P = dict(DEFAULTS)
    if params:
        P.update(params)

    # beam grid (coarser for coarse output grids: ~0.7 output voxel per sample)
    depth_mm = fan["depth"] * sp
    P["dr_mm"] = max(P["dr_mm"], 0.7 * sp)
    P["dang_deg"] = max(P["dang_deg"], np.rad2deg(0.7 * sp / (0.5 * depth_mm)))
    P["psf_axial_mm"] = max(P["psf_axial_mm"], 0.5 * P["dr_mm"])
    P["psf_lat_deg"] = max(P["psf_lat_deg"], 0.5 * P["dang_deg"])
    P["psf_elev_deg"] = max(P["psf_elev_deg"], 0.5 * P["dang_deg"])
    n_r = int(np.ceil(depth_mm / P["dr_mm"])) + 1
    dang = np.deg2rad(P["dang_deg"])
    n_a = int(np.ceil(2 * fan["half_lat"] / dang)) + 1
    n_e = int(np.ceil(2 * fan["half_elev"] / dang)) + 1
    r = np.linspace(0, fan["depth"], n_r)
    a = np.linspace(-fan["half_lat"], fan["half_lat"], n_a)
    e = np.linspace(-fan["half_elev"], fan["half_elev"], n_e)
    b, e1, e2 = _frame(fan)
    ta, te = np.tan(a), np.tan(e)
    dirs = b[None, None] + ta[:, None, None] * e1 + te[None, :, None] * e2
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)          # (n_a, n_e, 3)
    pts = (fan["apex"][None, None, None] + r[:, None, None, None] * dirs[None]).astype(np.float32)
    pts = pts.reshape(-1, 3)
    # post-shift tissue at fixed x is the pre-op tissue at x + u(x)
    coords = pts.T.copy()
    for c in range(3):
        coords[c] += ndimage.map_coordinates(u[..., c], pts.T, order=1, mode="nearest")
    sc = (fix_to_src[:3, :3].astype(np.float32) @ coords) + fix_to_src[:3, 3:4].astype(np.float32)
    # work on the part of the source volume that the fan sees (speed)
    full = np.asarray(src["t1"].shape)
    lo = np.clip(np.floor(sc.min(1)).astype(int) - 4, 0, full)
    hi = np.clip(np.ceil(sc.max(1)).astype(int) + 5, 0, full)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    sc -= lo[:, None].astype(np.float32)
    sub = {k: src[k][crop] for k in ("wm", "gm", "csf", "tumour", "brain")}
    sub["spacing"] = src["spacing"]
    E_src, R_src = echogenicity(sub, cav_src[crop], rim_src[crop], P, rng)
    samp = lambda vol, cval=0.0: ndimage.map_coordinates(vol, sc, order=1, mode="constant",
                                                         cval=cval).reshape(n_r, n_a, n_e)
    E = samp(E_src)
    R = samp(R_src)
    cav = samp(cav_src[crop])
    brain = samp(sub["brain"])
    del sc, coords, pts

    rr = r[:, None, None] * sp                                      # mm
    outside = brain < 0.5
    # the gap between probe and the sunken brain is fluid (saline / CSF); deeper outside = skull
    saline = outside & (rr < P["gap_mm"])
    bone = outside & ~saline
    fluid = (cav > 0.5) | saline
    E = np.where(bone, P["bone_echo"], E)
    E = np.where(fluid, 1e-4, E)
    # speckle: complex scatterers weighted by sqrt(echogenicity), convolved with an anisotropic PSF
    sig = (P["psf_axial_mm"] / P["dr_mm"], P["psf_lat_deg"] / P["dang_deg"], P["psf_elev_deg"] / P["dang_deg"])
    amp = np.sqrt(np.maximum(E, 0)).astype(np.float32)
    re = ndimage.gaussian_filter(amp * rng.standard_normal(E.shape, dtype=np.float32), sig)
    im = ndimage.gaussian_filter(amp * rng.standard_normal(E.shape, dtype=np.float32), sig)
    env2 = re * re + im * im
    # attenuation (tissue), posterior enhancement (fluid attenuates ~10x less), shadowing (reflectors, bone)
    mu_tissue = P["mu_db_cm"] / 8.686 / 10.0 * 2                    # per mm, intensity (two-way)
    mu = np.where(fluid, 0.1 * mu_tissue, mu_tissue) + P["shadow_k"] * 0.1 * R + np.where(bone, P["bone_mu"], 0.0)
    T = np.exp(-np.cumsum(mu, axis=0) * P["dr_mm"] + mu * P["dr_mm"])
    env2 *= T
    # power-law compression with automatic gain (tissue median -> target_median), like the real display
    env_c = env2 ** (P["gamma"] / 2)
    tissue = ~fluid & ~bone
    med = np.median(env_c[tissue][:: max(1, tissue.sum() // 200000)]) if tissue.any() else 1.0
    img = np.clip(env_c * (P["target_median"] / (med + 1e-12)), 0, P["out_max"]).astype(np.float32)

    # scan conversion onto the fixed grid, exactly 0 outside the fan
    ax = [np.arange(n, dtype=np.float32) for n in shape]
    d0 = ax[0][:, None, None] - np.float32(fan["apex"][0])
    d1 = ax[1][None, :, None] - np.float32(fan["apex"][1])
    d2 = ax[2][None, None, :] - np.float32(fan["apex"][2])
    z = d0 * np.float32(b[0]) + d1 * np.float32(b[1]) + d2 * np.float32(b[2])
    x1 = d0 * np.float32(e1[0]) + d1 * np.float32(e1[1]) + d2 * np.float32(e1[2])
    x2 = d0 * np.float32(e2[0]) + d1 * np.float32(e2[1]) + d2 * np.float32(e2[2])
    rad = np.sqrt(z * z + x1 * x1 + x2 * x2)
    al = np.arctan2(x1, z)
    el = np.arctan2(x2, z)
    mask = (z > 0) & (rad <= fan["depth"]) & (np.abs(al) <= fan["half_lat"]) & (np.abs(el) <= fan["half_elev"])
    idx = np.nonzero(mask)
    bc = np.stack([rad[idx] / fan["depth"] * (n_r - 1),
                   (al[idx] + fan["half_lat"]) / (2 * fan["half_lat"]) * (n_a - 1),
                   (el[idx] + fan["half_elev"]) / (2 * fan["half_elev"]) * (n_e - 1)])
    del z, x1, x2, rad, al, el
    out = np.zeros(shape, np.float32)
    out[idx] = np.maximum(ndimage.map_coordinates(img, bc, order=1, mode="nearest"), P["floor"])
    info = dict(fan_fraction=float(mask.mean()), beam_grid=(n_r, n_a, n_e), us_params=P)
    return out, mask, info
