"""How much the registration box alone moves the result: the hybrid real-iUS pairs (RESECT-24 iUS, its T1 / FLAIR
with a known 5 mm deformation; docs/BENCHMARKS.md section 1) registered in their native box, in the challenge's
256^3 box, and in that box cropped back to the fan's bounding box plus a margin. Landmarks move with every box,
so each row scores the same anatomy (docs/MODEL.md, "The same pairs at the challenge's size").

    python -m benchmarks.box_sensitivity [--seeds 0 1 2 3 4 5] [--margins-mm 0 10 30]
"""
from __future__ import annotations

import argparse

import numpy as np

from evaluation.metrics import tre
from model import Registration, load_config
from simulation.hybrid import embed_case, make_hybrid_case

SPACING_MM = 0.5  # the hybrid cases' grid (RESECT-24 resampled), and the challenge's


def crop(case: dict, margin_voxels: int) -> dict:
    """The case cut to the iUS fan's bounding box plus a margin (landmarks shifted with it)."""
    fan = np.argwhere(case["fixed"] > 0)
    lo = np.maximum(fan.min(0) - margin_voxels, 0)
    hi = np.minimum(fan.max(0) + 1 + margin_voxels, case["fixed"].shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    return dict(fixed=case["fixed"][box], moving={n: v[box] for n, v in case["moving"].items()},
                fixed_landmarks=case["fixed_landmarks"] - lo, moving_landmarks=case["moving_landmarks"] - lo)


def mean_tre(registration: Registration, cases: list[dict]) -> dict:
    """Mean TRE (mm) per target sequence over the cases."""
    out = {}
    for sequence in ("ceT1", "T2"):
        errors = []
        for case in cases:
            result = registration.register(case["fixed"], case["moving"], (SPACING_MM,) * 3, sequence)
            errors.append(tre(case["fixed_landmarks"], case["moving_landmarks"], result.displacement,
                              (SPACING_MM,) * 3).mean())
        out[sequence] = float(np.mean(errors))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--margins-mm", nargs="*", type=float, default=[0.0, 10.0, 30.0])
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    native = [make_hybrid_case(seed=s, magnitude_mm=5.0, with_true_displacement=False) for s in args.seeds]
    embedded = [embed_case(c, args.size) for c in native]
    boxes = [("native", native), (f"{args.size}^3", embedded)]
    boxes += [(f"{args.size}^3 cropped to the fan + {m:g} mm", [crop(c, int(round(m / SPACING_MM))) for c in embedded])
              for m in args.margins_mm]
    registration = Registration(load_config(), device="cpu")
    print("| box | T1 (ceT1) | FLAIR (T2) | mean |\n|---|---|---|---|")
    for name, cases in boxes:
        means = mean_tre(registration, cases)
        print(f"| {name} | {means['ceT1']:.3f} | {means['T2']:.3f} | {(means['ceT1'] + means['T2']) / 2:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
