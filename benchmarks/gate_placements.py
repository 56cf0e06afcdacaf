"""The small-shift gate across placements of the working grids (docs/MODEL.md, "The gate across grid placements").

RESECT-24's real iUS with its T1 / FLAIR as given (no added deformation, identity 1.10 mm) and with small known
deformations added (simulation.hybrid), registered with both MR (`--one-sequence`: each MR alone, the case of
the `one_sequence` gate) in the native box and, embedded in the
challenge's 256^3 box, at several margins of the fan's box (`crop.margin_mm`: each margin puts the working grids
somewhere else on the anatomy, as the fan's position in the challenge's grid does). Every pair is registered
once with the gate at gain 1, keeping the field's rms over the fan and its displacement at the 16 landmarks; a
written field is gain x that field, so each gate in GATES is then replayed on the same pairs exactly.

    python -m benchmarks.gate_placements                       # the documented plan (PLAN), about 12 min (2-core CPU)
    python -m benchmarks.gate_placements --magnitudes 0 --margins-mm 8 20 21   # a quick look (2 min)
    python -m benchmarks.gate_placements --one-sequence        # each MR alone, twice the pairs (about 25 min)
    python -m benchmarks.gate_placements --save pairs.json     # keep the registered pairs ...
    python -m benchmarks.gate_placements --replay pairs.json --gates 1.5:4 1.6:4.5   # ... and replay other gates
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from evaluation.metrics import sample_displacement
from model import Registration, load_config
from model.safety import gate_gain
from simulation.hybrid import embed_case, make_hybrid_case

# the documented plan: the case as given at every margin, small deformations at fewer (magnitude mm -> margins)
PLAN = {0.0: [0, 3, 5, 8, 10, 13, 15, 18, 20, 21, 23, 24, 25, 28, 30], 1.0: [0, 5, 10, 15, 20, 25, 30],
        2.0: [0, 5, 10, 15, 20, 25, 30], 3.0: [5, 10, 20], 4.0: [5, 10, 20]}
# (floor, full) mm: the product's two gates (1.6 / 3.5 fused, 2.6 / 4 one sequence), their neighbours, the old ones
GATES = [None, (1.5, 3.0), (2.0, 4.0), (1.6, 3.25), (1.5, 3.5), (1.6, 3.5), (1.6, 4.0), (2.4, 4.0), (2.6, 4.0),
         (3.0, 4.0)]
GAIN_ONE = {"floor_mm": 0.0, "full_mm": 1e-3}
UNGATED = {"safety": {"small_shift": {"enabled": True, **GAIN_ONE, "one_sequence": GAIN_ONE}}}  # gain 1, rms reported


def register_ungated(case: dict, margin_mm: float, target: str = "ceT1") -> dict:
    """One pair: rms over the fan and displacement at the landmarks (with both MR, both targets get the same
    fused field, so ceT1 stands for both)."""
    cfg = load_config(overrides={**UNGATED, "crop": {"margin_mm": float(margin_mm)}})
    result = Registration(cfg, device="cpu").register(case["fixed"], case["moving"], case["spacing"], target)
    return dict(rms=float(result.shift_rms_mm),
                u=sample_displacement(result.displacement, case["fixed_landmarks"], np.float64))


def tre_at_gain(pair: dict, gain: float) -> float:
    moved = pair["fixed_landmarks"] + gain * pair["u"]
    return float(np.linalg.norm((moved - pair["moving_landmarks"]) * pair["spacing"], axis=1).mean())


def gain_of(rms: float, gate) -> float:
    """The gain the product's gate (model.safety.gate_gain) gives a field of this rms; None: no gate."""
    return 1.0 if gate is None else gate_gain(rms, *gate)


def layouts(case: dict, one_sequence: bool) -> list[tuple[str, dict, str]]:
    """(label, case, target): both MR in the input (the fused field), or each MR alone."""
    if not one_sequence:
        return [("both MR", case, "ceT1")]
    return [(f"{s} alone", {**case, "moving": {s: case["moving"][s]}}, s) for s in sorted(case["moving"])]


