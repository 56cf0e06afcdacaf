"""benchmarks.gate_placements' replay of a gate on stored pairs, against hand-computed values."""
import argparse

import numpy as np
import pytest

from benchmarks.gate_placements import gain_of, load_pairs, main, parse_gate, save_pairs, table, tre_at_gain


def pair(u, magnitude=0.0, rms=3.0):
    # one landmark at 0; the moving landmark 2 voxels along i; 0.5 mm voxels: identity TRE 1 mm
    return dict(fixed_landmarks=np.zeros((1, 3)), moving_landmarks=np.array([[2.0, 0.0, 0.0]]),
                spacing=np.array([0.5, 0.5, 0.5]), u=np.array([u], dtype=float), rms=rms, magnitude=magnitude,
                identity=1.0)


def test_gain_is_a_linear_ramp_between_floor_and_full():
    assert gain_of(1.9, (2.0, 4.0)) == 0.0
    assert gain_of(3.0, (2.0, 4.0)) == 0.5
    assert gain_of(4.5, (2.0, 4.0)) == 1.0
    assert gain_of(0.1, None) == 1.0


def test_tre_at_gain_scales_the_stored_field():
    p = pair([4.0, 0.0, 0.0])            # the field overshoots: 2 voxels past the moving landmark
    assert tre_at_gain(p, 0.0) == 1.0    # identity
    assert tre_at_gain(p, 1.0) == 1.0    # |4 - 2| voxels x 0.5 mm
    assert tre_at_gain(p, 0.5) == 0.0    # exactly on it


def test_table_counts_pairs_worse_than_identity():
    pairs = [pair([4.0, 0.0, 0.0], rms=3.0), pair([2.0, 3.0, 0.0], rms=5.0)]  # TRE at gain 1: 1.0 and 1.5 mm
    rows = table(pairs, gates=[None, (2.0, 4.0)]).splitlines()
    assert rows[0] == "| gate floor / full (mm) | worse | worst ratio | as given (id. 1.00) |"
    assert rows[2] == "| off (gain 1) | 1 | 1.500 | 1.250 |"   # equal to identity is not worse
    # (2, 4): the first at gain 0.5 (TRE 0), the second at gain 1 (1.5 mm): one pair still worse
    assert rows[3] == "| 2 / 4 | 1 | 1.500 | 0.750 |"


def test_saved_pairs_replay_to_the_same_table(tmp_path, capsys):
    pairs = [pair([4.0, 0.0, 0.0], rms=3.0), pair([2.0, 3.0, 0.0], magnitude=1.0, rms=5.0)]
    saved = tmp_path / "pairs.json"
    save_pairs(pairs, str(saved))
    assert table(load_pairs(str(saved)), gates=[None, (2.0, 4.0)]) == table(pairs, gates=[None, (2.0, 4.0)])
    assert main(["--replay", str(saved), "--gates", "off", "2:4"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs" in out and "| 2 / 4 | 1 | 1.500 | 0.000 | 1.500 |" in out


def test_gates_are_parsed_as_floor_colon_full():
    assert parse_gate("off") is None
    assert parse_gate("1.5:4.5") == (1.5, 4.5)
    for bad in ("4:2", "-1:2", "2:2"):
        with pytest.raises(argparse.ArgumentTypeError, match="FLOOR:FULL"):
            parse_gate(bad)
