"""Learn2Reg rank score from several metrics.json files (one per method).

    python evaluation/rank.py A/metrics.json B/metrics.json C/metrics.json [--names A B C]
                              [--metrics TRE_lm TRE_lm_30 LogJacDetStd runtime_s] [--json OUT] [--report DIR]

Follows the Learn2Reg ranking code (MDL-UzL/L2R, ranking/ranking_utils.py and the 2023 ranking notebooks):
- samples: TRE per LANDMARK (every landmark of the cases all ranked methods have, pooled); LogJacDetStd and
  runtime per case;
- TRE_lm_30: the same per-landmark TRE restricted to the hardest 30 % of those landmarks, chosen once for all
  methods by their INITIAL error (TRE_initial, u = 0): the round(0.3 n) landmarks with the largest initial error;
- test: two-sided Wilcoxon rank-sum (scipy.stats.ranksums, p < 0.05) between every two methods;
- each method counts the methods significantly better than it (lower values); fewer is better; the methods
  are spread over numpy.linspace(0.1, 1, N) by that count with tied methods sharing the average of their
  positions (a single method gets 0.1, as there);
- a method without a metric gets the lowest score 0.1 for it (the ranking readme's rule); the others are
  ranked among themselves; a metric no method has is left out;
- overall: geometric mean of the metric scores.
Differences from Learn2Reg, and why: docs/EVALUATION.md ("Ranking").
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from scipy.stats import rankdata, ranksums

from evaluation import metrics as M

TRE_HARDEST = "TRE_lm_30"    # per-landmark TRE on the hardest 30 % of landmarks by initial error
HARDEST_FRACTION = 0.3
DEFAULT_METRICS = (M.TRE, TRE_HARDEST, M.SDLOGJ, M.RUNTIME)
PER_LANDMARK = (M.TRE, TRE_HARDEST)
ALPHA = 0.05
LOWEST = 0.1


def per_case(data: dict, metric: str) -> dict[str, float]:
    return {key: case[metric]["mean"] for key, case in data.get("cases", {}).items()
            if metric in case and case[metric].get("mean") is not None}


def per_landmark(data: dict, metric: str = M.TRE) -> dict[str, list[float]]:
    return {key: list(case[metric]["detailed"]) for key, case in data.get("cases", {}).items()
            if metric in case and isinstance(case[metric].get("detailed"), list)}


def losses(values: dict[str, np.ndarray], alpha: float = ALPHA) -> dict[str, int]:
    """For each method, how many others are significantly better (lower values; rank-sum test, p < alpha)."""
    count = {name: 0 for name in values}
    for a in values:
        for b in values:
            if a != b:
                statistic, p = ranksums(values[a], values[b])
                if p < alpha and statistic < 0:  # a's values significantly lower: a is better than b
                    count[b] += 1
    return count


def rank_scores(loss_counts: dict[str, int]) -> dict[str, float]:
    """Methods spread over linspace(0.1, 1, N) by their losses (fewest -> 1), ties share the average."""
    names = list(loss_counts)
    n = len(names)
    if n == 1:
        return {names[0]: LOWEST}
    ranks = rankdata([-loss_counts[name] for name in names], method="average")  # 1 = most losses
    return {name: LOWEST + (1 - LOWEST) * (r - 1) / (n - 1) for name, r in zip(names, ranks)}


def hardest_landmarks(submissions: dict[str, dict], keys: list[str], fraction: float = HARDEST_FRACTION):
    """Indices into the landmarks of `keys` (pooled in that order) with the largest initial error, and the
    method whose TRE_initial was used; (None, reason) when no method carries TRE_initial for all keys."""
    for name, data in submissions.items():
        initial = per_landmark(data, M.TRE_INITIAL)
        if all(key in initial for key in keys):
            pooled = np.concatenate([np.asarray(initial[key], dtype=np.float64) for key in keys])
            count = int(round(fraction * pooled.size))
            return np.argsort(-pooled, kind="stable")[:count], name
    return None, f"needs {M.TRE_INITIAL} (per landmark) for every ranked case"


def _samples(submissions: dict[str, dict], metric: str) -> tuple[dict[str, np.ndarray], dict]:
    """{method: sample array} for the methods that have `metric`, and notes (cases used, reason if none)."""
    source = M.TRE if metric in PER_LANDMARK else metric
    if metric in PER_LANDMARK:
        raw = {name: per_landmark(data, source) for name, data in submissions.items()}
    else:
        raw = {name: per_case(data, source) for name, data in submissions.items()}
    present = {name: v for name, v in raw.items() if v}
    if not present:
        return {}, {"reason": "not available for any method"}
    keys = sorted(set.intersection(*[set(v) for v in present.values()]))
    if not keys:
        return {}, {"reason": "no case common to the methods that have it"}
    if metric in PER_LANDMARK:
        if any(len({len(present[name][key]) for name in present}) > 1 for key in keys):
            return {}, {"reason": "methods disagree on the number of landmarks of a case"}
        arrays = {name: np.concatenate([np.asarray(v[key], dtype=np.float64) for key in keys])
                  for name, v in present.items()}
        notes = {"n_cases": len(keys)}
        if metric == TRE_HARDEST:
            index, used = hardest_landmarks(submissions, keys)
            if index is None:
                return {}, {"reason": used}
            arrays = {name: a[index] for name, a in arrays.items()}
            notes["initial_from"] = used
    else:
        arrays = {name: np.asarray([v[key] for key in keys], dtype=np.float64) for name, v in present.items()}
        notes = {"n_cases": len(keys)}
    notes["n_samples"] = int(next(iter(arrays.values())).size)
    return arrays, notes


def rank(submissions: dict[str, dict], metrics=DEFAULT_METRICS) -> dict:
    """{"metrics": {metric: {"n_cases", "n_samples", "losses", "score", "mean"}}, "overall": {name: score},
    "skipped": {metric: why}}."""
    table, skipped = {}, {}
    for metric in metrics:
        arrays, notes = _samples(submissions, metric)
        if not arrays:
            skipped[metric] = notes["reason"]
            continue
        counts = losses(arrays)
        scores = rank_scores(counts)
        entry = {**notes, "losses": {}, "score": {}, "mean": {}}
        for name in submissions:
            entry["losses"][name] = counts.get(name)
            entry["score"][name] = scores.get(name, LOWEST)  # without the metric: the lowest score
            entry["mean"][name] = float(arrays[name].mean()) if name in arrays else None
        table[metric] = entry
    overall = {}
    for name in submissions:
        values = [table[m]["score"][name] for m in table]
        overall[name] = float(np.exp(np.mean(np.log(values)))) if values else 0.0
    return {"metrics": table, "overall": overall, "skipped": skipped}


def format_table(result: dict) -> str:
    metrics = list(result["metrics"])
    names = sorted(result["overall"], key=lambda n: -result["overall"][n])
    width = max([len(n) for n in names] + [6])
    header = f"{'method':<{width}}  " + "  ".join(f"{m + ' (mean/losses/score)':>34}" for m in metrics) + "    overall"
    lines = [header, "-" * len(header)]
    for name in names:
        cells = []
        for m in metrics:
            entry = result["metrics"][m]
            mean, lost = entry["mean"][name], entry["losses"][name]
            cells.append(("-" if mean is None else f"{mean:.4f}").rjust(16) + ("-" if lost is None else str(lost)).rjust(7)
                         + f"{entry['score'][name]:>10.3f}")
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>34}" for c in cells) + f"  {result['overall'][name]:9.3f}")
    for metric, why in result["skipped"].items():
        lines.append(f"(metric {metric} left out: {why})")
    return "\n".join(lines)


def _default_name(path: str, data: dict, taken: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name = os.path.basename(os.path.dirname(os.path.abspath(path))) if stem == "metrics" else stem
    return name if name not in taken else path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Learn2Reg rank score of several metrics.json files.")
    parser.add_argument("metrics_files", nargs="+", metavar="METRICS.json")
    parser.add_argument("--names", nargs="+", help="one name per file (default: folder or file name)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="default: %(default)s")
    parser.add_argument("--json", default=None, help="also write the result as JSON")
    parser.add_argument("--report", default=None, metavar="DIR", help="summary plot of TRE per pair and method")
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.metrics_files):
        parser.error("--names needs one name per metrics file")
    submissions = {}
    for n, path in enumerate(args.metrics_files):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        name = args.names[n] if args.names else _default_name(path, data, set(submissions))
        submissions[name] = data
    result = rank(submissions, args.metrics)
    print(format_table(result))
    if args.json:
        from interfaces.images import write_json_atomic
        write_json_atomic(result, args.json)
    if args.report:
        from evaluation import report
        try:
            print(report.summary_figure(submissions, args.report))
        except ImportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
