"""A learned iUS appearance model (SIMULATED images, parameters FITTED to the real RESECT iUS in ../shared/data).

Unlike `ultrasound.py` (every constant set by hand), every number of this model comes from
`python -m simulation.fit_appearance`, which writes `resources/sim/us_appearance.json`; rendering needs only that
file and the anatomy. Model, in the log domain of the displayed intensity, for the brain-tissue part of a fan:

    log I(x) = f(MR features at x)                    echogenicity: ridge regression, linear in 10 T1 features, of
                                                      the log local mean (0.75 mm) of RESECT case 24's real iUS
                                                      (real iUS and T1 on one grid)
             + T(x)                                   texture (`texture_components`, when the parameters have
                                                      "speckle"): thin bright lines on the T1's valleys (sulci,
                                                      falx; strength fitted on case 24's iUS), a regional field,
                                                      random thin bright sheets not tied to the MR, log-envelope
                                                      speckle of an anisotropic PSF along the beam and voxel noise;
                                                      widths and weights fitted by simulated moments so that a
                                                      render of case 24's fan has the 17 real volumes' mean SNR,
                                                      autocorrelation widths and patch statistics
                                                      (`fit_appearance.fit_speckle`). Older parameter files: one
                                                      Gaussian field of the real log-iUS spectrum
             - beta * depth(x)                        attenuation left after TGC, fitted on the real volumes whose
                                                      fan apex could be recovered from the fan's shape
             + k_shadow * mean upstream brightness    shadowing behind bright reflectors (k < 0), fitted the same way
    I = Q_case(rank of log I among the fan's tissue)  quantile map onto a histogram drawn per case between two
                                                      real volumes' histograms (`case_quantiles`)

T1 features (T1 divided by its median over the fan's tissue; Gaussian smoothing at 0.5, 1, 2, 4 mm): the smoothed
intensities (4), differences of Gaussians G(2s) - G(s) for s = 0.5, 1, 2 mm (thin dark structures: sulci, 3) and
gradient magnitudes at 0.5, 1, 2 mm (3). Only T1 is used: the simulator's anatomies and case 24 all have a T1, while
case 24's second MR is a FLAIR and the simulator's a T2.

Cavity, fluid gap and bone keep the look of `ultrasound.render` (nothing real to fit them to), and so does the
cavity's hyperechoic rim: see `render`.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np
from scipy import ndimage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS_PATH = os.path.join(ROOT, "resources", "sim", "us_appearance.json")
SCALES_MM = (0.5, 1.0, 2.0, 4.0)
FEATURE_NAMES = ([f"G{s}" for s in SCALES_MM] + [f"DoG{s}" for s in SCALES_MM[:3]]
                 + [f"grad{s}" for s in SCALES_MM[:3]])


# ----------------------------------------------------------------------------- features and regression
def mr_features(t1: np.ndarray, norm_mask: np.ndarray, spacing) -> np.ndarray:
    """(10, *t1.shape) float32 T1 features (module doc); T1 divided by its median inside norm_mask."""
    sp = np.asarray(spacing, np.float64)
    ref = float(np.median(t1[norm_mask])) if norm_mask.any() else float(np.median(t1))
    t1n = (t1 / max(ref, 1e-6)).astype(np.float32)
    G = {s: ndimage.gaussian_filter(t1n, s / sp) for s in SCALES_MM}
    out = [G[s] for s in SCALES_MM]
    out += [G[2 * s] - G[s] if 2 * s in G else ndimage.gaussian_filter(t1n, 2 * s / sp) - G[s] for s in SCALES_MM[:3]]
    for s in SCALES_MM[:3]:
        g = np.gradient(G[s], *sp)
        out.append(np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2))
    return np.stack(out).astype(np.float32)


def design(F: np.ndarray, mean, sd, quadratic: bool = False) -> np.ndarray:
    """Basis of standardised features: (n, 1 + m) linear, or (n, 1 + m + m(m+1)/2) quadratic, for F (n, m)."""
    Z = (np.asarray(F, np.float64) - np.asarray(mean)) / np.asarray(sd)
    m = Z.shape[1]
    cols = [np.ones(len(Z)), *Z.T]
    for a in range(m if quadratic else 0):
        for b in range(a, m):
            cols.append(Z[:, a] * Z[:, b])
    return np.stack(cols, 1)


def fit_ridge(F: np.ndarray, y: np.ndarray, lam: float = 1.0, quadratic: bool = False) -> dict:
    """Ridge fit of y on the (linear or quadratic) basis of F; returns the model as plain lists (JSON-able)."""
    mean, sd = F.mean(0), F.std(0) + 1e-9
    X = design(F, mean, sd, quadratic)
    A = X.T @ X + lam * len(X) * 1e-4 * np.diag(np.r_[0.0, np.ones(X.shape[1] - 1)])
    w = np.linalg.solve(A, X.T @ y)
    return dict(mean=mean.tolist(), sd=sd.tolist(), w=w.tolist(), features=FEATURE_NAMES, quadratic=quadratic)


def predict(model: dict, F: np.ndarray) -> np.ndarray:
    return design(F, model["mean"], model["sd"], model.get("quadratic", False)) @ np.asarray(model["w"])


# ----------------------------------------------------------------------------- texture
def radial_psd(cube: np.ndarray, spacing, bins) -> np.ndarray:
    """Radially averaged power spectrum of a zero-mean cube (Hann-windowed) at the frequency bins (cycles/mm)."""
    c = cube - cube.mean()
    win = np.ones(c.shape)
    for ax, n in enumerate(c.shape):
        sh = [1, 1, 1]
        sh[ax] = n
        win = win * np.hanning(n).reshape(sh)
    P = np.abs(np.fft.fftn(c * win)) ** 2 / (win ** 2).sum()
    k = _freq_radius(c.shape, spacing)
    idx = np.digitize(k.ravel(), bins) - 1
    ok = (idx >= 0) & (idx < len(bins) - 1)
    s = np.bincount(idx[ok], P.ravel()[ok], minlength=len(bins) - 1)
    n = np.bincount(idx[ok], minlength=len(bins) - 1)
    return s / np.maximum(n, 1)


def _freq_radius(shape, spacing):
    fs = np.meshgrid(*[np.fft.fftfreq(n, d=float(s)) for n, s in zip(shape, spacing)], indexing="ij")
    return np.sqrt(sum(f * f for f in fs))


def texture_field(shape, spacing, psd_k, psd, rng, hetero: float = 0.0, hetero_mm: float = 6.0) -> np.ndarray:
    """A zero-mean random field on a grid whose radial power spectrum follows (psd_k, psd) (variance = the
    integral of the spectrum). hetero > 0 modulates its amplitude by exp(hetero * H), H a smooth unit Gaussian
    field (hetero_mm), renormalised: calm regions and busy ones, as real iUS has (homogeneous parenchyma beside
    bright sulci), at the same overall variance."""
    k = _freq_radius(shape, spacing)
    amp = np.sqrt(np.interp(k, psd_k, psd, right=0.0))
    white = rng.standard_normal(shape).astype(np.float32)
    out = np.real(np.fft.ifftn(np.fft.fftn(white) * amp)).astype(np.float32)
    out -= out.mean()
    if hetero > 0:
        sd0 = out.std()
        H = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                    hetero_mm / np.asarray(spacing, np.float64))
        H /= H.std() + 1e-9
        out *= np.exp(np.float32(hetero) * H)
        out *= sd0 / (out.std() + 1e-9)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- speckle, lines, reflectors
def _unit(v):
    v = np.asarray(v, np.float64)
    return v / max(np.linalg.norm(v), 1e-9)


def speckle_log(shape, spacing, rng, sigma_axial_mm: float, sigma_lateral_mm: float, beam=(0.0, 0.0, 1.0)):
    """Log-envelope speckle, standardised (mean 0, sd 1): |z| of a complex Gaussian field blurred by a Gaussian
    point-spread function (sd sigma_axial_mm along `beam`, a unit vector in index space, sigma_lateral_mm
    across), log-compressed. Fully developed speckle: Rayleigh envelope, so log|z| has the long dark tail of
    real log-compressed B-mode; its autocorrelation width follows the PSF."""
    sp = np.asarray(spacing, np.float64)
    fs = np.meshgrid(*[np.fft.fftfreq(n, d=float(s)) for n, s in zip(shape, sp)], indexing="ij", sparse=True)
    b = _unit(np.asarray(beam, np.float64) * sp)   # beam direction in mm space
    ka = fs[0] * b[0] + fs[1] * b[1] + fs[2] * b[2]
    k2 = fs[0] ** 2 + fs[1] ** 2 + fs[2] ** 2
    H = np.exp(-2 * np.pi ** 2 * (sigma_axial_mm ** 2 * ka ** 2 + sigma_lateral_mm ** 2 * (k2 - ka ** 2)))
    z = rng.standard_normal(shape).astype(np.float32) + 1j * rng.standard_normal(shape).astype(np.float32)
    z = np.fft.ifftn(np.fft.fftn(z) * H.astype(np.float32))
    out = np.log(np.abs(z) + 1e-12).astype(np.float32)
    out -= out.mean()
    out /= out.std() + 1e-9
    return out


def valley_map(t1n: np.ndarray, spacing, scale_mm: float = 0.75) -> np.ndarray:
    """Thin dark structures of the T1 (sulci, the falx, CSF clefts), which real iUS shows as thin bright lines:
    the largest Hessian eigenvalue of the T1 smoothed at scale_mm, where positive (a valley across it), times
    scale^2 (scale-normalised), standardised by the image's own spread (0 mean over positive part not enforced)."""
    sp = np.asarray(spacing, np.float64)
    g = ndimage.gaussian_filter(t1n.astype(np.float32), scale_mm / sp)
    H = np.empty(t1n.shape + (3, 3), np.float32)
    grads = np.gradient(g, *sp)
    for a in range(3):
        ga = np.gradient(grads[a], *sp)
        for b in range(a, 3):
            H[..., a, b] = H[..., b, a] = ga[b]
    del grads
    lam = np.linalg.eigvalsh(H)[..., -1]
    return (np.clip(lam, 0, None) * scale_mm ** 2).astype(np.float32)


