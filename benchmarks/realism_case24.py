"""The decisive realism test on RESECT case 24: the same known deformations, real iUS vs iUS simulated from the
case's own MR; do the methods' errors agree?

    python -m benchmarks.realism_case24 --out OUT [--n 3] [--methods identity,model,abl-no-global] [--sequences ceT1]

Two datasets with the SAME moving images, moving landmarks and truth (`simulation.hybrid.make_hybrid_case`, seeds
0..n-1, 5 mm, centred in 256^3 like the challenge's box; the model refuses the odd native grid):
  real  fixed = the REAL case-24 iUS; fixed landmarks = the expert US points (they carry the real residual
        misalignment, 1.10 mm mean at identity before the added deformation)
  sim   fixed = iUS SIMULATED by the learned renderer (`simulation.appearance.render_tissue`) from case 24's own
        undeformed T1, inside the real fan (no attenuation: this fan's apex is not recovered from its shape);
        fixed landmarks = the expert MRI points, where that anatomy sits in the simulated image (no residual)
Each method runs through `benchmarks.run_benchmark` (process.py as the organisers run it, scored by evaluation/),
then `benchmarks.error_decomposition` splits each field's error against the truth over the fan. Printed: per
method, the mean TRE and the rotation part (rms mm) on real and simulated iUS, their ratio, and both rankings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def make_sets(out: str, n: int, magnitude: float = 5.0, embed: int = 256) -> dict:
    from simulation.appearance import render_tissue
    from simulation.cases import write_dataset
    from simulation.hybrid import embed_case, load_case24, make_hybrid_case
    d = load_case24()
    fan = d["us"] > 0
    real, sim = [], []
    for seed in range(n):
        case = make_hybrid_case(seed, magnitude)
        us_sim = render_tissue(d["t1"], fan, d["spacing"], np.random.default_rng([seed, 24]), apex_vox=None)
        simcase = dict(case, fixed=us_sim, fixed_landmarks=d["lm_mr"].copy(),
                       source="SIMULATED iUS (learned renderer) from RESECT case 24's own T1, real fan; real MR "
                              "with a synthetic added deformation")
        simcase["initial_tre_mm"] = np.linalg.norm((case["moving_landmarks"] - d["lm_mr"]) * np.asarray(d["spacing"]),
                                                   axis=1)
        real.append(embed_case(case, embed))
        sim.append(embed_case(simcase, embed))
    paths = {}
    for name, cases in (("real", real), ("sim", sim)):
        folder = os.path.join(out, name)
        if not os.path.exists(os.path.join(folder, "ReMIND2Reg_dataset.json")):
            write_dataset(cases, folder)
        paths[name] = folder
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--methods", default="identity,model,abl-no-global")
    ap.add_argument("--sequences", default="ceT1")
    args = ap.parse_args(argv)
    from benchmarks import error_decomposition as ED
    from benchmarks import run_benchmark as RB
    sets = make_sets(args.out, args.n)
    methods = args.methods.split(",")
    res = {}
    for name, folder in sets.items():
        runs = os.path.join(args.out, "runs_" + name)
        RB.main(["--cases", folder, "--out", runs, "--methods", args.methods, "--sequences", args.sequences])
        with open(os.path.join(runs, "benchmark.json")) as handle:
            rows = {r["method"]: r for r in json.load(handle)}
        dec = ED.run(folder, [os.path.join(runs, m) for m in methods])
        res[name] = {}
        for m in methods:
            mine = [r for r in dec if r["method"] == m]
            tre = _mean_tre(os.path.join(runs, f"{m}.metrics.json"))
            res[name][m] = dict(tre=tre, rotation_rms_mm=float(np.mean([r["rotation_rms_mm"] for r in mine]))
                                if mine else float("nan"), row=rows.get(m))
    print("\n| method | TRE real (mm) | TRE sim (mm) | sim/real | rotation rms real (mm) | rotation rms sim (mm) | sim/real |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        r, s = res["real"][m], res["sim"][m]
        print(f"| {m} | {r['tre']:.3f} | {s['tre']:.3f} | {s['tre'] / r['tre']:.2f} | {r['rotation_rms_mm']:.3f} | "
              f"{s['rotation_rms_mm']:.3f} | {s['rotation_rms_mm'] / max(r['rotation_rms_mm'], 1e-9):.2f} |")
    for name in ("real", "sim"):
        print(f"ranking on {name}: " + " < ".join(sorted(methods, key=lambda m: res[name][m]["tre"])))
    with open(os.path.join(args.out, "realism_case24.json"), "w") as handle:
        json.dump(res, handle, indent=1, default=float)
    return 0


def _mean_tre(path: str) -> float:
    from evaluation import metrics as M
    with open(path) as handle:
        metrics = json.load(handle)
    return float(np.mean([c[M.TRE]["mean"] for c in metrics["cases"].values()]))


if __name__ == "__main__":
    sys.exit(main())
