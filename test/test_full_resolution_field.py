"""model.stages.full_resolution_field by hand: the written voxel field from the pose, the deformable field on a
box, the box's border continuation and the small-shift gain (issue 30 item 8).

A tiny full grid (8, 6, 7) at (0.5, 0.8, 1.25) mm and a box not at the origin whose padding differs on every side,
so that a pose term on the wrong axis, a padding mode other than replicate, a padding amount off by one, or a gain
not applied / divided shows as wrong numbers. Expectations are hand-computed (literals) or written with plain
numpy index clipping, not with the function's own broadcasting. Milliseconds: part of the mutation-testing fast
subset (setup.cfg)."""
import numpy as np
import pytest
import torch

from model.crop import Box
from model.stages import Deformation, GlobalPose, full_resolution_field

SHAPE = (8, 6, 7)
SPACING = (0.5, 0.8, 1.25)
S = np.array(SPACING)
# box [lo, hi): i 3..5, j 1..3, k 2..3 -> box shape (3, 3, 2); padding (before, after): i (3, 2), j (1, 2), k (2, 3)
BOX = Box((3, 1, 2), (6, 4, 4), SHAPE)
# (A - I): every entry distinct and non-zero, so each axis term of each component is visible
M = np.array([[0.02, -0.03, 0.05],
              [0.04, 0.01, -0.06],
              [-0.07, 0.08, 0.03]])
T = np.array([0.3, -0.4, 0.5])


def pose(m=M, t=T):
    matrix = torch.eye(4)
    matrix[:3, :3] += torch.tensor(m, dtype=torch.float32)
    matrix[:3, 3] = torch.tensor(t, dtype=torch.float32)
    return GlobalPose(matrix)


def positions_mm():
    """(i, j, k, 3) mm of every voxel of the full grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    return idx * S


def box_field():
    """(3, 3, 3, 2) mm on the box's own grid: u_c(a, b, d) = 0.01 (c + 1) (9 a + 3 b + d), distinct per voxel."""
    a, b, d = np.meshgrid(np.arange(3), np.arange(3), np.arange(2), indexing="ij")
    base = 9 * a + 3 * b + d
    return np.stack([0.01 * (c + 1) * base for c in range(3)]).astype(np.float32)


def test_the_pose_adds_each_axis_term_in_mm_then_voxels_per_component():
    field, jmin, scale = full_resolution_field(pose(), None, 1.0, SHAPE, SPACING)
    assert field.shape == SHAPE + (3,) and field.dtype == np.float32 and scale == 1.0
    # voxel (3, 2, 4) = (1.5, 1.6, 5.0) mm: (A - I) x + t = (0.532, -0.624, 0.673) mm = (1.064, -0.78, 0.5384) voxels
    np.testing.assert_allclose(field[3, 2, 4], [1.064, -0.78, 0.5384], atol=1e-5)
    np.testing.assert_allclose(field[0, 0, 0], T / S, atol=1e-6)  # the origin: the translation alone
    # one voxel step along axis d adds (A - I)[:, d] * spacing_d mm, in voxels of each component's axis
    np.testing.assert_allclose(field[1:] - field[:-1], np.broadcast_to([0.02, 0.025, -0.028], (7, 6, 7, 3)),
                               atol=1e-5)   # i: M[:, 0] * 0.5 / S
    np.testing.assert_allclose(field[:, 1:] - field[:, :-1], np.broadcast_to([-0.048, 0.01, 0.0512], (8, 5, 7, 3)),
                               atol=1e-5)   # j: M[:, 1] * 0.8 / S
    np.testing.assert_allclose(field[:, :, 1:] - field[:, :, :-1],
                               np.broadcast_to([0.125, -0.09375, 0.03], (8, 6, 6, 3)), atol=1e-5)  # k: M[:, 2] * 1.25 / S
    np.testing.assert_allclose(field, (positions_mm() @ M.T + T) / S, atol=1e-5)
    # an affine field: J = det(I + S^-1 (A - I) S) = det(A) at every voxel
    assert jmin == pytest.approx(np.linalg.det(np.eye(3) + M), abs=1e-5)
    # the writer's block: the (i, j, k, 3) field is a view of a C-contiguous (3, k, j, i) array
    assert field.transpose(3, 2, 1, 0).flags["C_CONTIGUOUS"]


