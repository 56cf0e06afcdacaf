"""Evaluate displacement fields against the ReMIND2Reg ground truth and write a Learn2Reg-style metrics.json.

    python evaluation/evaluate.py --input DIR --ground-truth DIR --output FILE [--report DIR] [--workers N]

Defaults are the container paths: /input, /opt/ml/input/data/ground_truth, /output/metrics.json. The layout is
detected from the input: `predictions.json` present -> Grand Challenge, else the organisers' flat folder.
Exit status: 0 all pairs evaluated; 1 some pairs failed (each named in metrics.json "errors"; the others are
still evaluated); 2 nothing could be evaluated (no ground truth, no pairs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from evaluation import metrics as M
from evaluation.fields import FieldError, load_field
from evaluation.ground_truth import (DEFAULT_GROUND_TRUTH, GroundTruthError, Pair, discover_pairs,
                                     image_grid, image_header, image_path, load_landmarks, pairs_from_config)
from evaluation.layouts import locate
from interfaces.conventions import FIXED_INDEX, MODALITIES
from interfaces.images import write_json_atomic

EVAL_VERSION = "2.0"          # Learn2Reg metrics.json shape version
EVALUATOR = "remind2reg-eval 1.0"


def evaluate_pair(pair: Pair, gt_dir: str, field_path: str | None, runtime: float | None, layout: str,
                  report_dir: str | None = None) -> dict:
    """One pair -> {"key", "metrics": {metric: {"mean", "detailed"}}, "tre": [...]} or {"key", "error"}."""
    try:
        if field_path is None:
            raise FieldError(f"{pair.key}: no displacement field found for this pair")
        fixed_points, moving_points = load_landmarks(pair, gt_dir)
        has_images = all(os.path.isfile(image_path(gt_dir, pair.case, m)) for m in (FIXED_INDEX, pair.moving))
        if has_images or layout != "grand-challenge":
            shape, _ = image_header(pair, gt_dir, FIXED_INDEX)
            _, spacing = image_header(pair, gt_dir, pair.moving)
        else:
            shape = spacing = None  # GC without images: the DSPF's own grid (= the shared grid) is used
        loaded = load_field(field_path, shape, pair.key)
        if loaded.grid is not None:
            if has_images and not loaded.grid.matches(image_grid(pair, gt_dir, FIXED_INDEX)):
                raise FieldError(f"{pair.key}: {os.path.basename(field_path)}: DSPF geometry (origin, spacing, "
                                 f"direction) does not match the fixed image")
            spacing = spacing or loaded.grid.spacing
        tre = M.tre(fixed_points, moving_points, loaded.field, spacing, loaded.sample_dtype)
        tre0 = M.tre(fixed_points, moving_points, None, spacing)
        result = {M.TRE: {"mean": float(tre.mean()), "detailed": tre.tolist()},
                  M.TRE_WORST30: _scalar(M.worst_fraction_mean(tre)),
                  M.TRE_INITIAL: {"mean": float(tre0.mean()), "detailed": tre0.tolist()}}
        result.update({name: _scalar(value) for name, value in M.plausibility(loaded.field).items()})
        if runtime is not None:
            result[M.RUNTIME] = _scalar(runtime)
        if report_dir:
            from evaluation import report
            report.pair_figure(pair, gt_dir, loaded.field, fixed_points, moving_points, tre, tre0, report_dir)
        return {"key": pair.key, "metrics": result, "tre": tre.tolist()}
    except (FieldError, GroundTruthError) as exc:
        return {"key": pair.key, "error": str(exc)}
    except Exception as exc:  # never lose the other pairs to one unexpected failure
        return {"key": pair.key, "error": f"{pair.key}: {type(exc).__name__}: {' '.join(str(exc).split())}"}


def _scalar(value: float) -> dict:
    return {"mean": float(value), "detailed": float(value)}


def _aggregates(cases: dict[str, dict]) -> dict:
    names = []
    for case in cases.values():
        names += [n for n in case if n not in names]
    return {name: M.aggregate([case[name]["mean"] for case in cases.values() if name in case]) for name in names}


def _pooled(results: list[dict]) -> dict:
    tre = np.asarray([t for r in results for t in r["tre"]], dtype=np.float64)
    if tre.size == 0:
        return {"n_landmarks": 0, M.TRE: None, M.TRE_WORST30: None}
    return {"n_landmarks": int(tre.size), M.TRE: float(tre.mean()), M.TRE_WORST30: M.worst_fraction_mean(tre)}


def build_metrics(results: list[dict], pairs: list[Pair], name: str, layout: str, warnings: list[str],
                  extra_errors: dict[str, str]) -> dict:
    ok = [r for r in results if "metrics" in r]
    failed = {r["key"]: r["error"] for r in results if "error" in r}
    failed.update(extra_errors)
    cases = {r["key"]: r["metrics"] for r in ok}
    by_sequence, pooled = {}, {"all": _pooled(ok)}
    for modality in sorted({p.moving for p in pairs}):
        sequence = MODALITIES[modality]
        keys = {p.key for p in pairs if p.moving == modality}
        by_sequence[sequence] = _aggregates({k: v for k, v in cases.items() if k in keys})
        pooled[sequence] = _pooled([r for r in ok if r["key"] in keys])
    return {"name": name,
            "aggregates": _aggregates(cases),
            "aggregates_by_sequence": by_sequence,
            "pooled_landmarks": pooled,
            "cases": cases,
            "failed_cases": failed,
            "errors": [failed[k] for k in sorted(failed)],
            "warnings": warnings,
            "counts": {"pairs": len(pairs), "evaluated": len(cases), "failed": len(failed)},
            "layout": layout,
            "evaluator": EVALUATOR,
            "eval_version": EVAL_VERSION}


def run(input_dir: str, gt_dir: str, output: str, config: str | None = None, workers: int = 0,
        report_dir: str | None = None, name: str = "ReMIND2Reg", quiet: bool = False) -> int:
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    try:
        pairs, used = (pairs_from_config(config), config) if config else discover_pairs(gt_dir)
    except (GroundTruthError, OSError, ValueError, KeyError) as exc:
        write_json_atomic(build_metrics([], [], name, "unknown", [], {"ground_truth": f"ground truth: {exc}"}), output)
        print(f"error: ground truth: {exc}", file=sys.stderr)
        return 2
    if not pairs:
        write_json_atomic(build_metrics([], [], name, "unknown", [], {"ground_truth": f"no pairs in {gt_dir}"}),
                          output)
        print(f"error: no evaluation pairs found in {gt_dir}", file=sys.stderr)
        return 2
    try:
        located = locate(input_dir, pairs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        errors = {p.key: f"{p.key}: input layout unreadable ({type(exc).__name__}: {exc})" for p in pairs}
        write_json_atomic(build_metrics([], pairs, name, "unknown", [], errors), output)
        print(f"error: cannot read the input layout: {exc}", file=sys.stderr)
        return 2
    say(f"{located.layout} layout, {len(pairs)} pairs ({'config ' + os.path.basename(used) if used else 'all landmark pairs'})")
    todo = [p for p in pairs if p.key not in located.errors]
    jobs = [(p, gt_dir, located.fields.get(p.key), located.runtimes.get(p.key), located.layout, report_dir)
            for p in todo]
    workers = workers or min(len(jobs), os.cpu_count() or 1, 2)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(evaluate_pair, *zip(*jobs)))
    else:
        results = [evaluate_pair(*job) for job in jobs]
    for result in results:
        say(f"  {result['key']}: " + (f"TRE {result['metrics'][M.TRE]['mean']:.3f} mm, SDlogJ "
                                      f"{result['metrics'][M.SDLOGJ]['mean']:.4f}" if "metrics" in result
                                      else f"ERROR {result['error']}"))
    data = build_metrics(results, pairs, name, located.layout, located.warnings, located.errors)
    for warning in located.warnings:
        say(f"warning: {warning}")
    write_json_atomic(data, output)
    if report_dir and data["cases"]:
        from evaluation import report
        report.summary_figure({name: data}, report_dir)
    for error in data["errors"]:
        print(f"error: {error}", file=sys.stderr)
    aggregate = data["aggregates"].get(M.TRE, {})
    if aggregate.get("mean") is not None:
        say(f"TRE mean {aggregate['mean']:.3f} mm, TRE30 {aggregate['30']:.3f} mm over {len(data['cases'])} pairs "
            f"-> {output}")
    return 1 if data["errors"] else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="ReMIND2Reg evaluation: TRE, TRE30, SDlogJ, folds and runtime -> metrics.json "
                    "(organisers' flat folder or Grand Challenge predictions.json layout).",
        epilog="Ranking several metrics.json files: python evaluation/rank.py A.json B.json [--names ...]")
    parser.add_argument("--input", default="/input", help="displacement fields (flat folder) or GC /input")
    parser.add_argument("--ground-truth", default=DEFAULT_GROUND_TRUTH,
                        help="imagesTr/, landmarksTr/ and a *.json with eval_pairs (default %(default)s)")
    parser.add_argument("--output", default="/output/metrics.json", help="metrics.json to write")
    parser.add_argument("--config", default=None, help="pairs config JSON (default: any *.json with eval_pairs "
                                                       "in the ground-truth folder, else all landmark pairs)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: min(2, cores, pairs))")
    parser.add_argument("--report", default=None, metavar="DIR", help="write PNGs per pair and a summary plot "
                                                                      "(needs matplotlib)")
    parser.add_argument("--name", default="ReMIND2Reg", help="the 'name' field of metrics.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.report:
        from evaluation import report
        try:
            report.require_matplotlib()
        except ImportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return run(args.input, args.ground_truth, args.output, args.config, args.workers, args.report, args.name,
               args.quiet)


if __name__ == "__main__":
    from evaluation import evaluate as _module  # functions must be importable by name for the worker processes

    sys.exit(_module.main())
