"""A classic peer for the benchmark: SimpleITK Mattes mutual information, rigid then B-spline.

This is the textbook multi-modal pipeline an entrant would try first (ITK's v4 registration framework),
masked to the iUS fan. It returns the organisers' voxel field, converted through interfaces.conventions.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from interfaces import conventions as cv


def _registration_method(fan_mask: sitk.Image, shrink: list[int], smooth: list[float]):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed=7)  # fixed seed: deterministic results
    method.SetMetricFixedMask(fan_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(smooth)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def register_mi(fixed: np.ndarray, moving: np.ndarray, grid: cv.Grid, bspline: bool = True) -> np.ndarray:
    """Voxel field (i, j, k, 3) taking `fixed` voxels to `moving` locations (both on `grid`)."""
    fixed_image = cv.image_from_array(fixed.astype(np.float32), grid)
    moving_image = cv.image_from_array(moving.astype(np.float32), grid)
    fan_mask = cv.image_from_array((fixed > 0).astype(np.uint8), grid)

    rigid = _registration_method(fan_mask, [4, 2], [1.0, 1.0])
    initial = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    rigid.SetInitialTransform(initial, inPlace=False)
    rigid.SetOptimizerAsRegularStepGradientDescent(learningRate=0.25, minStep=1e-3, numberOfIterations=200)
    rigid.SetOptimizerScalesFromPhysicalShift()
    transform = rigid.Execute(fixed_image, moving_image)

    if bspline:
        mesh = [max(1, int(round(n * s / 20.0))) for n, s in zip(grid.shape, grid.spacing)]  # ~20 mm knots
        free_form = sitk.BSplineTransformInitializer(fixed_image, mesh)
        deformable = _registration_method(fan_mask, [4, 2], [2.0, 1.0])
        deformable.SetMovingInitialTransform(transform)
        deformable.SetInitialTransform(free_form, inPlace=True)
        deformable.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=50)
        try:
            deformable.Execute(fixed_image, moving_image)
            transform = sitk.CompositeTransform([transform, free_form])
        except RuntimeError as error:  # ITK gives up when samples leave the moving buffer: keep the rigid result
            print(f"sitk-mi peer: B-spline stage failed, rigid result kept ({str(error).splitlines()[-1][:120]})")

    # the transform maps fixed physical points to moving ones: exactly the DSPF meaning
    displacement = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, fixed_image.GetSize(), fixed_image.GetOrigin(),
        fixed_image.GetSpacing(), fixed_image.GetDirection())
    field, _ = cv.physical_to_voxel_field(displacement)
    return field
