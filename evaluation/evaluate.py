"""Evaluate displacement fields against the ReMIND2Reg ground truth and write a Learn2Reg-style metrics.json.

    python evaluation/evaluate.py --input DIR --ground-truth DIR --output FILE [--report DIR] [--workers N]

Defaults are the container paths: /input, /opt/ml/input/data/ground_truth, /output/metrics.json. The layout is
detected from the input: `predictions.json` present -> Grand Challenge, else the organisers' flat folder.

Failure policy (`--missing`): `fail` (default, strict like the organisers' code) exits 1 when a pair's
prediction is missing or invalid; `identity` scores such a pair as no registration (u = 0), lists it in
metrics.json "scored_as_identity" and exits 0. metrics.json is written before exiting either way (the other
pairs are always evaluated). A ground-truth problem always fails its pair.
Exit status: 0 every pair scored; 1 some pairs not scored (named in metrics.json "failed_cases" and in the
last stderr line); 2 nothing could be evaluated (no ground truth, no pairs, unreadable layout, crash).
Logging: INFO on stdout; WARNING and ERROR on stderr. A failing run's last stderr line says why and names the
pairs (the platform shows a failed job's last non-empty stderr line); a successful run never ends stderr
with an error line.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from evaluation import metrics as M
from evaluation.fields import FieldError, implausible_magnitude, load_field
from evaluation.ground_truth import (DEFAULT_GROUND_TRUTH, GroundTruthError, Pair, discover_pairs,
                                     image_grid, image_header, image_path, load_landmarks, pairs_from_config)
from evaluation.layouts import locate
from interfaces.conventions import FIXED_INDEX, MODALITIES
from interfaces.images import write_json_atomic
from interfaces.logs import Progress, one_line

EVAL_VERSION = "2.0"          # Learn2Reg metrics.json shape version
EVALUATOR = "remind2reg-eval 1.1"
MISSING_POLICIES = ("fail", "identity")
PREDICTION, GROUND_TRUTH, INTERNAL = "prediction", "ground_truth", "internal"  # kinds of a pair's failure

log = logging.getLogger("remind2reg.evaluation")


class _SplitHandler(logging.Handler):
    """INFO (and below) -> stdout as the bare message; WARNING and ERROR -> stderr as 'LEVEL: message'. The
    streams are looked up when a record is written (so redirections and test captures apply)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())  # one line per record, always
            if record.levelno < logging.WARNING:
                stream, line = sys.stdout, message
            else:
                stream, line = sys.stderr, f"{record.levelname}: {message}"
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - logging must never break the evaluation
            self.handleError(record)


def setup_logging(quiet: bool = False) -> None:
    if not any(isinstance(h, _SplitHandler) for h in log.handlers):
        log.addHandler(_SplitHandler())
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def evaluate_pair(pair: Pair, gt_dir: str, field_path: str | None, runtime: float | None, layout: str,
                  report_dir: str | None = None) -> dict:
    """One pair -> {"key", "metrics": {metric: {"mean", "detailed"}}, "tre": [...]} or {"key", "error", "kind"}."""
    try:
        if field_path is None:
            raise FieldError(f"{pair.key}: no displacement field found for this pair")
        fixed_points, moving_points = load_landmarks(pair, gt_dir)
        has_images = all(os.path.isfile(image_path(gt_dir, pair.case, m)) for m in (FIXED_INDEX, pair.moving))
        if has_images or layout != "grand-challenge":
            shape, fixed_spacing = image_header(pair, gt_dir, FIXED_INDEX)
            _, spacing = image_header(pair, gt_dir, pair.moving)
        else:
            shape = spacing = fixed_spacing = None  # GC without images: the DSPF's own grid (= the shared grid)
        loaded = load_field(field_path, shape, pair.key)
        if loaded.grid is not None:
            if has_images and not loaded.grid.matches(image_grid(pair, gt_dir, FIXED_INDEX)):
                raise FieldError(f"{pair.key}: {os.path.basename(field_path)}: DSPF geometry (origin, spacing, "
                                 f"direction) does not match the fixed image")
            spacing = spacing or loaded.grid.spacing
            fixed_spacing = fixed_spacing or loaded.grid.spacing
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
        warning = implausible_magnitude(loaded.field, fixed_spacing)  # the voxel field is on the fixed grid
        return {"key": pair.key, "metrics": result, "tre": tre.tolist(),
                **({"warnings": [warning]} if warning else {})}
    except FieldError as exc:
        return {"key": pair.key, "error": str(exc), "kind": PREDICTION}
    except GroundTruthError as exc:
        return {"key": pair.key, "error": str(exc), "kind": GROUND_TRUTH}
    except Exception as exc:  # never lose the other pairs to one unexpected failure
        return {"key": pair.key, "error": f"{pair.key}: {type(exc).__name__}: {one_line(exc)}",
                "kind": INTERNAL}


