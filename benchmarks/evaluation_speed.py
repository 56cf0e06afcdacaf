"""Speed and memory of the evaluation on the real size: 20 pairs (10 cases x ceT1/T2) of 256^3 fields.

    python -m benchmarks.evaluation_speed [--pairs 20] [--size 256] [--workers 0] [--format nii.gz|npz]

Writes a synthetic ground truth (uint8 images: only headers are read; 20 landmarks per pair) and smooth float32
fields in a temp folder (two distinct fields, copied: writing is setup, not measured), then runs
`evaluation/evaluate.py` as a subprocess and prints wall time and the peak resident memory of the whole
process tree (sampled from /proc every 50 ms).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import resource
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


def _tree_rss(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as handle:
                    stack += [int(c) for c in handle.read().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def make(root: str, n_pairs: int, size: int, fmt: str) -> None:
    import nibabel as nib
    import SimpleITK as sitk

    from interfaces.conventions import displacement_name, image_name, landmark_name

    gt, inp = os.path.join(root, "gt"), os.path.join(root, "in")
    for folder in ("imagesTr", "landmarksTr"):
        os.makedirs(os.path.join(gt, folder), exist_ok=True)
    os.makedirs(inp, exist_ok=True)
    rng = np.random.default_rng(0)
    templates = []
    axis = np.arange(size, dtype=np.float32)
    for seed in range(2):
        waves = np.random.default_rng(seed).uniform(10, 40, (3, 3))
        field = np.empty((size, size, size, 3), dtype=np.float32)
        for c in range(3):  # smooth, a few voxels: sin(x/a) * cos(y/b) * sin(z/c) + noise-free mantissas
            field[..., c] = (3 * np.sin(axis / waves[c, 0])[:, None, None] * np.cos(axis / waves[c, 1])[None, :, None]
                             * np.sin(axis / waves[c, 2] + seed)[None, None, :])
        path = os.path.join(root, f"template{seed}.{fmt}")
        if fmt == "npz":
            np.savez_compressed(path, arr_0=field)
        else:
            nib.save(nib.Nifti1Image(field, np.eye(4)), path)
        templates.append(path)
    image = sitk.Image([size] * 3, sitk.sitkUInt8)
    image.SetSpacing((0.5, 0.5, 0.5))
    for n in range(n_pairs):
        case, m = f"{n // 2 + 1:04d}", 1 + n % 2
        if m == 1:
            sitk.WriteImage(image, os.path.join(gt, "imagesTr", image_name(case, 0)), True)
            fixed = rng.uniform(10, size - 10, (20, 3))
            np.savetxt(os.path.join(gt, "landmarksTr", landmark_name(case, 0)), fixed, delimiter=",")
        sitk.WriteImage(image, os.path.join(gt, "imagesTr", image_name(case, m)), True)
        np.savetxt(os.path.join(gt, "landmarksTr", landmark_name(case, m)), fixed + rng.normal(0, 4, fixed.shape),
                   delimiter=",")
        shutil.copy(templates[n % 2], os.path.join(inp, displacement_name(case, m, "." + fmt)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--format", default="nii.gz", choices=("nii.gz", "npz"))
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="eval-bench-")
    try:
        start = time.time()
        make(root, args.pairs, args.size, args.format)
        size_mb = os.path.getsize(os.path.join(root, f"template0.{args.format}")) / 1e6
        print(f"setup {time.time() - start:.1f} s: {args.pairs} pairs of {args.size}^3 x 3 float32 .{args.format} "
              f"fields ({size_mb:.0f} MB each)")
        command = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate.py"),
                   "--input", os.path.join(root, "in"), "--ground-truth", os.path.join(root, "gt"),
                   "--output", os.path.join(root, "metrics.json"), "--workers", str(args.workers), "--quiet"]
        load = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        process = subprocess.Popen(command)
        peak = [0]

        def sample():
            while process.poll() is None:
                peak[0] = max(peak[0], _tree_rss(process.pid))
                time.sleep(0.05)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = process.wait()
        wall = time.time() - start
        thread.join()
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(f"evaluate: exit {code}, wall {wall:.1f} s for {args.pairs} pairs ({wall / args.pairs:.2f} s/pair), "
              f"CPU {cpu:.1f} s ({cpu / args.pairs:.2f} CPU s/pair; wall on {os.cpu_count()} idle cores ~ "
              f"{cpu / max(1, min(2, os.cpu_count() or 1)):.0f} s), peak RSS of the process tree "
              f"{peak[0] / 2**30:.2f} GiB; load average at start {load:.1f}")
        return code
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
