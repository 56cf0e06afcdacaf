"""Refit the learned iUS appearance model (`simulation.appearance`) from the REAL data in ../shared/data.

    python -m simulation.fit_appearance [--out resources/sim/us_appearance.json] [--crop N]

Steps (each prints its figures):
1. echogenicity: ridge regression of the log local mean of the iUS (Gaussian 0.75 mm inside the fan) on 10 T1
   features (linear: a quadratic basis scored worse on the hold-out, mean r 0.09 against 0.22, negative on both
   halves of one axis), RESECT case 24 (real iUS and T1 on one grid), inside the fan eroded by 1 mm. Spatial hold-out: for each index axis and each side, fit
   on one half of the fan and score on the other half (a 4 mm gap left out between the halves, as wide as the
   largest feature scale), Pearson r of the prediction with log iUS raw and smoothed at 1 mm. The shipped model
   is fitted on the whole fan.
2. texture: the mean radial power spectrum of log iUS over 16 mm cubes inside the 17 real fans, scaled so that
   var(echogenicity + texture) equals the real cubes' mean variance of log iUS.
3. histogram: the real volumes' fan quantiles, averaged over volumes at 201 levels; the spread (sd) of the
   volumes' log medians becomes the per-case gain spread.
4. beam: for the volumes whose fan apex the fan's shape gives (a least-squares apex fit of the fan's side faces
   and caps, accepted when the fit is good), the slope of log iUS with depth (attenuation left after TGC) and
   the slope of the depth-detrended, standardised log iUS on the mean brightness 2-10 mm upstream along the ray
   (shadowing behind bright reflectors).
5. texture components (appearance.texture_components): the strength of thin bright lines on the T1's valleys,
   fitted on case 24's iUS; the speckle PSF widths and the weights of speckle, regional field, random sheet
   reflectors and voxel noise by simulated moments: Nelder-Mead so that a render of case 24's fan has the 17
   real volumes' mean SNR, autocorrelation widths and mean discriminator patch statistics (fit_speckle).
--crop N keeps an N^3 crop around each fan's centre (tests; the figures are then not the shipped ones).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import nibabel as nib
from scipy import ndimage

from . import appearance as A
from .hybrid import DATA_DIR

PSD_BINS = np.linspace(0.0, 1.0, 33)  # cycles/mm; 0.5 mm voxels reach 1.0


def _load(path, crop=None):
    img = nib.load(path)
    v = np.asarray(img.get_fdata(), np.float32)
    sl = _crop_slices(v > 0, crop)
    return v[sl], np.asarray(img.header.get_zooms()[:3], np.float64), sl


def _crop_slices(mask, crop):
    if not crop:
        return tuple(slice(None) for _ in mask.shape)
    c = np.argwhere(mask).mean(0).astype(int)
    return tuple(slice(max(0, ci - crop // 2), max(0, ci - crop // 2) + crop) for ci in c)


def real_files():
    files = sorted(glob.glob(os.path.join(DATA_DIR, "resect-us", "Case*_us.nii.gz")))
    return files + [os.path.join(DATA_DIR, "resect-case24", "us.nii.gz")]


# ----------------------------------------------------------------------------- 1. echogenicity
def fit_echo(crop=None, lam=1.0, n_fit=60000, seed=0, quadratic=False, verbose=True):
    us, sp, sl = _load(os.path.join(DATA_DIR, "resect-case24", "us.nii.gz"), crop)
    t1 = np.asarray(nib.load(os.path.join(DATA_DIR, "resect-case24", "t1.nii.gz")).get_fdata(), np.float32)[sl]
    fan = us > 0
    inner = ndimage.binary_erosion(fan, iterations=max(1, int(round(1.0 / sp.min()))))
    F = A.mr_features(t1, fan, sp)
    y_raw = np.log(np.maximum(us, 1.0))
    y_fit = np.log(np.maximum(A_smooth_in(us, fan, 0.75 / sp), 1.0))
    y_s1 = np.log(np.maximum(A_smooth_in(us, fan, 1.0 / sp), 1.0))
    idx = np.argwhere(inner)
    rng = np.random.default_rng(seed)
    scores = []
    gap = 4.0
    for ax in range(3):
        cut = np.median(idx[:, ax])
        pos = idx[:, ax] * sp[ax]
        for side in (0, 1):
            train = (pos < cut * sp[ax] - gap / 2) if side == 0 else (pos > cut * sp[ax] + gap / 2)
            test = (pos > cut * sp[ax] + gap / 2) if side == 0 else (pos < cut * sp[ax] - gap / 2)
            tr = idx[train][rng.permutation(train.sum())[:n_fit]]
            te = idx[test]
            Ftr = F[(slice(None),) + tuple(tr.T)].T
            m = A.fit_ridge(Ftr, y_fit[tuple(tr.T)], lam, quadratic)
            p = A.predict(m, F[(slice(None),) + tuple(te.T)].T)
            r_raw = float(np.corrcoef(p, y_raw[tuple(te.T)])[0, 1])
            r_s1 = float(np.corrcoef(p, y_s1[tuple(te.T)])[0, 1])
            scores.append(dict(axis=ax, side=side, r_raw=r_raw, r_smooth1mm=r_s1, n_test=int(test.sum())))
            if verbose:
                print(f"  hold-out axis {ax} half {side}: r(log iUS) {r_raw:+.3f}, r(log iUS smoothed 1 mm) "
                      f"{r_s1:+.3f} on {test.sum()} voxels")
    allv = idx[rng.permutation(len(idx))[: 2 * n_fit]]
    model = A.fit_ridge(F[(slice(None),) + tuple(allv.T)].T, y_fit[tuple(allv.T)], lam, quadratic)
    pred = A.predict(model, F[(slice(None),) + tuple(idx.T)].T)
    model["var_pred"] = float(np.var(pred))
    model["holdout"] = scores
    model["holdout_mean_r_raw"] = float(np.mean([s["r_raw"] for s in scores]))
    model["holdout_mean_r_smooth1mm"] = float(np.mean([s["r_smooth1mm"] for s in scores]))
    model["fit_r_raw"] = float(np.corrcoef(pred, y_raw[tuple(idx.T)])[0, 1])
    if verbose:
        print(f"echogenicity: held-out r {model['holdout_mean_r_raw']:.3f} (raw), "
              f"{model['holdout_mean_r_smooth1mm']:.3f} (smoothed 1 mm); in-sample r {model['fit_r_raw']:.3f}")
    return model


def A_smooth_in(vol, mask, sigma_vox):
    m = mask.astype(np.float32)
    return ndimage.gaussian_filter(vol * m, sigma_vox) / np.maximum(ndimage.gaussian_filter(m, sigma_vox), 1e-3)


# ----------------------------------------------------------------------------- 2.-3. texture and histogram
def fit_texture_histogram(files, var_pred, crop=None, verbose=True):
    psds, logvars, qs, meds, cube_vars = [], [], [], [], []
    levels = np.linspace(0.0005, 0.9995, 201)
    rng = np.random.default_rng(1)
    for f in files:
        us, sp, _ = _load(f, crop)
        fan = us > 0
        inner = ndimage.binary_erosion(fan, iterations=2)
        lg = np.log(np.maximum(us, 1.0))
        logvars.append(float(np.var(lg[inner])))
        qs.append(np.quantile(us[fan], levels))
        meds.append(float(np.median(us[fan])))
        n = 32
        deep = ndimage.binary_erosion(fan, iterations=n // 2 + 1)
        cand = np.argwhere(deep)
        cubes = []
        for c in cand[rng.choice(len(cand), size=min(6, len(cand)), replace=False)] if len(cand) else []:
            lo = c - n // 2
            cube = lg[lo[0]:lo[0] + n, lo[1]:lo[1] + n, lo[2]:lo[2] + n]
            if cube.shape == (n, n, n):
                cubes.append(A.radial_psd(cube, sp, PSD_BINS))
                cube_vars.append(float(np.var(cube)))
        if cubes:
            psds.append(np.mean(cubes, 0))
    psd = np.mean(psds, 0)
    k = 0.5 * (PSD_BINS[1:] + PSD_BINS[:-1])
    # variance that a unit-scale field of this spectrum has on a 0.5 mm grid
    v_unit = float(np.var(A.texture_field((64, 64, 64), (0.5, 0.5, 0.5), k, psd, np.random.default_rng(2))))
    # the spectrum describes variance within 16 mm cubes; the whole fan's variance also holds depth and gain
    # trends that the attenuation and the quantile map carry, so the texture gets the cubes' variance
    var_real = float(np.mean(cube_vars))
    scale = float(np.sqrt(max(var_real - var_pred, 0.05 * var_real) / max(v_unit, 1e-12)))
    quant = np.mean(qs, 0)
    log_gain_sd = float(np.std(np.log(meds)))
    hetero, snr_real, snr_sim = _fit_hetero(files, k, psd, scale, levels, quant, crop)
    if verbose:
        print(f"texture: {len(psds)} volumes' spectra; real var(log iUS) {var_real:.3f} in 16 mm cubes "
              f"({np.mean(logvars):.3f} over whole fans), echogenicity explains "
              f"{var_pred:.3f}, texture scale {scale:.3f}")
        print(f"histogram: {len(qs)} volumes; p5/p50/p95 of the mean quantile curve "
              f"{np.interp([0.05, 0.5, 0.95], levels, quant).round(1).tolist()}; per-case gain sd (log) "
              f"{log_gain_sd:.3f}")
        print(f"texture heterogeneity {hetero:.2f}: speckle SNR {snr_sim:.2f} against the real {snr_real:.2f}")
    return (dict(k=k.tolist(), psd=psd.tolist(), scale=scale, hetero=hetero, snr_real=snr_real, snr_sim=snr_sim, var_real_log_cubes=var_real,
                 var_real_log_fan=float(np.mean(logvars))),
            dict(levels=levels.tolist(), quantiles=quant.tolist(), log_gain_sd=log_gain_sd,
                 curves=[np.round(q, 2).tolist() for q in qs]))


def _snr(vol, mask, sp):
    """compare_real.us_stats' speckle SNR: median over 4 mm windows of local mean / local sd."""
    w = max(2, int(round(4.0 / np.mean(sp))))
    m = ndimage.uniform_filter(vol.astype(np.float64), w)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(vol.astype(np.float64) ** 2, w) - m * m, 0))
    ok = ndimage.binary_erosion(mask, iterations=w) & (sd > 0)
    return float(np.median(m[ok] / sd[ok]))


