"""Hybrid real cases: the REAL RESECT case 24 pair with a known synthetic deformation added to the MRI.

Fixed  = real pre-resection iUS of RESECT case 24 (unchanged).
Moving = real T1 (ceT1 stand-in) and FLAIR (T2 stand-in), resampled onto the US grid upstream, and then
         warped here by a known map:  M'(y) = M(y + v(y)),  with
         v(y) = (R - I)(y - c) + t + sum_k a_k exp(-|y - b_k|^2 / (2 s_k^2))     (in mm, analytic).
Landmarks: the 16 real expert pairs.  The fixed (US) points are unchanged.  A real MRI point q is carried
         to y with y + v(y) = q (Newton-free fixed-point iteration on the analytic v, residual < 1e-9 vox),
         so in M' the anatomy at y is exactly the anatomy that was at q in M.
true_displacement: the inverse map w = (id + v)^-1 - id on the fixed grid, i.e. the field that would be
         exact if the original real pair were perfectly aligned.  It does NOT contain the real residual
         misalignment of RESECT case 24 (1.10 mm mean over the 16 landmarks); the landmarks do.
The MRI exists only inside the US box: where y + v(y) leaves the box the nearest edge value is used.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import nibabel as nib
from scipy import ndimage

from .fields import rotation_matrix, jacobian_det_min

DATA_DIR = os.environ.get(
    "REMIND_SHARED_DATA",
    os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")))
CASE24_DIR = os.path.join(DATA_DIR, "resect-case24")


@lru_cache(maxsize=1)
def load_case24():
    """Real RESECT case 24: dict with us, t1, flair (float32, (i,j,k)), affine, spacing, landmarks."""
    def load(name):
        img = nib.load(os.path.join(CASE24_DIR, name))
        return np.asarray(img.get_fdata(), dtype=np.float32), img
    us, img = load("us.nii.gz")
    t1, _ = load("t1.nii.gz")
    flair, _ = load("flair.nii.gz")
    lm_us = np.loadtxt(os.path.join(CASE24_DIR, "us_landmarks_vox.csv"), delimiter=",")
    lm_mr = np.loadtxt(os.path.join(CASE24_DIR, "mri_landmarks_vox.csv"), delimiter=",")
    return dict(us=us, t1=t1, flair=flair, affine=img.affine.copy(),
                spacing=tuple(float(s) for s in img.header.get_zooms()[:3]),
                lm_us=lm_us, lm_mr=lm_mr)


class SmoothMap:
    """Analytic displacement v (mm) of points given in mm (index * spacing)."""

    def __init__(self, R, t, c, centres, sigmas, amps):
        self.R, self.t, self.c = np.asarray(R), np.asarray(t), np.asarray(c)
        self.centres, self.sigmas, self.amps = np.asarray(centres), np.asarray(sigmas), np.asarray(amps)

    def __call__(self, x_mm: np.ndarray) -> np.ndarray:
        x = np.asarray(x_mm, dtype=np.float64)
        v = (x - self.c) @ (self.R - np.eye(3)).T + self.t
        for b, s, a in zip(self.centres, self.sigmas, self.amps):
            w = np.exp(-((x - b) ** 2).sum(-1) / (2 * s * s))
            v = v + w[..., None] * a
        return v


def _draw_map(rng, extent_mm):
    c = extent_mm / 2
    angles = np.deg2rad(rng.normal(0, 1.5, 3))
    t = rng.normal(0, 1.0, 3)
    t = t / np.linalg.norm(t) * rng.uniform(0.5, 1.0)
    k = 4
    centres = rng.uniform(0.2, 0.8, (k, 3)) * extent_mm
    sigmas = rng.uniform(14, 24, k)
    amps = rng.normal(0, 1.0, (k, 3))
    return angles, t, c, centres, sigmas, amps


def _build(params, lam):
    angles, t, c, centres, sigmas, amps = params
    return SmoothMap(rotation_matrix(angles * lam), t * lam, c, centres, sigmas, amps * lam)


def invert_points(vmap: SmoothMap, q_mm: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Solve y + v(y) = q for each point (fixed-point iteration y <- q - v(y))."""
    y = q_mm.copy()
    for _ in range(iterations):
        y_new = q_mm - vmap(y)
        if np.abs(y_new - y).max() < 1e-12:
            y = y_new
            break
        y = y_new
    return y


