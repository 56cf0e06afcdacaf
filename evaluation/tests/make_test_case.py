"""Used by evaluation/test.sh: make a small case for the container, and check the container's metrics.json.

    python -m evaluation.tests.make_test_case WORK          -> WORK/{gt,in-organisers,in-gc,expected.json}
    python -m evaluation.tests.make_test_case --check METRICS.json EXPECTED.json [STDERR.txt]
    python -m evaluation.tests.make_test_case --check-identity METRICS.json EXPECTED.json
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from evaluation import metrics as M
from evaluation.evaluate import run
from evaluation.tests import synth

PAIRS = [("0099", 1), ("0099", 2), ("0100", 1), ("0100", 2)]
BROKEN = ("0100", 2)


def make(work: str) -> None:
    synth.make_ground_truth(os.path.join(work, "gt"))
    fields = {pair: synth.smooth_field(seed=n + 1) for n, pair in enumerate(PAIRS)}
    organisers = os.path.join(work, "in-organisers")
    for pair, field in fields.items():
        if pair == BROKEN:  # channel-first: must fail with a clear message, others still evaluated
            field = np.ascontiguousarray(np.moveaxis(field, -1, 0))
        synth.write_nifti_field(organisers, pair[0], pair[1], field)
    with open(os.path.join(organisers, "timings.json"), "w") as handle:
        json.dump({"pairs": {"0099_0000<--0099_0001": {"seconds": 3.5}}}, handle)
    good = {pair: field for pair, field in fields.items() if pair != BROKEN}  # GC: the broken job is missing
    synth.write_gc_layout(os.path.join(work, "in-gc"), good, synth.oblique_grid(),
                          {pair: 5.0 for pair in good})
    run(organisers, os.path.join(work, "gt"), os.path.join(work, "expected.json"), quiet=True, workers=1)
    print(f"test case in {work}")


BROKEN_KEY = f"{BROKEN[0]}_0000<--{BROKEN[0]}_{BROKEN[1]:04d}"


def check(metrics_path: str, expected_path: str, stderr_path: str | None = None) -> int:
    with open(metrics_path) as handle:
        got = json.load(handle)
    with open(expected_path) as handle:
        expected = json.load(handle)
    problems = []
    if set(got["cases"]) != set(expected["cases"]):
        problems.append(f"cases {sorted(got['cases'])} != {sorted(expected['cases'])}")
    if set(got["failed_cases"]) != set(expected["failed_cases"]):
        problems.append(f"failed {sorted(got['failed_cases'])} != {sorted(expected['failed_cases'])}")
    for key in set(got["cases"]) & set(expected["cases"]):
        for metric in (M.TRE, M.SDLOGJ):
            a, b = got["cases"][key][metric]["mean"], expected["cases"][key][metric]["mean"]
            if abs(a - b) > 1e-4:
                problems.append(f"{key} {metric}: {a} != {b}")
    for key in ("name", "aggregates", "cases", "eval_version"):
        if key not in got:
            problems.append(f"metrics.json lacks '{key}'")
    agg = got["aggregates"].get(M.TRE, {})
    print(f"{metrics_path}: layout {got.get('layout')}, {len(got['cases'])} pairs, TRE mean {agg.get('mean'):.4f} "
          f"TRE30 {agg.get('30'):.4f} mm, errors: {got['errors']}")
    if stderr_path:  # the platform shows a failed job's last non-empty stderr line: it must name the pair
        with open(stderr_path) as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
        if not lines or not lines[-1].startswith("ERROR: evaluation failed") or BROKEN_KEY not in lines[-1]:
            problems.append(f"last stderr line does not name {BROKEN_KEY}: {lines[-1:]!r}")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


def check_identity(metrics_path: str, expected_path: str) -> int:
    """--missing identity: every pair scored, the broken one as u = 0 (TRE_lm = TRE_initial), the others as before."""
    with open(metrics_path) as handle:
        got = json.load(handle)
    with open(expected_path) as handle:
        expected = json.load(handle)
    problems = []
    if list(got.get("scored_as_identity", {})) != [BROKEN_KEY] or got["failed_cases"]:
        problems.append(f"scored_as_identity {list(got.get('scored_as_identity', {}))}, failed {got['failed_cases']}")
    broken = got["cases"].get(BROKEN_KEY, {})
    if not broken or abs(broken[M.TRE]["mean"] - broken[M.TRE_INITIAL]["mean"]) > 1e-9:
        problems.append(f"{BROKEN_KEY} not scored as identity: {broken.get(M.TRE)}")
    for key in expected["cases"]:
        if abs(got["cases"][key][M.TRE]["mean"] - expected["cases"][key][M.TRE]["mean"]) > 1e-4:
            problems.append(f"{key}: {M.TRE} differs from the strict run")
    print(f"{metrics_path}: --missing identity, {len(got['cases'])} pairs, scored as identity: "
          f"{list(got.get('scored_as_identity', {}))}")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        sys.exit(check(*sys.argv[2:5]))
    if sys.argv[1] == "--check-identity":
        sys.exit(check_identity(sys.argv[2], sys.argv[3]))
    make(sys.argv[1])