def sheet_reflectors(shape, spacing, rng, spacing_mm: float, thickness_mm: float, patch_mm: float,
                     cover: float) -> np.ndarray:
    """Bright thin sheets not tied to the MR (the real fans' echogenic lines that T1 does not predict): the zero
    level set of a smooth random field (correlation spacing_mm) drawn thickness_mm thick, kept where a second,
    coarser random field (patch_mm) is in its top `cover` share, so that sheets come in patches. 0..1."""
    sp = np.asarray(spacing, np.float64)
    G = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), spacing_mm / sp)
    gm = np.sqrt(sum(x * x for x in np.gradient(G, *sp))) + 1e-9
    dist = np.abs(G) / gm                                   # ~distance (mm) to the zero level set
    sheet = np.exp(-0.5 * (dist / (0.5 * thickness_mm)) ** 2).astype(np.float32)
    P = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), patch_mm / sp)
    thr = np.quantile(P, 1.0 - float(np.clip(cover, 0.0, 1.0))) if cover < 1 else -np.inf
    w = np.clip((P - thr) / (P.std() + 1e-9) * 2.0, 0.0, 1.0)
    return (sheet * w).astype(np.float32)


def smooth_field(shape, spacing, rng, sigma_mm: float) -> np.ndarray:
    """Unit-variance smooth Gaussian random field (regional echogenicity variation)."""
    H = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_mm / np.asarray(spacing))
    return (H / (H.std() + 1e-9)).astype(np.float32)


