"""benchmarks.error_decomposition on hand-made fields whose parts are known exactly."""
import nibabel as nib
import numpy as np
import pytest

from benchmarks import error_decomposition as ed

SPACING = np.array([0.5, 0.8, 1.0])
SHAPE = (24, 20, 18)


def _grid_mm():
    return np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1) * SPACING


def _fan():
    fan = np.zeros(SHAPE, bool)
    fan[2:22, 3:17, 2:16] = True
    return fan


def _centre(fan):
    return (np.argwhere(fan) * SPACING).mean(0)


def _field_vox(translation=(0, 0, 0), omega_deg=(0, 0, 0), strain=np.zeros((3, 3)), bump=0.0):
    """A voxel field whose mm displacement is t + omega x (x - c) + S (x - c) + a bump (about the fan's centre)."""
    x = _grid_mm() - _centre(_fan())
    omega = np.deg2rad(np.asarray(omega_deg, float))
    u = np.asarray(translation, float) + np.cross(omega, x) + x @ np.asarray(strain).T
    if bump:
        u[..., 0] += bump * np.sin(x[..., 1] / 2.0) * np.sin(x[..., 2] / 2.0)
    return (u / SPACING).astype(np.float32)


def test_each_part_is_recovered_from_a_hand_made_error():
    strain = np.diag([0.04, 0.0, -0.06])
    truth = _field_vox(translation=(1, -2, 0.5), omega_deg=(0, 0, 3))
    written = truth + _field_vox(translation=(0.3, 0.0, -0.4), omega_deg=(2, -1, 0), strain=strain)
    parts = ed.decompose(written, truth, SPACING, _fan(), step=1)
    assert np.allclose(parts["translation"], (0.3, 0.0, -0.4), atol=1e-4)
    assert np.allclose(parts["rotation_deg"], (2, -1, 0), atol=1e-4)
    assert np.allclose(parts["principal_strain"], (-0.06, 0.0, 0.04), atol=1e-6)
    assert parts["nonlinear_rms_mm"] < 1e-4
    # the rms values by hand: the error field is known everywhere on the fan
    x = _grid_mm()[_fan()] - _centre(_fan())
    error_mm = (written - truth)[_fan()] * SPACING
    rotation_mm = np.cross(np.deg2rad([2.0, -1.0, 0.0]), x)
    assert parts["rms_mm"] == pytest.approx(np.sqrt((error_mm ** 2).sum(1).mean()), rel=1e-5)
    assert parts["rotation_rms_mm"] == pytest.approx(np.sqrt((rotation_mm ** 2).sum(1).mean()), rel=1e-5)
    assert parts["strain_rms_mm"] == pytest.approx(np.sqrt(((x @ strain.T) ** 2).sum(1).mean()), rel=1e-5)


def test_a_bump_is_nonlinear_and_a_rotation_has_no_strain():
    truth = np.zeros(SHAPE + (3,), np.float32)
    parts = ed.decompose(_field_vox(omega_deg=(0, 4, 0)), truth, SPACING, _fan(), step=1)
    assert np.abs(parts["principal_strain"]).max() < 1e-6 and parts["nonlinear_rms_mm"] < 1e-4
    assert parts["rotation_rms_mm"] > 0.3
    bumped = ed.decompose(_field_vox(bump=1.0), truth, SPACING, _fan(), step=1)
    assert bumped["nonlinear_rms_mm"] > 0.3


def test_recovered_fractions_of_the_truths_rotation_and_strain():
    strain = np.diag([0.1, -0.05, 0.0])
    truth = _field_vox(omega_deg=(0, 0, 6), strain=strain)
    half = _field_vox(omega_deg=(0, 0, 3), strain=strain * 1.5)  # half the rotation, 1.5 x the strain
    parts = ed.decompose(half, truth, SPACING, _fan(), step=1)
    assert parts["rotation_recovered"] == pytest.approx(0.5, abs=1e-4)
    assert parts["strain_recovered"] == pytest.approx(1.5, abs=1e-4)
    nothing = ed.decompose(np.zeros_like(truth), truth, SPACING, _fan(), step=1)
    assert nothing["rotation_recovered"] == pytest.approx(0.0, abs=1e-9)


def test_cli_reads_a_dataset_and_a_run_folder(tmp_path, capsys):
    affine = np.diag(list(SPACING) + [1.0])
    cases, run = tmp_path / "cases", tmp_path / "model"
    for sub in ("groundtruthTr", "imagesTr"):
        (cases / sub).mkdir(parents=True)
    run.mkdir()
    truth = _field_vox(omega_deg=(0, 0, 5))
    us = np.where(_fan(), 50.0, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(truth, affine), str(cases / "groundtruthTr" / "disp_0001_0000.nii.gz"))
    nib.save(nib.Nifti1Image(us, affine), str(cases / "imagesTr" / "ReMIND2Reg_0001_0000.nii.gz"))
    written = truth + _field_vox(translation=(0, 0, 1.0))
    nib.save(nib.Nifti1Image(written, affine), str(run / "disp_0001_0000_0001_0001.nii.gz"))
    assert ed.main(["--cases", str(cases), str(run), "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "| model | 0001 | 0001 | 1.00 | (+0.00, +0.00, +1.00) |" in out
    assert "| model | mean of 1 |" in out
    assert ed.main(["--cases", str(tmp_path / "empty"), str(run)]) == 1
    assert "no written pair" in capsys.readouterr().err
