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
    e_blood=0.6, w_haemostat=60.0,       # cavity contents (stress cases): clot echogenicity, haemostat reflectivity
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


def echogenicity(src, cav, P, rng):
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


def _render_parameters(params, fan, sp) -> dict:
    """DEFAULTS updated by `params`; the beam grid and PSF are coarsened for coarse output grids (~0.7 output
    voxel per beam sample) so that a small test grid does not pay for sub-voxel beam sampling."""
    P = dict(DEFAULTS)
    if params:
        P.update(params)
    depth_mm = fan["depth"] * sp
    P["dr_mm"] = max(P["dr_mm"], 0.7 * sp)
    P["dang_deg"] = max(P["dang_deg"], np.rad2deg(0.7 * sp / (0.5 * depth_mm)))
    P["psf_axial_mm"] = max(P["psf_axial_mm"], 0.5 * P["dr_mm"])
    P["psf_lat_deg"] = max(P["psf_lat_deg"], 0.5 * P["dang_deg"])
    P["psf_elev_deg"] = max(P["psf_elev_deg"], 0.5 * P["dang_deg"])
    return P


def _beam_grid(fan, P, sp):
    """Beam-grid sizes (depth, lateral, elevation samples) and the fixed-voxel position of every sample."""
    n_r = int(np.ceil(fan["depth"] * sp / P["dr_mm"])) + 1
    dang = np.deg2rad(P["dang_deg"])
    n_a = int(np.ceil(2 * fan["half_lat"] / dang)) + 1
    n_e = int(np.ceil(2 * fan["half_elev"] / dang)) + 1
    r = np.linspace(0, fan["depth"], n_r)
    a = np.linspace(-fan["half_lat"], fan["half_lat"], n_a)
    e = np.linspace(-fan["half_elev"], fan["half_elev"], n_e)
    b, e1, e2 = _frame(fan)
    dirs = b[None, None] + np.tan(a)[:, None, None] * e1 + np.tan(e)[None, :, None] * e2
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)          # (n_a, n_e, 3)
    pts = (fan["apex"][None, None, None] + r[:, None, None, None] * dirs[None]).astype(np.float32)
    return (n_r, n_a, n_e), pts.reshape(-1, 3)


def _sample_source_on_beams(src, cav_src, rim_src, fix_to_src, u, pts, beam_shape, P, rng, contents=None) -> dict:
    """Echogenicity, impedance, thin-sheet, cavity, rim and brain maps at the beam samples, AFTER the shift:
    the post-shift tissue at fixed x is the pre-operative tissue at x + u(x) (trilinear u, as written)."""
    coords = pts.T.copy()
    for c in range(3):
        coords[c] += ndimage.map_coordinates(u[..., c], pts.T, order=1, mode="nearest")
    sc = (fix_to_src[:3, :3].astype(np.float32) @ coords) + fix_to_src[:3, 3:4].astype(np.float32)
    # only the part of the source volume that the fan sees is processed (speed)
    full = np.asarray(src["t1"].shape)
    lo = np.clip(np.floor(sc.min(1)).astype(int) - 4, 0, full)
    hi = np.clip(np.ceil(sc.max(1)).astype(int) + 5, 0, full)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    sc -= lo[:, None].astype(np.float32)
    sub = {k: src[k][crop] for k in ("wm", "gm", "csf", "tumour", "brain", "t2")}
    sub["spacing"] = src["spacing"]
    E_src, Z_src, ridge_src = echogenicity(sub, cav_src[crop], P, rng)

    def on_beams(vol):
        return ndimage.map_coordinates(vol, sc, order=1, mode="constant", cval=0.0).reshape(beam_shape)

    maps = dict(E=on_beams(E_src), Z=on_beams(Z_src), ridge=on_beams(ridge_src), cav=on_beams(cav_src[crop]),
                rim=on_beams(rim_src[crop]), brain=on_beams(sub["brain"]))
    if contents is not None:
        maps["blood"], maps["haemostat"] = (on_beams(c[crop]) for c in contents)
    return maps


