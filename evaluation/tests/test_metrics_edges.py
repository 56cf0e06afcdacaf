"""evaluation/metrics.py by hand at its edges: anisotropic moving spacing, exact J = 0, J below -3 and above
1e9 (the official clip), border planes, tiny fields, empty and single-value aggregates. Each check kills a
mutant the agreement tests of test_metrics.py let through (docs/TESTING.md). About a second in all."""
import numpy as np
import pytest

from evaluation import metrics as M
from evaluation.tests.test_metrics import official_jacobian_determinant, official_sdlogj

MOVING_SPACING = (0.5, 0.8, 1.1)


def test_tre_uses_the_moving_spacing_per_axis_by_hand():
    fix = np.array([[4.0, 5.0, 6.0], [7.0, 3.0, 2.0]])
    mov = fix + np.array([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]])
    # no field: ||(1, 0, 0) * s|| = 0.5 and ||(0, -2, 1) * s|| = sqrt(1.6^2 + 1.1^2)
    np.testing.assert_allclose(M.tre(fix, mov, None, MOVING_SPACING), [0.5, np.hypot(1.6, 1.1)], atol=1e-12)
    # a constant field of (1, 2, 0) voxels: residuals (0, 2, 0) and (1, 0, 1) voxels of the MOVING image
    field = np.broadcast_to(np.float32([1.0, 2.0, 0.0]), (12, 10, 9, 3)).copy()
    np.testing.assert_allclose(M.tre(fix, mov, field, MOVING_SPACING), [1.6, np.hypot(0.5, 1.1)], atol=1e-9)
    # the same numbers with the axes' spacings reversed would be 2 * 0.8 and hypot(1.1, 0.5): the first equal,
    # so a third landmark separates them
    third = M.tre(np.array([[5.0, 5.0, 5.0]]), np.array([[5.0, 5.0, 7.0]]), None, MOVING_SPACING)
    assert third[0] == pytest.approx(2.2)


def test_worst_fraction_mean_by_hand():
    assert M.worst_fraction_mean([5.0, 1, 100, 9, 2, 8, 3, 7, 4, 6]) == pytest.approx(39.0)  # mean(100, 9, 8)
    assert M.worst_fraction_mean([3.0, 1.0]) == 3.0                             # ceil(0.6) = 1 landmark
    assert M.worst_fraction_mean([4.0]) == 4.0
    assert np.isnan(M.worst_fraction_mean([]))


def test_aggregate_skips_missing_values_and_names_empty_results():
    assert M.aggregate([1.0, None, float("nan"), 3.0]) == {"mean": 2.0, "std": 1.0, "30": pytest.approx(1.6)}
    assert M.aggregate([2.0]) == {"mean": 2.0, "std": 0.0, "30": 2.0}
    assert M.aggregate([]) == {"mean": None, "std": None, "30": None}
    assert M.aggregate([None, float("inf")]) == {"mean": None, "std": None, "30": None}


def linear_field(shape, gradient):
    """u_c(x) = sum_a gradient[c][a] * x_a (voxels): J = det(I + gradient^T) exactly, also by central
    differences."""
    x = np.indices(shape).astype(np.float64)
    return np.stack([sum(gradient[c][a] * x[a] for a in range(3)) for c in range(3)], -1).astype(np.float32)


def test_exact_zero_jacobian_is_a_fold():
    field = linear_field((7, 6, 8), [[-1, 0, 0], [0, 0, 0], [0, 0, 0]])  # J = 0 exactly everywhere
    plaus = M.plausibility(field)
    assert plaus[M.FOLDS] == 3 * 2 * 4 and plaus[M.FOLD_FRACTION] == 1.0 and plaus[M.NUM_FOLDINGS] == 0


def test_official_clip_below_and_above():
    # half the volume J = -4 (J + 3 = -1, clipped to 1e-9), half J = 1: the official "+3", clip and log
    shape = (12, 8, 8)
    field = np.zeros(shape + (3,), np.float32)
    field[:6] = linear_field((6, 8, 8), [[-5, 0, 0], [0, 0, 0], [0, 0, 0]])
    plaus = M.plausibility(field)
    reference, _ = official_sdlogj(field.astype(np.float64))
    assert np.isfinite(plaus[M.SDLOGJ]) and plaus[M.SDLOGJ] == pytest.approx(reference, abs=1e-9)
    det = official_jacobian_determinant(field.astype(np.float64))
    assert det.min() < -3 and plaus[M.FOLDS] == (det <= 0).sum()
    assert plaus[M.NUM_FOLDINGS] == 0  # the official count, after "+3" and the clip, is 0 even here
    # J = 2001^3 > 1e9: the upper clip holds log(J + 3) at log(1e9)
    huge = linear_field((6, 6, 6), np.eye(3) * 2000)
    assert M.plausibility(huge)[M.SDLOGJ] == pytest.approx(0.0, abs=1e-12)
    mixed = np.concatenate([huge, np.zeros((6, 6, 6, 3), np.float32)], axis=0)
    assert M.plausibility(mixed)[M.SDLOGJ] == pytest.approx(official_sdlogj(mixed.astype(np.float64))[0], abs=1e-9)


def test_smallest_field_the_crop_allows():
    assert M.plausibility(np.zeros((5, 5, 5, 3), np.float32))[M.SDLOGJ] == 0.0  # one voxel after the crop
    with pytest.raises(ValueError, match=r"^field \(4, 5, 6\) is too small for the 2-voxel crop$"):
        M.plausibility(np.zeros((4, 5, 6, 3), np.float32))


def test_jacobian_plane_at_the_first_and_last_allowed_planes():
    rng = np.random.default_rng(2)
    field = rng.normal(0, 0.4, (9, 10, 11, 3)).astype(np.float32)
    reference = official_jacobian_determinant(field.astype(np.float64))  # cropped (5, 6, 7)
    for k in (2, 8):
        plane = M.jacobian_plane(field, k)
        np.testing.assert_allclose(plane[2:-2, 2:-2], reference[:, :, k - 2], atol=1e-9)
        assert np.all(plane[:2] == 1) and np.all(plane[-2:] == 1)
    for k in (1, 9):
        with pytest.raises(ValueError, match=rf"^plane k={k} lies in the 2-voxel border of a field \(9, 10, 11\)$"):
            M.jacobian_plane(field, k)
