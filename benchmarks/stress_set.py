"""The stress group: inputs a product must not turn into a harmful field, made from a dataset with landmarks.

Each case of the source dataset (e.g. the hybrid set: real RESECT-24 iUS, real MR, known deformation) gives one
case per variant, in the organisers' layout, with the source's landmark files (so the evaluation scores what
the written field does to the real anatomy):

  noise-box   the iUS replaced by uniform noise over the whole box (no fan, no anatomy)
  noise-fan   uniform noise inside the real fan only (a fan, no anatomy)
  swapped     the ceT1 given as the iUS (_0000) and the iUS as the ceT1 (_0001)
  offset      the iUS minus 60 everywhere (its background -60, not 0)
  half-fan    the fan's first half along i blanked (partial information: must still register)
  shadow      the fan below mid-depth along k darkened to 10 % over its middle third in j (heavy shadowing)

The first four must give exit 1 or an identity field with a WARNING; the last two must still be registered
(docs/RELIABILITY.md, "Evidence before output"). Then, e.g.:

    python -m benchmarks.stress_set --source DATASET --out STRESS [--cases 2]
    python -m benchmarks.run_benchmark --cases STRESS --out OUT --methods identity,model
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import nibabel as nib
import numpy as np

DATASET_JSON = "ReMIND2Reg_dataset.json"  # the organisers' dataset description, as simulation writes it
VARIANTS = ("noise-box", "noise-fan", "swapped", "offset", "half-fan", "shadow")
HARMFUL = ("noise-box", "noise-fan", "swapped", "offset")  # no field may be written from these unannounced


def variant_images(name: str, us: np.ndarray, ce_t1: np.ndarray, rng: np.random.Generator):
    """(iUS, ceT1) arrays of one stress variant (i, j, k), from the source case's."""
    fan = us > 0
    if name == "noise-box":
        return rng.uniform(0.0, float(us.max()), us.shape).astype(np.float32), ce_t1
    if name == "noise-fan":
        return np.where(fan, rng.uniform(0.0, float(us.max()), us.shape), 0.0).astype(np.float32), ce_t1
    if name == "swapped":
        return ce_t1, us
    if name == "offset":
        return (us - 60.0).astype(np.float32), ce_t1
    if name == "half-fan":
        out = us.copy()
        out[: us.shape[0] // 2] = 0.0
        return out, ce_t1
    if name == "shadow":
        out = us.copy()
        j0, j1 = us.shape[1] // 3, 2 * us.shape[1] // 3
        out[:, j0:j1, us.shape[2] // 2:] *= 0.1
        return out, ce_t1
    raise ValueError(f"unknown stress variant {name!r} (known: {', '.join(VARIANTS)})")


def _save_like(array: np.ndarray, like: nib.Nifti1Image, path: str) -> None:
    nib.save(nib.Nifti1Image(array.astype(np.float32), like.affine, like.header), path)


def write_stress_set(source: str, out: str, cases: int | None = None, seed: int = 0) -> list[dict]:
    """The stress variants of the source dataset's first `cases` cases, written to `out`; their descriptions."""
    with open(os.path.join(source, DATASET_JSON)) as handle:
        dataset = json.load(handle)
    sources = [c["case_id"] for c in dataset["cases"]][:cases]
    for folder in ("imagesTr", "landmarksTr"):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    rng = np.random.default_rng(seed)
    described, pairs, next_id = [], [], 1
    for case in sources:
        image = {m: nib.load(os.path.join(source, "imagesTr", f"ReMIND2Reg_{case}_{m:04d}.nii.gz")) for m in (0, 1, 2)}
        us, ce_t1 = (np.asarray(image[m].dataobj, dtype=np.float32) for m in (0, 1))
        for variant in VARIANTS:
            new = f"{next_id:04d}"
            next_id += 1
            fixed, moving = variant_images(variant, us, ce_t1, rng)
            _save_like(fixed, image[0], os.path.join(out, "imagesTr", f"ReMIND2Reg_{new}_0000.nii.gz"))
            _save_like(moving, image[1], os.path.join(out, "imagesTr", f"ReMIND2Reg_{new}_0001.nii.gz"))
            shutil.copyfile(image[2].get_filename(), os.path.join(out, "imagesTr", f"ReMIND2Reg_{new}_0002.nii.gz"))
            for m in (0, 1, 2):
                shutil.copyfile(os.path.join(source, "landmarksTr", f"ReMIND2Reg_{case}_{m:04d}.csv"),
                                os.path.join(out, "landmarksTr", f"ReMIND2Reg_{new}_{m:04d}.csv"))
            described.append({"case_id": new, "variant": variant, "from_case": case,
                              "source": f"stress '{variant}' of {os.path.basename(os.path.abspath(source))} case {case}"})
            for m in (1, 2):
                pairs.append({"fixed": f"./imagesTr/ReMIND2Reg_{new}_0000.nii.gz",
                              "moving": f"./imagesTr/ReMIND2Reg_{new}_{m:04d}.nii.gz"})
    with open(os.path.join(out, DATASET_JSON), "w") as handle:
        json.dump({"name": "ReMIND2Reg-stress", "description": __doc__.split("\n\n")[0],
                   "modality": dataset.get("modality"), "eval_pairs": pairs, "cases": described,
                   "generator": f"python -m benchmarks.stress_set --source {source} --out {out} --cases {cases}"},
                  handle, indent=1)
    return described


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="a dataset in the organisers' layout, with landmarks")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", type=int, default=2, help="source cases used (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for case in write_stress_set(args.source, args.out, args.cases, args.seed):
        print(f"{case['case_id']}: {case['source']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
