"""`process.py --demo`: one small SIMULATED case, registered and scored, with QC pictures."""
from __future__ import annotations

import json
import os

from interfaces import logs
from interfaces.logs import log, one_line
from runner.run import EXIT_FAILED, EXIT_SETUP, run


def demo(out_dir: str = "demo_output") -> int:
    """Simulate one small case, register it into out_dir, score it with the evaluation code, write QC PNGs."""
    logs.setup()
    try:  # only the demo needs the simulator and the evaluation (neither is in the image)
        from evaluation.evaluate import run as evaluate
        from simulation.demo import make_demo_dataset
    except ImportError as exc:
        log.error("FAILED: the demo needs the simulation and evaluation packages (%s)", one_line(exc))
        return EXIT_SETUP
    os.makedirs(out_dir, exist_ok=True)
    dataset = str(make_demo_dataset(os.path.join(out_dir, "dataset")))
    log.info("demo dataset (SIMULATED): %s", dataset)
    qc_dir = os.path.join(out_dir, "qc")
    code = run(os.path.join(dataset, "imagesTr"), out_dir, qc_dir=qc_dir)
    metrics_path = os.path.join(out_dir, "metrics.json")
    evaluate(out_dir, dataset, metrics_path, name="demo", quiet=True)
    with open(metrics_path) as handle:
        metrics = json.load(handle)
    for key, case in sorted(metrics["cases"].items()):
        print(f"{key}: TRE before {case['TRE_initial']['mean']:.2f} mm -> after {case['TRE_lm']['mean']:.2f} mm, "
              f"SDlogJ {case['LogJacDetStd']['mean']:.3f}, folds {case['num_folds_true']['mean']:.0f}")
    for error in metrics["errors"]:
        print(f"evaluation error: {error}")
    print(f"fields in {out_dir}/, metrics in {metrics_path}, QC pictures in {qc_dir}/")
    return code or (EXIT_FAILED if metrics["errors"] else 0)
