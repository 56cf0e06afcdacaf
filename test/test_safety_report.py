"""runner.cases.safety_report: what timings.json and the log say about the safety net and the small-shift gate."""
import logging
from types import SimpleNamespace

from runner.cases import safety_report


def result(action, rms, gain, reason=""):
    return SimpleNamespace(safety=action, safety_reason=reason, shift_rms_mm=rms, gain=gain)


def test_a_scaled_one_sequence_field_is_a_warning_naming_rms_gain_and_gate(caplog):
    with caplog.at_level(logging.INFO, logger="remind2reg"):
        report = safety_report("0001_0000<--0001_0002", result("kept", 2.5916, 0.0))
    assert report == {"safety": "kept", "shift_rms_mm": 2.5916, "gain": 0.0}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "moves the fan by 2.59 mm rms" in warnings[0] and "one MR sequence" in warnings[0]
    assert "written x0.00 toward the identity" in warnings[0]


def test_a_fused_field_at_full_gain_is_info_only(caplog):
    with caplog.at_level(logging.INFO, logger="remind2reg"):
        report = safety_report("p", result("fused", 5.4351, 1.0, "the fields of ceT1, T2 agree"))
    assert report == {"safety": "fused", "safety_reason": "the fields of ceT1, T2 agree", "shift_rms_mm": 5.4351,
                      "gain": 1.0}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_scaled_fused_field_names_the_fused_gate(caplog):
    with caplog.at_level(logging.INFO, logger="remind2reg"):
        safety_report("p", result("fused", 2.08, 0.04, "agree"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the two sequences' fused field" in warnings[0] and "x0.04" in warnings[0]
