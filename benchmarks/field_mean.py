"""The weighted mean of several runs' displacement fields, pair by pair: do two methods' errors cancel?

Two methods whose errors are partly independent land closer together than either alone when their fields
are averaged (the model's late fusion of two MR sequences rests on this). This writes, for every
`disp_*.nii.gz` that every run folder holds, the pointwise weighted mean of the voxel fields into --out,
in the organisers' convention (the first run's affine), to be scored like any run:

    python -m benchmarks.field_mean --out OUT/mean RUN_A RUN_B [--weights 0.5,0.5]
    python -m evaluation.evaluate --input OUT/mean --ground-truth DATASET --output OUT/mean.metrics.json

A diagnostic, not a method: a mean of two smooth fields need not be free of folds (the evaluation counts
them). Pairs missing from some run are named and left out; fields of different shapes are refused.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

from evaluation.fields import load_field
from interfaces.images import write_voxel_field_nifti


def parse_weights(text: str | None, n_runs: int) -> np.ndarray:
    """Weights from 'a,b,...' (normalised to sum 1), or equal weights."""
    if not text:
        return np.full(n_runs, 1.0 / n_runs)
    weights = np.array([float(w) for w in text.split(",")], np.float64)
    if len(weights) != n_runs:
        raise ValueError(f"--weights has {len(weights)} values for {n_runs} runs")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("--weights must be non-negative and not all zero")
    return weights / weights.sum()


def _affine(path: str) -> np.ndarray:
    import nibabel as nib

    return nib.load(path).affine


def mean_fields(runs: list[str], out: str, weights: np.ndarray) -> tuple[list[str], list[str]]:
    """Write the mean field of every pair all runs hold; returns (written names, names left out)."""
    per_run = [{os.path.basename(p) for p in glob.glob(os.path.join(run, "disp_*.nii.gz"))} for run in runs]
    common = sorted(set.intersection(*per_run))
    left_out = sorted(set.union(*per_run) - set(common))
    os.makedirs(out, exist_ok=True)
    for name in common:
        fields = [load_field(os.path.join(run, name), None, name).field for run in runs]
        shapes = {f.shape for f in fields}
        if len(shapes) > 1:
            raise ValueError(f"{name}: the runs' fields differ in shape: {sorted(shapes)}")
        mean = np.zeros(fields[0].shape, np.float64)
        for weight, field in zip(weights, fields):
            mean += weight * np.asarray(field, np.float64)
        write_voxel_field_nifti(os.path.join(out, name), mean.astype(np.float32),
                                _affine(os.path.join(runs[0], name)))
    return common, left_out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders holding disp_*.nii.gz (two or more)")
    parser.add_argument("--out", required=True, help="folder for the mean fields")
    parser.add_argument("--weights", help="one weight per run, e.g. 0.5,0.5 (default: equal)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give two or more run folders")
    try:
        weights = parse_weights(args.weights, len(args.runs))
        written, left_out = mean_fields(args.runs, args.out, weights)
    except ValueError as exc:
        print(f"field_mean: {exc}", file=sys.stderr)
        return 1
    for name in left_out:
        print(f"field_mean: {name} is not in every run: left out", file=sys.stderr)
    print(f"field_mean: {len(written)} mean fields in {args.out} (weights {', '.join(f'{w:g}' for w in weights)})")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
