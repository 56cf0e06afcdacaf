"""Measure displacement-field writers on a 256^3 x 3 float32 field (figures in docs/CONTAINER.md).

    python -m benchmarks.writer_bench [--shape 256] [--repeats 2] [--dir /tmp]

Each writer's output is read back with nibabel and SimpleITK and must equal the field exactly.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from interfaces import conventions as cv
from interfaces.images import write_sitk_image, write_voxel_field_nifti


def smooth_field(n: int) -> np.ndarray:
    """A field like a registration's: smooth, sub-voxel detail (compresses like real output)."""
    rng = np.random.default_rng(0)
    coarse = rng.normal(0, 3, (n // 16,) * 3 + (3,)).astype(np.float32)
    field = np.repeat(np.repeat(np.repeat(coarse, 16, 0), 16, 1), 16, 2)
    return (field + rng.normal(0, 0.01, field.shape).astype(np.float32)).astype(np.float32)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--only", default="", help="run only the writers whose name contains this text")
    args = parser.parse_args(argv)
    field = smooth_field(args.shape)
    # the model returns its field as a view of a (3, k, j, i) block (model.pipeline): same values, the
    # writers' own order, so they copy planes instead of transposing
    planar = np.ascontiguousarray(field.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    grid = cv.Grid((args.shape,) * 3, (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    affine = grid.nifti_affine()
    writers = {
        "nibabel nib.save (default gzip)": lambda p: nib.save(nib.Nifti1Image(field, affine), p),
        "own NIfTI bytes, gzip level 6": lambda p: write_voxel_field_nifti(p, field, affine, level=6),
        "own NIfTI bytes, gzip level 1": lambda p: write_voxel_field_nifti(p, field, affine, level=1),
        "own NIfTI bytes, gzip level 0 (chosen)": lambda p: write_voxel_field_nifti(p, field, affine, level=0),
        "GC DSPF .mha, uncompressed (chosen)": lambda p: write_sitk_image(p, cv.voxel_to_physical_field(field, grid)),
        "GC DSPF .mha, compressed": lambda p: write_sitk_image(p, cv.voxel_to_physical_field(field, grid), True),
        "own NIfTI bytes, gzip level 0 (chosen), model's layout": lambda p: write_voxel_field_nifti(p, planar, affine),
        "GC DSPF .mha, uncompressed (chosen), model's layout":
            lambda p: write_sitk_image(p, cv.voxel_to_physical_field(planar, grid)),
    }
    writers = {name: write for name, write in writers.items() if args.only in name}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"field {field.shape} float32 = {field.nbytes / 1e6:.0f} MB")
        print("| writer | write s (best of %d) | file MB | nibabel read s | read back equal (nibabel / SimpleITK) |"
              % args.repeats)
        print("|---|---|---|---|---|")
        for name, write in writers.items():
            path = os.path.join(tmp, "field.mha" if ".mha" in name else "field.nii.gz")
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                write(path)
                times.append(time.perf_counter() - t0)
            size = os.path.getsize(path) / 1e6
            if path.endswith(".mha"):
                back, _ = cv.physical_to_voxel_field(sitk.ReadImage(path))
                eq_nib, read_s = "n/a", float("nan")
                eq_sitk = np.allclose(back, field, atol=1e-4)
            else:
                t0 = time.perf_counter()
                eq_nib = np.array_equal(np.asarray(nib.load(path).dataobj), field)
                read_s = time.perf_counter() - t0
                eq_sitk = np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(path)).transpose(3, 2, 1, 0), field)
            print(f"| {name} | {min(times):.2f} | {size:.0f} | {read_s:.2f} | {eq_nib} / {eq_sitk} |")


if __name__ == "__main__":
    main()