def collect(plan: dict, seeds, native: bool, size: int, one_sequence: bool = False) -> list[dict]:
    pairs = []
    for magnitude, margins in plan.items():
        for seed in ([0] if magnitude == 0 else seeds):
            case = make_hybrid_case(seed, magnitude, with_true_displacement=False)
            boxes = ([("native", case, None)] if native else []) + [(f"{size}^3", None, m) for m in margins]
            embedded = embed_case(case, size) if margins else None
            for box, native_case, margin in boxes:
                for layout, c, target in layouts(native_case if native_case is not None else embedded, one_sequence):
                    t0 = time.perf_counter()
                    found = register_ungated(c, 20.0 if margin is None else margin, target)
                    pair = dict(magnitude=magnitude, seed=seed, box=box, margin=margin, layout=layout,
                                spacing=np.asarray(c["spacing"]), fixed_landmarks=c["fixed_landmarks"],
                                moving_landmarks=c["moving_landmarks"], **found)
                    pair["identity"] = tre_at_gain(pair, 0.0)
                    pairs.append(pair)
                    where = box if margin is None else f"{box} margin {margin:g} mm"
                    print(f"  {magnitude:g} mm seed {seed} {where}, {layout}: identity {pair['identity']:.3f}, "
                          f"ungated {tre_at_gain(pair, 1.0):.3f} mm, rms {pair['rms']:.2f} mm "
                          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return pairs


def table(pairs: list[dict], gates=GATES) -> str:
    magnitudes = sorted({p["magnitude"] for p in pairs})
    identity = {m: np.mean([p["identity"] for p in pairs if p["magnitude"] == m]) for m in magnitudes}
    head = " | ".join(f"{'as given' if m == 0 else f'{m:g} mm'} (id. {identity[m]:.2f})" for m in magnitudes)
    lines = [f"| gate floor / full (mm) | worse | worst ratio | {head} |",
             "|---" * (3 + len(magnitudes)) + "|"]
    for gate in gates:
        tres = [(p, tre_at_gain(p, gain_of(p["rms"], gate))) for p in pairs]
        worse = sum(t > p["identity"] for p, t in tres)
        ratio = max(t / p["identity"] for p, t in tres)
        means = " | ".join(f"{np.mean([t for p, t in tres if p['magnitude'] == m]):.3f}" for m in magnitudes)
        name = "off (gain 1)" if gate is None else f"{gate[0]:g} / {gate[1]:g}"
        lines.append(f"| {name} | {worse} | {ratio:.3f} | {means} |")
    return "\n".join(lines)


ARRAYS = ("spacing", "fixed_landmarks", "moving_landmarks", "u")


def save_pairs(pairs: list[dict], path: str) -> None:
    with open(path, "w") as handle:
        json.dump([{k: (v.tolist() if k in ARRAYS else v) for k, v in p.items()} for p in pairs], handle)


def load_pairs(path: str) -> list[dict]:
    with open(path) as handle:
        return [{k: (np.asarray(v, np.float64) if k in ARRAYS else v) for k, v in p.items()} for p in json.load(handle)]


def parse_gate(text: str):
    """'off' (gain 1) or 'FLOOR:FULL' in mm."""
    if text == "off":
        return None
    floor, full = (float(x) for x in text.split(":"))
    if not 0 <= floor < full:
        raise argparse.ArgumentTypeError(f"a gate is FLOOR:FULL with 0 <= FLOOR < FULL (mm), got {text!r}")
    return floor, full


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--magnitudes", nargs="*", type=float, default=sorted(PLAN),
                        help="added deformation, mean mm at the landmarks (0: the case as given)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--margins-mm", nargs="*", type=float,
                        help="the same margins for every magnitude (default: PLAN's)")
    parser.add_argument("--no-native", action="store_true", help="only the challenge's box")
    parser.add_argument("--one-sequence", action="store_true",
                        help="each MR registered alone (the one_sequence gate's case) instead of both together")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--gates", nargs="*", type=parse_gate,
                        help="gates to replay, 'off' or FLOOR:FULL in mm (default: the documented list)")
    parser.add_argument("--save", metavar="JSON", help="also write the registered pairs here, for --replay")
    parser.add_argument("--replay", metavar="JSON", help="register nothing: replay the gates on pairs saved before")
    args = parser.parse_args(argv)
    if args.replay:
        pairs = load_pairs(args.replay)
    else:
        plan = {m: (args.margins_mm if args.margins_mm is not None else PLAN.get(m, [20.0])) for m in args.magnitudes}
        pairs = collect(plan, args.seeds, not args.no_native, args.size, args.one_sequence)
        if args.save:
            save_pairs(pairs, args.save)
    print(f"\n{len(pairs)} pairs\n\n{table(pairs, args.gates or GATES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