# ----------------------------------------------------------------------------- beam geometry
def upstream_mean(vol: np.ndarray, mask: np.ndarray, apex_vox, spacing, lo_mm=2.0, hi_mm=10.0, n=9) -> np.ndarray:
    """Mean of vol over points 2..10 mm closer to the apex along the ray through each voxel of mask (0 elsewhere)."""
    sp = np.asarray(spacing, np.float64)
    pts = np.argwhere(mask).astype(np.float64)
    d = (pts - np.asarray(apex_vox)) * sp
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    acc = np.zeros(len(pts))
    for t in np.linspace(lo_mm, hi_mm, n):
        q = pts - d * t / sp
        acc += ndimage.map_coordinates(vol, q.T, order=1, mode="nearest")
    out = np.zeros(vol.shape, np.float32)
    out[mask] = acc / n
    return out


def depth_mm(mask: np.ndarray, apex_vox, spacing) -> np.ndarray:
    sp = np.asarray(spacing, np.float64)
    idx = np.argwhere(mask).astype(np.float64)
    out = np.zeros(mask.shape, np.float32)
    out[mask] = np.linalg.norm((idx - np.asarray(apex_vox)) * sp, axis=1)
    return out


# ----------------------------------------------------------------------------- rendering
@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def load_params(path: str | None = None) -> dict:
    return _load(os.path.abspath(path or PARAMS_PATH))


