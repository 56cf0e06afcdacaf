"""Learn2Reg-style rank score from several metrics.json files (one per method).

    python evaluation/rank.py A/metrics.json B/metrics.json C/metrics.json [--names A B C]
                              [--metrics TRE LogJacDetStd runtime_s] [--json OUT] [--report DIR]

Per metric: pairwise Wilcoxon rank-sum tests (scipy.stats.ranksums, two-sided, p < 0.05) between methods on
their per-case values (the cases every method has); a method "wins" against another when the test is
significant and its values are better (lower for TRE, SDlogJ, folds and time). Methods are ranked by their
number of wins (competition ranking: ties share the better rank) and the rank r of N methods is mapped to a
rank score 0.1 + 0.9 (N - r) / (N - 1) in [0.1, 1] (1 = best; a single method gets 1). The overall score is
the geometric mean of the metric scores. A metric missing for some method (e.g. runtime) is left out.
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

DEFAULT_METRICS = (M.TRE, M.SDLOGJ, M.RUNTIME)
ALPHA = 0.05


def per_case(data: dict, metric: str) -> dict[str, float]:
    return {key: case[metric]["mean"] for key, case in data.get("cases", {}).items()
            if metric in case and case[metric].get("mean") is not None}


def wins(values: dict[str, np.ndarray], lower_is_better: bool = True, alpha: float = ALPHA) -> dict[str, int]:
    names = list(values)
    count = {name: 0 for name in names}
    for a in names:
        for b in names:
            if a == b:
                continue
            statistic, p = ranksums(values[a], values[b])
            better = statistic < 0 if lower_is_better else statistic > 0
            if p < alpha and better:
                count[a] += 1
    return count


def rank_scores(win_counts: dict[str, int]) -> dict[str, float]:
    names = list(win_counts)
    n = len(names)
    if n == 1:
        return {names[0]: 1.0}
    ranks = rankdata([-win_counts[name] for name in names], method="min")
    return {name: 0.1 + 0.9 * (n - r) / (n - 1) for name, r in zip(names, ranks)}


def rank(submissions: dict[str, dict], metrics=DEFAULT_METRICS) -> dict:
    """{"metrics": {metric: {"n_cases", "wins", "score", "mean"}}, "overall": {name: score}, "skipped": {...}}."""
    table, skipped = {}, {}
    for metric in metrics:
        values = {name: per_case(data, metric) for name, data in submissions.items()}
        common = sorted(set.intersection(*[set(v) for v in values.values()])) if values else []
        if not common:
            skipped[metric] = "not available for every method"
            continue
        arrays = {name: np.asarray([v[key] for key in common], dtype=np.float64) for name, v in values.items()}
        counts = wins(arrays, metric in M.LOWER_IS_BETTER)
        table[metric] = {"n_cases": len(common), "wins": counts, "score": rank_scores(counts),
                         "mean": {name: float(a.mean()) for name, a in arrays.items()}}
    overall = {}
    for name in submissions:
        scores = [table[m]["score"][name] for m in table]
        overall[name] = float(np.exp(np.mean(np.log(scores)))) if scores else 0.0
    return {"metrics": table, "overall": overall, "skipped": skipped}


def format_table(result: dict) -> str:
    metrics = list(result["metrics"])
    names = sorted(result["overall"], key=lambda n: -result["overall"][n])
    width = max([len(n) for n in names] + [6])
    header = f"{'method':<{width}}  " + "  ".join(f"{m + ' (mean/wins/score)':>34}" for m in metrics) + "    overall"
    lines = [header, "-" * len(header)]
    for name in names:
        cells = []
        for m in metrics:
            entry = result["metrics"][m]
            cells.append(f"{entry['mean'][name]:>16.4f} {entry['wins'][name]:>6d} {entry['score'][name]:>10.3f}")
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
