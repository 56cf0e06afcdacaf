"""`process.py --demo` (`make demo`): one small SIMULATED case (MNI152 anatomy, needs no ../shared data),
registered through the algorithm's own run, scored by the evaluation code, with QC pictures.

Dev-side: it drives runner/ and evaluation/, and the algorithm image ships neither this package nor evaluation/.
"""
from __future__ import annotations

import json
import os

from evaluation.evaluate import run as evaluate
from interfaces import logs
from runner.run import EXIT_FAILED, run

from .cases import make_simulated_case, write_dataset


def make_demo_dataset(out_dir: str, shape: int = 80, seed: int = 1) -> str:
    """Write case 0001 (iUS + ceT1 + T2, landmarks, ground truth) at shape^3, 128 mm field of view.

    Returns the dataset folder (containing ReMIND2Reg_dataset.json)."""
    case = make_simulated_case(seed, anatomy="mni152", shape=(shape,) * 3, spacing=128.0 / shape)
    write_dataset([case], out_dir, start_id=1, extra={"demo": True})
    return os.path.abspath(out_dir)


def demo(out_dir: str = "demo_output") -> int:
    """Simulate one small case, register it into out_dir, score it with the evaluation code, write QC PNGs."""
    logs.setup()
    os.makedirs(out_dir, exist_ok=True)
    dataset = make_demo_dataset(os.path.join(out_dir, "dataset"))
    logs.log.info("demo dataset (SIMULATED): %s", dataset)
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
