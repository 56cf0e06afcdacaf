"""benchmarks/entrant.py: register a dataset in the organisers' training layout and score it, one table."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import entrant
from simulation.cases import make_simulated_case, write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Identity:
    """u = 0, except a failure for one target sequence of one case (to see it named)."""

    def __init__(self, fail_on=None):
        self.fail_on, self.calls = fail_on, 0

    def register(self, fixed, moving, spacing, target):
        self.calls += 1
        if self.fail_on == (self.calls, target):
            raise RuntimeError("simulated failure")

        class Result:
            displacement = np.zeros(fixed.shape + (3,), np.float32)
            stage_seconds, device = {}, "cpu (identity)"
        return Result()


ANISOTROPIC = (2.4, 3.2, 4.0)  # mm per voxel along i, j, k


def anisotropic(case, spacing=ANISOTROPIC):
    """The simulated case (isotropic by construction) with other voxel sizes per axis: its images, landmarks
    (voxels) and true field (voxels) are unchanged, so the ground truth stays exact; only mm change."""
    old = np.asarray(case["spacing"], float)
    affine = np.array(case["affine"], float)
    affine[:3, :3] = affine[:3, :3] * (np.asarray(spacing) / old)[None, :]
    return {**case, "affine": affine, "spacing": tuple(spacing)}


class Oracle:
    """Writes each case's true voxel field (found by its fixed image); refuses a spacing not the header's."""

    def __init__(self, cases, spacing):
        self.cases, self.spacing = cases, spacing

    def register(self, fixed, moving, spacing, target):
        np.testing.assert_allclose(spacing, self.spacing, rtol=1e-5)
        truth = next(c["true_displacement"] for c in self.cases if np.array_equal(c["fixed"], fixed))

        class Result:
            displacement = np.asarray(truth, np.float32)
            stage_seconds, device = {}, "cpu (oracle)"
        return Result()


def test_entrant_registers_scores_and_prints_one_table(tmp_path, capsys):
    # an anisotropic grid and a non-identity answer (the true field): the table's before / after must be the
    # per-axis mm TRE of the landmarks, not numbers that agree only for identity or for cubic voxels
    cases = [anisotropic(make_simulated_case(n, shape=(40, 40, 40), spacing=3.2)) for n in (1, 2)]
    write_dataset(cases, str(tmp_path / "data"))
    pairs = json.load(open(next((tmp_path / "data").glob("*.json"))))["eval_pairs"]
    assert entrant.main([str(tmp_path / "data"), "--out", str(tmp_path / "out")],
                        registration=Oracle(cases, ANISOTROPIC)) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("| 0")]
    assert len(rows) == len(pairs) == 4
    for row in rows:  # the true field: TRE after far below before, no folds, seconds from timings.json
        cells = [c.strip() for c in row.strip("|").split("|")]
        case = cases[int(cells[0][:4]) - 1]
        before = np.linalg.norm((case["moving_landmarks"] - case["fixed_landmarks"]) * ANISOTROPIC, axis=1).mean()
        assert float(cells[1]) == pytest.approx(before, abs=0.006), (row, before)  # printed with 2 decimals
        assert float(cells[2]) < 0.02 and float(cells[3]) > 0 and cells[4] == "0", row  # 0.003 mm measured
        assert float(cells[5]) >= 0
    assert "| mean of %d of %d |" % (len(pairs), len(pairs)) in captured.out
    assert f"[1/{len(pairs)}, about" in captured.out  # both tools' progress lines
    assert sum(f"[{len(pairs)}/{len(pairs)}]" in line for line in captured.out.splitlines()) == 2
    saved = (tmp_path / "out" / "entrant.md").read_text()
    assert all(row in saved for row in rows)
    assert json.load(open(tmp_path / "out" / "metrics.json"))["counts"]["evaluated"] == len(pairs)
    # a failing pair: named in the table and on the last stderr line, exit 1, the others still scored
    assert entrant.main([str(tmp_path / "data"), "--out", str(tmp_path / "out2")],
                        registration=Identity(fail_on=(2, "T2"))) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.out.splitlines() if "FAILED" in line and line.startswith("| 0")]
    assert len(failed) == 1 and failed[0].startswith("| 0001_0000<--0001_0002 | FAILED")
    assert captured.err.strip().splitlines()[-1].startswith("ERROR: 1 of %d pair(s) not registered or not scored: "
                                                            "0001_0000<--0001_0002" % len(pairs))


def test_entrant_help_and_bad_dataset(tmp_path):
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmarks.entrant", "--help"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0 and "--out" in done.stdout and "eval_pairs" in done.stdout
    assert time.perf_counter() - t0 < 10
    assert entrant.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
