"""The safety net's rule on hand-made features (model/safety.py): a field is kept when the sequence it was not
computed from agrees, replaced by the candidate that fits every sequence better than identity otherwise, and the
identity is written when no candidate does. The features are exact shifts of one another, so which candidate is
right is known by construction."""
import numpy as np
import pytest
import torch

from model.pyramid import Level
from model.safety import Candidate, Estimate, cross_sequence_decision, fused_candidate, positions_of
from model.stages import Deformation, GlobalPose, matching_cost

SHAPE, SPACING = (24, 24, 24), (2.0, 2.0, 2.0)


def smooth_noise(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2,) + SHAPE)
    for axis in (1, 2, 3):  # a few box passes: smooth enough for linear sampling to be accurate
        for _ in range(3):
            x = (np.roll(x, 1, axis) + x + np.roll(x, -1, axis)) / 3
    return torch.tensor(x, dtype=torch.float32)


def translation(mm):
    matrix = torch.eye(4)
    matrix[:3, 3] = torch.tensor(mm, dtype=torch.float32)
    return matrix


def level_with(moving_shift_voxels):
    """iUS features F; each sequence's level has F moved so that fixed x <-> moving x + shift."""
    fixed = smooth_noise(0)
    weight = torch.zeros((1,) + SHAPE)
    weight[:, 5:-5, 5:-5, 5:-5] = 1.0  # away from the border, where rolled-in values would not match
    return {name: Level(SHAPE, SPACING, fixed, torch.roll(fixed, shifts=tuple(s), dims=(1, 2, 3)), weight)
            for name, s in moving_shift_voxels.items()}


def estimate(levels, sequence, pose_mm):
    return Estimate(GlobalPose(translation(pose_mm)), None, 1.0, levels[sequence], sequence)


def test_matching_cost_is_lowest_at_the_true_shift():
    level = level_with({"T2": (2, 0, 0)})["T2"]
    x = level.identity()
    true = matching_cost(level, x + torch.tensor([4.0, 0, 0]).view(3, 1, 1, 1))
    assert true < 1e-6 < matching_cost(level, x)  # exact match at +2 voxels = +4 mm, not at identity


def test_kept_when_the_other_sequence_agrees():
    level = level_with({"ceT1": (2, 0, 0), "T2": (2, 0, 0)})
    estimates = {"ceT1": estimate(level, "ceT1", (4.0, 0, 0)), "T2": estimate(level, "T2", (3.0, 0, 0))}
    decision = cross_sequence_decision(estimates, "ceT1", 0.0, "cpu")
    assert decision.action == "kept" and decision.candidate.name == "ceT1 field"
    assert decision.ratios["ceT1 field"]["T2"] < 0.1


def test_the_field_both_sequences_prefer_replaces_a_wrong_one():
    # both MRs show the truth (+4 mm); the ceT1 result went the wrong way (-6 mm), the T2 result is right
    level = level_with({"ceT1": (2, 0, 0), "T2": (2, 0, 0)})
    estimates = {"ceT1": estimate(level, "ceT1", (-6.0, 0, 0)), "T2": estimate(level, "T2", (4.0, 0, 0))}
    decision = cross_sequence_decision(estimates, "ceT1", 0.0, "cpu")
    assert decision.action == "T2 field"
    assert torch.allclose(decision.candidate.pose, translation((4.0, 0, 0)))
    assert decision.ratios["ceT1 field"]["T2"] > 1.0  # the evidence: T2 fits the ceT1 field worse than identity
    assert "ceT1 field fits T2 cost" in decision.reason
    # the T2 pair of the same case keeps its own field
    assert cross_sequence_decision(estimates, "T2", 0.0, "cpu").action == "kept"


