"""The Adam refinement's diffusion regulariser at anisotropic spacing (issue 30).

The regulariser penalises each displacement component in voxels of its own axis, |grad (u_c / s_c)|^2: at
spacing 0.5 x 1.0 x 2.0 mm, a field that varies in space is smoothed 16 times harder in its i component than in
its k component. The model's anisotropic test (test_anisotropic_model.py) uses a pure translation, on which
the regulariser is 0 whatever the spacing, so a spacing reversed or permuted there went unseen.

Here the data term is a plain quadratic: the fixed "features" are the coordinates moved by a known field u*,
the moving ones the coordinates themselves (linear ramps: trilinear sampling is exact), so the data term is
mean_w |u - u*|^2 / 3 and the minimiser of data + lambda * regulariser solves a linear system per component,
written out below. Adam must land on it."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.refine import adam_refine
from model.warp import identity_mm

SPACING = (0.5, 1.0, 2.0)  # mm per voxel along i, j, k: all different, so any permutation shows
SHAPE = (8, 8, 6)
DIFFUSION_WEIGHT = 2.0
AMPLITUDE_MM = 0.4  # u* in mm, the same for each component; small enough that x + u stays inside the grid


def refine(fixed, moving, weight, spacing, start, **settings):
    """adam_refine with the identity pose: the one place that knows its signature."""
    return adam_refine(fixed, moving, weight, spacing, torch.eye(4), start, SimpleNamespace(**settings))


def target_field():
    """u* (mm): every component the same cosine along j, so only the regulariser tells them apart."""
    j = np.arange(SHAPE[1])
    profile = AMPLITUDE_MM * np.cos(np.pi * j / (SHAPE[1] - 1))
    return np.broadcast_to(profile.reshape(1, 1, -1, 1), (3,) + SHAPE).astype(np.float64)


def fan_weight():
    """1 inside, 0 on the outer layer (where x + u could leave the grid and the sampling clamps)."""
    w = np.zeros(SHAPE)
    w[1:-1, 1:-1, 1:-1] = 1.0
    return w


def path_laplacian(n):
    """sum over neighbours of (v_a - v_b)^2 = v^T L v along one axis of n voxels."""
    lap = np.diag(np.r_[1.0, 2.0 * np.ones(n - 2), 1.0])
    return lap - np.eye(n, k=1) - np.eye(n, k=-1)


def written_out_minimiser(u_star, w):
    """argmin over u of sum_x w |u - u*|^2 + lambda * sum_c sum_axes (difference of u_c / s_c)^2 (both terms
    carry the same 1 / (3 sum w) in the model): per component (W + lambda / s_c^2 L) u_c = W u*_c."""
    eye = [np.eye(n) for n in SHAPE]
    lap = (np.kron(np.kron(path_laplacian(SHAPE[0]), eye[1]), eye[2])
           + np.kron(np.kron(eye[0], path_laplacian(SHAPE[1])), eye[2])
           + np.kron(np.kron(eye[0], eye[1]), path_laplacian(SHAPE[2])))
    weights = np.diag(w.ravel())
    return np.stack([np.linalg.solve(weights + DIFFUSION_WEIGHT / s ** 2 * lap, weights @ u_star[c].ravel())
                     .reshape(SHAPE) for c, s in enumerate(SPACING)])


@pytest.fixture(scope="module")
def refined():
    u_star, w = target_field(), fan_weight()
    coordinates = identity_mm(SHAPE, SPACING)
    fixed = coordinates + torch.from_numpy(u_star).float()  # fixed(x) = moving(x + u*(x)) for moving(y) = y
    field = refine(fixed, coordinates, torch.from_numpy(w).float()[None], SPACING, torch.zeros((3,) + SHAPE),
                   lr=0.02, iterations=200, smooth_passes=0, diffusion_weight=DIFFUSION_WEIGHT, adam_eps_rel=0.0)
    return field.numpy(), written_out_minimiser(u_star, w), w > 0


def test_the_regulariser_counts_each_component_in_voxels_of_its_own_axis(refined):
    field, expected, fan = refined
    # (it keeps about a fifth, a half and three quarters of u*'s range in the i, j and k components)
    np.testing.assert_allclose(field[:, fan], expected[:, fan], atol=0.02)


def test_the_finest_axis_is_smoothed_hardest(refined):
    # amplitude kept per component over the fan: strictly ordered by spacing (0.5 < 1.0 < 2.0 mm); a spacing
    # reversed, permuted, multiplied or left out orders them otherwise (or not at all)
    field, _, fan = refined
    kept = [float(np.ptp(field[c][fan])) / (2 * AMPLITUDE_MM) for c in range(3)]
    assert kept[0] + 0.1 < kept[1] < kept[2] - 0.1, kept
