"""Simulated cases (MNI152 anatomy, no ../shared data needed): determinism, layout, exact ground truth."""
import json
import os

import numpy as np
import nibabel as nib
import pytest
from scipy import ndimage

from simulation.cases import make_simulated_case, write_dataset
from simulation.fields import invert_field, warp
from simulation import ultrasound

SHAPE, SP = (48, 48, 48), 128.0 / 48


@pytest.fixture(scope="module")
def case():
    return make_simulated_case(5, anatomy="mni152", shape=SHAPE, spacing=SP)


def test_keys_types(case):
    assert case["fixed"].shape == SHAPE and case["fixed"].dtype == np.float32
    assert set(case["moving"]) == {"ceT1", "T2"}
    for m in case["moving"].values():
        assert m.shape == SHAPE and m.dtype == np.float32
    assert case["true_displacement"].shape == SHAPE + (3,)
    assert case["affine"].shape == (4, 4)
    assert 10 <= len(case["fixed_landmarks"]) <= 20
    # oblique affine
    assert np.abs(case["affine"][:3, :3] / SP - np.eye(3)).max() > 0.05


def test_determinism(case):
    again = make_simulated_case(5, anatomy="mni152", shape=SHAPE, spacing=SP)
    np.testing.assert_array_equal(again["fixed"], case["fixed"])
    np.testing.assert_array_equal(again["moving"]["T2"], case["moving"]["T2"])
    np.testing.assert_array_equal(again["fixed_landmarks"], case["fixed_landmarks"])
    other = make_simulated_case(6, anatomy="mni152", shape=SHAPE, spacing=SP)
    assert not np.array_equal(other["fixed"], case["fixed"])


def test_landmarks_exact(case):
    p, q = case["fixed_landmarks"], case["moving_landmarks"]
    # (the moving landmarks are written as p + u(p) on the grid, so comparing them with that is no test:)
    # the grid field must send p within 0.05 voxel of the ANALYTIC moving point it was solved for
    assert case["landmark_grid_vs_analytic_vox"] < 0.05
    assert ultrasound.in_fan(p, case["fan"]).all()
    assert np.all((q >= 0) & (q <= np.asarray(SHAPE) - 1))


def test_warp_pattern_agrees(case):
    # a smooth test pattern on the moving grid, pulled back by u, equals the pattern at p + u(p)
    u = case["true_displacement"]
    g = np.indices(SHAPE, dtype=np.float32)
    pattern = np.sin(g[0] / 5.0) + np.cos(g[1] / 7.0) * np.sin(g[2] / 6.0)
    w = warp(pattern, u)
    p = case["fixed_landmarks"]
    a = ndimage.map_coordinates(w, p.T, order=1)
    qq = case["moving_landmarks"].T
    b = np.sin(qq[0] / 5.0) + np.cos(qq[1] / 7.0) * np.sin(qq[2] / 6.0)
    assert np.abs(a - b).max() < 0.05


def test_inverse_residual(case):
    v, res = invert_field(case["true_displacement"], iterations=40, tol=1e-5)
    assert res < 2e-3
    assert case["min_jacobian"] > 0.3


def test_fan(case):
    us, fan = case["fixed"], case["fan_mask"]
    assert np.all(us[~fan] == 0)
    assert np.all(us[fan] > 0)
    assert 0.2 < fan.mean() < 0.5


def test_initial_tre_range():
    tre = []
    for s in range(2):
        c = make_simulated_case(20 + s, anatomy="mni152", shape=(32, 32, 32), spacing=4.0)
        tre.append(c["initial_tre_mm"].mean())
        assert abs(c["initial_tre_mm"].mean() - c["target_tre_mm"]) < 0.5 * c["target_tre_mm"]
    assert 2.0 < np.mean(tre) < 10.0


def test_written_layout(case, tmp_path):
    path = write_dataset([case], str(tmp_path), start_id=7)
    js = json.load(open(path))
    assert js["eval_pairs"] == [
        {"fixed": "./imagesTr/ReMIND2Reg_0007_0000.nii.gz", "moving": "./imagesTr/ReMIND2Reg_0007_0001.nii.gz"},
        {"fixed": "./imagesTr/ReMIND2Reg_0007_0000.nii.gz", "moving": "./imagesTr/ReMIND2Reg_0007_0002.nii.gz"}]
    for m in range(3):
        img = nib.load(tmp_path / "imagesTr" / f"ReMIND2Reg_0007_{m:04d}.nii.gz")
        assert img.shape == SHAPE
        np.testing.assert_allclose(img.affine, case["affine"], atol=1e-5)
        lm = np.loadtxt(tmp_path / "landmarksTr" / f"ReMIND2Reg_0007_{m:04d}.csv", delimiter=",")
        ref = case["fixed_landmarks"] if m == 0 else case["moving_landmarks"]
        np.testing.assert_allclose(lm, ref, atol=1e-5)
    assert (tmp_path / "landmarksTr" / "ReMIND2Reg_0007_0001.csv").read_text().count(",") == 2 * len(ref)
    us = np.asarray(nib.load(tmp_path / "imagesTr" / "ReMIND2Reg_0007_0000.nii.gz").get_fdata())
    np.testing.assert_array_equal(us, case["fixed"])


def test_cli_help_and_demo(tmp_path):
    from simulation.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    from simulation.demo import make_demo_dataset
    out = make_demo_dataset(str(tmp_path / "demo"), shape=48)
    assert os.path.exists(os.path.join(out, "ReMIND2Reg_dataset.json"))
    assert os.path.exists(os.path.join(out, "imagesTr", "ReMIND2Reg_0001_0002.nii.gz"))