def evaluate_identity(pair: Pair, gt_dir: str) -> dict:
    """A pair scored as no registration (u = 0): TRE_lm = TRE_initial, the zero field's plausibility figures.
    Same result shape as evaluate_pair; a ground-truth problem is returned as its error."""
    try:
        fixed_points, moving_points = load_landmarks(pair, gt_dir)
        _, spacing = image_header(pair, gt_dir, pair.moving)
        tre0 = M.tre(fixed_points, moving_points, None, spacing)
        result = {M.TRE: {"mean": float(tre0.mean()), "detailed": tre0.tolist()},
                  M.TRE_WORST30: _scalar(M.worst_fraction_mean(tre0)),
                  M.TRE_INITIAL: {"mean": float(tre0.mean()), "detailed": tre0.tolist()}}
        result.update({name: _scalar(value) for name, value in M.IDENTITY_PLAUSIBILITY.items()})
        return {"key": pair.key, "metrics": result, "tre": tre0.tolist()}
    except GroundTruthError as exc:
        return {"key": pair.key, "error": f"{exc} (cannot score as identity either)", "kind": GROUND_TRUTH}


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
                  extra_errors: dict[str, str], identity: dict[str, str] | None = None,
                  missing: str = "fail", runtime_source: str | None = None) -> dict:
    """metrics.json. `identity`: pair key -> why it was scored as identity (its result is among `results`)."""
    identity = identity or {}
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
            "scored_as_identity": dict(sorted(identity.items())),
            "errors": [failed[k] for k in sorted(failed)],
            "warnings": warnings,
            "counts": {"pairs": len(pairs), "evaluated": len(cases), "failed": len(failed),
                       "scored_as_identity": len(identity)},
            "missing_policy": missing,
            "runtime_source": runtime_source,
            "layout": layout,
            "evaluator": EVALUATOR,
            "eval_version": EVAL_VERSION}


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail_early(output: str, name: str, pairs: list[Pair], errors: dict[str, str], why: str, missing: str) -> int:
    write_json_atomic(build_metrics([], pairs, name, "unknown", [], errors, missing=missing), output)
    log.error(why)
    return 2


class _CannotEvaluate(Exception):
    """Nothing can be evaluated (no ground truth, no pairs, unreadable input layout): exit status 2."""

    def __init__(self, why: str, pairs: list[Pair], errors: dict[str, str]):
        super().__init__(why)
        self.why, self.pairs, self.errors = why, pairs, errors


