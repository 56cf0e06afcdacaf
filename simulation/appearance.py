"""A learned iUS appearance model (SIMULATED images, parameters FITTED to the real RESECT iUS in ../shared/data).

Unlike `ultrasound.py` (every constant set by hand), every number of this model comes from
`python -m simulation.fit_appearance`, which writes `resources/sim/us_appearance.json`; rendering needs only that
file and the anatomy. Model, in the log domain of the displayed intensity, for the brain-tissue part of a fan:

    log I(x) = f(MR features at x)                    echogenicity: ridge regression, linear in 10 T1 features, of
                                                      the log local mean (0.75 mm) of RESECT case 24's real iUS
                                                      (real iUS and T1 on one grid)
             + T(x)                                   texture: a random field whose radial power spectrum is the
                                                      mean spectrum of log-iUS over the 17 real volumes, scaled so
                                                      that var(f + T) is the real log-variance, its amplitude
                                                      modulated (calm and busy regions) by the amount that gives
                                                      the real volumes' speckle SNR
             - beta * depth(x)                        attenuation left after TGC, fitted on the real volumes whose
                                                      fan apex could be recovered from the fan's shape
             + k_shadow * mean upstream brightness    shadowing behind bright reflectors (k < 0), fitted the same way
    I = Q_real(rank of log I among the fan's tissue)  quantile map onto the pooled real tissue histogram, times a
                                                      per-case gain drawn from the real volumes' spread of medians

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
    T = texture_field(t1c.shape, sp, P["texture"]["k"], P["texture"]["psd"], rng, P["texture"].get("hetero", 0.0))
    logi[tis] += np.float32(P["texture"]["scale"]) * T[tis]
    if apex_vox is not None:
        apex = np.asarray(apex_vox, np.float64) - np.array([s.start for s in box])
        logi[tis] -= np.float32(P["beam"]["beta_per_mm"]) * depth_mm(tis, apex, sp)[tis]
    if apex_vox is not None and P["beam"]["k_shadow"] != 0:
        z = (logi - logi[tis].mean()) / (logi[tis].std() + 1e-6)
        bright = np.where(tis, np.clip(z - P["beam"]["bright_z"], 0, None), 0).astype(np.float32)
        logi[tis] += np.float32(P["beam"]["k_shadow"]) * upstream_mean(bright, tis, apex, sp)[tis]
    if gain is None:
        gain = float(np.exp(rng.normal(0.0, P["histogram"]["log_gain_sd"])))
    vals = _quantile_map(logi[tis], P["histogram"]["levels"], P["histogram"]["quantiles"]) * gain
    out = np.zeros(t1.shape, np.float32)
    sub = np.zeros(t1c.shape, np.float32)
    sub[tis] = np.clip(vals, 1.0, 255.0)
    out[box] = sub
    return out


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
