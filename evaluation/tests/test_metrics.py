"""Agreement with the organisers' published formulas (docs/CONVENTIONS.md §4), on hand-computed cases.

`official_*` below are independent, literal transcriptions of the published formulas (Learn2Reg evaluation
code, eval_version 2.0): full-volume map_coordinates with defaults, and the Jacobian from 3-D correlate kernels
on a (1, 3, X, Y, Z) array. They are deliberately slow and straightforward.
"""
import numpy as np
import pytest
from scipy.ndimage import correlate, gaussian_filter, map_coordinates

from evaluation import metrics as M


# ---------------------------------------------------------------- literal reference implementation
def official_tre(fix_lms, mov_lms, disp, spacing_mov):
    moved = np.stack([map_coordinates(disp[..., c], fix_lms.T) for c in range(3)], axis=1)
    return np.linalg.norm((fix_lms + moved - mov_lms) * np.asarray(spacing_mov), axis=1)


def official_jacobian_determinant(disp):  # disp (X, Y, Z, 3), as they pass it after transpose to (1,3,X,Y,Z)
    d = disp[np.newaxis].transpose(0, 4, 1, 2, 3)
    kernels = [np.array([-0.5, 0, 0.5]).reshape(s) for s in ((1, 3, 1, 1), (1, 1, 3, 1), (1, 1, 1, 3))]
    grads = [np.stack([correlate(d[:, c], k, mode="constant", cval=0.0) for c in range(3)], axis=1) for k in kernels]
    jac = np.concatenate(grads, 0) + np.eye(3).reshape(3, 3, 1, 1, 1)
    jac = jac[:, :, 2:-2, 2:-2, 2:-2]
    return (jac[0, 0] * (jac[1, 1] * jac[2, 2] - jac[1, 2] * jac[2, 1])
            - jac[1, 0] * (jac[0, 1] * jac[2, 2] - jac[0, 2] * jac[2, 1])
            + jac[2, 0] * (jac[0, 1] * jac[1, 2] - jac[0, 2] * jac[1, 1]))


def official_sdlogj(disp):
    jac_det = (official_jacobian_determinant(disp) + 3).clip(0.000000001, 1000000000)
    return np.log(jac_det).std(), float((jac_det <= 0).sum())


SHAPE = (24, 26, 22)
SPACING = (0.5, 0.5, 0.5)


def grid_points(shape=SHAPE):
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)


def check_against_reference(field, fix, mov, spacing=SPACING):
    field64 = field.astype(np.float64)
    ours = M.tre(fix, mov, field, spacing)
    np.testing.assert_allclose(ours, official_tre(fix, mov, field64, spacing), atol=1e-6, rtol=0)
    plaus = M.plausibility(field)
    sdlogj, _ = official_sdlogj(field64)
    assert abs(plaus[M.SDLOGJ] - sdlogj) < 1e-6
    # the official fold count is 0 by construction (J + 3, clipped to >= 1e-9, is never <= 0), so comparing it
    # with the reference proves nothing; it is checked where the TRUE count is not 0 (folding tests below and
    # test_metrics_edges.py), which is where reporting the true count as num_foldings would show
    assert plaus[M.NUM_FOLDINGS] == 0.0
    return ours, plaus


# ---------------------------------------------------------------- hand-computed cases
def test_constant_shift_tre_by_hand():
    shift = np.array([1.0, -2.0, 0.5])
    field = np.broadcast_to(shift, SHAPE + (3,)).astype(np.float32).copy()
    fix = np.array([[5.0, 6.0, 7.0], [12.3, 10.1, 9.9], [18.0, 20.5, 15.25]])
    mov = fix + shift + np.array([[0.4, 0.0, 0.0], [0.0, 0.3, -0.4], [0.0, 0.0, 0.0]])
    ours, plaus = check_against_reference(field, fix, mov)
    np.testing.assert_allclose(ours, [0.4 * 0.5, 0.5 * 0.5, 0.0], atol=1e-9)  # sqrt(.3^2+.4^2) = .5 voxel
    assert plaus[M.SDLOGJ] < 1e-12 and plaus[M.FOLDS] == 0