def run(input_dir: str, gt_dir: str, output: str, config: str | None = None, workers: int = 0,
        report_dir: str | None = None, name: str = "ReMIND2Reg", quiet: bool = False, missing: str = "fail") -> int:
    """Evaluate, write `output` (always), log, and return the exit status (see the module docstring)."""
    setup_logging(quiet)
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    try:
        pairs, located = _plan(input_dir, gt_dir, config, missing)
    except _CannotEvaluate as stop:
        return _fail_early(output, name, stop.pairs, stop.errors, stop.why, missing)
    tally = _Tally(pairs, gt_dir, missing)
    for p in pairs:  # a prediction the layout already refused is a result before any scoring
        if p.key in located.errors:
            tally.finish({"key": p.key, "error": located.errors[p.key], "kind": PREDICTION})
    jobs = [(p, gt_dir, located.fields.get(p.key), located.runtimes.get(p.key), located.layout, report_dir)
            for p in pairs if p.key not in located.errors]
    _score(jobs, workers, tally.finish)
    results = sorted(tally.finished, key=lambda r: r["key"])
    warnings = located.warnings + tally.warnings
    data = build_metrics(results, pairs, name, located.layout, warnings, {}, tally.identity, missing,
                         located.runtime_source)
    write_json_atomic(data, output)
    if report_dir and data["cases"]:
        from evaluation import report
        report.summary_figure({name: data}, report_dir)
    return _conclude(data, results, len(pairs), tally.identity, warnings, missing, output)


