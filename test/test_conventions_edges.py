"""interfaces/conventions.py against independent oracles (ITK's own index -> physical mapping) and at its edges:
every check here kills a mutant that the round-trip tests of test_conventions.py let through (docs/TESTING.md).
All cases are tiny: the whole file runs in about a second, so it belongs to the mutation-testing subset."""
import numpy as np
import pytest
import SimpleITK as sitk

from interfaces import conventions as cv

# anisotropic spacing and an oblique direction whose matrix is NOT symmetric, so a transposed direction
# matrix, permuted spacing or fixed-for-moving spacing gives different numbers
SPACING = (0.5, 0.8, 1.1)


def oblique(shape=(7, 6, 5), spacing=SPACING, origin=(3.0, -4.0, 2.5)):
    angle, axis = 0.7, np.array([1.0, -2.0, 3.0]) / np.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    assert np.abs(rotation - rotation.T).max() > 0.5  # transposing it changes it a lot
    return cv.Grid(tuple(shape), tuple(spacing), tuple(origin), tuple(rotation.ravel()))


def itk_image(grid):
    return cv.image_from_array(np.zeros(grid.shape, np.float32), grid)


def test_voxel_to_physical_agrees_with_itk_index_to_physical_mapping():
    # oracle: ITK's TransformContinuousIndexToPhysicalPoint, not the project's own D * diag(spacing)
    grid = oblique()
    image = itk_image(grid)
    rng = np.random.default_rng(0)
    field = rng.uniform(-2, 2, grid.shape + (3,)).astype(np.float32)
    dspf = cv.voxel_to_physical_field(field, grid)
    array = sitk.GetArrayFromImage(dspf)  # (3, k, j, i)
    for x in [(0, 0, 0), (3, 2, 1), (6, 5, 4), (2, 4, 3)]:
        u = field[x].astype(np.float64)
        p0 = np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in x)))
        p1 = np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in np.add(x, u))))
        np.testing.assert_allclose(array[:, x[2], x[1], x[0]], p1 - p0, atol=1e-5)


def test_physical_to_voxel_agrees_with_itk_physical_to_index_mapping():
    # a DSPF built from ITK's physical -> index mapping alone; the project's inverse must give the same voxels
    grid = oblique()
    image = itk_image(grid)
    d = np.array([1.3, -0.7, 2.1])  # mm, LPS
    expected = np.empty(grid.shape + (3,))
    for x in np.ndindex(grid.shape):
        p = np.array(image.TransformIndexToPhysicalPoint(x))
        expected[x] = np.array(image.TransformPhysicalPointToContinuousIndex(tuple(p + d))) - x
    array = np.broadcast_to(d.reshape(3, 1, 1, 1), (3,) + grid.shape[::-1]).astype(np.float32)
    dspf = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    direction4 = np.eye(4)
    direction4[:3, :3] = grid.direction_matrix
    dspf.SetSpacing(grid.spacing + (1.0,))
    dspf.SetOrigin(grid.origin + (0.0,))
    dspf.SetDirection(tuple(direction4.ravel()))
    field, back = cv.physical_to_voxel_field(dspf)
    assert field.dtype == np.float32 and back.matches(grid)
    np.testing.assert_allclose(field, expected, atol=1e-5)


def test_dspf_header_is_the_fixed_grid_plus_a_unit_fourth_axis():
    grid = oblique()
    dspf = cv.voxel_to_physical_field(np.zeros(grid.shape + (3,), np.float32), grid)
    assert dspf.GetPixelID() == sitk.sitkFloat32
    assert dspf.GetSpacing() == grid.spacing + (1.0,) and dspf.GetOrigin() == grid.origin + (0.0,)
    direction4 = np.asarray(dspf.GetDirection()).reshape(4, 4)
    np.testing.assert_array_equal(direction4[3], [0, 0, 0, 1])
    np.testing.assert_array_equal(direction4[:, 3], [0, 0, 0, 1])


def test_vector_image_form_converts_like_the_dspf():
    # the 3-D, 3-component form DisplacementFieldTransform uses: physical mm along LPS, (k, j, i, 3) array
    grid = oblique()
    rng = np.random.default_rng(1)
    field = rng.uniform(-2, 2, grid.shape + (3,)).astype(np.float32)
    physical = field.astype(np.float64) @ grid.index_to_physical.T
    vector = grid.apply_to(sitk.GetImageFromArray(physical.transpose(2, 1, 0, 3).copy(), isVector=True))
    back, back_grid = cv.physical_to_voxel_field(vector)
    assert back.dtype == np.float32 and back_grid.matches(grid)
    np.testing.assert_allclose(back, field, atol=1e-5)
    # and a 3-D scalar image or a 4-D image without 3 components is refused, naming why
    with pytest.raises(ValueError, match=r"^not a displacement field: 3-D image with 1 component\(s\) per pixel$"):
        cv.physical_to_voxel_field(itk_image(grid))
    four = sitk.GetImageFromArray(np.zeros((2, 5, 6, 7), np.float32), isVector=False)
    with pytest.raises(ValueError, match=r"^4-D displacement field must have last size 3, got size \(7, 6, 5, 2\)$"):
        cv.physical_to_voxel_field(four)


