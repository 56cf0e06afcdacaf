"""Speed and memory of one pair end to end, as the organisers run the container (issue 13's benchmark).

For one case of a dataset in the organisers' layout, `process.py` runs in its own process on a flat input
folder, `--repeats` times per layout, and the medians are printed:

  one MR         iUS + ceT1 only: one pair, one registration
  both MR, ceT1  iUS + ceT1 + T2, an image built for ceT1: one pair; the safety net registers T2 too
  both MR, all   iUS + ceT1 + T2, both pairs: per pair, half the case (the second pair reuses the estimates)

Per pair: read / register / write seconds and the model's stages from timings.json; per process: wall seconds
(torch import and model load included) and peak resident memory (wait4's ru_maxrss of that process).

    python -m benchmarks.speed --case DATASET/imagesTr/ReMIND2Reg_0001 [--repeats 3] [--layouts one,ceT1,all]
                               [--json OUT.json]   (the medians at full precision, and every run)
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = {  # name -> (image suffixes linked into the input folder, REMIND2REG_SEQUENCES, label)
    "one": (("0000", "0001"), "ceT1", "one MR (iUS + ceT1)"),
    "ceT1": (("0000", "0001", "0002"), "ceT1", "both MR, ceT1 image (net registers T2 too)"),
    "all": (("0000", "0001", "0002"), "all", "both MR, both pairs (per pair)"),
}
STAGES = ("features", "global", "deformable_discrete", "refine", "full_field")


def run_once(case_prefix: str, layout: str, work: str) -> dict:
    suffixes, sequences, _ = LAYOUTS[layout]
    input_dir, output_dir = os.path.join(work, "in"), os.path.join(work, "out")
    os.makedirs(input_dir)
    for suffix in suffixes:
        source = os.path.abspath(f"{case_prefix}_{suffix}.nii.gz")
        os.symlink(source, os.path.join(input_dir, os.path.basename(source)))
    env = dict(os.environ, REMIND2REG_SEQUENCES=sequences, PYTHONPATH=ROOT)
    start = time.perf_counter()
    with open(os.path.join(work, "log.txt"), "w") as log:
        process = subprocess.Popen([sys.executable, os.path.join(ROOT, "process.py"), "--input", input_dir,
                                    "--output", output_dir], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"process.py failed on {layout}: see {work}/log.txt")
    with open(os.path.join(output_dir, "timings.json")) as handle:
        timings = json.load(handle)
    pairs = list(timings["pairs"].values())
    per_pair = {k: sum(p[k] for p in pairs) / len(pairs) for k in ("seconds", "read", "register", "write")}
    for stage in STAGES:
        per_pair[stage] = sum(p.get("model_stages", {}).get(stage, 0.0) for p in pairs) / len(pairs)
    return dict(per_pair, wall=wall, pairs=len(pairs), peak_gb=usage.ru_maxrss / 1024 ** 2,
                model_load=timings.get("model_load_seconds", 0.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, help="DATASET/imagesTr/ReMIND2Reg_NNNN (the images' common prefix)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", default="one,ceT1,all")
    parser.add_argument("--json", help="write the medians and every run here")
    args = parser.parse_args(argv)
    if not glob.glob(args.case + "_0000.nii.gz"):
        raise SystemExit(f"no {args.case}_0000.nii.gz")
    columns = ("seconds", "read", "register", "write") + STAGES + ("wall", "model_load", "peak_gb")
    print(f"| layout | pairs | {' | '.join(columns)} |\n|---|---|{'---|' * len(columns)}")
    results = {}
    for layout in args.layouts.split(","):
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="speed-") as work:
                runs.append(run_once(args.case, layout, work))
        median = {k: statistics.median(r[k] for r in runs) for k in columns}
        cells = " | ".join(f"{median[k]:.2f}" if k == "peak_gb" else f"{median[k]:.1f}" for k in columns)
        print(f"| {LAYOUTS[layout][2]} | {runs[0]['pairs']} | {cells} |", flush=True)
        results[layout] = {"label": LAYOUTS[layout][2], "pairs": runs[0]["pairs"], "median": median, "runs": runs}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
