"""Hybrid real cases (RESECT 24 + known synthetic deformation). Skipped when ../shared/data is missing."""
import os

import numpy as np
import pytest

from simulation import hybrid
from simulation.fields import sample_field

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(hybrid.CASE24_DIR, "us.nii.gz")),
                                reason="../shared/data/resect-case24 not available")


@pytest.fixture(scope="module")
def case():
    return hybrid.make_hybrid_case(3, magnitude_mm=5.0)


def test_keys_and_types(case):
    for k in ("fixed", "moving", "spacing", "affine", "fixed_landmarks", "moving_landmarks", "true_displacement"):
        assert k in case
    assert case["fixed"].dtype == np.float32 and case["fixed"].shape == (94, 107, 107)
    assert set(case["moving"]) == {"ceT1", "T2"}
    for m in case["moving"].values():
        assert m.dtype == np.float32 and m.shape == case["fixed"].shape
    assert case["affine"].shape == (4, 4)
    assert case["true_displacement"].shape == case["fixed"].shape + (3,)


def test_landmarks_carried_exactly(case):
    # y + v(y) == original MRI point (v = the added map, analytic; grid sample is its trilinear approx)
    y = case["moving_landmarks"]
    q = case["moving_landmarks_original"]
    assert case["landmark_inverse_residual_vox"] < 1e-6
    approx = y + sample_field(case["added_map_voxels"], y)
    assert np.abs(approx - q).max() < 0.05  # trilinear vs analytic, smooth field


def test_magnitude_and_determinism(case):
    sp = np.asarray(case["spacing"])
    added = np.linalg.norm((case["moving_landmarks"] - case["moving_landmarks_original"]) * sp, axis=1)
    assert abs(added.mean() - 5.0) < 1e-3
    again = hybrid.make_hybrid_case(3, 5.0, with_true_displacement=False)
    np.testing.assert_array_equal(again["moving"]["ceT1"], case["moving"]["ceT1"])
    np.testing.assert_allclose(again["moving_landmarks"], case["moving_landmarks"])


def test_warped_image_matches_landmark_mapping(case):
    # the warped MRI sampled at the carried landmark equals the original MRI at the original landmark
    from scipy import ndimage
    orig = hybrid.load_case24()["t1"]
    a = ndimage.map_coordinates(case["moving"]["ceT1"], case["moving_landmarks"].T, order=1)
    b = ndimage.map_coordinates(orig, case["moving_landmarks_original"].T, order=1)
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_embed_keeps_world_positions_images_and_truth(case):
    big = hybrid.embed_case(case, 128)
    off = np.array([(128 - n) // 2 for n in case["fixed"].shape])
    assert big["fixed"].shape == (128, 128, 128) and big["true_displacement"].shape == (128, 128, 128, 3)
    world = lambda aff, pts: pts @ aff[:3, :3].T + aff[:3, 3]
    for key in ("fixed_landmarks", "moving_landmarks"):
        np.testing.assert_allclose(big[key], case[key] + off)
        np.testing.assert_allclose(world(big["affine"], big[key]), world(case["affine"], case[key]), atol=1e-9)
    inner = tuple(slice(o, o + n) for o, n in zip(off, case["fixed"].shape))
    np.testing.assert_array_equal(big["fixed"][inner], case["fixed"])
    np.testing.assert_array_equal(big["moving"]["T2"][inner], case["moving"]["T2"])
    np.testing.assert_array_equal(big["true_displacement"][inner], case["true_displacement"])
    assert big["fixed"][:off[0]].max() == 0  # the iUS is empty outside its original box
    with pytest.raises(ValueError, match="cannot embed"):
        hybrid.embed_case(case, 64)
