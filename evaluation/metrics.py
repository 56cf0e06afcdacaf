"""Metrics, each following the organisers' published formula (Learn2Reg evaluation code, docs/CONVENTIONS.md §4).

TRE_lm per landmark ||(p_fix + u(p_fix) - p_mov) * spacing_mov||; u sampled with
       scipy.ndimage.map_coordinates DEFAULTS (cubic spline, prefilter, mode 'constant', cval 0: a point
       outside the grid gets u = 0). Per-pair value = mean over landmarks.
LogJacDetStd (SDlogJ) std(log(clip(J + 3, 1e-9, 1e9))), J = det(I + grad u), central differences (correlate with
       [-0.5, 0, 0.5], mode constant), 2-voxel border cropped. The "+3" is the official code's: it shifts J
       before the log, so the official fold count (J + 3 <= 0 after the clip) is always 0.
Folds  the TRUE count J <= 0 (unshifted determinant, same crop) and its fraction of the cropped voxels.
Aggregates (Learn2Reg eval_version 2.0): over per-pair values, mean, numpy std (ddof 0) and
       "30" = np.quantile(values, 0.3).

Speed, proved equal in evaluation/tests/test_metrics.py: the cubic-spline prefilter is a recursive filter
whose influence decays as |z|^n, z = sqrt(3) - 2 (|z| = 0.268), so sampling from a block that extends
SPLINE_MARGIN voxels beyond the point on every side (or up to the real border, where the boundary rule then
matches) gives the same value to ~|z|^20 = 4e-12 relative, at a fraction of the cost of filtering 256^3.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import map_coordinates

SPLINE_MARGIN = 20
CROP = 2

# metric names in metrics.json: the organisers' own names where they have one (their evaluation config
# ReMIND2Reg_VAL_evaluation_config.json names "TRE_lm" and "LogJacDetStd"; their code adds "num_foldings"),
# our extras under names of their own
TRE = "TRE_lm"                   # mm, per-pair mean over landmarks (official)
TRE_INITIAL = "TRE_initial"      # mm, with u = 0 (no registration)
TRE_WORST30 = "TRE_worst30"      # mm, mean of the worst 30 % of a pair's landmarks (robustness figure)
SDLOGJ = "LogJacDetStd"          # official SDlogJ (with the "+3")
NUM_FOLDINGS = "num_foldings"    # official fold count: always 0 because of the "+3"
FOLDS = "num_folds_true"         # voxels with J <= 0 (unshifted)
FOLD_FRACTION = "fold_fraction_true"
RUNTIME = "runtime_s"            # seconds per pair (algorithm timings or platform job duration)
# plausibility() of the zero field (u = 0: J = 1 everywhere), used for a pair scored as identity
IDENTITY_PLAUSIBILITY = {SDLOGJ: 0.0, NUM_FOLDINGS: 0.0, FOLDS: 0.0, FOLD_FRACTION: 0.0}
LOWER_IS_BETTER = (TRE, TRE_WORST30, SDLOGJ, FOLDS, FOLD_FRACTION, RUNTIME, TRE_INITIAL, NUM_FOLDINGS)


def sample_displacement(field: np.ndarray, points: np.ndarray, sample_dtype=np.float64,
                        margin: int = SPLINE_MARGIN) -> np.ndarray:
    """u at `points` (N x 3 voxel coords), equal to map_coordinates(field[..., c], points.T) (defaults).

    `sample_dtype` float32 mimics the organisers' rounding when their input array is float32 (.npz).
    """
    shape = np.asarray(field.shape[:3])
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(points), 3), dtype=np.float64)
    for n, point in enumerate(points):
        centre = np.clip(np.floor(point).astype(np.int64), 0, shape - 1)
        lo = np.maximum(centre - margin, 0)
        hi = np.minimum(centre + margin + 2, shape)
        block = field[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        local = (point - lo)[:, None]
        for c in range(3):
            channel = np.ascontiguousarray(block[..., c], dtype=np.float64)
            out[n, c] = map_coordinates(channel, local)[0]
    if sample_dtype == np.float32:
        out = out.astype(np.float32).astype(np.float64)
    return out


def tre(fixed_points: np.ndarray, moving_points: np.ndarray, field: np.ndarray | None,
        spacing_moving, sample_dtype=np.float64) -> np.ndarray:
    """TRE per landmark in mm; `field` None gives the initial (identity) TRE."""
    warped = np.asarray(fixed_points, dtype=np.float64)
    if field is not None:
        warped = warped + sample_displacement(field, fixed_points, sample_dtype)
    return np.linalg.norm((warped - moving_points) * np.asarray(spacing_moving, dtype=np.float64), axis=1)


def worst_fraction_mean(values: np.ndarray, fraction: float = 0.3) -> float:
    """Mean of the largest ceil(fraction * n) values (at least one)."""
    values = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    if values.size == 0:
        return float("nan")
    return float(values[:max(1, math.ceil(fraction * values.size))].mean())


def _jacobian_rows(field: np.ndarray, start: int, stop: int) -> np.ndarray:
    """det(I + grad u) for cropped rows [start, stop) (cropped index; original index + CROP), float64."""
    block = field[start + CROP - 1:stop + CROP + 1]  # one extra row each side
    sub = np.empty((3,) + block.shape[:3], dtype=np.float64)
    for c in range(3):
        sub[c] = block[..., c]
    core = (slice(1, -1), slice(CROP, -CROP), slice(CROP, -CROP))
    shifted = {0: ((slice(2, None), core[1], core[2]), (slice(None, -2), core[1], core[2])),
               1: ((core[0], slice(CROP + 1, -CROP + 1), core[2]), (core[0], slice(CROP - 1, -CROP - 1), core[2])),
               2: ((core[0], core[1], slice(CROP + 1, -CROP + 1)), (core[0], core[1], slice(CROP - 1, -CROP - 1)))}
    # j[a][c] = d u_c / d x_a + delta_ac  (the official jacobian[a, c]); correlate with [-0.5, 0, 0.5]
    j = [[None] * 3 for _ in range(3)]
    for a in range(3):
        plus, minus = shifted[a]
        for c in range(3):
            g = sub[(c,) + plus] * 0.5
            g -= sub[(c,) + minus] * 0.5
            if a == c:
                g += 1.0
            j[a][c] = g
    # the official expansion order: along the first column
    det = j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
    det -= j[1][0] * (j[0][1] * j[2][2] - j[0][2] * j[2][1])
    det += j[2][0] * (j[0][1] * j[1][2] - j[0][2] * j[1][1])
    return det


def jacobian_determinant(field: np.ndarray, rows: int = 8):
    """Yield (start, det) row blocks of det(I + grad u) over the cropped grid (memory-light)."""
    n = field.shape[0] - 2 * CROP
    for start in range(0, n, rows):
        yield start, _jacobian_rows(field, start, min(start + rows, n))


def jacobian_plane(field: np.ndarray, k: int) -> np.ndarray:
    """det(I + grad u) on the index plane k of axis 2, over the full (i, j) range: the numbers
    `jacobian_determinant` gives there (the official kernel and expansion), with the CROP-voxel border, where
    the official crop leaves no value, set to 1. Used by the report's Jacobian map."""
    n = field.shape[2]
    if not CROP <= k < n - CROP:
        raise ValueError(f"plane k={k} lies in the {CROP}-voxel border of a field {field.shape[:3]}")
    # a slab of the planes k - CROP - 1 .. k + CROP + 1: its own crop along axis 2 leaves planes k - 1 .. k + 1
    # (the slab's edge planes only feed the central differences), so plane k is the slab's cropped plane 1
    lo, hi = k - CROP - 1, k + CROP + 2
    slab = field[:, :, max(lo, 0):min(hi, n)]
    if lo < 0 or hi > n:  # next to the border: pad planes that only neighbour cropped-away slab planes
        slab = np.pad(slab, ((0, 0), (0, 0), (max(-lo, 0), max(hi - n, 0)), (0, 0)))
    out = np.ones(field.shape[:2], dtype=np.float64)
    for start, det in jacobian_determinant(slab):
        out[CROP + start:CROP + start + det.shape[0], CROP:-CROP] = det[:, :, 1]
    return out