def test_a_box_field_is_continued_outside_the_box_by_its_border_values():
    u = box_field()
    field, jmin, scale = full_resolution_field(GlobalPose(torch.eye(4)), Deformation(torch.from_numpy(u), SPACING),
                                               1.0, SHAPE, SPACING, BOX)
    assert scale == 1.0 and jmin > 0
    # the far corner (7, 5, 6) replicates the box's last voxel (2, 2, 1): 9*2 + 3*2 + 1 = 25 -> 0.25 (c + 1) mm
    np.testing.assert_allclose(field[7, 5, 6], [0.25 / 0.5, 0.5 / 0.8, 0.75 / 1.25], atol=1e-6)
    # along i at (j, k) = (2, 3), i.e. box (b, d) = (1, 1): a = clip(i - 3, 0, 2) = 0 0 0 0 1 2 2 2
    np.testing.assert_allclose(field[:, 2, 3, 0], np.array([4, 4, 4, 4, 13, 22, 22, 22]) * 0.01 / 0.5, atol=1e-6)
    # along k at (i, j) = (4, 2), box (a, b) = (1, 1): d = clip(k - 2, 0, 1) = 0 0 0 1 1 1 1; component 2 (x 0.03 mm)
    np.testing.assert_allclose(field[4, 2, :, 2], np.array([12, 12, 12, 13, 13, 13, 13]) * 0.03 / 1.25, atol=1e-6)
    # along j at (i, k) = (5, 2), box (a, d) = (2, 0): b = clip(j - 1, 0, 2) = 0 0 1 2 2 2; component 1 (x 0.02 mm)
    np.testing.assert_allclose(field[5, :, 2, 1], np.array([18, 18, 21, 24, 24, 24]) * 0.02 / 0.8, atol=1e-6)
    # every voxel: the nearest box voxel's value (index clipped into the box), per component in its own voxels
    i, j, k = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    a, b, d = (np.clip(x - lo, 0, n - 1) for x, lo, n in zip((i, j, k), BOX.lo, BOX.shape))
    expected = np.stack([u[c][a, b, d] / S[c] for c in range(3)], axis=-1)
    np.testing.assert_allclose(field, expected, atol=1e-6)


def test_a_coarse_box_field_is_upsampled_then_applied_after_the_pose_at_its_scale():
    # u_0 on a (2, 2, 2) grid spanning the box: 0 at a = 0, 0.2 mm at a = 2 -> 0.1 mm per box voxel along i
    # (trilinear, corners aligned: exact for a linear field); u_1 = -0.3 mm, u_2 = 0.4 mm everywhere
    coarse = torch.zeros((3, 2, 2, 2))
    coarse[0, 1] = 0.2
    coarse[1], coarse[2] = -0.3, 0.4
    field, jmin, scale = full_resolution_field(pose(), Deformation(coarse, (1.0, 0.8, 1.25)), 0.5, SHAPE, SPACING,
                                               BOX)
    assert scale == 0.5 and jmin > 0
    u = np.zeros(SHAPE + (3,))
    u[..., 0] = 0.1 * np.clip(np.arange(8) - 3, 0, 2)[:, None, None]
    u[..., 1], u[..., 2] = -0.3, 0.4
    # x -> A (x + s u) + t: the displacement (A - I) x + t + s A u, mm then voxels of each axis
    expected = (positions_mm() @ M.T + T + 0.5 * u @ (np.eye(3) + M).T) / S
    np.testing.assert_allclose(field, expected, atol=1e-5)
    # by hand at voxel (7, 0, 0): x = (3.5, 0, 0) mm, u = (0.2, -0.3, 0.4) mm, s u = (0.1, -0.15, 0.2)
    # (A - I) x + t = (0.37, -0.26, 0.255) mm; A s u = (0.1165, -0.1595, 0.187) mm -> (0.973, -0.524375, 0.3536) voxels
    np.testing.assert_allclose(field[7, 0, 0], [0.973, -0.524375, 0.3536], atol=1e-5)
    # scale 0: the deformation is left out, the pose alone
    alone, _, scale0 = full_resolution_field(pose(), Deformation(coarse, (1.0, 0.8, 1.25)), 0.0, SHAPE, SPACING,
                                             BOX)
    assert scale0 == 0.0
    np.testing.assert_allclose(alone, (positions_mm() @ M.T + T) / S, atol=1e-5)


@pytest.mark.parametrize("gain,jacobian", [(0.5, 1.045), (0.0, 1.0), (2.0, 1.12)])
def test_the_gain_multiplies_the_whole_written_field_and_its_jacobian_is_of_the_scaled_field(gain, jacobian):
    # A = diag(1.2, 0.9, 1.0): J of gain * ((A - I) x + t) is (1 + 0.2 g)(1 - 0.1 g): 1.1 * 0.95 at g = 0.5
    stretch = pose(np.diag([0.2, -0.1, 0.0]), (1.0, -0.8, 2.5))
    field, jmin, _ = full_resolution_field(stretch, None, 1.0, SHAPE, SPACING, gain=gain)
    # by hand at voxel (2, 5, 1) = (1.0, 4.0, 1.25) mm: (0.2 + 1.0, -0.4 - 0.8, 2.5) mm = (2.4, -1.5, 2.0) voxels
    np.testing.assert_allclose(field[2, 5, 1], gain * np.array([2.4, -1.5, 2.0]), atol=1e-5)
    assert jmin == pytest.approx(jacobian, abs=1e-5)
    # with a deformation on the box: the whole displacement (pose and deformation) scaled by the gain
    deformation = Deformation(torch.from_numpy(box_field()), SPACING)
    whole, _, _ = full_resolution_field(pose(), deformation, 1.0, SHAPE, SPACING, BOX)
    scaled, _, scale = full_resolution_field(pose(), deformation, 1.0, SHAPE, SPACING, BOX, gain=gain)
    assert scale == 1.0 and np.abs(whole).max() > 0.5
    np.testing.assert_allclose(scaled, gain * whole, atol=1e-6)
