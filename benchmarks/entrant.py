"""An entrant's loop in one command: register a dataset in the organisers' training layout, score it, one table.

    python -m benchmarks.entrant DATASET --out OUT [--config MODEL.json] [--sequences ceT1|T2|all] [--qc]

DATASET is the organisers' layout (what `python -m simulation --out DATASET` writes): `imagesTr/`,
`landmarksTr/` and a JSON with `eval_pairs` (without one, every pair with landmarks on both sides). Steps:
  1. OUT/input: links to every image of the cases named by the pairs (a flat folder, as the organisers mount
     /input); sequences = those of the pairs unless --sequences says otherwise.
  2. the algorithm's own run (runner.run, the same code as `process.py`, in this process): fields and
     timings.json into OUT/fields, `[k/N, about T left]` on every written pair.
  3. evaluation/evaluate.py's run on OUT/fields against DATASET: OUT/metrics.json.
  4. one table, per pair: TRE before and after registration (mm), LogJacDetStd, folds (J <= 0) and seconds
     (the algorithm's timings.json), and the mean; printed and saved as OUT/entrant.md.
Exit status: 0 every pair registered and scored, 1 otherwise (the table names the failures), 2 unusable input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from evaluation import evaluate as E
from evaluation import metrics as M
from evaluation.ground_truth import GroundTruthError, discover_pairs, pairs_from_config
from interfaces import conventions as cv

COLUMNS = ("pair", "TRE before (mm)", "TRE after (mm)", M.SDLOGJ, "folds (J<=0)", "seconds")


def link_inputs(dataset: str, pairs, folder: str) -> None:
    """Links to every image of the pairs' cases (all formats), so the run sees what a container would."""
    images = os.path.join(dataset, "imagesTr")
    cases = {pair.case for pair in pairs}
    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(images)):
        parsed = cv.parse_image_name(name)
        target = os.path.join(folder, name)
        if parsed and parsed[0] in cases and not os.path.lexists(target):
            os.symlink(os.path.abspath(os.path.join(images, name)), target)


def sequences_of(pairs) -> str:
    movings = {pair.moving for pair in pairs}
    return cv.MODALITIES[movings.pop()] if len(movings) == 1 else "all"


def table(metrics: dict, pairs) -> tuple[str, list[dict]]:
    """Markdown table (per pair, then the mean over scored pairs) and its rows."""
    rows = []
    for pair in pairs:
        values = metrics["cases"].get(pair.key)
        if values is None:
            why = metrics["failed_cases"].get(pair.key, "not scored")
            rows.append({"pair": pair.key, "failed": " ".join(why.split())})
            continue
        rows.append({"pair": pair.key, "before": values[M.TRE_INITIAL]["mean"], "after": values[M.TRE]["mean"],
                     "sdlogj": values[M.SDLOGJ]["mean"], "folds": values[M.FOLDS]["mean"],
                     "seconds": values.get(M.RUNTIME, {}).get("mean")})
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['pair']} | FAILED: {row['failed'][:160]} | | | | |")
        else:
            lines.append(f"| {row['pair']} | {row['before']:.2f} | {row['after']:.2f} | {row['sdlogj']:.4f} | "
                         f"{row['folds']:.0f} | {_seconds(row['seconds'])} |")
    scored = [row for row in rows if "failed" not in row]
    if scored:
        def mean(name):
            values = [row[name] for row in scored if row[name] is not None]
            return sum(values) / len(values) if values else None
        lines.append(f"| mean of {len(scored)} of {len(rows)} | {mean('before'):.2f} | {mean('after'):.2f} | "
                     f"{mean('sdlogj'):.4f} | {mean('folds'):.1f} | {_seconds(mean('seconds'))} |")
    return "\n".join(lines), rows


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv=None, registration=None) -> int:
    """The command; `registration` (tests): any object with the model's `.register`, None = the project's model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="organisers' layout: imagesTr/, landmarksTr/, a JSON with eval_pairs")
    parser.add_argument("--out", required=True, help="output folder: input/ (links), fields/, metrics.json, "
                                                     "entrant.md")
    parser.add_argument("--pairs", default=None, metavar="JSON",
                        help="the JSON with eval_pairs (default: any in DATASET, else every landmark pair)")
    parser.add_argument("--sequences", choices=("ceT1", "T2", "all"), default=None,
                        help="MR sequences to register (default: those of the pairs)")
    parser.add_argument("--config", default=None, metavar="JSON",
                        help="model settings merged over resources/config.json (sets $REMIND2REG_CONFIG)")
    parser.add_argument("--qc", action="store_true", help="QC PNG per pair into OUT/qc")
    parser.add_argument("--workers", type=int, default=0, help="evaluation processes (default min(2, cores))")
    args = parser.parse_args(argv)
    try:
        pairs = pairs_from_config(args.pairs) if args.pairs else discover_pairs(args.dataset)[0]
    except (GroundTruthError, OSError, ValueError, KeyError) as exc:
        print(f"ERROR: {args.dataset}: {exc}", file=sys.stderr)
        return 2
    if not pairs or not os.path.isdir(os.path.join(args.dataset, "imagesTr")):
        print(f"ERROR: {args.dataset}: no imagesTr/ or no pairs (eval_pairs or landmarksTr/)", file=sys.stderr)
        return 2
    if args.config:
        os.environ["REMIND2REG_CONFIG"] = os.path.abspath(args.config)
    out = os.path.abspath(args.out)
    link_inputs(args.dataset, pairs, os.path.join(out, "input"))
    fields = os.path.join(out, "fields")

    from runner import run  # imported here: `--help` stays instant

    print(f"== registering {len(pairs)} pair(s) of {args.dataset} into {fields}", flush=True)
    registered = run(os.path.join(out, "input"), fields, registration=registration,
                     sequences=args.sequences or sequences_of(pairs),
                     qc_dir=os.path.join(out, "qc") if args.qc else None, shard="0/1")
    if registered == 2:
        return 2
    print(f"== scoring with evaluation/evaluate.py into {os.path.join(out, 'metrics.json')}", flush=True)
    scored = E.run(fields, args.dataset, os.path.join(out, "metrics.json"), config=args.pairs,
                   workers=args.workers)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    text, rows = table(metrics, pairs)
    with open(os.path.join(out, "entrant.md"), "w", encoding="utf-8") as handle:
        handle.write(f"dataset {os.path.abspath(args.dataset)}, {len(pairs)} pair(s); TRE mm (landmarks), "
                     f"LogJacDetStd (official), folds = voxels with J <= 0, seconds from timings.json\n\n"
                     + text + "\n")
    print(text, flush=True)
    failed = [row["pair"] for row in rows if "failed" in row]
    if registered or scored or failed:
        print(f"ERROR: {len(failed)} of {len(pairs)} pair(s) not registered or not scored: "
              f"{', '.join(failed) or '(see above)'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
