"""Promises of the docs that no test held (issue 14): exit 1 through the command line, duplicate modality files,
a socket with 0 or 2 images, a bad inputs.json, a moving image whose direction differs from the fixed one's,
`multi_sequence`, and what triggers the identity fallback. Small and fast (an injected registration, or the
real stages on 32^3 with the slow ones off)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import process
from interfaces import conventions as cv
from test_process import (ROOT, SHAPE, FakeShift, blobs, make_case, make_gc_input, outputs, plain_grid,
                               read_field, write)


def test_a_failed_case_is_exit_1_through_the_command_line(tmp_path):
    make_case(tmp_path / "in", "0001", shift=(1, 0, 0), modalities=(1,))
    path = tmp_path / "in" / cv.image_name("0001", 0)
    path.write_bytes(path.read_bytes()[:200])  # truncated iUS: the case fails before any model is loaded
    done = subprocess.run([sys.executable, "process.py", "--input", str(tmp_path / "in"), "--output",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, REMIND2REG_SEQUENCES="ceT1"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("ERROR: run failed: ")
    assert "ReMIND2Reg_0001_0000.nii.gz" in done.stderr.strip().splitlines()[-1]


def test_two_files_of_one_modality_fail_that_case_alone(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", shift=(1, 0, 0), modalities=(1,))
    make_case(tmp_path / "in", "0002", shift=(0, 1, 0), modalities=(1,), suffix=".mha")
    write(tmp_path / "in" / cv.image_name("0001", 1, ".mha"), blobs(), plain_grid())  # a second ceT1 for 0001
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift(), sequences="ceT1") == 1
    err = capsys.readouterr().err
    assert "case 0001 has two ceT1 files" in err
    assert outputs(tmp_path / "out") == ["disp_0002_0000_0002_0001.nii.gz"]


@pytest.mark.parametrize("images", [0, 2])
def test_a_socket_without_exactly_one_image_is_named(tmp_path, capsys, images):
    make_case(tmp_path / "org", shift=(1, 0, 0))
    make_gc_input(tmp_path / "gc", tmp_path / "org")
    folder = tmp_path / "gc" / "images" / "preoperative-t1-contrast-mri"
    if images == 0:
        os.remove(folder / "uuid-1.mha")
    else:
        sitk.WriteImage(sitk.ReadImage(str(folder / "uuid-1.mha")), str(folder / "uuid-9.mha"))
    assert process.run(str(tmp_path / "gc"), str(tmp_path / "out"), registration=FakeShift()) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"socket 'preoperative-t1-contrast-mri' should hold exactly one image, found {images}" in last
    assert not os.path.exists(tmp_path / "out" / "images")


@pytest.mark.parametrize("content,fragment", [("[{not json", "inputs.json: cannot read"),
                                              ('{"socket": {}}', "expected a list of socket values, got dict")])
def test_a_bad_inputs_json_is_named(tmp_path, capsys, content, fragment):
    make_case(tmp_path / "org", shift=(1, 0, 0))
    make_gc_input(tmp_path / "gc", tmp_path / "org")
    (tmp_path / "gc" / "inputs.json").write_text(content)
    assert process.run(str(tmp_path / "gc"), str(tmp_path / "out"), registration=FakeShift()) == 1
    assert fragment in capsys.readouterr().err.strip().splitlines()[-1]


def test_moving_image_with_another_direction_is_resampled_by_physical_geometry(tmp_path):
    # the MR's index axes 0 and 1 swapped (another direction matrix, another shape): the same physical content,
    # moved by 2 voxels along the FIXED index axis 1, must come out as (0, 2, 0) voxels of the fixed grid
    fixed_grid = plain_grid()
    fixed = blobs(fixed_grid.shape)
    os.makedirs(tmp_path / "in")
    write(tmp_path / "in" / cv.image_name("0001", 0), fixed, fixed_grid)
    source = cv.image_from_array(np.roll(fixed, 2, axis=1), fixed_grid)
    swapped = cv.Grid((SHAPE[1], SHAPE[0], SHAPE[2]), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0),
                      (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    moving = sitk.Resample(source, cv.image_from_array(np.zeros(swapped.shape, np.float32), swapped),
                           sitk.Transform(), sitk.sitkLinear, 0.0)
    np.testing.assert_allclose(cv.array_from_image(moving), np.roll(fixed, 2, axis=1).transpose(1, 0, 2), atol=1e-4)
    sitk.WriteImage(moving, str(tmp_path / "in" / cv.image_name("0001", 1, ".mha")))
    fake = FakeShift()
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=fake, sequences="ceT1") == 0
    field, image = read_field(tmp_path / "out" / "disp_0001_0000_0001_0001.nii.gz")
    assert fake.calls[0]["shape"] == SHAPE and field.shape == SHAPE + (3,)
    np.testing.assert_array_equal(field[3, 4, 5], [0, 2, 0])
    np.testing.assert_allclose(image.affine, fixed_grid.nifti_affine(), atol=1e-6)


# ---------------------------------------------------------------- the model's switches, real stages, 32^3
ONLY_GLOBAL = {"global": {"iterations": 1, "max_iterations": 1, "levels_mm": [4.0, 2.0], "radius": 3},
               "deformable_discrete": {"enabled": False}, "refine": {"enabled": False},
               "refine_fine": {"enabled": False}}


def small_case(shift=(0.0, 0.0, 0.0)):
    from scipy import ndimage as ndi
    rng = np.random.default_rng(0)
    fixed = ndi.gaussian_filter(rng.standard_normal((32, 32, 32)), 2.5).astype(np.float32)
    fixed = (fixed - fixed.min()) / (fixed.max() - fixed.min()) + 0.05
    return fixed, ndi.shift(fixed, shift, order=1, mode="nearest").astype(np.float32)


@pytest.mark.parametrize("fallback", [True, False])
def test_a_pose_that_matches_worse_than_identity_falls_back_only_when_enabled(monkeypatch, fallback):
    import model.pipeline as pipeline
    from model import Registration, load_config
    from model.stages import GlobalPose

    # the MR equals the iUS: the identity is perfect and a 3 mm pose matches worse; the global stage is made
    # to return that pose
    def wrong_pose(pyramid, cfg):
        matrix = torch.eye(4)
        matrix[1, 3] = 3.0
        return GlobalPose(matrix)

    monkeypatch.setattr(pipeline, "global_pose", wrong_pose)
    fixed, moving = small_case()
    # the small-shift gate off: it would write this 3 mm pose at gain 0.5 (its ramp is 2-4 mm rms)
    cfg = load_config(overrides={**ONLY_GLOBAL, "plausibility": {"fallback_to_identity": fallback},
                                 "safety": {"small_shift": {"enabled": False}}})
    result = Registration(cfg, device="cpu").register(fixed, {"ceT1": moving}, (1.0, 1.0, 1.0), "ceT1")
    assert result.fell_back is fallback
    if fallback:
        assert result.safety == "identity" and np.abs(result.displacement).max() == 0
    else:
        assert result.safety == "kept"
        np.testing.assert_allclose(result.displacement[..., 1], 3.0, atol=1e-5)


def test_a_right_pose_does_not_trigger_the_fallback():
    from model import load_config
    from model.pipeline import _to_device
    from model.pyramid import FeaturePyramid
    from model.stages import GlobalPose, matches_worse_than_identity

    fixed, moving = small_case((0.0, 3.0, 0.0))  # fixed x <-> moving x + 3 along axis 1
    cfg = load_config(overrides=ONLY_GLOBAL)
    pyramid = FeaturePyramid(_to_device(fixed, "cpu"), _to_device(moving, "cpu"), (1.0, 1.0, 1.0), cfg)
    right, wrong = torch.eye(4), torch.eye(4)
    right[1, 3], wrong[1, 3] = 3.0, -3.0
    assert not matches_worse_than_identity(pyramid, GlobalPose(right), None, 1.0, cfg)
    assert matches_worse_than_identity(pyramid, GlobalPose(wrong), None, 1.0, cfg)
