"""Post-resection iUS renderer (SIMULATED): fan geometry, echogenicity, speckle, attenuation, shadowing.

Model (per beam sample): intensity = E_tissue * S + (specular reflectors + cavity rim) * (1 - a + a S) + clutter * S,
times the two-way attenuation (with shadowing behind reflectors and bone), then power-law compression with an
automatic gain.  S is a compounded speckle field (mean 1).  Specular reflectors are the tissue interfaces and
thin CSF sheets of the (deformed) anatomy, brightest where they are perpendicular to the beam.

Rendering is done in beam coordinates (depth r, lateral angle a, elevation angle b) like a real 3-D probe,
then scan-converted onto the fixed grid (trilinear), which also reproduces the smoothing of the organisers'
resampling.  Outside the fan the image is exactly 0; inside it is >= `floor`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULTS = dict(
    dr_mm=0.4, dang_deg=0.6,           # beam-grid sampling
    psf_axial_mm=0.3, psf_lat_deg=0.5, psf_elev_deg=0.7,  # Gaussian PSF sigmas (anisotropic along the beam)
    compound=0.6,                      # weight of a 2nd independent speckle look (3-D compounding of sweeps)
    # tissue echogenicity (relative backscatter power): WM slightly brighter than GM, CSF/fluid anechoic
    e_wm=0.6, e_gm=0.5, e_csf=0.02, e_tumour=1.1, w_texture=0.12, texture_mm=2.5,
    # specular reflectors: tissue interfaces (|grad| of an impedance map) and thin CSF sheets (sulci, falx)
    w_iface=15.0, w_ridge=25.0, w_rim=30.0, spec_power=1.6, spec_floor=0.25, spec_speckle=0.35,
    thin_power=3.0, thin_mm=2.0,
    mu_db_cm=0.45,                       # net attenuation after TGC, dB/cm (one way, folded)
    shadow_k=0.002,                      # extra attenuation (per mm) per unit reflector intensity
    bone_echo=6.0, bone_mu=0.6,          # beyond the brain (skull): bright and shadowing
    gap_mm=25.0, bone_run_mm=6.0,
    noise_floor=0.004, reverb=0.02, reverb_mm=6.0,   # electronic noise and near-field clutter (fluid not black)
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
    """Source-grid maps: diffuse tissue echogenicity, impedance-like map and thin-sheet (sulcus) ridge map."""
    wm, gm, csf, tum, brain = src["wm"], src["gm"], src["csf"], src["tumour"], src["brain"]
    sp = src["spacing"]
    texture = ndimage.gaussian_filter(rng.normal(size=wm.shape).astype(np.float32), P["texture_mm"] / sp)
    texture /= texture.std() + 1e-6
    # CSF (partial volume included, plus T2-bright voxels the crude classification missed) is anechoic only
    # where it is wide (ventricles, cisterns); thin CSF (sulci: pia, vessels) scatters like grey matter
    t2 = src["t2"]
    t2n = t2 / (np.median(t2[brain > 0.5]) + 1e-6) if (brain > 0.5).any() else t2
    csf = np.maximum(csf, brain * np.clip((t2n - 1.4) / 0.8, 0, 1))
    wide = csf * np.clip((ndimage.gaussian_filter(csf, 2.0 / sp) - 0.35) / 0.4, 0, 1)
    base = P["e_wm"] * wm + P["e_gm"] * (gm + csf - wide) + P["e_csf"] * wide + P["e_tumour"] * tum
    E = base * np.clip(1 + P["w_texture"] * texture, 0.5, 1.5)
    E = E * (1 - cav)
    # impedance-like map: its gradient gives the tissue interfaces (GM/WM, tissue/CSF, brain surface)
    Z = (1.0 * wm + 0.8 * gm + 0.15 * csf + 1.15 * tum) * (1 - cav) + 0.15 * cav
    # thin CSF sheets (sulci, the interhemispheric fissure / falx, pia on the surface): difference of Gaussians,
    # positive on CSF thinner than ~3 mm and along the walls of wide CSF spaces (ventricles)
    c = csf * (1 - cav)
    ridge = np.clip(ndimage.gaussian_filter(c, 0.5 / sp) - ndimage.gaussian_filter(c, 2.0 / sp), 0, None)
    ridge = ridge * (1 - cav)
    return E.astype(np.float32), Z.astype(np.float32), ridge.astype(np.float32)


def _beam_grad(vol, dr, dlat):
    """Gradient components (per mm) of a beam-grid volume: axial, lateral, elevational."""
    g0 = np.gradient(vol, axis=0) / dr
    g1 = np.gradient(vol, axis=1) / dlat
    g2 = np.gradient(vol, axis=2) / dlat
    return g0, g1, g2


# us_labels codes: what the fan shows on the fixed grid
OUTSIDE, TISSUE, FLUID_GAP, BONE, CAVITY = 0, 1, 2, 3, 4
US_LABELS = {OUTSIDE: "outside the fan", TISSUE: "brain tissue", FLUID_GAP: "fluid gap (saline, CSF)", BONE: "bone",
             CAVITY: "resection cavity"}


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
    sub = {k: src[k][crop] for k in ("wm", "gm", "csf", "tumour", "brain", "t2")}
    sub["spacing"] = src["spacing"]
    E_src, Z_src, ridge_src = echogenicity(sub, cav_src[crop], rim_src[crop], P, rng)
    samp = lambda vol, cval=0.0: ndimage.map_coordinates(vol, sc, order=1, mode="constant",
                                                         cval=cval).reshape(n_r, n_a, n_e)
    E = samp(E_src)
    Z = samp(Z_src)
    ridge = samp(ridge_src)
    cav = samp(cav_src[crop])
    rim = samp(rim_src[crop])
    brain = samp(sub["brain"])
    del sc, coords, pts, E_src, Z_src, ridge_src

    rr = (r * sp).astype(np.float32)[:, None, None]                 # depth, mm
    outside = brain < 0.5
    # along each beam: outside the brain within gap_mm of the probe = the saline gap between the probe and
    # the sunken brain; deeper, a short outside stretch between brain (< bone_run_mm: fissure, or a sulcus
    # the crude mask left out) = CSF; a long one = skull (bright, shadowing)
    run = np.zeros(outside.shape, np.float32)
    for i in range(outside.shape[0] - 2, -1, -1):
        run[i] = (run[i + 1] + P["dr_mm"]) * outside[i]
    seen = np.cumsum(~outside, axis=0) * P["dr_mm"] > 2.0
    bone_start = outside & (rr >= P["gap_mm"]) & ((run >= P["bone_run_mm"]) | ~seen)
    bone = bone_start
    del run, seen
    saline = outside & ~bone
    fluid = (cav > 0.5) | saline
    tissue = ~fluid & ~bone
    # specular reflectors, computed on the beam grid (after the deformation, in the beam's own frame):
    # interface strength |grad Z| and thin CSF sheets, sharpened (thin lines), brightest where the
    # interface is perpendicular to the beam (structure tensor: share of the gradient energy along the beam)
    dlat = np.maximum(rr * np.float32(np.deg2rad(P["dang_deg"])), np.float32(0.5 * P["dr_mm"]))
    g = _beam_grad(Z, np.float32(P["dr_mm"]), dlat)
    mag = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    pick = tissue & (brain > 0.5)
    sub_n = max(1, int(pick.sum()) // 200000)
    ref = np.percentile(mag[pick][::sub_n], 97) + 1e-6 if pick.any() else 1.0
    iface = np.clip(mag / ref, 0, 2.0) ** P["spec_power"]
    rref = np.percentile(ridge[pick][::sub_n], 99) + 1e-6 if pick.any() else 1.0
    rid = np.clip(ridge / rref, 0, 1.5) ** P["spec_power"]
    q = _beam_grad(Z + 2.0 * ridge * (Z.max() / (ridge.max() + 1e-6)), np.float32(P["dr_mm"]), dlat)
    st_sig = (1.0 / P["dr_mm"], 1.5, 1.5)
    t_ax = ndimage.gaussian_filter(q[0] * q[0], st_sig)
    t_all = t_ax + ndimage.gaussian_filter(q[1] * q[1] + q[2] * q[2], st_sig)
    cos2 = t_ax / (t_all + 1e-12)
    del g, mag, q, t_ax, t_all
    L = (P["w_iface"] * iface + P["w_ridge"] * rid) * (P["spec_floor"] + (1 - P["spec_floor"]) * cos2)
    L = np.where(tissue, L, 0).astype(np.float32)
    del iface, rid, cos2
    # thin the reflectors to lines (~1 mm): keep the part of each ridge close to its local maximum
    if P["thin_power"] > 0:
        nb = (max(3, int(round(P["thin_mm"] / P["dr_mm"])) | 1), 3, 3)
        L *= (L / (ndimage.maximum_filter(L, size=nb) + 1e-6)) ** P["thin_power"]
    # diffuse scattering: tissue classes; fluid anechoic; beyond the brain = bone
    E = np.where(bone, P["bone_echo"], np.where(fluid, 0.0, E)).astype(np.float32)
    # speckle (multiplicative, mean 1): |complex Gaussian scatterers (*) anisotropic PSF|^2, two looks compounded
    sig = (P["psf_axial_mm"] / P["dr_mm"], P["psf_lat_deg"] / P["dang_deg"], P["psf_elev_deg"] / P["dang_deg"])

    def look():
        re = ndimage.gaussian_filter(rng.standard_normal(E.shape, dtype=np.float32), sig)
        im = ndimage.gaussian_filter(rng.standard_normal(E.shape, dtype=np.float32), sig)
        return re * re + im * im

    S = look()
    if P["compound"] > 0:
        S += np.float32(P["compound"]) * look()
    S /= np.float32(S.mean())
    ss = np.float32(P["spec_speckle"])
    rim_I = np.float32(P["w_rim"]) * rim * (cav < 0.5)
    clutter = P["noise_floor"] + P["reverb"] * np.exp(-rr / P["reverb_mm"]) * fluid
    env2 = E * S + (L + rim_I) * (1 - ss + ss * S) + clutter * S
    # attenuation (tissue), posterior enhancement (fluid attenuates ~10x less), shadowing (reflectors, bone)
    mu_tissue = P["mu_db_cm"] / 8.686 / 10.0 * 2                    # per mm, intensity (two-way)
    mu = (np.where(fluid, 0.1 * mu_tissue, mu_tissue) + P["shadow_k"] * (L + rim_I)
          + np.where(bone, P["bone_mu"], 0.0)).astype(np.float32)
    T = np.exp(-np.cumsum(mu, axis=0) * P["dr_mm"] + mu * P["dr_mm"])
    env2 *= T
    del mu, T, S, L
    # power-law compression with automatic gain (tissue median -> target_median), like the real display
    env_c = env2 ** (P["gamma"] / 2)
    med = np.median(env_c[tissue][:: max(1, tissue.sum() // 200000)]) if tissue.any() else 1.0
    img = np.clip(env_c * (P["target_median"] / (med + 1e-12)), 0, P["out_max"]).astype(np.float32)
    labels = np.where(bone, BONE, np.where(cav > 0.5, CAVITY, np.where(fluid, FLUID_GAP, TISSUE))).astype(np.uint8)

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
    # what the fan shows, on the fixed grid (US_LABELS; OUTSIDE outside the fan)
    lab = np.full(shape, OUTSIDE, np.uint8)
    lab[idx] = ndimage.map_coordinates(labels, bc, order=0, mode="nearest")
    info = dict(fan_fraction=float(mask.mean()), beam_grid=(n_r, n_a, n_e), us_params=P, us_labels=lab)
    return out, mask, info
