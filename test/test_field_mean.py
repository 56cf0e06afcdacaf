"""benchmarks.field_mean on hand-made fields: the written file is the weighted mean, in the organisers' format."""
import nibabel as nib
import numpy as np
import pytest

from benchmarks import field_mean
from evaluation.fields import load_field

SHAPE = (5, 4, 3)
AFFINE = np.diag([0.5, 0.8, 1.0, 1.0])
NAME = "disp_0001_0000_0001_0001.nii.gz"


def _run(folder, fields: dict):
    folder.mkdir()
    for name, field in fields.items():
        nib.save(nib.Nifti1Image(field.astype(np.float32), AFFINE), str(folder / name))
    return str(folder)


def _field(seed):
    return np.random.default_rng(seed).normal(size=SHAPE + (3,)).astype(np.float32)


def test_the_mean_is_weighted_per_voxel_and_keeps_the_grid(tmp_path):
    a, b = _field(1), _field(2)
    run_a = _run(tmp_path / "a", {NAME: a, "disp_0002_0000_0002_0001.nii.gz": a})
    run_b = _run(tmp_path / "b", {NAME: b})
    out = tmp_path / "mean"
    assert field_mean.main([run_a, run_b, "--out", str(out), "--weights", "3,1"]) == 0
    written = load_field(str(out / NAME), SHAPE, "pair").field
    np.testing.assert_allclose(written, 0.75 * a + 0.25 * b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(nib.load(str(out / NAME)).affine, AFFINE)
    assert not (out / "disp_0002_0000_0002_0001.nii.gz").exists()  # not in every run: left out


def test_equal_weights_by_default_and_bad_input_is_named(tmp_path, capsys):
    a, b = _field(3), _field(4)
    run_a = _run(tmp_path / "a", {NAME: a})
    run_b = _run(tmp_path / "b", {NAME: b})
    written, left_out = field_mean.mean_fields([run_a, run_b], str(tmp_path / "m"), field_mean.parse_weights(None, 2))
    assert written == [NAME] and left_out == []
    np.testing.assert_allclose(load_field(str(tmp_path / "m" / NAME), SHAPE, "p").field, (a + b) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="2 values for 3 runs"):
        field_mean.parse_weights("1,1", 3)
    run_c = _run(tmp_path / "c", {NAME: np.zeros((4, 4, 3, 3), np.float32)})
    assert field_mean.main([run_a, run_c, "--out", str(tmp_path / "x")]) == 1
    assert NAME in capsys.readouterr().err
