"""python -m simulation --out DIR --n N --seed S [--anatomy mni152|remind022|mixed] [--shape 64] [--hybrid [--embed 256]]
                       [--stress]

Writes N cases in the organisers' ReMIND2Reg layout (imagesTr/, landmarksTr/, ReMIND2Reg_dataset.json,
plus groundtruthTr/ voxel fields).  ALL iUS images written are SIMULATED, except with --hybrid, where the
fixed iUS is the REAL RESECT case 24 and the MRI carries a known synthetic deformation. --stress writes
stress cases (simulation/stress.py: the pre-operative tumour against the post-resection cavity, small fans,
fans at the brain's edge, 10-15 mm offsets, low-contrast iUS), each case's stressors in the dataset JSON.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .cases import write_dataset
    path = write_dataset(_cases(args), args.out, write_field=not args.no_field, start_id=args.start_id,
                         extra={"generator": "python -m simulation " + " ".join(argv if argv is not None else sys.argv[1:])})
    print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m simulation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output dataset folder")
    ap.add_argument("--n", type=int, default=1, help="number of cases")
    ap.add_argument("--seed", type=int, default=0, help="base seed; case n uses seed + n")
    ap.add_argument("--anatomy", default="mni152", choices=["mni152", "remind022", "mixed"],
                    help="real MRI anatomy: MNI152 template (synthetic tumour), ReMIND-022 patient, or alternate")
    ap.add_argument("--shape", type=int, default=256, help="cubic grid size (default 256)")
    ap.add_argument("--spacing", type=float, default=None,
                    help="mm; default 128/shape so the field of view stays 128 mm (256 -> 0.5 mm)")
    ap.add_argument("--hybrid", action="store_true", help="hybrid real cases (RESECT 24 + known deformation)")
    ap.add_argument("--magnitude", type=float, default=5.0, help="--hybrid: mean added displacement, mm")
    ap.add_argument("--embed", type=int, default=0,
                    help="--hybrid: centre each case in an N^3 grid (e.g. 256, the challenge's size)")
    ap.add_argument("--stress", action="store_true",
                    help="stress cases (docs/SIMULATION.md, 'Stress cases'); e.g. --shape 128")
    ap.add_argument("--renderer", default="classic", choices=["classic", "learned"],
                    help="iUS renderer of simulated cases: classic (hand-set, default) or learned (fitted to the "
                         "real RESECT iUS, resources/sim/us_appearance.json; docs/SIMULATION.md)")
    ap.add_argument("--start-id", type=int, default=1, help="first case id (4 digits)")
    ap.add_argument("--no-field", action="store_true", help="do not write groundtruthTr/ fields")
    return ap


def _cases(args):
    """The cases one at a time (a generator: write_dataset writes each before the next is made, so only one
    case is held in memory), each announced with its initial TRE."""
    for n in range(args.n):
        t = time.time()
        seed = args.seed + n
        case = _make_case(args, n, seed)
        tre = np.asarray(case["initial_tre_mm"])
        print(f"case {args.start_id + n:04d} seed {seed}: {len(tre)} landmarks, initial TRE mean "
              f"{tre.mean():.2f} mm max {tre.max():.2f} mm, {time.time() - t:.1f} s", flush=True)
        yield case


def _make_case(args, n: int, seed: int) -> dict:
    """Case n of the set: hybrid (optionally embedded), stress or simulated; --anatomy mixed alternates."""
    if args.hybrid:
        from .hybrid import make_hybrid_case
        case = make_hybrid_case(seed, args.magnitude, with_true_displacement=not args.no_field)
        if args.embed:
            from .hybrid import embed_case
            case = embed_case(case, args.embed)
        return case
    spacing = args.spacing if args.spacing else 128.0 / args.shape
    anat = args.anatomy if args.anatomy != "mixed" else ("mni152", "remind022")[n % 2]
    if args.stress:
        from .stress import make_stress_case
        return make_stress_case(seed, anatomy=anat, shape=(args.shape,) * 3, spacing=spacing)
    from .cases import make_simulated_case
    return make_simulated_case(seed, anatomy=anat, shape=(args.shape,) * 3, spacing=spacing, renderer=args.renderer)


if __name__ == "__main__":
    raise SystemExit(main())