def _plan(input_dir: str, gt_dir: str, config: str | None, missing: str):
    """(pairs, located predictions), the plan logged; raise _CannotEvaluate when there is nothing to do."""
    try:
        pairs, used = (pairs_from_config(config), config) if config else discover_pairs(gt_dir)
    except (GroundTruthError, OSError, ValueError, KeyError) as exc:
        raise _CannotEvaluate(f"evaluation failed: ground truth: {exc}", [],
                              {"ground_truth": f"ground truth: {exc}"}) from None
    if not pairs:
        raise _CannotEvaluate(f"evaluation failed: no evaluation pairs found in {gt_dir}", [],
                              {"ground_truth": f"no pairs in {gt_dir}"})
    try:
        located = locate(input_dir, pairs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        errors = {p.key: f"{p.key}: input layout unreadable ({type(exc).__name__}: {exc})" for p in pairs}
        raise _CannotEvaluate(f"evaluation failed: cannot read the input layout {input_dir} "
                              f"({type(exc).__name__}: {exc})", pairs, errors) from None
    log.info(f"{located.layout} layout, {len(pairs)} pairs "
             f"({'config ' + os.path.basename(used) if used else 'all landmark pairs'}), --missing {missing}")
    for warning in located.warnings:
        log.warning(warning)
    return pairs, located


class _Tally:
    """The pairs' results as they arrive: scored as identity when asked, logged with [k/N, time left]."""

    def __init__(self, pairs: list[Pair], gt_dir: str, missing: str):
        self.by_key, self.total = {p.key: p for p in pairs}, len(pairs)
        self.gt_dir, self.missing = gt_dir, missing
        self.identity: dict[str, str] = {}  # pair key -> why it was scored as identity
        self.warnings: list[str] = []        # the pairs' own warnings (e.g. an implausible field magnitude)
        self.finished: list[dict] = []
        self.progress = Progress(len(pairs))

    def finish(self, result: dict) -> dict:
        key = result["key"]
        if self.missing == "identity" and result.get("kind") == PREDICTION:
            replacement = evaluate_identity(self.by_key[key], self.gt_dir)
            if "metrics" in replacement:
                self.identity[key] = result["error"]
            result = replacement
        step = self.progress.text(len(self.finished) + 1) if self.total > 1 else ""
        if key in self.identity:
            log.warning(f"{step}{key}: scored as identity (no registration; --missing identity): "
                        f"{self.identity[key]}")
        elif "metrics" in result:
            values = result["metrics"]
            log.info(f"  {step}{key}: {M.TRE} {values[M.TRE]['mean']:.3f} mm, "
                     f"{M.SDLOGJ} {values[M.SDLOGJ]['mean']:.4f}"
                     + (f", {M.RUNTIME} {values[M.RUNTIME]['mean']:.1f}" if M.RUNTIME in values else ""))
        else:
            log.error(f"{step}{result['error']}")
        for warning in result.get("warnings", []):
            self.warnings.append(f"{key}: {warning}")
            log.warning(f"{step}{key}: {warning}")
        self.finished.append(result)
        return result


def _score(jobs: list[tuple], workers: int, finish) -> None:
    """evaluate_pair for every job, each result handed to `finish` in job order as soon as it is done; in
    worker processes (default min(2, cores, jobs)) when there are several jobs."""
    workers = workers or min(len(jobs), os.cpu_count() or 1, 2)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(evaluate_pair, *zip(*jobs)):  # in order, each as soon as it is done
                finish(result)
    else:
        for job in jobs:
            finish(evaluate_pair(*job))


def _conclude(data: dict, results: list[dict], n_pairs: int, identity: dict[str, str], warnings: list[str],
              missing: str, output: str) -> int:
    """The run's last lines and exit status: the mean TRE; then one stderr line naming every pair not scored
    (1), or a warning when a success needs one (identity scores, warnings above), or nothing (0)."""
    aggregate = data["aggregates"].get(M.TRE, {})
    if aggregate.get("mean") is not None:
        log.info(f"{M.TRE} mean {aggregate['mean']:.3f} mm, TRE30 (\"30\") {aggregate['30']:.3f} mm over "
                 f"{len(data['cases'])} pairs -> {output}")
    failed = data["failed_cases"]
    if failed:
        hint = ""
        if missing == "fail" and any(r.get("kind") == PREDICTION for r in results if r["key"] in failed):
            hint = "; --missing identity would score a missing/invalid prediction as no registration"
        log.error(f"evaluation failed: {len(failed)} of {n_pairs} pairs not scored: "
                  + "; ".join(_short(failed[k]) for k in sorted(failed))
                  + f" (metrics.json written with the other {len(data['cases'])}{hint})")
        return 1
    if identity:
        log.warning(f"evaluation finished, exit status 0: {len(data['cases'])} of {n_pairs} pairs scored, "
                    f"{len(identity)} of them as identity (--missing identity): {', '.join(sorted(identity))}")
    elif warnings:
        log.warning(f"evaluation finished, exit status 0: all {n_pairs} pairs scored "
                    f"({len(warnings)} warning(s) above, none of them a failure)")
    return 0


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
    parser.add_argument("--missing", choices=MISSING_POLICIES,
                        default=os.environ.get("REMIND2REG_EVAL_MISSING", "fail"),
                        help="a pair whose prediction is missing or invalid: 'fail' (default; strict like the "
                             "organisers' code: exit 1, the pairs named in the last stderr line) or 'identity' "
                             "(scored as no registration, u = 0, listed in metrics.json scored_as_identity, "
                             "exit 0). Default from $REMIND2REG_EVAL_MISSING, else fail. metrics.json is "
                             "written either way")
    parser.add_argument("--quiet", action="store_true", help="no INFO lines (stdout)")
    args = parser.parse_args(argv)
    setup_logging(args.quiet)
    if args.report:
        from evaluation import report
        try:
            report.require_matplotlib()
        except ImportError as exc:
            log.error(f"evaluation failed: {exc}")
            return 2
    try:
        return run(args.input, args.ground_truth, args.output, args.config, args.workers, args.report, args.name,
                   args.quiet, args.missing)
    except Exception as exc:  # an unexpected crash still ends stderr with one line saying why
        why = f"evaluation crashed: {type(exc).__name__}: {exc}"
        try:
            write_json_atomic(build_metrics([], [], args.name, "unknown", [], {"evaluation": why},
                                            missing=args.missing), args.output)
        except Exception:
            pass
        log.error(why)
        return 2


if __name__ == "__main__":
    from evaluation import evaluate as _module  # functions must be importable by name for the worker processes

    sys.exit(_module.main())