def _fit_hetero(files, k, psd, scale, levels, quant, crop=None):
    """The texture's amplitude modulation whose rendered speckle SNR (a 64^3 block at 0.5 mm, quantile-mapped
    like a render) is closest to the real volumes' mean SNR."""
    snrs = []
    for f in files:
        us, sp, _ = _load(f, crop)
        snrs.append(_snr(us, us > 0, sp))
    target = float(np.mean(snrs))
    mask = np.ones((64, 64, 64), bool)
    best = None
    for h in np.arange(0.0, 3.01, 0.25):
        vals = []
        for seed in (0, 1):
            T = scale * A.texture_field(mask.shape, (0.5,) * 3, k, psd, np.random.default_rng(seed), h)
            img = A._quantile_map(T.ravel(), levels, quant).reshape(mask.shape)
            vals.append(_snr(img, mask, (0.5,) * 3))
        s = float(np.mean(vals))
        if best is None or abs(s - target) < abs(best[1] - target):
            best = (float(h), s)
    return best[0], target, best[1]


# ----------------------------------------------------------------------------- 5. texture by simulated moments
def patch_features(p: np.ndarray) -> np.ndarray:
    """24 texture statistics of one patch (the discriminator's features in benchmarks.realism_compare): moments,
    percentiles, gradient energy, high-pass share, autocorrelation at 1, 2, 4 voxels along each axis, sorted."""
    from scipy import stats
    p = p.astype(np.float64)
    m = p.mean()
    q = np.percentile(p, [10, 50, 90, 99])
    g = np.sqrt(sum(x ** 2 for x in np.gradient(p)))
    hp = p - ndimage.gaussian_filter(p, 2.0)
    c = p - m
    v = (c * c).mean() + 1e-9
    ac = []
    for lag in (1, 2, 4):
        per_axis = [float((np.take(c, range(lag, c.shape[a]), a) * np.take(c, range(0, c.shape[a] - lag), a)).mean()
                          / v) for a in range(3)]
        ac += sorted(per_axis)
    return np.array([m, p.std(), p.std() / (m + 1e-9), stats.skew(p.ravel()), stats.kurtosis(p.ravel()),
                     *q, q[3] / (q[1] + 1e-9), q[2] / (q[1] + 1e-9), g.mean() / (m + 1e-9), hp.var() / v,
                     np.log(m + 1), (p > 2 * q[1]).mean(), *ac])