def _classify_beam_samples(brain, cav, rr, P):
    """(bone, fluid, tissue) masks of the beam samples.

    Along each beam, outside the brain within gap_mm of the probe is the saline gap between the probe and the
    sunken brain; deeper, a short outside stretch between brain (< bone_run_mm: fissure, or a sulcus the crude
    mask left out) is CSF, and a long one is skull (bright, shadowing). The cavity is fluid."""
    outside = brain < 0.5
    run = np.zeros(outside.shape, np.float32)      # length (mm) of the outside stretch from here on
    for i in range(outside.shape[0] - 2, -1, -1):
        run[i] = (run[i + 1] + P["dr_mm"]) * outside[i]
    seen = np.cumsum(~outside, axis=0) * P["dr_mm"] > 2.0
    bone = outside & (rr >= P["gap_mm"]) & ((run >= P["bone_run_mm"]) | ~seen)
    saline = outside & ~bone
    fluid = (cav > 0.5) | saline
    tissue = ~fluid & ~bone
    return bone, fluid, tissue


def _specular_reflectors(Z, ridge, tissue, brain, rr, P):
    """Specular reflector intensity L on the beam grid: tissue interfaces |grad Z| and thin CSF sheets,
    sharpened, brightest where the interface is perpendicular to the beam (cos^2 = the beam-axis share of the
    structure tensor's gradient energy), then thinned to ~1 mm lines like real iUS reflectors."""
    dlat = np.maximum(rr * np.float32(np.deg2rad(P["dang_deg"])), np.float32(0.5 * P["dr_mm"]))
    g = _beam_grad(Z, np.float32(P["dr_mm"]), dlat)
    mag = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    # per-case normalisation on the tissue samples (subsampled: a percentile needs no more)
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
    L = (P["w_iface"] * iface + P["w_ridge"] * rid) * (P["spec_floor"] + (1 - P["spec_floor"]) * cos2)
    L = np.where(tissue, L, 0).astype(np.float32)
    if P["thin_power"] > 0:  # keep the part of each ridge close to its local maximum
        nb = (max(3, int(round(P["thin_mm"] / P["dr_mm"])) | 1), 3, 3)
        L *= (L / (ndimage.maximum_filter(L, size=nb) + 1e-6)) ** P["thin_power"]
    return L


def _speckle(shape, P, rng):
    """Multiplicative speckle, mean 1: |complex Gaussian scatterers (*) anisotropic PSF|^2, with a second
    independent look compounded (overlapping sweeps lower the speckle contrast)."""
    sig = (P["psf_axial_mm"] / P["dr_mm"], P["psf_lat_deg"] / P["dang_deg"], P["psf_elev_deg"] / P["dang_deg"])

    def look():
        re = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sig)
        im = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sig)
        return re * re + im * im

    S = look()
    if P["compound"] > 0:
        S += np.float32(P["compound"]) * look()
    S /= np.float32(S.mean())
    return S


def _attenuated_echo(E, L, S, rim, cav, fluid, bone, rr, P, haemostat=None):
    """Echo power per beam sample: diffuse + specular (partly speckled) + clutter, times the two-way
    attenuation. Fluid attenuates ~10x less than tissue (posterior enhancement); reflectors and bone shadow.
    Haemostatic material in the cavity (stress cases) reflects and shadows like the rim."""
    ss = np.float32(P["spec_speckle"])
    reflect = L + np.float32(P["w_rim"]) * rim * (cav < 0.5)
    if haemostat is not None:
        reflect += np.float32(P["w_haemostat"]) * haemostat
    clutter = P["noise_floor"] + P["reverb"] * np.exp(-rr / P["reverb_mm"]) * fluid
    env2 = E * S + reflect * (1 - ss + ss * S) + clutter * S
    mu_tissue = P["mu_db_cm"] / 8.686 / 10.0 * 2                    # per mm, intensity (two-way)
    mu = (np.where(fluid, 0.1 * mu_tissue, mu_tissue) + P["shadow_k"] * reflect
          + np.where(bone, P["bone_mu"], 0.0)).astype(np.float32)
    env2 *= np.exp(-np.cumsum(mu, axis=0) * P["dr_mm"] + mu * P["dr_mm"])
    return env2


