"""A RESECT-24 hybrid case with a KNOWN deformation for the model tests (needs ../shared/data).

The real RESECT Case 24 MR is warped by a known invertible map psi (rigid offset + smooth random field):
new_MR(x) = MR(psi(x)). A US landmark p_fix matches MR point p_mov, i.e. new-MR point psi^-1(p_mov), found by
fixed-point iteration. simulation.hybrid makes the benchmarks' hybrid cases; this smaller generator lets a test
choose the rigid offset and the smooth field's amplitude directly.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from evaluation import metrics
from simulation.fields import rotation_matrix
from simulation.hybrid import load_case24


class KnownMap:
    """psi(x) = R (x - c) + c + t + s(x) in mm, s a smooth random field on the image grid."""

    def __init__(self, shape, spacing, shift_mm, angles_deg, smooth_amp_mm, smooth_sigma_mm, seed):
        rng = np.random.default_rng(seed)
        self.shape, self.spacing = shape, np.asarray(spacing)
        self.centre = (np.asarray(shape) - 1) / 2 * self.spacing
        self.rotation = rotation_matrix(np.deg2rad(angles_deg))
        self.shift = np.asarray(shift_mm, float)
        smooth = []
        for _ in range(3):
            noise = ndi.gaussian_filter(rng.standard_normal(shape), smooth_sigma_mm / self.spacing.mean())
            smooth.append(noise / (np.abs(noise).max() + 1e-9) * smooth_amp_mm)
        self.smooth = np.stack(smooth, 0)

    def smooth_at(self, points_mm):
        voxels = (points_mm / self.spacing).T
        return np.stack([ndi.map_coordinates(self.smooth[c], voxels, order=3, mode="nearest") for c in range(3)], 1)

    def __call__(self, points_mm):
        return (points_mm - self.centre) @ self.rotation.T + self.centre + self.shift + self.smooth_at(points_mm)

    def inverse(self, points_mm, iterations=200):
        q = points_mm.copy()
        for _ in range(iterations):
            q = (points_mm - self.centre - self.shift - self.smooth_at(q)) @ self.rotation + self.centre
        assert np.abs(self(q) - points_mm).max() < 1e-4
        return q

    def warp(self, image):
        index = np.stack(np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij"), -1).reshape(-1, 3)
        position = self(index * self.spacing) / self.spacing
        return ndi.map_coordinates(image, position.T, order=1, mode="nearest").reshape(self.shape).astype(np.float32)


def make_case(shift_mm=(6.0, -5.0, 4.0), angles_deg=(3.0, -2.0, 4.0), smooth_amp_mm=2.5, smooth_sigma_mm=10.0,
              seed=0) -> dict:
    """dict(us, ceT1, T2, spacing, lm_fix, lm_mov): the real iUS, the real T1/FLAIR warped by a KnownMap, and the
    landmarks in voxels (lm_mov moved by the map's inverse)."""
    real = load_case24()
    spacing = real["spacing"]
    known = KnownMap(real["us"].shape, spacing, shift_mm, angles_deg, smooth_amp_mm, smooth_sigma_mm, seed)
    moving_landmarks = known.inverse(real["lm_mr"] * np.asarray(spacing)) / np.asarray(spacing)
    return dict(us=real["us"], ceT1=known.warp(real["t1"]), T2=known.warp(real["flair"]), spacing=spacing,
                lm_fix=real["lm_us"], lm_mov=moving_landmarks)


def tre(displacement, lm_fix, lm_mov, spacing):
    """Per-landmark TRE in mm, the evaluation's definition (organisers' cubic-spline sampling)."""
    return metrics.tre(lm_fix, lm_mov, displacement, spacing)