def test_rotation():
    angle = np.deg2rad(8)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = (np.asarray(SHAPE) - 1) / 2
    x = grid_points()
    field = ((x - centre) @ rot.T + centre - x).astype(np.float32)
    fix = np.array([[10.0, 11.0, 9.0], [14.5, 12.2, 11.0], [9.3, 15.1, 10.5]])
    mov = (fix - centre) @ rot.T + centre  # exact landmarks: TRE by hand is ~0 (cubic spline reproduces linear u)
    ours, plaus = check_against_reference(field, fix, mov)
    assert ours.max() < 1e-3
    assert plaus[M.FOLDS] == 0 and plaus[M.SDLOGJ] < 1e-6  # det(R) = 1


def test_folding_field_true_count_positive_official_zero():
    x = grid_points()
    centre = (np.asarray(SHAPE) - 1) / 2
    bump = np.exp(-((x - centre) ** 2).sum(-1) / (2 * 3.0 ** 2))
    field = np.zeros(SHAPE + (3,), dtype=np.float32)
    field[..., 0] = (-2.5 * (x[..., 0] - centre[0]) * bump).astype(np.float32)  # du0/dx0 = -2.5 at the centre
    fix = np.array([[11.0, 12.0, 10.0], [6.0, 7.0, 8.0]])
    mov = fix + 1.0
    _, plaus = check_against_reference(field, fix, mov)
    assert plaus[M.FOLDS] > 0 and plaus[M.NUM_FOLDINGS] == 0
    det = official_jacobian_determinant(field.astype(np.float64))
    assert plaus[M.FOLDS] == (det <= 0).sum()
    assert plaus[M.FOLD_FRACTION] == pytest.approx((det <= 0).mean())


def test_landmark_outside_grid_gets_zero_displacement():
    field = np.full(SHAPE + (3,), 2.0, dtype=np.float32)
    fix = np.array([[-1.5, 3.0, 3.0], [5.0, SHAPE[1] + 0.7, 4.0], [-0.2, 4.0, 4.0], [10.0, 10.0, 10.0]])
    mov = fix + np.array([0.0, 0.0, 1.0])
    ours, _ = check_against_reference(field, fix, mov)
    np.testing.assert_allclose(ours[:3], [0.5, 0.5, 0.5], atol=1e-12)  # u = 0: TRE = |(0,0,1)| * 0.5 mm
    assert ours[3] == pytest.approx(np.linalg.norm([2.0, 2.0, 1.0]) * 0.5)


def test_block_sampling_equals_full_volume_map_coordinates():
    rng = np.random.default_rng(3)
    shape = (90, 84, 96)
    field = (gaussian_filter(rng.standard_normal(shape + (3,)), (2, 2, 2, 0)) * 30).astype(np.float32)
    inside = rng.uniform(0, np.asarray(shape) - 1, (40, 3))
    edges = np.array([[0, 0, 0], [89, 83, 95], [0.3, 41.2, 95.0], [88.9, 0.1, 50], [45, 83, 0.5],
                      [-0.4, 10, 10], [89.6, 10, 10], [-30, -30, -30], [200, 40, 40], [21.5, 30.5, 22.5]])
    points = np.concatenate([inside, edges])
    full = np.stack([map_coordinates(field[..., c].astype(np.float64), points.T) for c in range(3)], axis=1)
    np.testing.assert_allclose(M.sample_displacement(field, points), full, atol=1e-9, rtol=0)
    # Learn2Reg main's .npz path samples a float32 array (float32 output): mirrored exactly by the option
    full32 = np.stack([map_coordinates(field[..., c], points.T) for c in range(3)], axis=1)
    np.testing.assert_array_equal(M.sample_displacement(field, points, np.float32), full32.astype(np.float64))


