"""Model-test helpers: TRE and Jacobian figures, and a quick RESECT hybrid case with a KNOWN deformation.

The benchmarks' hybrid cases come from simulation.hybrid; this smaller generator (rigid offset + smooth field,
optional cavity) predates it and is kept because test/test_model.py and docs/MODEL.md's fp16 figures use it.

The real RESECT Case 24 MR is warped by a known invertible map psi (rigid offset + smooth field):
new_MR(x) = MR(psi(x)). A US landmark p_fix matches MR point p_mov, i.e. new-MR point psi^-1(p_mov),
found by fixed-point iteration to 1e-6 mm. Optionally a simulated resection cavity is carved into
the iUS (dark fluid + bright irregular rim, inside the fan); landmarks in/near it are dropped.
"""
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from evaluation import metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "resect-case24"


def load_resect24():
    img = nib.load(str(DATA / "us.nii.gz"))
    us = np.asarray(img.get_fdata(), dtype=np.float32)
    t1 = np.asarray(nib.load(str(DATA / "t1.nii.gz")).get_fdata(), dtype=np.float32)
    fl = np.asarray(nib.load(str(DATA / "flair.nii.gz")).get_fdata(), dtype=np.float32)
    sp = tuple(float(v) for v in img.header.get_zooms()[:3])
    lf = np.loadtxt(DATA / "us_landmarks_vox.csv", delimiter=",")
    lm = np.loadtxt(DATA / "mri_landmarks_vox.csv", delimiter=",")
    return us, t1, fl, sp, lf, lm


def _rot(angles_deg):
    a, b, c = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class KnownMap:
    """psi(x) = R (x - c) + c + t + s(x) in mm, s a smooth random field on the image grid."""

    def __init__(self, shape, spacing, shift_mm, angles_deg, smooth_amp_mm, smooth_sigma_mm, seed):
        rng = np.random.default_rng(seed)
        self.shape, self.sp = shape, np.asarray(spacing)
        self.c = (np.asarray(shape) - 1) / 2 * self.sp
        self.R = _rot(angles_deg)
        self.t = np.asarray(shift_mm, float)
        s = []
        for _ in range(3):
            n = ndi.gaussian_filter(rng.standard_normal(shape), smooth_sigma_mm / self.sp.mean())
            s.append(n / (np.abs(n).max() + 1e-9) * smooth_amp_mm)
        self.s = np.stack(s, 0)

    def s_at(self, pts_mm):
        vox = (pts_mm / self.sp).T
        return np.stack([ndi.map_coordinates(self.s[c], vox, order=3, mode="nearest") for c in range(3)], 1)

    def __call__(self, pts_mm):
        return (pts_mm - self.c) @ self.R.T + self.c + self.t + self.s_at(pts_mm)

    def inverse(self, p_mm, iters=200):
        q = p_mm.copy()
        for _ in range(iters):
            q = (p_mm - self.c - self.t - self.s_at(q)) @ self.R + self.c
        assert np.abs(self(q) - p_mm).max() < 1e-4
        return q

    def warp(self, img):
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij"), -1).reshape(-1, 3)
        pos = self(idx * self.sp) / self.sp
        return ndi.map_coordinates(img, pos.T, order=1, mode="nearest").reshape(self.shape).astype(np.float32)


def carve_cavity(us, lf, spacing, radius_mm=7.0, seed=0):
    """Dark, fluid-filled cavity with a bright irregular rim, inside the fan. Returns us, keep-mask of landmarks."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing)
    fan = us > 0
    dist_in = ndi.distance_transform_edt(fan, sampling=sp)
    # centre: deep enough inside the fan to stay in it, as far as possible from the landmark mean
    cand = np.argwhere(dist_in > radius_mm + 2)
    lm_c = lf.mean(0)
    d = np.linalg.norm((cand - lm_c) * sp, axis=1)
    centre = cand[np.argsort(d)[len(d) // 2]]
    idx = np.indices(us.shape).transpose(1, 2, 3, 0)
    r = np.linalg.norm((idx - centre) * sp, axis=-1)
    wobble = ndi.gaussian_filter(rng.standard_normal(us.shape), 4) * 25
    rr = r + wobble
    out = us.copy()
    cav = (rr < radius_mm) & fan
    rim = (rr >= radius_mm) & (rr < radius_mm + 1.2) & fan
    out[cav] = np.clip(rng.normal(4, 2, cav.sum()), 0.5, None)
    out[rim] = np.clip(rng.normal(150, 25, rim.sum()), 0.5, None)
    rl = np.linalg.norm((lf - centre) * sp, axis=1)
    return out, rl > radius_mm + 3


def make_case(shift_mm=(6.0, -5.0, 4.0), angles_deg=(3.0, -2.0, 4.0), smooth_amp_mm=2.5,
              smooth_sigma_mm=10.0, seed=0, cavity=False):
    us, t1, fl, sp, lf, lm = load_resect24()
    m = KnownMap(us.shape, sp, shift_mm, angles_deg, smooth_amp_mm, smooth_sigma_mm, seed)
    t1w, flw = m.warp(t1), m.warp(fl)
    lm_new = m.inverse(lm * np.asarray(sp)) / np.asarray(sp)
    keep = np.ones(len(lf), bool)
    if cavity:
        us, keep = carve_cavity(us, lf, sp, seed=seed)
    return dict(us=us, ceT1=t1w, T2=flw, spacing=sp, lm_fix=lf[keep], lm_mov=lm_new[keep])


def tre(disp, lm_fix, lm_mov, spacing):
    """Per-landmark TRE in mm: the evaluation's definition (organisers' cubic-spline sampling)."""
    return metrics.tre(lm_fix, lm_mov, disp, spacing)


def jacobian_stats(disp):
    """Official SDlogJ and the true fold count (J <= 0): the evaluation's definitions."""
    result = metrics.plausibility(disp)
    return result[metrics.SDLOGJ], int(result[metrics.FOLDS])
