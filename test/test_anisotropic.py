"""Non-1 mm, anisotropic spacing through the model's mm -> voxel conversion, full_resolution_field (issue 14).

Spacing (0.5, 0.8, 1.1) mm: a translation in mm is a DIFFERENT number of voxels along each axis, so dividing
by permuted spacing, multiplying instead of dividing, or assuming 1 mm voxels gives wrong numbers. Expected
values are hand-computed (mm / spacing per axis). Milliseconds: part of the mutation-testing subset;
the real model on the same spacing: test_anisotropic_model.py."""
import numpy as np
import pytest
import torch

from model.stages import Deformation, GlobalPose, full_resolution_field
from model.warp import identity_mm

SPACING = (0.5, 0.8, 1.1)
SHAPE = (9, 8, 7)


def translation(t_mm):
    matrix = torch.eye(4)
    matrix[:3, 3] = torch.tensor(t_mm, dtype=torch.float32)
    return GlobalPose(matrix)


def test_pose_translation_in_mm_is_that_many_voxels_per_axis():
    t_mm = (1.0, 2.4, -2.2)  # = (2, 3, -2) voxels of (0.5, 0.8, 1.1) mm
    field, jmin, scale = full_resolution_field(translation(t_mm), None, 1.0, SHAPE, SPACING)
    assert field.shape == SHAPE + (3,) and field.dtype == np.float32
    np.testing.assert_allclose(field.reshape(-1, 3), np.broadcast_to([2.0, 3.0, -2.0], (np.prod(SHAPE), 3)),
                               atol=1e-5)
    assert jmin == pytest.approx(1.0, abs=1e-5) and scale == 1.0


def test_deformation_after_pose_both_in_mm():
    # x -> pose(x + d(x)): a constant d plus a translation, both mm, then per-axis voxels
    d_mm = torch.tensor([0.4, -1.6, 3.3]).view(3, 1, 1, 1).expand((3,) + SHAPE).clone()
    deformation = Deformation(d_mm, SPACING)
    field, _, scale = full_resolution_field(translation((1.0, 2.4, -2.2)), deformation, 0.5, SHAPE, SPACING)
    expected = (np.array([1.0, 2.4, -2.2]) + 0.5 * np.array([0.4, -1.6, 3.3])) / np.array(SPACING)
    np.testing.assert_allclose(field[4, 3, 2], expected, atol=1e-5)
    np.testing.assert_allclose(field[0, 7, 6], expected, atol=1e-5)
    assert scale == 0.5


@pytest.mark.parametrize("slope,kept", [(-2.0, 0.25), (-60.0, 1 / 64), (-100.0, 0.0)])
def test_a_folding_deformation_is_halved_until_it_does_not_fold(slope, kept):
    # d_0 = slope * x_0 (mm): J = 1 + scale * slope, so the kept scale is the first halving with J > 0
    # (1, 1/2, ..., 1/64, then none: the pose alone)
    x = identity_mm(SHAPE, SPACING)
    d_mm = torch.zeros((3,) + SHAPE)
    d_mm[0] = slope * x[0]
    field, jmin, scale = full_resolution_field(translation((0.0, 0.8, 0.0)), Deformation(d_mm, SPACING), 1.0,
                                               SHAPE, SPACING)
    assert scale == kept
    assert jmin == pytest.approx(1 + kept * slope, abs=1e-4) and jmin > 0
    np.testing.assert_allclose(field[..., 0], kept * slope * x[0].numpy() / SPACING[0], atol=1e-4)
    np.testing.assert_allclose(field[..., 1], 1.0, atol=1e-5)  # 0.8 mm = 1 voxel of 0.8 mm


def test_the_pose_alone_is_returned_as_it_is_even_if_it_folds():
    # no deformation: nothing to halve, so the pose's field comes back with scale 1 (a reflecting pose, J = -1,
    # only to make the loop's exit visible: the rigid fit never returns one)
    matrix = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    field, jmin, scale = full_resolution_field(GlobalPose(matrix), None, 1.0, SHAPE, SPACING)
    assert scale == 1.0 and jmin == pytest.approx(-1.0, abs=1e-5)
    x0 = np.arange(SHAPE[0]) * SPACING[0]
    np.testing.assert_allclose(field[:, 3, 2, 0], -2 * x0 / SPACING[0], atol=1e-4)
