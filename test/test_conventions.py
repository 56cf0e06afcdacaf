"""Conventions against hand-computed cases: names, axis order, units, direction and both field forms."""
import numpy as np
import pytest
import SimpleITK as sitk

from interfaces import conventions as cv


def oblique_grid(shape=(12, 10, 8), spacing=(0.5, 0.7, 0.9)):
    # a rotation about an oblique axis, so every physical axis mixes every index axis
    angle, axis = 0.6, np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return cv.Grid(shape, spacing, (10.0, -20.0, 5.0), tuple(rotation.ravel()))


def test_names_round_trip():
    assert cv.image_name("0042", 2) == "ReMIND2Reg_0042_0002.nii.gz"
    assert cv.displacement_name("0042", 1) == "disp_0042_0000_0042_0001.nii.gz"
    assert cv.parse_image_name("ReMIND2Reg_0042_0002.mha") == ("0042", 2)
    assert cv.parse_displacement_name("disp_0042_0000_0042_0001.npz") == ("0042", 1)
    assert cv.parse_displacement_name("disp_0042_0000_0043_0001.nii.gz") is None
    assert cv.parse_image_name("notes.txt") is None
    assert cv.pair_key("0042", 1) == "0042_0000<--0042_0001"


def test_array_order_is_index_order():
    grid = oblique_grid()
    array = np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape)
    image = cv.image_from_array(array, grid)
    assert image.GetSize() == grid.shape
    # SimpleITK's GetPixel takes the index (i, j, k): same element as array[i, j, k]
    assert image.GetPixel(3, 2, 1) == array[3, 2, 1]
    np.testing.assert_array_equal(cv.array_from_image(image), array)


def test_nifti_affine_is_ras_of_itk_geometry():
    grid = oblique_grid()
    image = cv.image_from_array(np.zeros(grid.shape, np.float32), grid)
    index = (3, 4, 5)
    lps = np.array(image.TransformIndexToPhysicalPoint(index))
    ras = grid.nifti_affine() @ np.array(index + (1,))
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_voxel_field_to_physical_by_hand(axis):
    # a shift of 2 voxels along index axis `axis` is 2 * spacing[axis] mm along that axis' direction column
    grid = oblique_grid()
    field = np.zeros(grid.shape + (3,), np.float32)
    field[..., axis] = 2.0
    image = cv.voxel_to_physical_field(field, grid)
    assert image.GetDimension() == 4 and image.GetSize() == grid.shape + (3,)
    array = sitk.GetArrayFromImage(image)
    assert array.shape == (3,) + grid.shape[::-1]
    expected = 2.0 * grid.spacing[axis] * grid.direction_matrix[:, axis]
    np.testing.assert_allclose(array[:, 1, 2, 3], expected, atol=1e-5)
    back, back_grid = cv.physical_to_voxel_field(image)
    assert back_grid.matches(grid)
    np.testing.assert_allclose(back, field, atol=1e-5)


def test_physical_field_meaning_matches_sitk_transform():
    # fixed point p maps to moving point p + d(p), as DisplacementFieldTransform reads it
    grid = oblique_grid()
    rng = np.random.default_rng(0)
    field = rng.normal(0, 1.5, grid.shape + (3,)).astype(np.float32)
    transform = cv.physical_field_to_transform(cv.voxel_to_physical_field(field, grid))
    index = np.array([4, 5, 3])
    point = grid.physical_point(index[None])[0]
    moved = np.array(transform.TransformPoint(tuple(point)))
    expected = grid.physical_point((index + field[tuple(index)])[None])[0]
    np.testing.assert_allclose(moved, expected, atol=1e-4)


def test_channel_first_is_named():
    with pytest.raises(ValueError, match="channel-first"):
        cv.check_voxel_field(np.zeros((3, 4, 5, 6)), (4, 5, 6))
    bad = np.zeros((4, 5, 6, 3))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cv.check_voxel_field(bad, (4, 5, 6))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_warp_shift_sign(axis):
    # u = +1 along an axis means the warped image at x shows the moving image at x + 1
    moving = np.random.default_rng(1).random((9, 8, 7)).astype(np.float32)
    field = np.zeros(moving.shape + (3,), np.float32)
    field[..., axis] = 1.0
    warped = cv.warp_with_voxel_field(moving, field, order=1)
    inner = [slice(0, n - 1) for n in moving.shape]
    source = list(inner)
    source[axis] = slice(1, moving.shape[axis])
    np.testing.assert_allclose(warped[tuple(inner)], moving[tuple(source)], atol=1e-6)


def test_round_trip_warp_both_forms_agree():
    # warping an oblique, anisotropic moving image with the voxel field or with SimpleITK and the DSPF
    # image gives the same result
    grid = oblique_grid(shape=(20, 18, 16))
    x = np.meshgrid(*[np.linspace(0, 3, n) for n in grid.shape], indexing="ij")
    moving = (np.sin(x[0]) * np.cos(x[1]) + x[2]).astype(np.float32)
    rng = np.random.default_rng(2)
    smooth = np.stack([np.full(grid.shape, rng.uniform(-1.5, 1.5)) + 0.5 * np.sin(x[c]) for c in range(3)], -1)
    field = smooth.astype(np.float32)
    ours = cv.warp_with_voxel_field(moving, field, order=1)
    moving_image = cv.image_from_array(moving, grid)
    transform = cv.physical_field_to_transform(cv.voxel_to_physical_field(field, grid))
    theirs = cv.array_from_image(sitk.Resample(moving_image, moving_image, transform, sitk.sitkLinear, 0.0))
    inner = tuple(slice(3, n - 3) for n in grid.shape)
    np.testing.assert_allclose(theirs[inner], ours[inner], atol=1e-4)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_warp_one_slice_equals_the_full_warp(axis):
    rng = np.random.default_rng(3)
    moving = rng.random((9, 8, 7)).astype(np.float32)
    field = rng.normal(0, 1.2, moving.shape + (3,)).astype(np.float32)
    full = cv.warp_with_voxel_field(moving, field)
    one = cv.warp_with_voxel_field(moving, field, slice_axis=axis, slice_index=4)
    np.testing.assert_allclose(one, np.take(full, 4, axis=axis), atol=1e-6)


def test_field_memory_layout_changes_no_output_byte():
    # the model returns (i, j, k, 3) as a view of a (3, k, j, i) block (the writers' order); a C-ordered
    # field with the same values must give the same .nii.gz bytes and the same DSPF array
    import filecmp
    import os
    import tempfile

    from interfaces.images import write_voxel_field_nifti
    grid = oblique_grid()
    c_order = np.random.default_rng(1).normal(0, 2, grid.shape + (3,)).astype(np.float32)
    planar = np.ascontiguousarray(c_order.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    assert not planar.flags.c_contiguous and np.array_equal(planar, c_order)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"{n}.nii.gz") for n in ("c", "planar")]
        for path, field in zip(paths, (c_order, planar)):
            write_voxel_field_nifti(path, field, grid.nifti_affine())
        assert filecmp.cmp(*paths, shallow=False)
    a, b = (sitk.GetArrayFromImage(cv.voxel_to_physical_field(f, grid)) for f in (c_order, planar))
    np.testing.assert_array_equal(a, b)