def test_grid_of_an_image_and_its_nifti_affine():
    grid = oblique()
    assert cv.Grid.of(itk_image(grid)) == grid
    with pytest.raises(ValueError, match="^expected a 3-D image, got 2-D$"):
        cv.Grid.of(sitk.Image([4, 4], sitk.sitkFloat32))
    affine = grid.nifti_affine()
    np.testing.assert_array_equal(affine[3], [0, 0, 0, 1])
    # index (2, 1, 3) in RAS = its ITK (LPS) point with x and y negated
    lps = itk_image(grid).TransformIndexToPhysicalPoint((2, 1, 3))
    np.testing.assert_allclose((affine @ [2, 1, 3, 1])[:3], np.array(lps) * [-1, -1, 1], atol=1e-9)
    np.testing.assert_allclose(grid.physical_point(np.array([[2, 1, 3]])), [lps], atol=1e-9)


def test_grid_matches_each_attribute_and_its_tolerance():
    base = cv.Grid((4, 5, 6), (0.5, 0.8, 1.1), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))

    def moved(**change):
        return cv.Grid(**{**base.__dict__, **change})

    assert base.matches(base)
    assert not base.matches(moved(shape=(4, 5, 7)))
    assert not base.matches(moved(spacing=(0.5, 0.801, 1.1)))                     # beyond 1e-4 mm
    assert base.matches(moved(spacing=(0.5, 0.80005, 1.1)))                       # within 1e-4 mm
    assert not base.matches(moved(origin=(0.0, 0.00105, 0.0)))                    # beyond 1e-3 mm
    assert base.matches(moved(origin=(0.0, 0.0005, 0.0)))                         # within 1e-3 mm
    direction = np.eye(3).ravel()
    assert not base.matches(moved(direction=tuple(direction + [0, 2e-4, 0, 0, 0, 0, 0, 0, 0])))
    assert base.matches(moved(direction=tuple(direction + [0, 5e-5, 0, 0, 0, 0, 0, 0, 0])))


def test_names_of_shard_timings():
    assert cv.timings_name() == "timings.json" and cv.timings_name((2, 5)) == "timings.2-of-5.json"
    assert cv.TIMINGS_NAME_RE.match(cv.timings_name((2, 5))).groups() == (".2-of-5", "2", "5")


def test_field_checks_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"^array shape \(3, 4, 5\) does not match grid \(7, 6, 5\)$"):
        cv.image_from_array(np.zeros((3, 4, 5), np.float32), oblique())
    with pytest.raises(ValueError, match=r"^displacement field has shape \(4, 5, 6, 2\), expected \(4, 5, 6, 3\)$"):
        cv.check_voxel_field(np.zeros((4, 5, 6, 2)), (4, 5, 6))
    with pytest.raises(ValueError, match=r"expected \(4, 5, 6, 3\) \(channel-first\? the channel must be last\)$"):
        cv.check_voxel_field(np.zeros((3, 4, 5, 6)), (4, 5, 6))
    field = np.zeros((4, 5, 6, 3))
    field[1, 2, 3, 0], field[0, 0, 0, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"^displacement field has 2 NaN/Inf values$"):
        cv.check_voxel_field(field, (4, 5, 6))


def test_warp_defaults_linear_zero_outside_float32_and_slices():
    moving = np.zeros((6, 1, 5), np.float32)  # a singleton axis: squeeze must only drop the sliced axis
    moving[2, 0, 2] = 1.0
    moving[4, 0, 0] = 2.0  # plane k = 0 differs from plane k = 1: a wrong default slice_index shows
    field = np.zeros((6, 1, 5, 3), np.float32)
    field[..., 0] = 0.25
    warped = cv.warp_with_voxel_field(moving, field)
    assert warped.dtype == np.float32 and warped.shape == (6, 1, 5)
    # linear (order 1): x + 0.25 between voxels 1 and 2 gets 0.25 of the impulse, 2.25 gets 0.75 of it
    np.testing.assert_allclose(warped[:, 0, 2], [0, 0.25, 0.75, 0, 0, 0], atol=1e-6)
    outside = np.full((6, 1, 5, 3), 0.0, np.float32)
    outside[..., 2] = 10.0  # every sample point beyond the grid: cval
    assert np.all(cv.warp_with_voxel_field(moving + 1, outside) == 0)
    assert np.all(cv.warp_with_voxel_field(moving + 1, outside, cval=5.0) == 5.0)
    one = cv.warp_with_voxel_field(moving, field, slice_axis=0, slice_index=1)
    assert one.shape == (1, 5) and one.dtype == np.float32
    np.testing.assert_array_equal(one, warped[1])
    np.testing.assert_array_equal(cv.warp_with_voxel_field(moving, field, slice_axis=2), warped[:, :, 0])