def case_quantiles(hist: dict, rng, gain: float | None = None) -> np.ndarray:
    """The case's quantile curve. gain given: the real volumes' mean curve times gain. gain None: a random
    convex combination of two of the real volumes' own curves (hist["curves"]) when shipped, so that every
    percentile varies between cases as much as, and no more than, between the real volumes (a single gain on
    the mean curve spreads the bright tail more than the real volumes do); else the mean curve times a gain
    drawn from the real spread of medians."""
    q = np.asarray(hist["quantiles"], np.float64)
    if gain is not None:
        return q * gain
    curves = hist.get("curves")
    if curves:
        i, j = rng.choice(len(curves), size=2, replace=False)
        w = rng.uniform()
        return w * np.asarray(curves[i], np.float64) + (1 - w) * np.asarray(curves[j], np.float64)
    return q * float(np.exp(rng.normal(0.0, hist["log_gain_sd"])))


def _quantile_map(values: np.ndarray, levels, quantiles) -> np.ndarray:
    ranks = (np.argsort(np.argsort(values, kind="stable"), kind="stable") + 0.5) / len(values)
    return np.interp(ranks, levels, quantiles)


def render_tissue(t1: np.ndarray, tissue: np.ndarray, spacing, rng, apex_vox=None, params: dict | None = None,
                  norm_mask: np.ndarray | None = None, gain: float | None = None) -> np.ndarray:
    """The learned iUS of the voxels in `tissue` (float32, 0 elsewhere) from the T1 that corresponds to them
    voxel by voxel (for a simulated case: the pre-operative T1 pulled back through the true field).

    apex_vox: the probe apex (fixed voxels) for attenuation and shadowing; None leaves both out.
    gain: the case's gain on the real quantile curve; None draws it from the real volumes' spread (rng)."""
    P = params or load_params()
    if not tissue.any():
        return np.zeros(t1.shape, np.float32)
    sp = np.asarray(spacing, np.float64)
    box = _bbox(tissue, margin=int(np.ceil(8.0 / sp.min())))
    t1c, tis = t1[box], tissue[box]
    F = mr_features(t1c, tis if norm_mask is None else norm_mask[box], sp)
    logi = np.zeros(t1c.shape, np.float32)
    logi[tis] = predict(P["echo"], F[:, tis].T)
    del F
    if "speckle" in P:
        beam = (0.0, 0.0, 1.0)
        if apex_vox is not None:
            beam = np.argwhere(tis).mean(0) - (np.asarray(apex_vox, np.float64) - [s.start for s in box])
        logi[tis] += texture_components(t1c, tis, sp, rng, P, beam,
                                        None if norm_mask is None else norm_mask[box])[tis]
    else:   # the first model (one Gaussian field of the real log-iUS spectrum), kept for old parameter files
        T = texture_field(t1c.shape, sp, P["texture"]["k"], P["texture"]["psd"], rng,
                          P["texture"].get("hetero", 0.0))
        logi[tis] += np.float32(P["texture"]["scale"]) * T[tis]
    if apex_vox is not None:
        apex = np.asarray(apex_vox, np.float64) - np.array([s.start for s in box])
        logi[tis] -= np.float32(P["beam"]["beta_per_mm"]) * depth_mm(tis, apex, sp)[tis]
    if apex_vox is not None and P["beam"]["k_shadow"] != 0:
        z = (logi - logi[tis].mean()) / (logi[tis].std() + 1e-6)
        bright = np.where(tis, np.clip(z - P["beam"]["bright_z"], 0, None), 0).astype(np.float32)
        logi[tis] += np.float32(P["beam"]["k_shadow"]) * upstream_mean(bright, tis, apex, sp)[tis]
    vals = _quantile_map(logi[tis], P["histogram"]["levels"], case_quantiles(P["histogram"], rng, gain))
    out = np.zeros(t1.shape, np.float32)
    sub = np.zeros(t1c.shape, np.float32)
    sub[tis] = np.clip(vals, 1.0, 255.0)
    out[box] = sub
    return out


