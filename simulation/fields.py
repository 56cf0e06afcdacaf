"""Small helpers shared by the simulators: sampling, warping and inverting displacement fields.

Convention (docs/ARCHITECTURE.md): a voxel field u has shape grid.shape + (3,), channel c is the
displacement along index axis c in voxels; fixed voxel x corresponds to moving location x + u(x).
Continuous values of a grid field are its trilinear interpolant (scipy map_coordinates, order=1).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def sample_field(u: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Trilinear sample of a (I, J, K, 3) voxel field at N x 3 voxel points -> N x 3 (float64)."""
    pts = np.asarray(pts, dtype=np.float64)
    out = np.empty((len(pts), 3), dtype=np.float64)
    for c in range(3):
        out[:, c] = ndimage.map_coordinates(u[..., c].astype(np.float64, copy=False), pts.T,
                                            order=1, mode="nearest")
    return out


def warp(image: np.ndarray, u: np.ndarray, order: int = 1, mode: str = "nearest") -> np.ndarray:
    """Return image(x + u(x)) on the grid of u (pull-back, the organisers' convention)."""
    shape = u.shape[:3]
    coords = np.indices(shape, dtype=np.float32)
    for c in range(3):
        coords[c] += u[..., c]
    return ndimage.map_coordinates(image, coords, order=order, mode=mode).astype(np.float32)


def invert_field(u: np.ndarray, iterations: int = 30, tol: float = 1e-4):
    """Inverse of x -> x + u(x) on the same grid by fixed-point iteration v(y) = -u(y + v(y)).

    Returns (v, max_residual_voxels) where the residual is max |v(y) + u(y + v(y))| over the grid.
    Converges when |grad u| < 1 (our fields stay well below that).
    """
    shape = u.shape[:3]
    base = np.indices(shape, dtype=np.float32)
    v = -u.astype(np.float32).copy()
    res = np.inf
    for _ in range(iterations):
        coords = base + np.moveaxis(v, -1, 0)
        uv = np.stack([ndimage.map_coordinates(u[..., c], coords, order=1, mode="nearest")
                       for c in range(3)], axis=-1)
        new = -uv
        res = float(np.abs(new - v).max())
        v = new.astype(np.float32)
        if res < tol:
            break
    coords = base + np.moveaxis(v, -1, 0)
    uv = np.stack([ndimage.map_coordinates(u[..., c], coords, order=1, mode="nearest")
                   for c in range(3)], axis=-1)
    resid = float(np.abs(v + uv).max())
    return v, resid


def jacobian_det_min(u: np.ndarray, step: int = 1) -> float:
    """Minimum Jacobian determinant of x -> x + u(x) (np.gradient: central differences, one-sided at the
    border; voxel units), on every `step`-th voxel.

    Not evaluation.metrics.jacobian_determinant: that one crops a 2-voxel border (the official SDlogJ) and has
    no step, so its minimum differs where the smallest determinant lies at the border, and the simulator must
    check the whole field it writes."""
    us = u[::step, ::step, ::step].astype(np.float64)
    g = [np.gradient(us[..., c], step) for c in range(3)]  # g[c][d] = d u_c / d x_d
    J = np.empty(us.shape[:3] + (3, 3))
    for c in range(3):
        for d in range(3):
            J[..., c, d] = g[c][d] + (1.0 if c == d else 0.0)
    return float(np.linalg.det(J).min())


def rotation_matrix(angles_rad) -> np.ndarray:
    """Rotation from three Euler angles (x, y, z), R = Rz @ Ry @ Rx."""
    ax, ay, az = angles_rad
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx
