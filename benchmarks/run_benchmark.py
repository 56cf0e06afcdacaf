"""The project's benchmark: every method through the algorithm entrypoint, scored by the evaluation code.

For a dataset in the organisers' layout (imagesTr/, landmarksTr/, a JSON with eval_pairs; e.g. written by
`python -m simulation`), each method is run exactly as the organisers run a container (a flat input
folder, `python process.py --input IN --output OUT`, one process per method), then evaluated with
`evaluation/evaluate.py`. Methods:

  identity        no registration (u = 0)
  sitk-mi         classic peer: SimpleITK Mattes mutual information, rigid then B-spline
  mcpo            the 2025 winner's published code (benchmarks/mcpo_peer.py; not in the default list: fetched
                  at run time, $REMIND2REG_MCPO_SOURCE / $REMIND2REG_MCPO_DEVICE, about 33 min per 256^3 CPU pair)
  model           the project's model, resources/config.json
  abl-*           the model with one stage or ingredient changed (ablations; see ABLATIONS)
  model-repeat, model-cpu
                  the model again, or on the CPU (device checks; see DEVICE_VARIANTS)

The model variants get their config the way the container does: a folder holding config.json, named by
$REMIND2REG_MODEL_DIR (what /opt/ml/model is in the container). Prints one table and saves it as
OUT/benchmark.md and OUT/benchmark.json.

    python -m benchmarks.run_benchmark --cases DATASET --out OUT [--methods identity,model,...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from evaluation import metrics as M
from interfaces import conventions as cv
from interfaces.conventions import TIMINGS_NAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> config overrides merged over resources/config.json
ABLATIONS = {
    "model": {},
    "abl-global-only": {"deformable_discrete": {"enabled": False}, "refine": {"enabled": False},
                        "refine_fine": {"enabled": False}},
    "abl-no-adam": {"refine": {"enabled": False}, "refine_fine": {"enabled": False}},
    "abl-no-global": {"global": {"enabled": False}},
    "abl-no-inpaint": {"features": {"inpaint": False}},
    "abl-no-cavity-weight": {"features": {"anechoic_downweight": False}},
}
# the same model on the CPU, or simply run again (benchmarks/device_check.py); not in the default method list
DEVICE_VARIANTS = {
    "model-repeat": {},
    "model-cpu": {"device": "cpu"},
}
CONFIGS = {**ABLATIONS, **DEVICE_VARIANTS}
PEERS = ("identity", "sitk-mi", "mcpo")
DEFAULT_METHODS = ("identity", "sitk-mi") + tuple(ABLATIONS)


def flat_input(dataset: str, folder: str) -> str:
    """The organisers' flat input folder: links to every ReMIND2Reg image of the dataset."""
    os.makedirs(folder, exist_ok=True)
    images = os.path.join(dataset, "imagesTr")
    for name in sorted(os.listdir(images)):
        if cv.parse_image_name(name) and not os.path.exists(os.path.join(folder, name)):
            os.symlink(os.path.abspath(os.path.join(images, name)), os.path.join(folder, name))
    return folder


