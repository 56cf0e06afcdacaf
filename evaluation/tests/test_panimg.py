"""Our Grand Challenge displacement field (DSPF) through panimg, the platform's image importer (dev dependency).

The .mha is written exactly as the algorithm writes it (interfaces.conventions.voxel_to_physical_field +
interfaces.images.write_sitk_image). The platform stores what panimg reports and then checks a DSPF socket's
image (comic/grand-challenge.org, app/grandchallenge/components/models.py `_validate_vector_field`, with
`Image.shape` from app/grandchallenge/cases/models.py: [(t), (z), y, x, (c)]): 4-D, no colour component,
shape[0] == 3. The evaluation then reads the platform's stored copy, so that copy must give back our field.
"""
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

panimg = pytest.importorskip("panimg", reason="panimg (the platform's importer) is not installed; "
                                              "pip install -r requirements-dev.txt")
from panimg.image_builders import image_builder_mhd  # noqa: E402
from panimg.models import ColorSpace, ImageType  # noqa: E402

from evaluation.fields import load_field  # noqa: E402
from evaluation.tests import synth  # noqa: E402
from interfaces.conventions import voxel_to_physical_field  # noqa: E402
from interfaces.images import write_sitk_image  # noqa: E402


def platform_shape(image) -> list[int]:
    """Image.shape as the platform computes it from panimg's fields: [(t), (z), y, x, (c)]."""
    shape = [s for s in (image.timepoints, image.depth) if s is not None] + [image.height, image.width]
    return shape + ([{ColorSpace.RGB: 3, ColorSpace.RGBA: 4}[image.color_space]]
                    if image.color_space in (ColorSpace.RGB, ColorSpace.RGBA) else [])


def convert(tmp_path: Path, image: sitk.Image):
    source, target = tmp_path / "upload", tmp_path / "stored"
    source.mkdir()
    target.mkdir()
    write_sitk_image(str(source / "displacement.mha"), image)
    result = panimg.convert(input_directory=source, output_directory=target, builders=[image_builder_mhd])
    assert not result.file_errors, result.file_errors
    assert len(result.new_images) == 1 and len(result.new_image_files) == 1
    return next(iter(result.new_images)), next(iter(result.new_image_files))


def test_our_dspf_is_a_valid_displacement_field_for_the_platform(tmp_path):
    field = synth.smooth_field()                       # (i, j, k, 3) = (32, 30, 28, 3) voxels
    grid = synth.oblique_grid()
    image, stored = convert(tmp_path, voxel_to_physical_field(field, grid))
    assert stored.image_type == ImageType.MHD
    assert (image.timepoints, image.depth, image.height, image.width) == (3, 28, 30, 32)
    assert image.color_space == ColorSpace.GRAY
    assert (image.voxel_width_mm, image.voxel_height_mm, image.voxel_depth_mm) == pytest.approx((0.5, 0.5, 0.5))
    shape = platform_shape(image)
    assert len(shape) == 4 and shape[0] == 3            # the platform's DSPF rules: 4-D, 3 components, no colour
    # the copy the platform keeps (and hands to the evaluation) gives back our voxel field on the same grid
    loaded = load_field(str(stored.file), None, "pair")
    assert loaded.grid.matches(grid)
    np.testing.assert_allclose(loaded.field, field, atol=1e-5)


def test_a_3d_vector_image_would_be_rejected(tmp_path):
    # the form DisplacementFieldTransform uses (3-D, 3 components per voxel) is read by panimg as colour
    field = synth.smooth_field()
    vector = sitk.GetImageFromArray(np.ascontiguousarray(field.transpose(2, 1, 0, 3)), isVector=True)
    image, _ = convert(tmp_path, vector)
    assert image.timepoints is None and image.color_space == ColorSpace.RGB
    shape = platform_shape(image)
    assert len(shape) != 4 or shape[0] != 3            # fails the platform's DSPF check
