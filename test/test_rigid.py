"""model.rigid: the trimmed pose fit on hand-made correspondences whose answer is known exactly."""
import math

import torch

from model.rigid import affine_is_plausible, trimmed_fit


def _points(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g, dtype=torch.float64) * 40.0


def _rotation_z(degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_rigid_fit_recovers_a_pose_and_ignores_outliers():
    src = _points()
    r, t = _rotation_z(7.0), torch.tensor([2.0, -3.0, 1.5], dtype=torch.float64)
    dst = src @ r.t() + t
    dst[:30] += 25.0  # wrong matches (15 %): the trimmed rounds drop them
    a = trimmed_fit(src, dst, torch.ones(len(src)), "rigid", keep=0.6, iterations=5).double()
    assert torch.allclose(a[:3, :3], r, atol=1e-5) and torch.allclose(a[:3, 3], t, atol=1e-4)


def test_affine_fit_recovers_a_plausible_stretch():
    src = _points(seed=1)
    linear = _rotation_z(4.0) @ torch.diag(torch.tensor([1.1, 0.95, 1.0], dtype=torch.float64))
    t = torch.tensor([1.0, 0.5, -2.0], dtype=torch.float64)
    a = trimmed_fit(src, src @ linear.t() + t, torch.ones(len(src)), "affine").double()
    assert torch.allclose(a[:3, :3], linear, atol=1e-5) and torch.allclose(a[:3, 3], t, atol=1e-4)


def test_an_implausible_affine_falls_back_to_the_rigid_fit():
    """A 2x magnification (what the affine global stage once found on RESECT-24 as given) is no brain shift."""
    src = _points(seed=2)
    centre = src.mean(0)
    dst = (src - centre) * 2.0 + centre + torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)
    a = trimmed_fit(src, dst, torch.ones(len(src)), "affine").double()
    assert torch.allclose(a[:3, :3] @ a[:3, :3].t(), torch.eye(3, dtype=torch.float64), atol=1e-5)
    assert torch.det(a[:3, :3]) > 0


def test_plausibility_bounds_each_principal_stretch_and_refuses_reflections():
    eye = torch.eye(3, dtype=torch.float64)
    assert affine_is_plausible(eye) and affine_is_plausible(torch.diag(torch.tensor([1.3, 0.8, 1.0])).double())
    assert not affine_is_plausible(torch.diag(torch.tensor([1.4, 1.0, 1.0])).double())
    assert not affine_is_plausible(torch.diag(torch.tensor([0.7, 1.0, 1.0])).double())
    assert not affine_is_plausible(torch.diag(torch.tensor([-1.0, 1.0, 1.0])).double())