def test_identity_when_no_candidate_fits_every_sequence():
    # contradictory sequences: no field can be right for both, so nothing but the identity is safe
    level = level_with({"ceT1": (-3, 0, 0), "T2": (2, 0, 0)})
    estimates = {"ceT1": estimate(level, "ceT1", (-6.0, 0, 0)), "T2": estimate(level, "T2", (4.0, 0, 0))}
    for target in ("ceT1", "T2"):
        decision = cross_sequence_decision(estimates, target, 0.0, "cpu")
        assert decision.action == "identity" and torch.equal(decision.candidate.pose, torch.eye(4))
        assert "no candidate fits every sequence better than identity" in decision.reason


def test_tolerance_lets_a_near_tie_keep_its_own_field():
    level = level_with({"ceT1": (2, 0, 0), "T2": (0, 0, 0)})  # T2 already aligned: any move fits it worse
    estimates = {"ceT1": estimate(level, "ceT1", (0.5, 0, 0)), "T2": estimate(level, "T2", (0.0, 0, 0))}
    ratio = cross_sequence_decision(estimates, "ceT1", 0.0, "cpu").ratios["ceT1 field"]["T2"]
    assert ratio > 1.0
    assert cross_sequence_decision(estimates, "ceT1", ratio - 1.0 + 1e-6, "cpu").action == "kept"
    assert cross_sequence_decision(estimates, "ceT1", ratio - 1.0 - 1e-6, "cpu").action != "kept"


def test_a_result_that_fell_back_is_the_identity_candidate():
    level = level_with({"ceT1": (2, 0, 0), "T2": (2, 0, 0)})
    estimates = {"ceT1": Estimate(GlobalPose(translation((9.0, 0, 0))), None, 1.0, level["ceT1"], "ceT1", fell_back=True),
                 "T2": estimate(level, "T2", (4.0, 0, 0))}
    ratios = cross_sequence_decision(estimates, "T2", 0.0, "cpu").ratios
    assert ratios["ceT1 field"] == pytest.approx({"ceT1": 1.0, "T2": 1.0})  # scored as the identity it wrote


def test_the_model_registers_each_sequence_once_per_case_and_reports_the_net():
    from model import Registration, load_config
    from test_model import FAST, blobs, shifted  # test/ is on sys.path under pytest

    fixed = blobs((40, 40, 40), seed=5)
    truth = (2.0, -1.0, 0.0)
    case = {"ceT1": shifted(fixed, truth), "T2": shifted(fixed, truth) * 0.5}
    fused = Registration(load_config(overrides=FAST), device="cpu")
    both = [fused.register(fixed, case, (1.0, 1.0, 1.0), target) for target in ("ceT1", "T2")]
    assert both[0].safety == both[1].safety == "fused"  # two right, agreeing fields: their mean, for each target
    assert np.array_equal(both[0].displacement, both[1].displacement)
    unfused = {**FAST, "safety": {"fuse_sequences": False, "small_shift": {"enabled": False}}}
    registration = Registration(load_config(overrides=unfused), device="cpu")
    first = registration.register(fixed, case, (1.0, 1.0, 1.0), "ceT1")
    assert {"features", "global", "refine"} <= set(first.stage_seconds)  # both sequences registered here
    second = registration.register(fixed, case, (1.0, 1.0, 1.0), "T2")
    assert set(second.stage_seconds) == {"full_field", "total"}  # the T2 estimate was made by the first call
    assert first.safety == second.safety == "kept"  # two right, agreeing fields
    alone = Registration(load_config(overrides=FAST), device="cpu").register(fixed, {"T2": case["T2"]},
                                                                             (1.0, 1.0, 1.0), "T2")
    assert np.array_equal(alone.displacement, second.displacement)  # the same estimate as a run of its own
    other_case = {n: np.roll(v, 1, axis=0) for n, v in case.items()}
    third = registration.register(np.roll(fixed, 1, axis=0), other_case, (1.0, 1.0, 1.0), "T2")
    assert "global" in third.stage_seconds  # a new case is registered, not served from the last one
    fresh = Registration(load_config(overrides=unfused), device="cpu").register(
        np.roll(fixed, 1, axis=0), other_case, (1.0, 1.0, 1.0), "T2")
    assert np.array_equal(third.displacement, fresh.displacement)  # nothing of the last case (its iUS features) reused
    off = Registration(load_config(overrides={**FAST, "safety": {"cross_sequence": False, "small_shift": {"enabled": False}}}), device="cpu")
    off.register(fixed, case, (1.0, 1.0, 1.0), "ceT1")
    assert "global" in off.register(fixed, case, (1.0, 1.0, 1.0), "T2").stage_seconds  # ceT1 alone was registered


