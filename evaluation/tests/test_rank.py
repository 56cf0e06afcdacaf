"""The rank command (Learn2Reg scheme, docs/EVALUATION.md "Ranking") on fake submissions with hand-computed
scores: per-landmark TRE samples, the hardest 30 % of landmarks by INITIAL error, losses with the rank-sum
test, linspace(0.1, 1, N) positions with averaged ties, 0.1 for a method without a metric."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evaluation import metrics as M
from evaluation.rank import TRE_HARDEST, losses, rank, rank_scores

N_CASES, N_LM, N_HARD = 12, 10, 3
rng = np.random.default_rng(0)
HARD = np.zeros((N_CASES, N_LM), bool)
HARD[:, :N_HARD] = True                                     # 3 of 10 landmarks per case: 36 of 120 = 30 %
INITIAL = np.where(HARD, 10.0, 1.0) + rng.uniform(0, 0.1, HARD.shape)


def fake(easy, hard, sdlogj, runtime=None):
    """TRE `easy` mm on the easy landmarks and `hard` mm on the hard ones (+ small noise)."""
    tre = np.where(HARD, hard, easy) + rng.uniform(0, 0.1, HARD.shape)
    cases = {}
    for n in range(N_CASES):
        case = {M.TRE: {"mean": float(tre[n].mean()), "detailed": tre[n].tolist()},
                M.TRE_INITIAL: {"mean": float(INITIAL[n].mean()), "detailed": INITIAL[n].tolist()},
                M.SDLOGJ: {"mean": float(sdlogj + rng.uniform(0, 0.01)), "detailed": 0.0}}
        if runtime is not None:
            case[M.RUNTIME] = {"mean": float(runtime + rng.uniform(0, 1)), "detailed": 0.0}
        cases[f"{n:04d}_0000<--{n:04d}_0001"] = case
    return {"name": "x", "aggregates": {}, "cases": cases, "eval_version": "2.0"}


SUBMISSIONS = {
    "good": fake(2, 8, 0.05, runtime=10),     # best overall, worst on the hard landmarks
    "middle": fake(4, 3, 0.05, runtime=60),   # best on the hard landmarks; SDlogJ like good's
    "poor": fake(6, 6, 0.30),                 # no runtime
}


def test_rank_by_hand():
    result = rank(SUBMISSIONS)
    tre = result["metrics"][M.TRE]
    assert tre["n_cases"] == 12 and tre["n_samples"] == 120                # per landmark, not per case
    assert tre["losses"] == {"good": 0, "middle": 1, "poor": 2}
    assert tre["score"] == pytest.approx({"good": 1.0, "middle": 0.55, "poor": 0.1})
    hard = result["metrics"][TRE_HARDEST]
    assert hard["n_samples"] == 36                                         # round(0.3 * 120) by initial error
    assert hard["mean"]["middle"] == pytest.approx(3.05, abs=0.05)         # exactly the hard landmarks
    assert hard["losses"] == {"good": 2, "middle": 0, "poor": 1}
    assert hard["score"] == pytest.approx({"good": 0.1, "middle": 1.0, "poor": 0.55})
    sd = result["metrics"][M.SDLOGJ]
    assert sd["n_samples"] == 12 and sd["losses"] == {"good": 0, "middle": 0, "poor": 2}
    assert sd["score"] == pytest.approx({"good": 0.775, "middle": 0.775, "poor": 0.1})  # avg of .55 and 1
    run = result["metrics"][M.RUNTIME]                                     # poor has none: lowest score
    assert run["losses"] == {"good": 0, "middle": 1, "poor": None}
    assert run["score"] == pytest.approx({"good": 1.0, "middle": 0.1, "poor": 0.1})
    assert result["skipped"] == {}
    assert result["overall"]["good"] == pytest.approx((1.0 * 0.1 * 0.775 * 1.0) ** 0.25)
    assert result["overall"]["middle"] == pytest.approx((0.55 * 1.0 * 0.775 * 0.1) ** 0.25)
    assert result["overall"]["poor"] == pytest.approx((0.1 * 0.55 * 0.1 * 0.1) ** 0.25)


def test_rank_score_positions_and_averaged_ties():
    # Learn2Reg's rankscore_avgtie example (win-like scores 0, 2, 4, 3, 4, 0) as losses 4 - score:
    # positions linspace(0.1, 1, 6) = .1 .28 .46 .64 .82 1; tied pairs share (.1 + .28)/2 and (.82 + 1)/2
    scores = rank_scores(dict(zip("abcdef", [4, 2, 0, 1, 0, 4])))
    assert scores == pytest.approx({"a": 0.19, "b": 0.46, "c": 0.91, "d": 0.64, "e": 0.91, "f": 0.19})
    assert rank_scores({"a": 0}) == {"a": 0.1}                            # linspace(0.1, 1, 1) = [0.1]
    assert rank_scores({"a": 0, "b": 1, "c": 1, "d": 3}) == pytest.approx({"a": 1.0, "b": 0.55, "c": 0.55, "d": 0.1})


def test_losses_need_significance():
    a = np.arange(10.0)
    assert losses({"a": a, "b": a + 0.5}) == {"a": 0, "b": 0}              # p >= 0.05: nobody loses
    assert losses({"a": a, "b": a + 20}) == {"a": 0, "b": 1}


def test_hardest_needs_initial_error():
    stripped = {name: json.loads(json.dumps(data)) for name, data in SUBMISSIONS.items()}
    for data in stripped.values():
        for case in data["cases"].values():
            del case[M.TRE_INITIAL]
    result = rank(stripped)
    assert TRE_HARDEST in result["skipped"] and "TRE_initial" in result["skipped"][TRE_HARDEST]


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
    saved = json.load(open(tmp_path / "rank.json"))
    assert saved["overall"]["middle"] == pytest.approx((0.55 * 1.0 * 0.775 * 0.1) ** 0.25)
    out = subprocess.run([sys.executable, script, *paths, "--names", "A", "B"], capture_output=True, text=True)
    assert out.returncode == 2 and "one name per" in out.stderr
