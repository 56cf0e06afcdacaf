"""Compare SIMULATED iUS with the REAL RESECT iUS volumes in ../shared/data (statistics + pictures).

python -m simulation.compare_real [--n-sim 3] [--shape 256] [--out docs/img] [--json out.json]

Statistics, computed the same way for every volume, inside the fan (= voxels > 0):
  fan fraction      share of the box covered by the fan
  percentiles       intensity percentiles inside the fan (both are 0-255 scaled)
  speckle SNR       median over 8-voxel windows of local mean / local std (windows fully inside the fan)
  autocorr length   full width at half maximum (mm) of the intensity autocorrelation along each index axis,
                    from up to 4 cubes of 32 voxels fully inside the fan (min/max over axes reported)

Structural likeness (iUS vs its co-registered MR on the same grid; `structure_stats`).  Reference: the REAL
RESECT case 24 (real iUS + real T1 on one grid).  For a simulated case the MR is the moving ceT1 pulled back
with the exact ground-truth field (MR(x + u(x))), so iUS and MR correspond voxel by voxel, as in case 24.
All inside the fan eroded by 2 mm (no fan-edge effects):
  grad_corr         Pearson correlation of the smoothed iUS (Gaussian sigma 1 mm) with the MR gradient
                    magnitude (of the MR smoothed with sigma 1 mm): do the iUS bright structures sit on MR
                    tissue boundaries?
  t1_corr           Pearson correlation of the smoothed iUS with the smoothed MR intensity (sign and size of
                    the tissue-class contrast: WM brighter than GM gives > 0 on T1)
  coarse_frac       fraction of the iUS intensity variance at scales > 1.5 mm: var(G_1.5mm * iUS) / var(iUS)
                    (normalised convolution inside the fan); low = speckle-dominated, high = structure-dominated
  nmi               normalised mutual information (H(A)+H(B))/H(A,B), 32 x 32 bins between the 1st and 99th
                    percentiles, of the raw iUS and the MR intensity
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
import nibabel as nib
from scipy import ndimage

from . import ultrasound
from .hybrid import DATA_DIR


def real_volumes():
    files = sorted(glob.glob(os.path.join(DATA_DIR, "resect-us", "Case*_us.nii.gz")))
    files.append(os.path.join(DATA_DIR, "resect-case24", "us.nii.gz"))
    return [f for f in files if os.path.exists(f)]


def _acl(cube, spacing):
    c = cube - cube.mean()
    F = np.fft.rfftn(c, s=[2 * n for n in c.shape], axes=(0, 1, 2))
    ac = np.fft.irfftn(np.abs(F) ** 2)[: c.shape[0], : c.shape[1], : c.shape[2]]
    ac /= ac[0, 0, 0] + 1e-12
    out = []
    for ax in range(3):
        prof = np.moveaxis(ac, ax, 0)[:, 0, 0]
        below = np.nonzero(prof < 0.5)[0]
        if len(below) == 0:
            out.append(np.nan)
            continue
        i = below[0]
        frac = (prof[i - 1] - 0.5) / (prof[i - 1] - prof[i] + 1e-12)
        out.append(2 * (i - 1 + frac) * spacing[ax])  # FWHM
    return out


def us_stats(vol: np.ndarray, spacing, rng=None) -> dict:
    rng = rng or np.random.default_rng(0)
    spacing = np.asarray(spacing, float)
    mask = vol > 0
    v = vol[mask]
    # cubes of ~16 mm fully inside the fan, for the autocorrelation
    n = int(round(16.0 / spacing.mean()))
    inner = ndimage.binary_erosion(mask, iterations=n // 2 + 1)
    cand = np.argwhere(inner)
    acls = []
    for idx in cand[rng.choice(len(cand), size=min(4, len(cand)), replace=False)] if len(cand) else []:
        lo = idx - n // 2
        cube = vol[lo[0]:lo[0] + n, lo[1]:lo[1] + n, lo[2]:lo[2] + n].astype(np.float64)
        if cube.shape == (n, n, n) and cube.std() > 1e-3 and (cube <= 1.0).mean() < 0.05:
            acls.append(_acl(cube, spacing))
    acls = np.asarray(acls) if acls else np.full((1, 3), np.nan)
    w = max(2, int(round(4.0 / spacing.mean())))
    m = ndimage.uniform_filter(vol.astype(np.float64), w)
    m2 = ndimage.uniform_filter(vol.astype(np.float64) ** 2, w)
    sd = np.sqrt(np.maximum(m2 - m * m, 0))
    ok = ndimage.binary_erosion(mask, iterations=w) & (sd > 0)
    snr = float(np.median(m[ok] / sd[ok])) if ok.any() else float("nan")
    pct = np.percentile(v, [5, 25, 50, 75, 95, 99])
    return dict(fan_fraction=float(mask.mean()), mean=float(v.mean()), std=float(v.std()),
                p5=pct[0], p25=pct[1], p50=pct[2], p75=pct[3], p95=pct[4], p99=pct[5],
                snr=snr, acl_min_mm=float(np.nanmean(acls.min(1))), acl_max_mm=float(np.nanmean(acls.max(1))),
                acl_mean_mm=float(np.nanmean(acls)))


def _smooth_in(vol, mask, sigma_vox):
    """Normalised convolution inside mask (no fan-edge darkening)."""
    m = mask.astype(np.float32)
    num = ndimage.gaussian_filter(vol.astype(np.float32) * m, sigma_vox)
    den = ndimage.gaussian_filter(m, sigma_vox)
    return num / np.maximum(den, 1e-3)


def _nmi(a, b, bins=32):
    lo_a, hi_a = np.percentile(a, [1, 99])
    lo_b, hi_b = np.percentile(b, [1, 99])
    h, _, _ = np.histogram2d(np.clip(a, lo_a, hi_a), np.clip(b, lo_b, hi_b), bins=bins)
    p = h / h.sum()
    ent = lambda q: -np.sum(q[q > 0] * np.log(q[q > 0]))
    return float((ent(p.sum(0)) + ent(p.sum(1))) / ent(p))


def structure_stats(us: np.ndarray, mr: np.ndarray, spacing, mr_mask=None) -> dict:
    """Structural likeness of an iUS volume with its voxel-wise corresponding MR (see module doc)."""
    sp = np.asarray(spacing, float)
    fan = us > 0
    if mr_mask is None:
        mr_mask = mr > 0
    er = max(1, int(round(2.0 / sp.mean())))
    inner = ndimage.binary_erosion(fan, iterations=er) & mr_mask
    us = us.astype(np.float32)
    mr = mr.astype(np.float32)
    s1 = _smooth_in(us, fan, 1.0 / sp)
    s15 = _smooth_in(us, fan, 1.5 / sp)
    mrs = ndimage.gaussian_filter(mr, 1.0 / sp)
    g = np.sqrt(sum(np.gradient(mrs, *sp) [c] ** 2 for c in range(3)))
    corr = lambda a, b: float(np.corrcoef(a[inner], b[inner])[0, 1])
    v = us[inner]
    return dict(grad_corr=corr(s1, g), t1_corr=corr(s1, mrs),
                coarse_frac=float(np.var(s15[inner]) / (np.var(v) + 1e-12)),
                nmi=_nmi(v, mr[inner]), n_vox=int(inner.sum()))


def real_structure(which=("t1",)) -> dict:
    """structure_stats of the REAL RESECT case 24 (real iUS vs its co-registered real T1/FLAIR)."""
    d = os.path.join(DATA_DIR, "resect-case24")
    us_img = nib.load(os.path.join(d, "us.nii.gz"))
    us = np.asarray(us_img.get_fdata(), np.float32)
    out = {}
    for w in which:
        mr = np.asarray(nib.load(os.path.join(d, f"{w}.nii.gz")).get_fdata(), np.float32)
        out[w] = structure_stats(us, mr, us_img.header.get_zooms()[:3])
    return out


def sim_structure(case, tissue_only=True) -> dict:
    """structure_stats of a SIMULATED case: iUS vs the ceT1 pulled back with the exact truth.

    tissue_only: restrict to the brain tissue the fan shows (us_labels == ultrasound.TISSUE: no resection
    cavity, no fluid gap, no bone), the like-for-like comparison with the pre-resection RESECT case 24, whose
    fan is all tissue."""
    from .fields import warp
    mr = warp(case["moving"]["ceT1"], case["true_displacement"], order=1, mode="constant")
    mask = mr > 0
    if tissue_only and "us_labels" in case:
        mask &= case["us_labels"] == ultrasound.TISSUE
    return structure_stats(case["fixed"], mr, case["spacing"], mr_mask=mask)


def _hist(v, bins):
    h, _ = np.histogram(v, bins=bins, density=True)
    return h


def main(argv=None):
    args = _parser().parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    reals = _load_reals()
    sims = _make_sims(args)
    rows, summary = _intensity_table(reals, sims)
    summary["structure"] = _structure_table(sims)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, summary=summary), f, indent=1, default=float)
    os.makedirs(args.out, exist_ok=True)
    _plot_histograms(reals, sims, args.out)
    _plot_slices(reals, sims, args.out)
    _plot_case(sims[0], args.out)
    return summary


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-sim", type=int, default=3)
    ap.add_argument("--shape", type=int, default=256)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--anatomies", default="mni152,remind022")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "img"))
    ap.add_argument("--json", default=None)
    return ap


def _load_reals() -> list:
    """[(name "folder/file", iUS float32, spacing)] for every real volume found."""
    reals = []
    for f in real_volumes():
        img = nib.load(f)
        reals.append((os.path.basename(os.path.dirname(f)) + "/" + os.path.basename(f),
                      np.asarray(img.get_fdata(), np.float32), img.header.get_zooms()[:3]))
    return reals


def _make_sims(args) -> list:
    """[(name, iUS, spacing, case)] for --n-sim simulated cases, seeds from --seed, anatomies in turn."""
    from .cases import make_simulated_case
    sims = []
    anats = args.anatomies.split(",")
    for i in range(args.n_sim):
        an = anats[i % len(anats)]
        c = make_simulated_case(args.seed + i, anatomy=an, shape=(args.shape,) * 3, spacing=128.0 / args.shape)
        sims.append((f"sim seed {args.seed + i} {an}", c["fixed"], c["spacing"], c))
    return sims


def _intensity_table(reals: list, sims: list):
    """us_stats of every volume (rows) and their mean and sd over real and over simulated (summary), printed
    as a markdown table."""
    rows = {}
    for name, vol, sp, *_ in reals + sims:
        rows[name] = us_stats(vol, sp)
    keys = ["fan_fraction", "mean", "p5", "p25", "p50", "p75", "p95", "p99", "snr", "acl_min_mm", "acl_max_mm"]
    summary = {}
    for label, group in (("real", reals), ("sim", sims)):
        arr = np.array([[rows[n][k] for k in keys] for n in (g[0] for g in group)])
        summary[label] = {k: (float(np.nanmean(arr[:, j])), float(np.nanstd(arr[:, j]))) for j, k in enumerate(keys)}
    print("| statistic | real RESECT iUS (n=%d) mean ± sd | simulated (n=%d) mean ± sd |" % (len(reals), len(sims)))
    print("|---|---|---|")
    for k in keys:
        r, s = summary["real"][k], summary["sim"][k]
        print(f"| {k} | {r[0]:.3g} ± {r[1]:.2g} | {s[0]:.3g} ± {s[1]:.2g} |")
    return rows, summary


def _structure_table(sims: list) -> dict:
    """Structural likeness, printed: real RESECT case 24 (iUS vs real T1) and each simulated case (iUS vs
    ceT1 under the truth), over its tissue and over its whole fan."""
    struct = {"real case24 (T1)": real_structure(("t1",))["t1"]}
    for name, vol, sp, case in sims:
        struct[name + " tissue"] = sim_structure(case, tissue_only=True)
        struct[name + " whole fan"] = sim_structure(case, tissue_only=False)
    print("| structure | grad_corr | t1_corr | coarse_frac | nmi |\n|---|---|---|---|---|")
    for name, st in struct.items():
        print(f"| {name} | {st['grad_corr']:.3f} | {st['t1_corr']:.3f} | {st['coarse_frac']:.3f} | {st['nmi']:.4f} |")
    return struct


def _plot_histograms(reals: list, sims: list, out: str) -> None:
    """sim_histograms.png: intensity densities inside the fan, real (blue) and simulated (red)."""
    import matplotlib.pyplot as plt
    bins = np.linspace(0, 255, 52)
    fig, ax = plt.subplots(1, 1, figsize=(7, 4))
    for name, vol, *_ in reals:
        ax.plot(bins[:-1], _hist(vol[vol > 0], bins), color="tab:blue", alpha=0.35, lw=1)
    for name, vol, *_ in sims:
        ax.plot(bins[:-1], _hist(vol[vol > 0], bins), color="tab:red", alpha=0.8, lw=1.5)
    ax.plot([], [], color="tab:blue", label="real RESECT iUS (pre-resection)")
    ax.plot([], [], color="tab:red", label="SIMULATED post-resection iUS")
    ax.set_yscale("log")
    ax.set_xlabel("intensity inside the fan")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sim_histograms.png"), dpi=90)
    plt.close(fig)


def _plot_slices(reals: list, sims: list, out: str) -> None:
    """sim_vs_real_slices.png: real (3) vs simulated, central slices through the fan, same grey scale."""
    import matplotlib.pyplot as plt
    pick = [reals[i] for i in np.linspace(0, len(reals) - 1, 3).astype(int)]
    fig, axs = plt.subplots(2, max(3, len(sims)) + 0, figsize=(4 * max(3, len(sims)), 8))
    for j, (name, vol, sp, *_) in enumerate(pick):
        c = np.argwhere(vol > 0).mean(0).astype(int)
        axs[0, j].imshow(vol[:, :, c[2]].T, cmap="gray", vmin=0, vmax=200, origin="lower")
        axs[0, j].set_title("REAL " + name.split("/")[-1], fontsize=9)
    for j, (name, vol, sp, case) in enumerate(sims):
        c = np.argwhere(vol > 0).mean(0).astype(int)
        sl = vol[:, c[1], :]
        axs[1, j].imshow(sl.T, cmap="gray", vmin=0, vmax=200, origin="lower")
        axs[1, j].set_title("SIMULATED " + name.replace("sim ", ""), fontsize=9)
    for a in axs.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sim_vs_real_slices.png"), dpi=70)
    plt.close(fig)


def _plot_case(sim: tuple, out: str) -> None:
    """sim_case.png: one simulated case: iUS, ceT1, T2 and the ground-truth displacement magnitude."""
    import matplotlib.pyplot as plt
    name, vol, sp, case = sim
    c = np.argwhere(vol > 0).mean(0).astype(int)
    u = np.linalg.norm(case["true_displacement"][:, c[1], :] * np.asarray(case["spacing"]), axis=-1)
    fig, axs = plt.subplots(1, 4, figsize=(16, 4.3))
    axs[0].imshow(vol[:, c[1], :].T, cmap="gray", vmin=0, vmax=200, origin="lower")
    axs[1].imshow(case["moving"]["ceT1"][:, c[1], :].T, cmap="gray", origin="lower")
    axs[2].imshow(case["moving"]["T2"][:, c[1], :].T, cmap="gray", origin="lower")
    im = axs[3].imshow(u.T, origin="lower", cmap="viridis")
    plt.colorbar(im, ax=axs[3], label="|u| mm")
    lm = case["fixed_landmarks"]
    near = np.abs(lm[:, 1] - c[1]) < 8
    axs[0].plot(lm[near, 0], lm[near, 2], "r+")
    ml = case["moving_landmarks"]
    axs[1].plot(ml[near, 0], ml[near, 2], "y+")
    for a, t in zip(axs, ["SIMULATED iUS (fixed, post-shift)", "ceT1 (moving, pre-op)", "T2 (moving)", "true |u|"]):
        a.set_title(t)
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sim_case.png"), dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    main()