def _memory_order_view(field: np.ndarray) -> np.ndarray:
    """A view whose first axis is the slowest in memory. For a Fortran-ordered field (nibabel) axes i and k
    are swapped together with components 0 and 2: det(P J P^T) = det(J), so the determinants are the same
    (as a transposed array; std and counts do not depend on the order)."""
    if field.strides[0] < field.strides[2]:
        return field.transpose(2, 1, 0, 3)[..., ::-1]
    return field


def plausibility(field: np.ndarray) -> dict[str, float]:
    """Official SDlogJ and fold count, and the true fold count/fraction, in one pass over the field."""
    cropped = tuple(s - 2 * CROP for s in field.shape[:3])
    if min(cropped) < 1:
        raise ValueError(f"field {field.shape[:3]} is too small for the {CROP}-voxel crop")
    folds = official = 0
    field = _memory_order_view(field)
    cropped = tuple(s - 2 * CROP for s in field.shape[:3])
    log_j = np.empty(cropped, dtype=np.float64)
    for start, det in jacobian_determinant(field):
        folds += int(np.count_nonzero(det <= 0))
        det += 3.0
        np.clip(det, 1e-9, 1e9, out=det)
        official += int(np.count_nonzero(det <= 0))
        np.log(det, out=log_j[start:start + det.shape[0]])
    return {SDLOGJ: float(log_j.std()), NUM_FOLDINGS: float(official), FOLDS: float(folds),
            FOLD_FRACTION: folds / float(log_j.size)}


def aggregate(values) -> dict[str, float]:
    """Learn2Reg aggregates over per-pair values: mean, std (numpy, ddof 0), "30" = 0.3 quantile."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return {"mean": None, "std": None, "30": None}
    return {"mean": float(values.mean()), "std": float(values.std()), "30": float(np.quantile(values, 0.3))}
