"""The scorer end to end when the MOVING image's spacing differs from the fixed one's (issue 14): every TRE
number of metrics.json (per landmark, TRE_initial, TRE_worst30, pooled) hand-computed with the moving spacing.
Taking the fixed image's spacing, or reversing the spacing axes, changes every number checked here."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from evaluation import metrics as M
from evaluation.evaluate import run
from evaluation.tests import synth
from interfaces.conventions import Grid, image_from_array, image_name, landmark_name

FIXED_SPACING = (0.5, 0.5, 0.5)
MOVING_SPACING = (0.6, 0.9, 1.3)
SHAPE = (20, 18, 16)


def write_case(gt):
    os.makedirs(os.path.join(gt, "imagesTr"))
    os.makedirs(os.path.join(gt, "landmarksTr"))
    for m, spacing in ((0, FIXED_SPACING), (1, MOVING_SPACING)):
        grid = Grid(SHAPE, spacing, (1.0, 2.0, 3.0), tuple(np.eye(3).ravel()))
        blob = np.ones(SHAPE, np.float32)
        sitk.WriteImage(image_from_array(blob, grid), os.path.join(gt, "imagesTr", image_name("0007", m)))
    fix = np.array([[5.0, 5.0, 5.0], [8.0, 9.0, 7.0], [10.0, 6.0, 9.0], [12.0, 12.0, 4.0]])
    mov = fix + np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [2.0, -2.0, 2.0]])
    np.savetxt(os.path.join(gt, "landmarksTr", landmark_name("0007", 0)), fix, delimiter=",")
    np.savetxt(os.path.join(gt, "landmarksTr", landmark_name("0007", 1)), mov, delimiter=",")
    with open(os.path.join(gt, "ReMIND2Reg_dataset.json"), "w") as handle:
        json.dump({"eval_pairs": [{"fixed": f"./imagesTr/{image_name('0007', 0)}",
                                   "moving": f"./imagesTr/{image_name('0007', 1)}"}]}, handle)


def test_tre_numbers_use_the_moving_images_spacing(tmp_path):
    gt = str(tmp_path / "gt")
    write_case(gt)
    # the field moves every fixed landmark by (1, 0, 0) voxels: residuals (0,0,0), (-1,1,0), (-1,0,1), (1,-2,2)
    field = np.zeros(SHAPE + (3,), np.float32)
    field[..., 0] = 1.0
    synth.write_nifti_field(str(tmp_path / "in"), "0007", 1, field)
    assert run(str(tmp_path / "in"), gt, str(tmp_path / "metrics.json"), quiet=True) == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    case = data["cases"]["0007_0000<--0007_0001"]
    a, b, c = MOVING_SPACING
    tre = [0.0, np.hypot(a, b), np.hypot(a, c), np.sqrt(a ** 2 + 4 * b ** 2 + 4 * c ** 2)]
    initial = [a, b, c, np.sqrt(4 * a ** 2 + 4 * b ** 2 + 4 * c ** 2)]
    np.testing.assert_allclose(case[M.TRE]["detailed"], tre, atol=1e-6)
    assert case[M.TRE]["mean"] == pytest.approx(np.mean(tre))
    np.testing.assert_allclose(case[M.TRE_INITIAL]["detailed"], initial, atol=1e-9)
    assert case[M.TRE_INITIAL]["mean"] == pytest.approx(np.mean(initial))
    assert case[M.TRE_WORST30]["mean"] == pytest.approx(np.mean(sorted(tre)[-2:]))  # ceil(0.3 * 4) = 2
    pooled = data["pooled_landmarks"]["all"]
    assert pooled["n_landmarks"] == 4 and pooled[M.TRE] == pytest.approx(np.mean(tre))
    assert pooled[M.TRE_WORST30] == pytest.approx(np.mean(sorted(tre)[-2:]))
    assert data["aggregates"][M.TRE_INITIAL]["mean"] == pytest.approx(np.mean(initial))