def test_the_run_says_when_the_net_replaced_a_field(tmp_path, capsys):
    """What the net did reaches the user: a WARNING naming the pair, what was written and why, and timings.json."""
    import json
    from types import SimpleNamespace

    import process
    from test_process import make_case

    class NetFellBack:
        def register(self, fixed, moving, spacing, target):
            reason = "the ceT1 field fits T2 cost x1.200 of identity" if target == "ceT1" else ""
            return SimpleNamespace(displacement=np.zeros(fixed.shape + (3,), np.float32), device="cpu",
                                   stage_seconds={}, safety="identity" if target == "ceT1" else "kept",
                                   safety_reason=reason)

    make_case(tmp_path / "in", "0001")
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=NetFellBack()) == 0
    captured = capsys.readouterr()
    assert ("case 0001 ceT1: safety net: wrote identity instead of its own result: the ceT1 field fits T2 cost "
            "x1.200 of identity") in captured.out + captured.err
    assert "case 0001 T2: safety net" not in captured.out + captured.err
    pairs = json.load(open(tmp_path / "out" / "timings.json"))["pairs"]
    assert pairs["0001_0000<--0001_0001"]["safety"] == "identity"
    assert pairs["0001_0000<--0001_0001"]["safety_reason"].startswith("the ceT1 field fits T2")
    assert pairs["0001_0000<--0001_0002"]["safety"] == "kept" and "safety_reason" not in pairs["0001_0000<--0001_0002"]


def estimate_with_field(levels, sequence, pose_mm, field_mm):
    deformation = Deformation(torch.tensor(field_mm, dtype=torch.float32).view(3, 1, 1, 1).expand((3,) + SHAPE)
                              .clone(), SPACING)
    return Estimate(GlobalPose(translation(pose_mm)), deformation, 1.0, levels[sequence], sequence)


def test_fused_candidate_lands_on_the_mean_of_the_positions():
    level = level_with({"ceT1": (2, 0, 0)})["ceT1"]
    rotation = torch.eye(4)
    c, s = np.cos(0.1), np.sin(0.1)
    rotation[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float32)
    rotation[:3, 3] = torch.tensor([1.0, 0.5, -2.0])
    field = torch.stack([level.identity()[0] * 0.05, torch.full(SHAPE, 0.3), torch.zeros(SHAPE)])
    one = Candidate("ceT1 field", rotation, Deformation(field, SPACING), 0.5)
    two = Candidate("T2 field", translation((3.0, -1.0, 0.0)), Deformation(torch.ones((3,) + SHAPE), SPACING), 1.0)
    fused = fused_candidate([one, two])
    expected = (positions_of(one, level) + positions_of(two, level)) / 2
    torch.testing.assert_close(positions_of(fused, level), expected, atol=1e-4, rtol=0)
    assert fused.name == "fused ceT1+T2"


