"""Dense field errors against the exact ground truth of SIMULATED cases, by region: what landmarks cannot show.

The simulated landmarks sit >= 6 mm from the resection cavity, so their TRE cannot tell whether a method drags
healthy tissue into the hole. This compares every written field with groundtruthTr/disp_XXXX_0000.nii.gz voxel
by voxel (mm), using groundtruthTr/labels_XXXX_0000.nii.gz (written by `python -m simulation` unless
--no-field; 4 = resection cavity) over:
  rim     brain tissue the fan shows within RIM mm of the resection cavity
  tissue  brain tissue the fan shows more than FAR mm from the cavity
and, on the rim, the signed error along the direction towards the cavity ("drag", mm): positive means the
method matches rim tissue to moving points further towards the cavity than the truth does, i.e. it pulls
tissue into the hole.

    python -m benchmarks.field_errors --cases DATASET OUT/identity OUT/model OUT/abl-no-cavity-weight ...
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
from scipy import ndimage

from evaluation.fields import load_field
from simulation.ultrasound import CAVITY, TISSUE


def _load(path):
    """Ground truth (field or labels) and its spacing: the written fields ignore the affine, these do not."""
    import nibabel as nib

    image = nib.load(path)
    return np.asarray(image.dataobj), np.asarray(image.header.get_zooms()[:3], np.float64)


def case_regions(labels: np.ndarray, spacing, rim_mm: float, far_mm: float):
    """Masks of the rim and far tissue, and the unit direction towards the cavity (3, ...) on the rim."""
    cavity = labels == CAVITY
    if not cavity.any():
        return None
    dist = ndimage.distance_transform_edt(~cavity, sampling=spacing)
    tissue = labels == TISSUE
    rim = tissue & (dist <= rim_mm)
    far = tissue & (dist > far_mm)
    grad = np.stack(np.gradient(dist, *spacing), 0)  # mm per mm, points away from the cavity
    towards = -grad[:, rim] / np.maximum(np.linalg.norm(grad[:, rim], axis=0), 1e-6)
    return rim, far, towards


def pair_errors(estimate, truth, spacing, regions) -> dict:
    rim, far, towards = regions
    diff = (np.asarray(estimate, np.float64) - truth) * spacing  # (i, j, k, 3) mm
    err = np.linalg.norm(diff, axis=-1)
    drag = (diff[rim] * towards.T).sum(1)
    return {"rim_voxels": int(rim.sum()), "rim_mean_mm": float(err[rim].mean()) if rim.any() else float("nan"),
            "rim_p95_mm": float(np.percentile(err[rim], 95)) if rim.any() else float("nan"),
            "rim_drag_mm": float(drag.mean()) if rim.any() else float("nan"),
            "tissue_mean_mm": float(err[far].mean()) if far.any() else float("nan")}


def run(cases: str, runs: list[str], rim_mm: float = 5.0, far_mm: float = 10.0) -> list[dict]:
    """One row per run folder: the errors of its pairs averaged. Regions are built once per case."""
    per_run = {folder: [] for folder in runs}
    truth_dir = os.path.join(cases, "groundtruthTr")
    for truth_path in sorted(glob.glob(os.path.join(truth_dir, "disp_*_0000.nii.gz"))):
        case_id = os.path.basename(truth_path).split("_")[1]
        labels_path = os.path.join(truth_dir, f"labels_{case_id}_0000.nii.gz")
        written = {f: sorted(glob.glob(os.path.join(f, f"disp_{case_id}_0000_{case_id}_*.nii.gz"))) for f in runs}
        if not os.path.isfile(labels_path) or not any(written.values()):
            continue
        truth, spacing = _load(truth_path)
        regions = case_regions(_load(labels_path)[0], spacing, rim_mm, far_mm)
        if regions is None:  # no cavity in this fan
            continue
        truth = truth.astype(np.float64)
        for folder, paths in written.items():
            per_run[folder] += [pair_errors(load_field(path, truth.shape[:3], case_id).field, truth, spacing, regions)
                                for path in paths]
    rows = []
    for folder, per_pair in per_run.items():
        if per_pair:
            row = {"method": os.path.basename(os.path.normpath(folder)), "pairs": len(per_pair)}
            row.update({k: float(np.mean([p[k] for p in per_pair])) for k in per_pair[0] if k != "rim_voxels"})
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| method | pairs | rim mean mm | rim p95 mm | rim drag towards cavity mm | tissue > far mean mm |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['pairs']} | {r['rim_mean_mm']:.2f} | {r['rim_p95_mm']:.2f} | "
              f"{r['rim_drag_mm']:+.2f} | {r['tissue_mean_mm']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", required=True, help="simulated dataset written with ground-truth fields")
    parser.add_argument("runs", nargs="+", help="folders of written disp_*.nii.gz (e.g. run_benchmark's OUT/model)")
    parser.add_argument("--rim", type=float, default=5.0, help="rim width around the cavity, mm (default 5)")
    parser.add_argument("--far", type=float, default=10.0, help="'tissue' starts this far from the cavity, mm")
    args = parser.parse_args(argv)
    rows = run(args.cases, args.runs, args.rim, args.far)
    if not rows:
        print("no pairs with groundtruthTr/disp_* and labels_* found", file=sys.stderr)
        return 1
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
