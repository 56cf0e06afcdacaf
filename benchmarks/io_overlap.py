"""How much file I/O the read-ahead / write-behind threads hide (interfaces/background_io.py).

A GPU model leaves the CPU free while it works. Without a GPU, this stands in for one: a registration that
sleeps (like a thread waiting on CUDA) for --register-seconds and returns a field in the model's memory
layout (a view of a (3, k, j, i) block), so reading and writing are the real thing. process.run goes over an
organisers' folder with the overlap off, then on, and the table shows wall time per pair against the
stages' own seconds. The written files must be byte-identical in both modes.

    python -m benchmarks.io_overlap --input DATASET/imagesTr [--register-seconds 1.0] [--work /tmp/io_overlap]

It says nothing about how fast the model is; the real model on the CPU keeps I/O in line (auto), and on the
CPU the two modes are compared by running process.py itself with REMIND2REG_OVERLAP_IO=0 / 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from types import SimpleNamespace

import numpy as np

from interfaces.conventions import TIMINGS_NAME
from runner.settings import OVERLAP_ENV


class SleepingRegistration:
    """Stands in for a GPU model: the CPU is idle for `seconds` per pair; returns a constant 0.5-voxel field."""

    device_name = "stand-in (sleep)"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def register(self, fixed, moving, spacing, target):
        t0 = time.perf_counter()
        block = np.full((3,) + tuple(fixed.shape[::-1]), 0.5, np.float32)  # a fresh field, as the model returns
        field = block.transpose(3, 2, 1, 0)
        time.sleep(max(0.0, self.seconds - (time.perf_counter() - t0)))
        # a plain object, like the model's Result (a class made per call would keep each field alive in a
        # reference cycle until the garbage collector runs, and the memory figures would be the stand-in's)
        return SimpleNamespace(displacement=field, stage_seconds={"sleep": self.seconds}, device=self.device_name)


def run_mode(input_dir: str, out_dir: str, overlap: str, seconds: float) -> dict:
    import process

    before = os.environ.get(OVERLAP_ENV)
    os.environ[OVERLAP_ENV] = overlap
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        code = process.run(input_dir, out_dir, registration=SleepingRegistration(seconds))
        wall = time.perf_counter() - t0
    finally:
        if before is None:
            del os.environ[OVERLAP_ENV]
        else:
            os.environ[OVERLAP_ENV] = before
    pairs = json.load(open(os.path.join(out_dir, TIMINGS_NAME)))["pairs"]
    stages = {k: float(np.mean([p[k] for p in pairs.values()])) for k in ("read", "register", "write")}
    return {"overlap": overlap, "exit": code, "pairs": len(pairs), "wall": wall, "per_pair": wall / len(pairs),
            **stages}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="an organisers' folder (e.g. a simulated imagesTr)")
    parser.add_argument("--register-seconds", type=float, default=1.0, help="the stand-in model's time per pair")
    parser.add_argument("--work", default="/tmp/io_overlap", help="output folders are written here")
    args = parser.parse_args(argv)
    rows = [run_mode(args.input, os.path.join(args.work, f"overlap{mode}"), mode, args.register_seconds)
            for mode in ("0", "1")]
    names = sorted(n for n in os.listdir(os.path.join(args.work, "overlap0")) if n.startswith("disp_"))
    same = all(open(os.path.join(args.work, "overlap0", n), "rb").read()
               == open(os.path.join(args.work, "overlap1", n), "rb").read() for n in names)
    print(f"\nstand-in model: {args.register_seconds:.2f} s per pair, CPU idle; {os.cpu_count()} CPU cores")
    print("| overlap | pairs | exit | wall s | wall s per pair | read s | register s | write s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {'on' if r['overlap'] == '1' else 'off'} | {r['pairs']} | {r['exit']} | {r['wall']:.1f} | "
              f"{r['per_pair']:.2f} | {r['read']:.2f} | {r['register']:.2f} | {r['write']:.2f} |")
    print(f"fields byte-identical in both modes: {same} ({len(names)} files)")
    return 0 if same and all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