def patches(vol: np.ndarray, mask: np.ndarray, rng, n=40, size=16) -> list:
    """patch_features of up to n random size^3 patches fully inside mask."""
    inner = ndimage.binary_erosion(mask, iterations=size // 2 + 1)
    cand = np.argwhere(inner)
    out = []
    if not len(cand):
        return out
    for c in cand[rng.choice(len(cand), size=min(4 * n, len(cand)), replace=False)]:
        lo = c - size // 2
        sl = tuple(slice(a, a + size) for a in lo)
        if mask[sl].all():
            out.append(patch_features(vol[sl]))
        if len(out) >= n:
            break
    return out


MOMENT_STATS = ("snr", "acl_min_mm", "acl_max_mm")
# the fitted parameters of the speckle component, with their starting values and bounds (log-searched)
SPECKLE_FREE = dict(sigma_axial_mm=(0.5, 0.2, 3.0), sigma_lateral_mm=(1.0, 0.2, 4.0), w_speckle=(0.35, 0.02, 3.0),
                    w_reg=(0.45, 0.005, 2.0), w_refl=(0.6, 0.005, 6.0), w_white=(0.15, 0.005, 2.0),
                    refl_cover=(0.3, 0.03, 1.0), refl_thickness_mm=(0.7, 0.3, 2.0))
SPECKLE_FIXED = dict(line_scale_mm=0.75, reg_mm=4.0, refl_spacing_mm=5.0, refl_patch_mm=8.0)


def moment_stats(vol: np.ndarray, sp, n_cubes: int = 12) -> list:
    """compare_real.us_stats' SNR and autocorrelation widths (min / max over the index axes, FWHM of 16 mm
    cubes fully inside the fan), the widths averaged over n_cubes cubes instead of 4: a steadier target."""
    from .compare_real import _acl
    sp = np.asarray(sp, np.float64)
    fan = vol > 0
    n = int(round(16.0 / sp.mean()))
    cand = np.argwhere(ndimage.binary_erosion(fan, iterations=n // 2 + 1))
    rng = np.random.default_rng(0)
    acls = []
    for idx in cand[rng.choice(len(cand), size=min(n_cubes, len(cand)), replace=False)] if len(cand) else []:
        lo = idx - n // 2
        cube = vol[lo[0]:lo[0] + n, lo[1]:lo[1] + n, lo[2]:lo[2] + n].astype(np.float64)
        if cube.shape == (n, n, n) and cube.std() > 1e-3 and (cube <= 1.0).mean() < 0.05:
            acls.append(_acl(cube, sp))
    a = np.asarray(acls) if acls else np.full((1, 3), np.nan)
    return [_snr(vol, fan, sp), float(np.nanmean(a.min(1))), float(np.nanmean(a.max(1)))]


def real_moments(files, crop=None):
    """Per real volume: moment_stats (SNR, autocorrelation widths) and the mean of the discriminator's
    24 patch statistics (40 patches). Returns (mean, sd) over volumes of the 27-vector."""
    rows = []
    rng = np.random.default_rng(0)
    for f in files:
        us, sp, _ = _load(f, crop)
        pf = patches(us, us > 0, rng)
        if not pf:
            continue
        rows.append(np.r_[moment_stats(us, sp), np.mean(pf, 0)])
    R = np.array(rows)
    return np.nanmean(R, 0), np.nanstd(R, 0) + 1e-9


def fit_speckle(files, echo_model, hist, crop=None, maxfev=200, verbose=True):
    """Fit the texture components (appearance.texture_components) on case 24's fan and T1:
    * line strength w_line: least squares of case 24's log iUS (0.75 mm local mean) minus the echogenicity
      prediction on the T1 valley map (standardised by its sd over the fan): measured, not searched;
    * speckle PSF widths, speckle, regional and reflector weights: Nelder-Mead (log parameters) so that the
      render of case 24's fan (echogenicity + components, quantile-mapped, gain 1) has the real volumes' mean
      SNR, autocorrelation widths and mean patch statistics (each difference in units of the real volumes' sd),
      the random fields fixed between evaluations."""
    from scipy.optimize import minimize
    t = time.time()
    us, sp, sl = _load(os.path.join(DATA_DIR, "resect-case24", "us.nii.gz"), crop)
    t1 = np.asarray(nib.load(os.path.join(DATA_DIR, "resect-case24", "t1.nii.gz")).get_fdata(), np.float32)[sl]
    fan = us > 0
    inner = ndimage.binary_erosion(fan, iterations=max(1, int(round(1.0 / sp.min()))))
    F = A.mr_features(t1, fan, sp)
    echo = np.zeros(us.shape, np.float32)
    echo[fan] = A.predict(echo_model, F[:, fan].T)
    del F
    t1n = t1 / max(float(np.median(t1[fan])), 1e-6)
    line = A.valley_map(t1n, sp, SPECKLE_FIXED["line_scale_mm"])
    line_sd = float(line[fan].std() + 1e-9)
    z = line[inner] / line_sd
    y = np.log(np.maximum(A_smooth_in(us, fan, 0.75 / sp), 1.0))[inner] - echo[inner]
    zc = z - z.mean()
    w_line = float((zc * (y - y.mean())).sum() / (zc * zc).sum())
    r_line = float(np.corrcoef(z, y)[0, 1])
    mu, sd = real_moments(files, crop)
    S0 = dict(SPECKLE_FIXED, line_sd=line_sd, w_line=w_line, **{k: v[0] for k, v in SPECKLE_FREE.items()})
    base = echo + np.float32(w_line) * line / np.float32(line_sd)
    names = list(SPECKLE_FREE)
    lo = np.log([SPECKLE_FREE[k][1] for k in names])
    hi = np.log([SPECKLE_FREE[k][2] for k in names])

    def render(x):
        q = dict(zip(names, np.exp(np.clip(x, lo, hi))))
        p = A.random_parts(us.shape, sp, np.random.default_rng(11), dict(S0, **q))   # same draws every time
        logi = base + sum(np.float32(q["w_" + k]) * v for k, v in p.items())
        img = np.zeros(us.shape, np.float32)
        img[fan] = np.clip(A._quantile_map(logi[fan], hist["levels"], hist["quantiles"]), 1.0, 255.0)
        return img

    def moments(img):
        pf = patches(img, fan, np.random.default_rng(0))
        return np.r_[moment_stats(img, sp), np.mean(pf, 0)]

    def loss(x):
        d = (moments(render(x)) - mu) / sd
        return float(np.nansum(d * d)) + 10.0 * float(np.sum(np.clip(x - hi, 0, None) + np.clip(lo - x, 0, None)))

    x0 = np.log([SPECKLE_FREE[k][0] for k in names])
    l0 = loss(x0)
    simplex = np.vstack([x0] + [x0 + 0.3 * np.eye(len(x0))[i] for i in range(len(x0))])  # 0.3 in log: +35 %
    res = minimize(loss, x0, method="Nelder-Mead", options=dict(maxfev=maxfev, xatol=0.02, fatol=0.05,
                                                                initial_simplex=simplex))
    best = dict(zip(names, np.exp(np.clip(res.x, lo, hi)).tolist()))
    m = moments(render(res.x))
    d = (m - mu) / sd
    out = dict(S0, **best, fit_loss=float(res.fun), start_loss=l0, n_eval=int(res.nfev), r_line=r_line,
               fit_stats={k: [float(m[i]), float(mu[i]), float(sd[i])] for i, k in enumerate(MOMENT_STATS)},
               fit_patch_z=[float(v) for v in d[len(MOMENT_STATS):]])
    if verbose:
        print(f"lines: valley map (T1, {SPECKLE_FIXED['line_scale_mm']} mm) vs case 24's log iUS beyond the "
              f"echogenicity: r {r_line:+.3f}, strength {w_line:+.4f} per sd")
        print(f"speckle (simulated moments on case 24's fan, {res.nfev} renders, {time.time() - t:.0f} s): loss "
              f"{l0:.1f} -> {res.fun:.1f}; " + ", ".join(f"{k} {v:.3g}" for k, v in best.items()))
        for i, k in enumerate(MOMENT_STATS):
            print(f"  {k}: rendered {m[i]:.2f}, real {mu[i]:.2f} +- {sd[i]:.2f}")
        print(f"  patch statistics: |z| mean {np.mean(np.abs(d[3:])):.2f}, max {np.max(np.abs(d[3:])):.2f}")
    return out


# ----------------------------------------------------------------------------- 4. beam: apex, attenuation, shadow
def _skew(n):
    z = np.zeros(len(n))
    return np.stack([np.stack([z, -n[:, 2], n[:, 1]], -1), np.stack([n[:, 2], z, -n[:, 0]], -1),
                     np.stack([-n[:, 1], n[:, 0], z], -1)], 1)


def fit_apex(mask, sp):
    """Probe apex (voxels) of a fan from its shape: boundary points on a side face satisfy n.(x - a) = 0, on a
    cap (near / far) n x (x - a) = 0; alternating classification and linear least squares from 18 starts.
    Returns (apex voxels, residual, side fraction, nearest fan distance mm) of the best valid start, or None."""
    sm = ndimage.gaussian_filter(mask.astype(np.float32), 1.5)
    g = np.stack(np.gradient(sm), -1) / sp
    bd = mask & ~ndimage.binary_erosion(mask)
    inner_box = np.zeros_like(mask)
    inner_box[2:-2, 2:-2, 2:-2] = True
    bd &= inner_box
    x = (np.argwhere(bd) * sp)[::3]
    n = g[bd][::3]
    n = -n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    X = np.argwhere(mask)[::7] * sp
    c = X.mean(0)
    _, V = np.linalg.eigh(np.cov((X - c).T))
    best = None
    for k in range(3):
        for s in (1, -1):
            for dist in (40, 70, 100):
                a = c + s * dist * V[:, k]
                for _ in range(40):
                    dn = (x - a) / np.linalg.norm(x - a, axis=1, keepdims=True)
                    side = np.abs((n * dn).sum(1)) < 0.5
                    S = _skew(n[~side])
                    Amat = np.concatenate([n[side], S.reshape(-1, 3)])
                    b = np.concatenate([(n[side] * x[side]).sum(1), np.einsum("nij,nj->ni", S, x[~side]).ravel()])
                    a_new = np.linalg.lstsq(Amat, b, rcond=None)[0]
                    done = np.linalg.norm(a_new - a) < 1e-3
                    a = a_new
                    if done:
                        break
                rmin = float(np.linalg.norm(X - a, axis=1).min())
                dn = (x - a) / np.linalg.norm(x - a, axis=1, keepdims=True)
                res = float(np.mean(np.minimum(np.abs((n * dn).sum(1)), np.linalg.norm(np.cross(n, dn), axis=1))))
                if rmin < 10 or side.mean() < 0.3:
                    continue
                if best is None or res < best[1]:
                    best = (a / sp, res, float(side.mean()), rmin)
    return best


def fit_beam(files, crop=None, max_res=0.25, bright_z=2.0, verbose=True):
    betas, ks, used = [], [], []
    for f in files:
        us, sp, _ = _load(f, crop)
        fan = us > 0
        fit = fit_apex(fan, sp)
        name = os.path.basename(f)
        if fit is None or fit[1] > max_res:
            if verbose:
                print(f"  {name}: no apex from the fan's shape (residual {fit[1] if fit else float('nan'):.2f})")
            continue
        apex = fit[0]
        inner = ndimage.binary_erosion(fan, iterations=2)
        lg = np.log(np.maximum(us, 1.0))
        r = A.depth_mm(inner, apex, sp).astype(np.float64)
        slope, icpt = np.polyfit(r[inner], lg[inner].astype(np.float64), 1)
        resid = np.where(inner, lg - (slope * r + icpt), 0)
        z = (resid / (resid[inner].std() + 1e-9)).astype(np.float32)
        bright = np.where(inner, np.clip(z - bright_z, 0, None), 0).astype(np.float32)
        up = A.upstream_mean(bright, inner, apex, sp)
        # shadow = darker than the neighbouring rays at the same place: both sides high-passed (6 mm), so that a
        # bright near field or a brighter region does not count as "brighter behind bright reflectors"
        hp = lambda v: v - A_smooth_in(v, inner, 6.0 / sp)
        k = float(np.polyfit(hp(up)[inner].astype(np.float64), hp(z)[inner].astype(np.float64), 1)[0])
        betas.append(-float(slope))
        ks.append(k * float(resid[inner].std()))  # in log units per unit of upstream brightness
        used.append(name)
        if verbose:
            print(f"  {name}: apex residual {fit[1]:.2f}, depth {r[inner].min():.0f}-{r[inner].max():.0f} mm, "
                  f"attenuation {-slope * 8.686 * 10:.2f} dB/cm (display log), shadow slope {ks[-1]:+.3f}")
    if not betas:
        return dict(beta_per_mm=0.0, k_shadow=0.0, bright_z=bright_z, n_volumes=0, volumes=[])
    # a shadow brightens nothing: a positive median (bright structures continue along the beam) is clipped to 0
    out = dict(beta_per_mm=float(np.median(betas)), k_shadow=min(0.0, float(np.median(ks))), bright_z=bright_z,
               k_shadow_measured=float(np.median(ks)), n_volumes=len(betas), volumes=used, beta_all=betas, k_all=ks)
    if verbose:
        print(f"beam: {len(betas)} volumes with an apex; attenuation {out['beta_per_mm']:.4f} /mm "
              f"(median; range {min(betas):.4f}-{max(betas):.4f}), shadow {out['k_shadow']:+.3f} "
              f"(range {min(ks):+.3f}-{max(ks):+.3f})")
    return out


def fit_all(crop=None, files=None, verbose=True, speckle_maxfev=200) -> dict:
    t = time.time()
    files = files or real_files()
    echo = fit_echo(crop, verbose=verbose)
    texture, hist = fit_texture_histogram(files, echo["var_pred"], crop, verbose=verbose)
    beam = fit_beam(files, crop, verbose=verbose)
    speckle = fit_speckle(files, echo, hist, crop, maxfev=speckle_maxfev, verbose=verbose)
    return dict(echo=echo, texture=texture, histogram=hist, beam=beam, speckle=speckle,
                source=("fitted by python -m simulation.fit_appearance on the REAL RESECT iUS in ../shared/data "
                        f"({len(files)} volumes; echogenicity on case 24)" + (f", crop {crop}" if crop else "")),
                fit_seconds=round(time.time() - t, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=A.PARAMS_PATH)
    ap.add_argument("--crop", type=int, default=0)
    args = ap.parse_args(argv)
    params = fit_all(args.crop or None)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(params, handle, indent=0)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes) in {params['fit_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
