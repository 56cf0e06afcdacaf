"""What the safety net sees, pair by pair: every candidate's TRE next to its cost ratios on both sequences.

    python -m benchmarks.safety_evidence DATASET [DATASET ...] [--json OUT.json]

DATASET: the organisers' training layout (imagesTr/, landmarksTr/; every image of a case on one grid, as the
simulator and the hybrid cases write them). For each case with both MR sequences, each sequence is registered
once (model.Registration's estimates), and every candidate of model/safety.py (each sequence's field, each
rigid pose alone, the identity) is scored by TRE against each pair's landmarks and by its cost / identity cost
on each sequence. The last columns say what the net chose and whether that beats the identity. This is how the
net's rule and tolerance were chosen (docs/MODEL.md, "Safety net").

--regions N adds, per pair, the regional version of the rule's test: the fan's bounding box at the evidence level
cut into N x N x N blocks, and for each block holding at least 2 % of the fan weight, the other sequence's cost
under the pair's own field over its cost under the identity; the largest of them is printed (`regional max`).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import nibabel as nib
import numpy as np
import torch

from evaluation.metrics import tre
from interfaces import conventions as cv
from model import Registration, load_config
from model.safety import candidates, cost_ratios, cross_sequence_decision, positions_of
from model.stages import GlobalPose, full_resolution_field, voxel_cost

MIN_REGION_FRACTION = 0.02  # of the fan weight: smaller blocks hold too little tissue to judge


def region_labels(weight, blocks: int):
    """Each voxel's block index (-1 outside the fan): the fan's bounding box cut into blocks^3 boxes."""
    inside = weight[0] > 0
    index = torch.nonzero(inside)
    lo, hi = index.min(0).values, index.max(0).values + 1
    axes = [((torch.arange(n) - lo[a]) * blocks // (hi[a] - lo[a])).clamp(0, blocks - 1)
            for a, n in enumerate(inside.shape)]
    label = (axes[0].view(-1, 1, 1) * blocks + axes[1].view(1, -1, 1)) * blocks + axes[2].view(1, 1, -1)
    return torch.where(inside, label, torch.full_like(label, -1)).reshape(-1)


def regional_max_ratio(level, candidate, sequence: str, blocks: int) -> float:
    """The largest per-block ratio (cost under the candidate / cost under the identity) of `sequence`."""
    labels = region_labels(level.weight, blocks)
    keep = labels >= 0
    weight = level.weight[0].reshape(-1)[keep]

    def block_costs(positions):
        cost = voxel_cost(level, positions, sequence).reshape(-1)[keep]
        return torch.bincount(labels[keep], weights=cost.double(), minlength=blocks ** 3)

    share = torch.bincount(labels[keep], weights=weight.double(), minlength=blocks ** 3) / float(weight.sum())
    ratio = block_costs(positions_of(candidate, level)) / block_costs(level.identity()).clamp_min(1e-12)
    return float(ratio[share >= MIN_REGION_FRACTION].max())


def _load(path):
    image = nib.load(path)
    return np.asarray(image.dataobj, dtype=np.float32), tuple(float(z) for z in image.header.get_zooms()[:3])


def case_rows(dataset: str, case: str, registration: Registration, regions: int = 0) -> list[dict]:
    images, landmarks = os.path.join(dataset, "imagesTr"), os.path.join(dataset, "landmarksTr")
    fixed, spacing = _load(os.path.join(images, cv.image_name(case, 0)))
    moving = {cv.MODALITIES[m]: _load(os.path.join(images, cv.image_name(case, m)))[0] for m in (1, 2)}
    fixed_points = np.loadtxt(os.path.join(landmarks, cv.landmark_name(case, 0)), delimiter=",", ndmin=2)
    times: dict = {}
    estimates = {s: registration._estimate_once(fixed, moving, spacing, s, times) for s in moving}
    cands = candidates(estimates, registration.device)
    ratios = cost_ratios(cands, estimates)
    rows = []
    for modality, sequence in ((1, "ceT1"), (2, "T2")):
        moving_points = np.loadtxt(os.path.join(landmarks, cv.landmark_name(case, modality)), delimiter=",", ndmin=2)
        decision = cross_sequence_decision(estimates, sequence, registration.cfg["safety"]["tolerance"],
                                           registration.device)
        row = {"pair": f"{case} {sequence}", "identity_tre": float(tre(fixed_points, moving_points, None, spacing).mean()),
               "chosen": decision.action, "candidates": {}}
        for c in cands:
            field, _, _ = full_resolution_field(GlobalPose(c.pose), c.deformation, c.scale, fixed.shape, spacing)
            row["candidates"][c.name] = {"tre": float(tre(fixed_points, moving_points, field, spacing).mean()),
                                         "ratio": ratios[c.name]}
        row["chosen_tre"] = row["candidates"][decision.candidate.name]["tre"]
        if regions:
            other = next(o for o in estimates if o != sequence)
            own = next(c for c in cands if c.name == f"{sequence} field")
            row["regional_max"] = regional_max_ratio(estimates[other].evidence, own, other, regions)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--regions", type=int, default=0, help="N: also the largest N^3-block cost ratio")
    args = parser.parse_args(argv)
    registration = Registration(load_config(), device="cpu")
    rows = []
    for dataset in args.datasets:
        cases = sorted({cv.parse_image_name(n)[0] for n in os.listdir(os.path.join(dataset, "imagesTr"))
                        if cv.parse_image_name(n)})
        for case in cases:
            t0 = time.perf_counter()
            for row in case_rows(dataset, case, registration, args.regions):
                row["dataset"] = os.path.basename(os.path.normpath(dataset))
                rows.append(row)
                cells = "  ".join(f"{name}: {v['tre']:.2f} ({'/'.join(f'{r:.3f}' for r in v['ratio'].values())})"
                                  for name, v in row["candidates"].items())
                flag = "WORSE" if row["chosen_tre"] > row["identity_tre"] + 1e-6 else "ok"
                if "regional_max" in row:
                    flag += f" | regional max {row['regional_max']:.3f}"
                print(f"{row['dataset']} {row['pair']}: identity {row['identity_tre']:.2f} -> chosen "
                      f"{row['chosen']} {row['chosen_tre']:.2f} {flag} | {cells}", flush=True)
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    own = [r["candidates"][f"{r['pair'].split()[1]} field"]["tre"] for r in rows]
    chosen = [r["chosen_tre"] for r in rows]
    identity = [r["identity_tre"] for r in rows]
    print(f"pairs {len(rows)}: identity {np.mean(identity):.3f}, own field {np.mean(own):.3f} "
          f"({sum(o > i + 1e-6 for o, i in zip(own, identity))} worse than identity), chosen {np.mean(chosen):.3f} "
          f"({sum(c > i + 1e-6 for c, i in zip(chosen, identity))} worse than identity)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
