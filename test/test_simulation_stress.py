"""Stress cases (SIMULATED, MNI152 anatomy, small grids): the stressors really appear, the truth stays exact."""
import json

import numpy as np
import pytest
from scipy import ndimage

from evaluation.metrics import tre
from simulation.cases import make_simulated_case
from simulation.stress import OPTIONAL, draw_stressors, make_stress_case
from simulation.ultrasound import BONE, CAVITY, FLUID_GAP, TISSUE, in_fan

SHAPE, SP = (64, 64, 64), 2.0          # the full 128 mm scene at low resolution
NONE = {name: False for name in OPTIONAL}


def only(name):
    return dict(NONE, **{name: True})


@pytest.fixture(scope="module")
def offset_case():
    return make_stress_case(4001, shape=SHAPE, spacing=SP, force=only("large_offset"))


def test_stressors_deterministic_varied_and_recorded():
    specs = [draw_stressors(seed) for seed in range(40)]
    assert draw_stressors(7) == specs[7]
    for name in OPTIONAL:  # each optional stressor in some cases, not all
        assert 0 < sum(name in s for s in specs) < 40
    assert all(any(name in s for name in OPTIONAL) for s in specs)
    rims = {s["tumour"]["rim"] for s in specs}
    gains = {s["render"]["target_median"] for s in specs}
    assert len(rims) == 40 and len(gains) == 40 and max(rims) - min(rims) > 0.4
    assert sum(s["cavity_contents"]["blood_fraction"] > 0 for s in specs) not in (0, 40)
    json.dumps(specs)


def test_ceT1_enhancing_rim_around_darker_core(offset_case):
    t1 = offset_case["moving"]["ceT1"]
    core = offset_case["tumour_core_mask"]
    rim = offset_case["tumour_mask"] & ~core
    assert core.sum() > 10 and rim.sum() > 10
    brain = t1[t1 > 0.2 * t1.max()]
    assert np.median(t1[rim]) > 1.3 * np.median(brain)          # enhancing: brighter than the brain
    assert np.median(t1[core]) < 0.8 * np.median(brain)         # necrotic core: darker
    assert np.median(t1[rim]) > 2.0 * np.median(t1[core])


def test_offsets_reach_the_asked_magnitude_and_truth_stays_exact(offset_case):
    asked = offset_case["stressors"]["large_offset"]["target_mm"]
    assert 10.0 <= asked <= 15.0
    initial = offset_case["initial_tre_mm"]
    assert abs(initial.mean() - asked) < 0.15 * asked
    p, q, u = offset_case["fixed_landmarks"], offset_case["moving_landmarks"], offset_case["true_displacement"]
    assert len(p) >= 3 and in_fan(p, offset_case["fan"]).all()
    assert tre(p, q, u, offset_case["spacing"]).max() < 0.05      # the evaluation's cubic sampling, mm
    assert tre(p, q, None, offset_case["spacing"]).mean() == pytest.approx(initial.mean())
    assert offset_case["min_jacobian"] > 0.3


def test_small_fan_is_small():
    small = make_stress_case(4010, shape=SHAPE, spacing=SP, force=only("small_fan"))
    ordinary = make_simulated_case(4010, shape=SHAPE, spacing=SP)
    spec = small["stressors"]["small_fan"]
    assert small["fan"]["half_lat"] == pytest.approx(np.deg2rad(spec["half_lat_deg"]))
    assert small["fan_mask"].mean() < 0.4 * ordinary["fan_mask"].mean()
    assert (small["us_labels"] == CAVITY).sum() > 0                 # the cavity is still in view


def test_fan_at_the_brain_edge_sees_more_outside_the_brain():
    def outside_share(case):
        return np.isin(case["us_labels"][case["fan_mask"]], (BONE, FLUID_GAP)).mean()

    shares = {edge: [outside_share(make_stress_case(seed, shape=(48,) * 3, spacing=128 / 48,
                                                    force=dict(NONE, brain_edge=edge)))
                     for seed in (4022, 4023, 4024)] for edge in (False, True)}
    assert np.mean(shares[True]) > np.mean(shares[False]) + 0.15


def _cavity_contrast_pair(seed, **contents):
    spec = draw_stressors(seed, force=NONE)
    spec["cavity_contents"] = dict(spec["cavity_contents"], **contents)
    return make_simulated_case(seed, shape=SHAPE, spacing=SP, us_params=spec["render"], stress=spec)


def test_cavity_rim_blood_and_haemostat_in_the_ius():
    empty = _cavity_contrast_pair(4002, blood_fraction=0.0, haemostat_fraction=0.0)
    full = _cavity_contrast_pair(4002, blood_fraction=0.4, haemostat_fraction=0.5)
    lab = empty["us_labels"]
    np.testing.assert_array_equal(lab, full["us_labels"])        # same scene, only the contents differ
    cavity = lab == CAVITY
    tissue = np.median(empty["fixed"][lab == TISSUE])
    assert np.median(empty["fixed"][cavity]) < 0.5 * tissue      # saline-filled cavity: dark
    assert np.percentile(full["fixed"][cavity], 90) > 2.0 * np.percentile(empty["fixed"][cavity], 90)
    shell = ndimage.binary_dilation(cavity, iterations=1) & ~cavity & (lab == TISSUE)
    assert np.median(empty["fixed"][shell]) > tissue              # its bright rim


def test_low_contrast_weakens_the_reflectors():
    def spread(case):
        t = case["fixed"][case["us_labels"] == TISSUE]
        return np.percentile(t, 99) / np.median(t)

    normal = make_stress_case(4003, shape=SHAPE, spacing=SP, force=NONE)
    low = make_stress_case(4003, shape=SHAPE, spacing=SP, force=only("low_contrast"))
    assert low["stressors"]["low_contrast"] and "low_contrast" not in normal["stressors"]
    assert spread(low) < 0.8 * spread(normal)


def test_cli_writes_stressors(tmp_path):
    from simulation.__main__ import main
    assert main(["--out", str(tmp_path), "--n", "1", "--seed", "4005", "--stress", "--shape", "48"]) == 0
    js = json.load(open(tmp_path / "ReMIND2Reg_dataset.json"))
    entry = js["cases"][0]
    assert entry["stressors"]["active"][0] == "tumour_vs_cavity" and "SIMULATED stress" in entry["source"]
    for name in ("imagesTr/ReMIND2Reg_0001_0001.nii.gz", "groundtruthTr/disp_0001_0000.nii.gz",
                 "groundtruthTr/labels_0001_0000.nii.gz", "landmarksTr/ReMIND2Reg_0001_0000.csv"):
        assert (tmp_path / name).exists()