def test_fusion_writes_the_mean_when_both_fields_agree():
    # truth +4 mm; ceT1 found +4.6, T2 found +3.4 (opposite errors): their mean is the truth
    level = level_with({"ceT1": (2, 0, 0), "T2": (2, 0, 0)})
    estimates = {"ceT1": estimate_with_field(level, "ceT1", (4.0, 0, 0), (0.6, 0, 0)),
                 "T2": estimate_with_field(level, "T2", (3.0, 0, 0), (0.4, 0, 0))}
    for target in ("ceT1", "T2"):
        decision = cross_sequence_decision(estimates, target, 0.0, "cpu", fuse=True)
        assert decision.action == "fused" and decision.candidate.name == "fused ceT1+T2"
        assert max(decision.ratios["fused ceT1+T2"].values()) < min(
            max(decision.ratios["ceT1 field"].values()), max(decision.ratios["T2 field"].values()))
        shift = positions_of(decision.candidate, level["ceT1"]) - level["ceT1"].identity()
        torch.testing.assert_close(shift[0], torch.full(SHAPE, 4.0), atol=1e-5, rtol=0)
    assert cross_sequence_decision(estimates, "ceT1", 0.0, "cpu").action == "kept"  # fusion off: as before


def test_fusion_leaves_out_a_field_the_other_sequence_rejects():
    # the T2 field went the wrong way: the ceT1 pair keeps its own (nothing to fuse with), the T2 pair is replaced
    level = level_with({"ceT1": (2, 0, 0), "T2": (2, 0, 0)})
    estimates = {"ceT1": estimate_with_field(level, "ceT1", (4.0, 0, 0), (0.0, 0, 0)),
                 "T2": estimate_with_field(level, "T2", (-6.0, 0, 0), (0.0, 0, 0))}
    assert cross_sequence_decision(estimates, "ceT1", 0.0, "cpu", fuse=True).action == "kept"
    assert cross_sequence_decision(estimates, "T2", 0.0, "cpu", fuse=True).candidate.name == "ceT1 field"


def test_small_shift_gain_by_hand():
    # a pure translation of (3, 4, 0) mm moves every fan voxel by 5 mm rms; floor 4, full 6 -> gain 0.5
    from model.safety import small_shift_gain
    level = level_with({"ceT1": (0, 0, 0)})["ceT1"]
    rms, gain = small_shift_gain(Candidate("ceT1 field", translation((3.0, 4.0, 0.0)), None, 0.0), level, 4.0, 6.0)
    assert rms == pytest.approx(5.0, abs=1e-5) and gain == pytest.approx(0.5, abs=1e-5)
    assert small_shift_gain(Candidate("x", translation((3.0, 4.0, 0.0)), None, 0.0), level, 5.5, 6.0)[1] == 0.0
    assert small_shift_gain(Candidate("x", translation((3.0, 4.0, 0.0)), None, 0.0), level, 1.0, 5.0)[1] == 1.0
    # the deformation counts too (scaled): pose +1 mm in i, field +2 mm in i at scale 0.5 -> 2 mm everywhere
    field = Deformation(torch.stack([torch.full(SHAPE, 2.0), torch.zeros(SHAPE), torch.zeros(SHAPE)]), SPACING)
    rms, _ = small_shift_gain(Candidate("x", translation((1.0, 0.0, 0.0)), field, 0.5), level, 1.0, 3.0)
    assert rms == pytest.approx(2.0, abs=1e-5)


def test_gain_scales_the_written_field_toward_the_identity():
    from model.stages import full_resolution_field
    pose = translation((1.0, -2.0, 0.5))
    pose[0, 1] = 0.01
    field = Deformation(torch.ones((3, 6, 6, 6)) * 0.7, SPACING)
    whole, _, _ = full_resolution_field(GlobalPose(pose), field, 1.0, (10, 12, 8), SPACING)
    part, jmin, _ = full_resolution_field(GlobalPose(pose), field, 1.0, (10, 12, 8), SPACING, gain=0.25)
    np.testing.assert_allclose(part, whole * 0.25, atol=1e-6)
    assert jmin > 0
    zero, jmin0, _ = full_resolution_field(GlobalPose(pose), field, 1.0, (10, 12, 8), SPACING, gain=0.0)
    assert not zero.any() and jmin0 == pytest.approx(1.0)
