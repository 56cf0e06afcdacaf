"""The rank command on three fake submissions (Learn2Reg scheme, SPEC §4)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evaluation import metrics as M
from evaluation.rank import rank, rank_scores


def fake(tre, sdlogj, runtime=None):
    cases = {}
    for n, (t, s) in enumerate(zip(tre, sdlogj)):
        case = {M.TRE: {"mean": float(t), "detailed": [float(t)]}, M.SDLOGJ: {"mean": float(s), "detailed": float(s)}}
        if runtime is not None:
            case[M.RUNTIME] = {"mean": float(runtime[n]), "detailed": float(runtime[n])}
        cases[f"{n:04d}_0000<--{n:04d}_0001"] = case
    return {"name": "x", "aggregates": {}, "cases": cases, "eval_version": "2.0"}


rng = np.random.default_rng(0)
BASE = rng.uniform(0, 0.2, 12)
SUBMISSIONS = {
    "good": fake(2 + BASE, 0.05 + BASE / 10, 10 + BASE),
    "middle": fake(4 + BASE, 0.05 + BASE / 10 + 0.001, 60 + BASE),  # SDlogJ not significantly different
    "poor": fake(6 + BASE, 0.30 + BASE / 10),                          # no runtime -> runtime metric left out
}


def test_rank_scores_and_geometric_mean():
    result = rank(SUBMISSIONS)
    tre = result["metrics"][M.TRE]
    assert tre["wins"] == {"good": 2, "middle": 1, "poor": 0}
    assert tre["score"] == pytest.approx({"good": 1.0, "middle": 0.55, "poor": 0.1})
    sd = result["metrics"][M.SDLOGJ]
    assert sd["wins"] == {"good": 1, "middle": 1, "poor": 0}          # good vs middle: p >= 0.05
    assert sd["score"] == pytest.approx({"good": 1.0, "middle": 1.0, "poor": 0.1})  # tie shares the rank
    assert M.RUNTIME in result["skipped"]
    assert result["overall"]["good"] == pytest.approx(1.0)
    assert result["overall"]["middle"] == pytest.approx(np.sqrt(0.55 * 1.0))
    assert result["overall"]["poor"] == pytest.approx(0.1)


def test_rank_score_mapping():
    assert rank_scores({"a": 3}) == {"a": 1.0}
    assert rank_scores({"a": 3, "b": 1, "c": 1, "d": 0}) == pytest.approx({"a": 1.0, "b": 0.7, "c": 0.7, "d": 0.1})


def test_rank_cli(tmp_path):
    paths = []
    for name, data in SUBMISSIONS.items():
        os.makedirs(tmp_path / name)
        paths.append(str(tmp_path / name / "metrics.json"))
        json.dump(data, open(paths[-1], "w"))
    script = os.path.join(os.path.dirname(__file__), "..", "rank.py")
    out = subprocess.run([sys.executable, script, *paths, "--json", str(tmp_path / "rank.json")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[2].startswith("good") and lines[4].startswith("poor")  # sorted by overall score
    assert json.load(open(tmp_path / "rank.json"))["overall"]["middle"] == pytest.approx(np.sqrt(0.55))
    out = subprocess.run([sys.executable, script, *paths, "--names", "A", "B"], capture_output=True, text=True)
    assert out.returncode == 2 and "one name per" in out.stderr