def _compress_with_gain(env2, tissue, P):
    """Power-law compression with an automatic gain (tissue median -> target_median), like the real display."""
    env_c = env2 ** (P["gamma"] / 2)
    med = np.median(env_c[tissue][:: max(1, tissue.sum() // 200000)]) if tissue.any() else 1.0
    return np.clip(env_c * (P["target_median"] / (med + 1e-12)), 0, P["out_max"]).astype(np.float32)


def _scan_convert(img, labels, fan, shape, floor):
    """Beam grid -> fixed grid: the image (trilinear, >= floor inside the fan, exactly 0 outside), the fan
    mask and the labels (nearest; OUTSIDE outside the fan)."""
    n_r, n_a, n_e = img.shape
    b, e1, e2 = _frame(fan)
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
    out[idx] = np.maximum(ndimage.map_coordinates(img, bc, order=1, mode="nearest"), floor)
    lab = np.full(shape, OUTSIDE, np.uint8)
    lab[idx] = ndimage.map_coordinates(labels, bc, order=0, mode="nearest")
    return out, mask, lab


def render(src, cav_src, rim_src, fix_to_src, u, fan, sp, shape, rng, params=None, contents=None):
    """The SIMULATED post-resection iUS of a case on the fixed grid (see the module docstring).

    src: the pre-operative source anatomy; cav_src, rim_src: the cavity and its hyperechoic rim on the source
    grid; fix_to_src: fixed voxel -> source voxel (4 x 4); u: the ground-truth field (fixed voxels); fan: the
    fan geometry (fixed voxels); sp: fixed spacing (mm); rng: the iUS's own random stream; params: overrides of
    DEFAULTS; contents: (blood, haemostat) source maps inside the cavity (stress cases) or None.
    Returns (image, fan mask, info with fan_fraction, beam_grid, us_params and us_labels)."""
    P = _render_parameters(params, fan, sp)
    beam_shape, pts = _beam_grid(fan, P, sp)
    maps = _sample_source_on_beams(src, cav_src, rim_src, fix_to_src, u, pts, beam_shape, P, rng, contents)
    del pts
    rr = (np.linspace(0, fan["depth"], beam_shape[0]) * sp).astype(np.float32)[:, None, None]  # depth, mm
    bone, fluid, tissue = _classify_beam_samples(maps["brain"], maps["cav"], rr, P)
    L = _specular_reflectors(maps["Z"], maps["ridge"], tissue, maps["brain"], rr, P)
    E = np.where(bone, P["bone_echo"], np.where(fluid, 0.0, maps["E"])).astype(np.float32)  # fluid anechoic
    if "blood" in maps:  # clots in the cavity scatter like tissue
        E += np.float32(P["e_blood"]) * maps["blood"] * (maps["cav"] > 0.5)
    S = _speckle(E.shape, P, rng)
    env2 = _attenuated_echo(E, L, S, maps["rim"], maps["cav"], fluid, bone, rr, P, maps.get("haemostat"))
    del S, L
    img = _compress_with_gain(env2, tissue, P)
    labels = np.where(bone, BONE, np.where(maps["cav"] > 0.5, CAVITY, np.where(fluid, FLUID_GAP, TISSUE)))
    out, mask, lab = _scan_convert(img, labels.astype(np.uint8), fan, shape, P["floor"])
    info = dict(fan_fraction=float(mask.mean()), beam_grid=beam_shape, us_params=P, us_labels=lab)
    return out, mask, info
