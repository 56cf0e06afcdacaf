"""The real model on anisotropic, non-1 mm voxels (issue 14): a translation in mm is found as its own number of
voxels along each axis. 40^3 voxels, a FAST config: about 10-25 s on a loaded 2-core machine (not in the
mutation subset for that reason; test_anisotropic.py kills the conversion's mutants in milliseconds)."""
import numpy as np
from scipy import ndimage as ndi

from model import Registration, load_config

SPACING = (0.5, 0.8, 1.1)


def blobs(shape, seed=0, sigma=3.0):
    rng = np.random.default_rng(seed)
    v = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return ((v - v.min()) / (v.max() - v.min()) + 0.05).astype(np.float32)


FAST = {"refine": {"iterations": 30}, "refine_fine": {"iterations": 30}, "global": {"iterations": 1, "max_iterations": 2, "levels_mm": [4.0, 2.0], "radius": 3},
        "deformable_discrete": {"levels_mm": [2.0]}, "safety": {"small_shift": {"enabled": False}}}


def test_real_model_recovers_a_mm_translation_in_voxels_of_each_axis():
    # 40^3 voxels of (0.5, 0.8, 1.1) mm; the MR is the iUS moved by (2, 3, -2) voxels = (1.0, 2.4, -2.2) mm
    shape, t_vox = (40, 40, 40), np.array([2.0, 3.0, -2.0])
    fixed = blobs(shape, seed=4)
    moving = ndi.shift(fixed, t_vox, order=1, mode="nearest").astype(np.float32)
    result = Registration(load_config(overrides=FAST), device="cpu").register(fixed, {"ceT1": moving}, SPACING,
                                                                               "ceT1")
    median = np.median(result.displacement[8:-8, 8:-8, 8:-8].reshape(-1, 3), axis=0)
    # every wrong conversion is >= 0.6 voxel off on some axis: multiplying (0.5, 1.9, -2.4),
    # reversed spacing (0.9, 3, -4), 1 mm voxels (1, 2.4, -2.2)
    np.testing.assert_allclose(median, t_vox, atol=0.4)
    assert result.min_jacobian > 0
