"""Where a written field's error lies over the iUS fan: translation, rotation, strain, and the rest.

The mean TRE says how far a field is from the landmarks, not what kind of error it carries. For cases with an
exact ground-truth field (groundtruthTr/disp_XXXX_0000.nii.gz, written by `python -m simulation`), this fits the
error e(x) = (written - truth)(x), in mm, over the fan (iUS > 0) with an affine map e ~ t + B (x - c) (c: the
fan's centroid) and splits it into
  translation  t, the mean error (mm)
  rotation     the antisymmetric part of B: a small-angle rotation vector (degrees, index axes i, j, k) and the
               rms over the fan of the displacement it makes (mm)
  strain       the symmetric part of B: principal strains (%; negative = the field compresses relative to the
               truth) and the rms displacement it makes (mm)
  nonlinear    the rms of what the affine fit leaves (mm)
and reports, of the TRUTH's own rotation and strain over the fan, the fraction the written field recovered
(projection of the written field's linear part on the truth's: 1 = all of it, 0 = none, > 1 = overshoot).
For the hybrid real-iUS cases the truth is the inverse of the added deformation alone, so the real residual
misalignment of RESECT-24 (identity TRE 1.10 mm, best rigid fit of its landmarks 0.83 mm) counts as error here.

    python -m benchmarks.error_decomposition --cases DATASET OUT/model [OUT/other ...] [--step 4]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

from evaluation.fields import load_field


def linear_parts(points_mm: np.ndarray, vectors_mm: np.ndarray) -> dict:
    """Least-squares affine fit v ~ t + B (p - c) of vectors at points (both (n, 3), mm), split into parts."""
    centred = points_mm - points_mm.mean(0)
    design = np.c_[centred, np.ones(len(points_mm))]
    coef, *_ = np.linalg.lstsq(design, vectors_mm, rcond=None)
    gradient, translation = coef[:3].T, coef[3]
    antisym, sym = (gradient - gradient.T) / 2, (gradient + gradient.T) / 2

    def rms(matrix):
        return float(np.sqrt(((centred @ matrix.T) ** 2).sum(1).mean()))

    rest = vectors_mm - design @ coef
    return {"translation": translation, "antisym": antisym, "sym": sym,
            "rotation_deg": np.rad2deg([antisym[2, 1], antisym[0, 2], antisym[1, 0]]),
            "principal_strain": np.linalg.eigvalsh(sym),
            "rms_mm": float(np.sqrt((vectors_mm ** 2).sum(1).mean())),
            "rotation_rms_mm": rms(antisym), "strain_rms_mm": rms(sym),
            "nonlinear_rms_mm": float(np.sqrt((rest ** 2).sum(1).mean()))}


def recovered_fraction(estimate: np.ndarray, truth: np.ndarray) -> float:
    """How much of the truth's matrix (rotation or strain part) the estimate's carries: <E, T> / <T, T>."""
    norm = float((truth * truth).sum())
    return float((estimate * truth).sum() / norm) if norm > 0 else float("nan")


def decompose(written_vox, truth_vox, spacing, fan, step: int = 4) -> dict:
    """The parts of (written - truth) over the fan's voxels (every `step`-th along each axis), fields in voxels."""
    spacing = np.asarray(spacing, np.float64)
    index = np.argwhere(fan[::step, ::step, ::step]) * step
    points = index * spacing
    written = np.asarray(written_vox)[tuple(index.T)].astype(np.float64) * spacing
    truth = np.asarray(truth_vox)[tuple(index.T)].astype(np.float64) * spacing
    error, own, true = linear_parts(points, written - truth), linear_parts(points, written), linear_parts(points, truth)
    error["rotation_recovered"] = recovered_fraction(own["antisym"], true["antisym"])
    error["strain_recovered"] = recovered_fraction(own["sym"], true["sym"])
    error["truth_rotation_deg"], error["truth_principal_strain"] = true["rotation_deg"], true["principal_strain"]
    return error


def run(cases: str, runs: list[str], step: int = 4) -> list[dict]:
    """One row per written pair that has a ground-truth field."""
    import nibabel as nib

    rows = []
    for truth_path in sorted(glob.glob(os.path.join(cases, "groundtruthTr", "disp_*_0000.nii.gz"))):
        case_id = os.path.basename(truth_path).split("_")[1]
        written = {f: sorted(glob.glob(os.path.join(f, f"disp_{case_id}_0000_{case_id}_*.nii.gz"))) for f in runs}
        if not any(written.values()):
            continue
        image = nib.load(truth_path)
        truth, spacing = np.asarray(image.dataobj, np.float32), image.header.get_zooms()[:3]
        fan = np.asarray(nib.load(os.path.join(cases, "imagesTr", f"ReMIND2Reg_{case_id}_0000.nii.gz")).dataobj) > 0
        for folder, paths in written.items():
            for path in paths:
                field = load_field(path, truth.shape[:3], case_id).field
                row = decompose(field, truth, spacing, fan, step)
                row.update(method=os.path.basename(os.path.normpath(folder)), case=case_id,
                           pair=os.path.basename(path).split("_")[-1].split(".")[0])
                rows.append(row)
    return rows


def _vector(values, fmt="{:+.1f}") -> str:
    return "(" + ", ".join(fmt.format(v) for v in values) + ")"


def table(rows: list[dict]) -> str:
    lines = ["| method | case | moving | error rms mm | translation mm | rotation deg (rms mm) | principal strains % "
             "(rms mm) | nonlinear rms mm | truth's rotation / strain recovered |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['case']} | {r['pair']} | {r['rms_mm']:.2f} | {_vector(r['translation'], '{:+.2f}')} | "
            f"{_vector(r['rotation_deg'])} ({r['rotation_rms_mm']:.2f}) | "
            f"{_vector(100 * r['principal_strain'])} ({r['strain_rms_mm']:.2f}) | {r['nonlinear_rms_mm']:.2f} | "
            f"{r['rotation_recovered']:.2f} / {r['strain_recovered']:.2f} |")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        mean = {k: float(np.mean([r[k] for r in mine])) for k in
                ("rms_mm", "rotation_rms_mm", "strain_rms_mm", "nonlinear_rms_mm", "rotation_recovered",
                 "strain_recovered")}
        lines.append(f"| {method} | mean of {len(mine)} | | {mean['rms_mm']:.2f} | "
                     f"{np.mean([np.linalg.norm(r['translation']) for r in mine]):.2f} (length) | "
                     f"({mean['rotation_rms_mm']:.2f}) | ({mean['strain_rms_mm']:.2f}) | {mean['nonlinear_rms_mm']:.2f} | "
                     f"{mean['rotation_recovered']:.2f} / {mean['strain_recovered']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", required=True, help="dataset written by `python -m simulation` with its fields")
    parser.add_argument("runs", nargs="+", help="folders of written disp_*.nii.gz (e.g. run_benchmark's OUT/model)")
    parser.add_argument("--step", type=int, default=4, help="use every STEP-th fan voxel along each axis (default 4)")
    args = parser.parse_args(argv)
    rows = run(args.cases, args.runs, args.step)
    if not rows:
        print(f"no written pair with a ground-truth field (groundtruthTr/disp_*_0000.nii.gz) in {args.cases}",
              file=sys.stderr)
        return 1
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
