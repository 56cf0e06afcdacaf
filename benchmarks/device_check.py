"""The GPU checks of the model, in one run (benchmarks/device_check.sh runs it on a lent GPU machine; it also
runs on a CPU-only machine, where "model" is simply the CPU again):

1. a HYBRID real case (REAL RESECT-24 iUS and T1/FLAIR, known 5 mm deformation) centred in a size^3 grid
   (256 = the challenge's box), written in the organisers' layout;
2. run_benchmark on it: identity, model (default device: CUDA when present), model-repeat and model-cpu,
   each through process.py exactly as the organisers run a container, scored by evaluation/;
3. field agreement inside the iUS fan, in mm: model vs model-repeat (determinism: must be bit-equal) and
   vs model-cpu (CPU/GPU agreement: the issue asks for <= 0.1 mm);
4. peak CUDA memory per pair, and each run's wall seconds per pair without the model load, from the logs.

    python -m benchmarks.device_check --work /tmp/device_check --out OUT [--size 256]
Prints the tables last and writes OUT/device_check.md and OUT/device_check.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("identity", "model", "model-repeat", "model-cpu")
COMPARED = (("model-repeat", "determinism (same device, run twice)"),
            ("model-cpu", "CPU vs default device (target <= 0.1 mm)"))


def make_dataset(folder: str, size: int, seed: int = 0) -> str:
    from simulation.cases import write_dataset
    from simulation.hybrid import embed_case, make_hybrid_case

    case = make_hybrid_case(seed, 5.0, with_true_displacement=False)
    if size:
        case = embed_case(case, size)
    write_dataset([case], folder, write_field=False, extra={"generator": f"benchmarks.device_check size {size}"})
    return folder


def field_differences(bench: str, dataset: str) -> list[dict]:
    """Per pair and compared run: max / mean / 99th percentile of |u_model - u_other| in mm inside the fan."""
    import nibabel as nib

    from evaluation.fields import load_field

    rows = []
    for path in sorted(glob.glob(os.path.join(bench, "model", "disp_*.nii.gz"))):
        name = os.path.basename(path)
        case_id = name.split("_")[1]
        fixed = nib.load(os.path.join(dataset, "imagesTr", f"ReMIND2Reg_{case_id}_0000.nii.gz"))
        spacing = np.asarray(fixed.header.get_zooms()[:3], np.float64)
        fan = np.asarray(fixed.dataobj) > 0
        ref = load_field(path, fan.shape, name).field.astype(np.float64)
        for other, meaning in COMPARED:
            other_path = os.path.join(bench, other, name)
            if not os.path.isfile(other_path):
                continue
            diff = load_field(other_path, fan.shape, f"{other} {name}").field - ref
            mm = np.linalg.norm(diff * spacing, axis=-1)[fan]
            rows.append({"pair": name, "vs": other, "meaning": meaning, "bit_equal": bool(not diff.any()),
                         "max_mm": float(mm.max()), "mean_mm": float(mm.mean()),
                         "p99_mm": float(np.percentile(mm, 99))})
    return rows


def _method_logs(bench: str):
    """(method, log text) of every model run whose process log exists."""
    for method in METHODS[1:]:
        path = os.path.join(bench, f"{method}.log")
        if os.path.isfile(path):
            with open(path) as handle:
                yield method, handle.read()


def log_lines(bench: str) -> list[dict]:
    """Device, register seconds and peak memory of every written pair, from each method's process log."""
    pattern = re.compile(r"(case \S+ \S+): wrote \S+ \| device (.+?) \| .*?register ([\d.]+)s.*?\| (peak RSS .*)$")
    rows = []
    for method, text in _method_logs(bench):
        for line in text.splitlines():
            m = pattern.search(line.strip())
            if m:
                rows.append({"method": method, "pair": m.group(1), "device": m.group(2),
                             "register_s": float(m.group(3)), "memory": m.group(4)})
    return rows


def log_runs(bench: str) -> list[dict]:
    """Per method: pairs written, model load and whole-run seconds, and the wall seconds per pair without the
    model load (what overlapped I/O buys: less than the stages' sum when reads and writes hide behind CUDA)."""
    loaded = re.compile(r"model loaded in ([\d.]+)s")
    summary = re.compile(r"summary: (\d+) ok, (\d+) failed, total ([\d.]+)s")
    rows = []
    for method, text in _method_logs(bench):
        load, done = loaded.search(text), summary.search(text)
        if not done or not int(done.group(1)):
            continue
        load_s, total_s, pairs = float(load.group(1)) if load else 0.0, float(done.group(3)), int(done.group(1))
        rows.append({"method": method, "pairs": pairs, "failed": int(done.group(2)), "load_s": load_s,
                     "total_s": total_s, "wall_per_pair_s": (total_s - load_s) / pairs,
                     "overlap": "I/O overlaps the registration" in text})
    return rows


def report(bench_md: str, diffs: list[dict], logs: list[dict], runs: list[dict]) -> str:
    lines = [bench_md.strip(), "", "| pair | compared with | meaning | bit-equal | max mm | mean mm | p99 mm |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {d['pair']} | {d['vs']} | {d['meaning']} | {d['bit_equal']} | {d['max_mm']:.4f} | "
              f"{d['mean_mm']:.5f} | {d['p99_mm']:.4f} |" for d in diffs]
    lines += ["", "| method | pair | device | register s | memory |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['pair']} | {r['device']} | {r['register_s']:.2f} | {r['memory']} |" for r in logs]
    lines += ["", "| method | pairs | failed | I/O overlapped | model load s | run s | wall s per pair without the load |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['pairs']} | {r['failed']} | {r['overlap']} | {r['load_s']:.2f} | {r['total_s']:.2f} | "
              f"{r['wall_per_pair_s']:.2f} |" for r in runs]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/device_check", help="scratch folder (dataset, fields, logs)")
    parser.add_argument("--out", required=True, help="folder for device_check.md/.json and the logs")
    parser.add_argument("--size", type=int, default=256, help="embed the case in size^3 (0: native 94x107x107)")
    parser.add_argument("--methods", default=",".join(METHODS), help="subset of " + ",".join(METHODS))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from benchmarks import run_benchmark

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    dataset, bench = os.path.join(args.work, "dataset"), os.path.join(args.work, "bench")
    shutil.rmtree(args.work, ignore_errors=True)
    t0 = time.perf_counter()
    make_dataset(dataset, args.size)
    print(f"dataset written in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    run_benchmark.main(["--cases", dataset, "--out", bench, "--methods", args.methods,
                        "--title", f"device check: RESECT-24 hybrid in {args.size}^3, started {started}"])
    diffs, logs, runs = field_differences(bench, dataset), log_lines(bench), log_runs(bench)
    with open(os.path.join(bench, "benchmark.md")) as handle:
        text = report(handle.read(), diffs, logs, runs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "device_check.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(args.out, "device_check.json"), "w") as handle:
        json.dump({"started": started, "size": args.size, "differences": diffs, "pairs": logs, "runs": runs}, handle, indent=1)
    for method in args.methods.split(","):  # the model runs' logs (the device tool returns at most 8 files)
        if method != "identity" and os.path.isfile(os.path.join(bench, f"{method}.log")):
            shutil.copy(os.path.join(bench, f"{method}.log"), os.path.join(args.out, f"{method}.log"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