def test_random_smooth_field_sdlogj_matches_reference():
    rng = np.random.default_rng(5)
    field = (gaussian_filter(rng.standard_normal(SHAPE + (3,)), (2, 2, 2, 0)) * 8).astype(np.float32)
    fix = rng.uniform(0, np.asarray(SHAPE) - 1, (8, 3))
    check_against_reference(field, fix, fix + 1)


def test_aggregates_and_worst30():
    values = [3.0, 1.0, 2.0, 5.0, 4.0]
    agg = M.aggregate(values)
    assert agg == {"mean": 3.0, "std": pytest.approx(np.std(values)), "30": pytest.approx(np.quantile(values, 0.3))}
    assert agg["30"] == pytest.approx(2.2)
    assert M.worst_fraction_mean([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == 9.0  # worst 3 of 10
    assert M.worst_fraction_mean([1.0, 4.0]) == 4.0  # ceil(0.6) = 1


def test_fortran_ordered_field_same_plausibility_and_tre():
    """nibabel gives Fortran-ordered arrays; the memory-order view must not change any number."""
    rng = np.random.default_rng(7)
    field = (gaussian_filter(rng.standard_normal(SHAPE + (3,)), (1.5, 1.5, 1.5, 0)) * 12).astype(np.float32)
    fortran = np.asfortranarray(field)
    a, b = M.plausibility(field), M.plausibility(fortran)
    assert a[M.FOLDS] == b[M.FOLDS] > 0
    assert abs(a[M.SDLOGJ] - b[M.SDLOGJ]) < 1e-12
    assert abs(b[M.SDLOGJ] - official_sdlogj(field.astype(np.float64))[0]) < 1e-6
    points = rng.uniform(-1, np.asarray(SHAPE), (10, 3))
    np.testing.assert_array_equal(M.sample_displacement(field, points), M.sample_displacement(fortran, points))


def test_fast_nifti_reader_equals_nibabel_get_fdata(tmp_path):
    import gzip

    import nibabel as nib

    from evaluation.fields import load_field
    rng = np.random.default_rng(8)
    field = rng.standard_normal(SHAPE + (3,)).astype(np.float32)
    path = str(tmp_path / "disp_0001_0000_0001_0001.nii.gz")
    nib.save(nib.Nifti1Image(field, np.eye(4)), path)
    loaded = load_field(path, SHAPE, "k").field
    np.testing.assert_array_equal(loaded, nib.load(path).get_fdata())
    scaled = nib.Nifti1Image((field * 100).astype(np.int16), np.eye(4))
    scaled.header.set_slope_inter(0.01, 0.5)
    nib.save(scaled, path)
    np.testing.assert_array_equal(load_field(path, SHAPE, "k").field, nib.load(path).get_fdata())
    raw = gzip.decompress(open(path, "rb").read())  # two gzip members: still read completely
    open(path, "wb").write(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    np.testing.assert_array_equal(load_field(path, SHAPE, "k").field, nib.load(path).get_fdata())


def test_jacobian_plane_is_the_official_determinant_on_that_plane():
    # the report's Jacobian map comes from metrics.jacobian_plane: the official numbers on plane k, border = 1
    rng = np.random.default_rng(7)
    field = gaussian_filter(rng.standard_normal(SHAPE + (3,)), (1, 1, 1, 0)).astype(np.float32) * 12
    reference = official_jacobian_determinant(field.astype(np.float64))  # cropped (X-4, Y-4, Z-4)
    for k in (M.CROP, M.CROP + 1, SHAPE[2] // 2, SHAPE[2] - M.CROP - 1):
        plane = M.jacobian_plane(field, k)
        assert plane.shape == SHAPE[:2]
        np.testing.assert_allclose(plane[M.CROP:-M.CROP, M.CROP:-M.CROP], reference[:, :, k - M.CROP], rtol=0,
                                   atol=1e-12)
        assert (plane[:M.CROP] == 1).all() and (plane[:, -M.CROP:] == 1).all()
    assert (reference <= 0).any()  # the field folds somewhere: the comparison covers negative determinants
    with pytest.raises(ValueError, match="border"):
        M.jacobian_plane(field, 1)