def texture_components(t1, tissue, spacing, rng, P, beam=(0.0, 0.0, 1.0), norm_mask=None, parts=False):
    """Everything of log I that T1's echogenicity regression does not give (params P["speckle"], all fitted):
    w_line * valley map of the T1 / line_sd (thin bright lines at sulci and CSF clefts, strength fitted on case
    24's iUS) + w_reg * regional field + w_refl * random sheet reflectors + w_speckle * log-envelope speckle
    + w_white * voxel-wise noise (the real volumes' autocorrelation drops sharply from lag 0 to one voxel, then
    decays slowly: a "nugget" that a smooth PSF alone cannot give).
    The random parts are drawn in that order from rng. parts=True returns the four maps (unweighted) instead."""
    S = P["speckle"]
    sp = np.asarray(spacing, np.float64)
    ref = norm_mask if norm_mask is not None and norm_mask.any() else tissue
    t1n = t1 / max(float(np.median(t1[ref])), 1e-6)
    p = random_parts(t1.shape, sp, rng, S, beam)
    p["line"] = valley_map(t1n, sp, S["line_scale_mm"]) / np.float32(S["line_sd"])
    if parts:
        return p
    return sum(np.float32(S.get("w_" + k, 0.0)) * v for k, v in p.items()).astype(np.float32)


def random_parts(shape, spacing, rng, S, beam=(0.0, 0.0, 1.0)) -> dict:
    """The unweighted random maps of texture_components, drawn from rng in this order: regional field,
    sheet reflectors, speckle, voxel noise."""
    return dict(reg=smooth_field(shape, spacing, rng, S["reg_mm"]),
                refl=sheet_reflectors(shape, spacing, rng, S["refl_spacing_mm"], S["refl_thickness_mm"],
                                      S["refl_patch_mm"], S["refl_cover"]),
                speckle=speckle_log(shape, spacing, rng, S["sigma_axial_mm"], S["sigma_lateral_mm"], beam),
                white=rng.standard_normal(shape).astype(np.float32))


def _bbox(mask, margin=0):
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def render(src, cav_src, rim_src, fix_to_src, u, fan, sp, shape, rng, params=None, contents=None,
           appearance: dict | None = None):
    """The learned renderer with the signature of `ultrasound.render` (same returns). The classic renderer
    gives the fan, the labels and the look of everything that is not brain tissue (cavity, gap, bone) and the
    cavity's rim; the brain tissue is replaced by `render_tissue` of the T1 pulled back through u."""
    from . import ultrasound
    classic, mask, info = ultrasound.render(src, cav_src, rim_src, fix_to_src, u, fan, sp, shape, rng, params,
                                            contents)
    tissue = info["us_labels"] == ultrasound.TISSUE
    region = np.zeros(tissue.shape, bool)
    if tissue.any():
        region[_bbox(tissue, margin=int(np.ceil(8.0 / sp)))] = True  # T1 around the tissue too: no edge at its border
    t1_fix, rim_fix = _pull_back(src["t1"], rim_src, fix_to_src, u, region)
    new = render_tissue(t1_fix, tissue, (sp, sp, sp), rng, apex_vox=fan["apex"], params=appearance)
    out = np.where(tissue, np.maximum(new, 1.0), classic).astype(np.float32)
    rim = tissue & (rim_fix > 0.2)  # the cavity's hyperechoic rim stays as the classic renderer draws it
    out[rim] = np.maximum(out[rim], classic[rim])
    info = dict(info, renderer="learned", classic_fixed=classic)
    return out, mask, info


def _pull_back(t1_src, rim_src, fix_to_src, u, where):
    """T1 and rim at x + u(x) for the voxels of `where` (source grids, trilinear), 0 elsewhere."""
    pts = np.argwhere(where).T.astype(np.float32)
    coords = pts.copy()
    for c in range(3):
        coords[c] += ndimage.map_coordinates(u[..., c], pts, order=1, mode="nearest")
    sc = fix_to_src[:3, :3].astype(np.float32) @ coords + fix_to_src[:3, 3:4].astype(np.float32)
    t1 = np.zeros(where.shape, np.float32)
    rim = np.zeros(where.shape, np.float32)
    t1[where] = ndimage.map_coordinates(t1_src, sc, order=1, mode="nearest")
    rim[where] = ndimage.map_coordinates(rim_src, sc, order=1, mode="constant", cval=0.0)
    return t1, rim
