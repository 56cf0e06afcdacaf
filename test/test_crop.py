"""The registration box (model/crop.py): the fan's box, the pose moved back to the full frame, and the field
continued outside the box; checked on hand-computed cases."""
import numpy as np
import pytest
import torch

from model.config import CropSettings
from model.crop import Box, fan_box, full_box, pose_in_full_frame
from model.stages import Deformation, GlobalPose, full_resolution_field

ON = CropSettings(enabled=True, margin_mm=2.0)


def test_fan_box_is_the_bounding_box_plus_margin_clipped():
    fixed = np.zeros((40, 30, 20), np.float32)
    fixed[10:21, 5:9, 15:19] = 1.0               # fan voxels i 10..20, j 5..8, k 15..18
    box = fan_box(fixed, (0.5, 1.0, 2.0), ON, 0.0)  # 2 mm = 4, 2, 1 voxels
    assert box.lo == (6, 3, 14) and box.hi == (25, 11, 20) and box.full_shape == (40, 30, 20)
    assert box.shape == (19, 8, 6) and box.cut(fixed).sum() == fixed.sum()


def test_fan_box_whole_grid_when_off_or_empty():
    fixed = np.zeros((8, 9, 10), np.float32)
    assert fan_box(fixed, (1, 1, 1), ON, 0.0).is_full          # empty fan
    fixed[2:4, 2:4, 2:4] = 1
    assert fan_box(fixed, (1, 1, 1), CropSettings(enabled=False, margin_mm=0.0), 0.0).is_full
    assert not fan_box(fixed, (1, 1, 1), ON, 0.0).is_full


def test_pose_in_full_frame_maps_the_same_points():
    rng = np.random.default_rng(0)
    angle = 0.2
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:2, :2] = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix[:3, 3] = torch.tensor([1.5, -2.0, 0.25])
    spacing = (0.5, 0.8, 1.2)
    box = Box((10, 4, 7), (30, 20, 19), (50, 40, 30))
    full = pose_in_full_frame(matrix, box, spacing)
    origin = np.array([10 * 0.5, 4 * 0.8, 7 * 1.2])
    x_full = rng.uniform(0, 20, size=(5, 3))
    y_box = (matrix[:3, :3].numpy() @ (x_full - origin).T).T + matrix[:3, 3].numpy()  # in the box's frame
    y_full = (full[:3, :3].numpy() @ x_full.T).T + full[:3, 3].numpy()
    np.testing.assert_allclose(y_full, y_box + origin, atol=1e-12)
    assert pose_in_full_frame(matrix, full_box((50, 40, 30)), spacing) is matrix


def test_field_from_a_box_is_the_box_field_inside_and_its_border_outside():
    shape, spacing = (20, 16, 12), (0.5, 0.5, 1.0)
    box = Box((4, 3, 2), (14, 11, 9), shape)
    # a box field (mm) varying along i only, on the box's own voxel grid: u_i = 0.1 * (i - lo_i) mm
    ramp = torch.arange(box.shape[0], dtype=torch.float32) * 0.1
    field = torch.zeros((3,) + box.shape)
    field[0] = ramp.view(-1, 1, 1)
    field[2] = 0.3
    shift = torch.eye(4)
    shift[:3, 3] = torch.tensor([0.5, -1.0, 2.0])  # a pure translation (mm) in the full frame
    disp, jmin, scale = full_resolution_field(GlobalPose(shift), Deformation(field, (0.5, 0.5, 1.0)), 1.0,
                                              shape, spacing, box)
    assert disp.shape == shape + (3,) and scale == 1.0 and jmin > 0
    expected_i = np.empty(shape[0])
    expected_i[:4], expected_i[4:14], expected_i[14:] = 0.0, np.arange(10) * 0.1, 0.9  # replicated border
    np.testing.assert_allclose(disp[:, 7, 5, 0], (expected_i + 0.5) / 0.5, atol=1e-5)
    np.testing.assert_allclose(disp[..., 1], -1.0 / 0.5, atol=1e-6)
    np.testing.assert_allclose(disp[..., 2], (0.3 + 2.0) / 1.0, atol=1e-6)
    # no box: the same deformation over the whole grid
    whole, _, _ = full_resolution_field(GlobalPose(shift), Deformation(torch.zeros((3,) + shape), spacing), 1.0,
                                        shape, spacing)
    np.testing.assert_allclose(whole[..., 0], 1.0, atol=1e-6)


@pytest.mark.parametrize("margin", [-1.0])
def test_negative_margin_is_refused(margin):
    from model import load_config

    with pytest.raises(ValueError, match="crop.margin_mm"):
        load_config(overrides={"crop": {"enabled": True, "margin_mm": margin}})


def test_registration_on_the_fan_box_recovers_a_translation_in_the_full_frame():
    from scipy import ndimage as ndi

    from model import Registration, load_config

    rng = np.random.default_rng(4)
    anatomy = ndi.gaussian_filter(rng.standard_normal((64, 60, 56)), 3.0)
    anatomy = ((anatomy - anatomy.min()) / np.ptp(anatomy) + 0.05).astype(np.float32)
    grid = np.indices(anatomy.shape)
    fan = ((grid[0] - 22) ** 2 + (grid[1] - 34) ** 2 + (grid[2] - 30) ** 2) < 15 ** 2  # off-centre "fan"
    fixed = np.where(fan, anatomy, 0).astype(np.float32)
    t = np.array([2.5, -2.0, 1.5])  # voxels = mm here: fixed x <-> moving x + t
    moving = ndi.shift(anatomy, t, order=1, mode="nearest").astype(np.float32)
    # a 3.5 mm shift is inside the small-shift gate's ramp (2-4 mm rms): off, as in every recovery test
    fast = {"refine": {"iterations": 30}, "refine_fine": {"iterations": 30}, "global": {"iterations": 1, "max_iterations": 2},
            "safety": {"small_shift": {"enabled": False}}}
    results = {}
    for enabled in (False, True):
        cfg = load_config(overrides={**fast, "crop": {"enabled": enabled, "margin_mm": 6.0}})
        results[enabled] = Registration(cfg, device="cpu").register(fixed, {"ceT1": moving}, (1.0,) * 3, "ceT1")
    for result in results.values():
        inside = result.displacement[fan]
        np.testing.assert_allclose(np.median(inside, axis=0), t, atol=0.5)
        assert result.min_jacobian > 0 and result.displacement.shape == fixed.shape + (3,)
    # the pose is reported in the full grid's frame: it moves the fan's centre by about t either way
    for result in results.values():
        centre = np.array([22.0, 34.0, 30.0])
        moved = result.affine_mm[:3, :3] @ centre + result.affine_mm[:3, 3]
        assert np.linalg.norm(moved - centre - t) < 1.0