def run_method(method: str, input_dir: str, out_dir: str, sequences: str) -> tuple[float, int]:
    """Run one method as its own process; its log goes to OUT/<method>.log. Returns (wall seconds, exit code)."""
    env = dict(os.environ, REMIND2REG_SEQUENCES=sequences, PYTHONPATH=ROOT)
    if method in PEERS:
        command = [sys.executable, "-m", "benchmarks.peers", method]
    else:
        model_dir = out_dir + "-model"  # the variant's overrides, as a mounted model tarball's config.json
        os.makedirs(model_dir, exist_ok=True)
        with open(os.path.join(model_dir, "config.json"), "w") as handle:
            json.dump(CONFIGS[method], handle, indent=1)
        from model.config import load_config

        load_config(os.path.join(model_dir, "config.json"))  # the strict merge: a misspelt key stops here, named
        env["REMIND2REG_MODEL_DIR"] = model_dir
        command = [sys.executable, os.path.join(ROOT, "process.py")]
    start = time.perf_counter()
    with open(out_dir + ".log", "w") as log:
        code = subprocess.call(command + ["--input", input_dir, "--output", out_dir], env=env, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        print(f"  {method}: exit code {code} (see {out_dir}.log)", file=sys.stderr)
    return seconds, code


def worse_than(metrics: dict, identity: dict) -> int:
    """Pairs whose TRE is worse than with no registration."""
    cases, reference = metrics["cases"], identity["cases"]
    return int(sum(cases[k][M.TRE]["mean"] > reference[k][M.TRE]["mean"] + 1e-6 for k in cases if k in reference))


def summarise(method: str, metrics: dict, identity: dict | None, wall: float) -> dict:
    """One table row from a metrics.json (and the identity run's, to count pairs made worse). The row's column
    names are the table's (TRE, TRE30, SDlogJ); the metrics.json names come from evaluation.metrics."""
    cases = metrics["cases"]
    tre = np.array([c[M.TRE]["mean"] for c in cases.values()])
    row = {"method": method, "pairs": len(cases), "failed": len(metrics.get("failed_cases", {})),
           "TRE": float(tre.mean()) if tre.size else float("nan"),
           "TRE_sd": float(tre.std()) if tre.size else float("nan"),
           "TRE30": metrics["aggregates"].get(M.TRE, {}).get("30", float("nan")),
           "worst30_landmarks": metrics["pooled_landmarks"]["all"][M.TRE_WORST30],
           "max_pair_TRE": float(tre.max()) if tre.size else float("nan"),
           "SDlogJ": metrics["aggregates"].get(M.SDLOGJ, {}).get("mean", float("nan")),
           "folds": int(sum(c[M.FOLDS]["mean"] for c in cases.values())),
           "wall_s": wall}
    if identity is not None:
        row["worse_than_identity"] = worse_than(metrics, identity)
    timings_path = metrics.get("_timings")
    if timings_path and os.path.isfile(timings_path):
        with open(timings_path) as handle:
            pairs = json.load(handle).get("pairs", {})
        for stage, column in (("read", "read_s"), ("register", "register_s"), ("write", "write_s"),
                              ("seconds", "total_s")):
            values = [p[stage] for p in pairs.values() if stage in p]
            row[column] = float(np.mean(values)) if values else float("nan")
    return row


COLUMNS = [("method", "{}"), ("pairs", "{}"), ("TRE", "{:.2f}"), ("TRE_sd", "{:.2f}"), ("TRE30", "{:.2f}"),
           ("worst30_landmarks", "{:.2f}"), ("max_pair_TRE", "{:.2f}"), ("worse_than_identity", "{}"),
           ("SDlogJ", "{:.3f}"), ("folds", "{}"), ("read_s", "{:.1f}"), ("register_s", "{:.1f}"),
           ("write_s", "{:.1f}"), ("total_s", "{:.1f}")]


def table(rows: list[dict]) -> str:
    header = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for name, form in COLUMNS:
            value = row.get(name)
            cells.append("-" if value is None or (isinstance(value, float) and np.isnan(value)) else form.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(method: str) -> int:
    known = list(PEERS) + list(CONFIGS)
    return known.index(method) if method in known else len(known)


def _earlier(out: str, methods: list[str]) -> tuple[list[dict], dict]:
    """Rows and metrics of methods run into `out` before, except those about to be run again."""
    path = os.path.join(out, "benchmark.json")
    if not os.path.isfile(path):
        return [], {}
    with open(path) as handle:
        rows = [row for row in json.load(handle) if row["method"] not in methods]
    results = {}
    for row in rows:
        with open(os.path.join(out, f"{row['method']}.metrics.json")) as handle:
            results[row["method"]] = json.load(handle)
    return rows, results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", required=True, help="dataset folder: imagesTr/, landmarksTr/, eval_pairs JSON")
    parser.add_argument("--out", required=True, help="folder for fields, logs, metrics and the table")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from {', '.join(PEERS + tuple(CONFIGS))}")
    parser.add_argument("--sequences", default="all", help="ceT1 | T2 | all (default all)")
    parser.add_argument("--title", default=None, help="heading of the saved table")
    parser.add_argument("--keep", action="store_true",
                        help="keep the rows of other methods already run into OUT (e.g. peers run earlier)")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from evaluation.evaluate import run as evaluate

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in PEERS and m not in CONFIGS]
    if unknown:
        parser.error(f"unknown method(s): {', '.join(unknown)}")
    os.makedirs(args.out, exist_ok=True)
    input_dir = flat_input(args.cases, os.path.join(args.out, "input"))
    results, rows = {}, []
    if args.keep:  # rows of methods run earlier into the same OUT (and not run again now) stay in the table
        rows, results = _earlier(args.out, methods)
    crashed = []  # methods whose process exited non-zero: their row is kept, the run's exit status says so
    for method in methods:
        out_dir = os.path.join(args.out, method)
        print(f"running {method} ...", file=sys.stderr, flush=True)
        wall, code = run_method(method, input_dir, out_dir, args.sequences)
        if code != 0:
            crashed.append(f"{method} (exit code {code})")
        metrics_path = os.path.join(args.out, f"{method}.metrics.json")
        evaluate(out_dir, args.cases, metrics_path, name=method, quiet=True)
        with open(metrics_path) as handle:
            results[method] = json.load(handle)
        results[method]["_timings"] = os.path.join(out_dir, TIMINGS_NAME)
        rows.append(summarise(method, results[method], results.get("identity"), wall))
        rows.sort(key=lambda row: _order(row["method"]))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if "identity" in results:  # rows run before identity (or kept from earlier runs) get their count too
        for row in rows:
            row["worse_than_identity"] = worse_than(results[row["method"]], results["identity"])
    text = table(rows)
    title = args.title or f"Benchmark on {os.path.abspath(args.cases)}"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    with open(os.path.join(args.out, "benchmark.md"), "w") as handle:
        handle.write(f"# {title}\n\n{stamp}, {os.cpu_count()} CPU cores\n\n{text}\n")
    with open(os.path.join(args.out, "benchmark.json"), "w") as handle:
        json.dump(rows, handle, indent=1)
    try:
        from evaluation import report
        report.summary_figure({m: {k: v for k, v in r.items() if k != "_timings"} for m, r in results.items()},
                              args.out)
    except ImportError as exc:
        print(f"(no summary plot: {exc})", file=sys.stderr)
    print(text)
    if crashed:
        print(f"ERROR: method(s) exited non-zero: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