def make_hybrid_case(seed: int, magnitude_mm: float = 5.0, with_true_displacement: bool = True) -> dict:
    """Real RESECT-24 iUS (fixed) + real T1/FLAIR warped by a known deformation (moving).

    magnitude_mm: the mean length of the ADDED displacement at the 16 MRI landmarks (the real residual of
    (docs/SIMULATION.md) comes on top, so the initial TRE is close to, but not exactly, this value).
    Returns dict(fixed, moving={"ceT1", "T2"}, spacing, affine, fixed_landmarks, moving_landmarks,
    true_displacement, ...).  All arrays float32 in (i, j, k) order on the fixed (US) grid.
    """
    d = load_case24()
    sp = np.asarray(d["spacing"], dtype=np.float64)
    shape = d["us"].shape
    extent = (np.asarray(shape) - 1) * sp
    rng = np.random.default_rng(seed)
    params = _draw_map(rng, extent)
    q_mm = d["lm_mr"] * sp
    vmap = _build(params, _scale_for_magnitude(params, q_mm, magnitude_mm))

    # v on the grid (voxels), image warp M'(y) = M(y + v(y))
    idx = np.indices(shape, dtype=np.float64)
    x_mm = np.moveaxis(idx, 0, -1) * sp
    v_mm = vmap(x_mm)
    v_vox = (v_mm / sp).astype(np.float32)
    jmin = jacobian_det_min(v_vox)
    if jmin <= 0.1:
        raise RuntimeError(f"hybrid deformation not safely invertible (min det J = {jmin:.3f})")
    moving = _warp_mr(d, idx + np.moveaxis(v_vox, -1, 0))

    y_mm = invert_points(vmap, q_mm)
    moving_lm = y_mm / sp
    resid = float(np.abs((y_mm + vmap(y_mm) - q_mm) / sp).max())

    out = dict(
        fixed=d["us"].copy(), moving=moving, spacing=tuple(d["spacing"]), affine=d["affine"].copy(),
        fixed_landmarks=d["lm_us"].copy(), moving_landmarks=moving_lm,
        moving_landmarks_original=d["lm_mr"].copy(),
        added_map_voxels=v_vox,  # M'(y) = M(y + added_map_voxels(y))
        landmark_inverse_residual_vox=resid, min_jacobian=jmin, magnitude_mm=magnitude_mm, seed=seed,
        source="hybrid: REAL RESECT case 24 iUS + REAL T1/FLAIR with a SYNTHETIC added deformation",
    )
    if with_true_displacement:
        out["true_displacement"], out["true_displacement_residual_vox"] = _inverse_field(vmap, x_mm, v_mm, sp)
    out["initial_tre_mm"] = np.linalg.norm((moving_lm - out["fixed_landmarks"]) * sp, axis=1)
    return out


def _scale_for_magnitude(params, q_mm: np.ndarray, magnitude_mm: float) -> float:
    """The scale lam of the drawn map whose added displacement at the MRI landmarks has mean magnitude_mm:
    doubling until it is reached, then 50 bisection steps (the mean grows with lam)."""
    def mean_disp(lam):
        if lam == 0:
            return 0.0
        vm = _build(params, lam)
        y = invert_points(vm, q_mm)
        return float(np.linalg.norm(y - q_mm, axis=1).mean())

    lo, hi = 0.0, 1.0
    while mean_disp(hi) < magnitude_mm and hi < 64:
        hi *= 2
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if mean_disp(mid) < magnitude_mm:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _warp_mr(d: dict, coords: np.ndarray) -> dict:
    """The real T1 and FLAIR sampled at coords (cubic, edge values outside the US box), as ceT1 and T2,
    clipped at 0 (cubic interpolation overshoots below the background)."""
    moving = {name: ndimage.map_coordinates(d[src], coords, order=3, mode="nearest").astype(np.float32)
              for name, src in (("ceT1", "t1"), ("T2", "flair"))}
    for m in moving.values():
        np.maximum(m, 0, out=m)
    return moving


def _inverse_field(vmap: SmoothMap, x_mm: np.ndarray, v_mm: np.ndarray, sp: np.ndarray):
    """(true displacement in voxels, float32; its worst residual in voxels): w(x) = -v(x + w(x)), fixed x ->
    moving' x + w(x) (assuming the original pair aligned), by fixed-point iteration from w = -v."""
    w = -v_mm
    for _ in range(100):
        w_new = -vmap(x_mm + w)
        delta = np.abs(w_new - w).max()
        w = w_new
        if delta < 1e-9:
            break
    return (w / sp).astype(np.float32), float(np.abs((w + vmap(x_mm + w)) / sp).max())


def embed_case(case: dict, n: int = 256) -> dict:
    """The same hybrid case centred in an n^3 grid at its own spacing: the challenge's box size (256^3 at
    ~0.5 mm) with exactly the same anatomy, landmarks and added deformation. The iUS is zero outside (as
    outside a fan), the MR edge-padded, the affine moved so that world positions do not change."""
    pads = [((n - k) // 2, n - k - (n - k) // 2) for k in case["fixed"].shape]
    if min(p for pair in pads for p in pair) < 0:
        raise ValueError(f"cannot embed a {case['fixed'].shape} grid in {n}^3")
    off = np.array([p[0] for p in pads], float)
    out = dict(case, fixed=np.pad(case["fixed"], pads),
               moving={k: np.pad(v, pads, mode="edge") for k, v in case["moving"].items()},
               fixed_landmarks=case["fixed_landmarks"] + off, moving_landmarks=case["moving_landmarks"] + off)
    affine = np.asarray(case["affine"], np.float64).copy()
    affine[:3, 3] -= affine[:3, :3] @ off  # index i_new = i_old + off lands on the same world point
    out["affine"] = affine
    for key in ("true_displacement", "added_map_voxels"):
        if case.get(key) is not None:  # fields are defined inside the original box only: zero outside
            out[key] = np.pad(case[key], pads + [(0, 0)])
    out["source"] = case.get("source", "") + f", embedded in {n}^3"
    return out
