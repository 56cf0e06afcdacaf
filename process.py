#!/usr/bin/env python
"""ReMIND2Reg algorithm entrypoint: iUS (fixed) <- pre-operative MR (moving) displacement fields.

No arguments: read /input, write /output (the containers' ENTRYPOINT). If <input>/inputs.json exists the
Grand Challenge layout is used (image sockets in, one DSPF .mha out), else the organisers' flat folder of
ReMIND2Reg_XXXX_000M files (disp_XXXX_0000_XXXX_000M.nii.gz out). Which MR sequences are registered:
$REMIND2REG_SEQUENCES = ceT1 | T2 | all (default all), baked into each image at build time.
$REMIND2REG_OVERLAP_IO = auto | 1 | 0: read the next case and write fields on background threads while the model
works (auto, the default: when the model runs on CUDA).
Grand Challenge layout: the MR socket present is registered (ceT1 or T2, whatever the image was built for);
with both MR sockets, the image's build-time sequence, ceT1 for the `all` image.
Many machines: --shard K/N (or $REMIND2REG_SHARD, SLURM job arrays, Kubernetes Indexed Jobs with
$REMIND2REG_SHARDS) takes the cases at sorted positions K, K+N, ... (K from 0) and writes timings.K-of-N.json.
Log: INFO on stdout; WARNING/ERROR on stderr, a failing run's last stderr line naming every failure.
Exit status: 0 every pair written, 1 any case or pair failed, 2 unusable setup, 143 stopped by SIGTERM.
See docs/SETTINGS.md (all settings) and docs/CONVENTIONS.md.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from interfaces import logs
from interfaces.logs import log, one_line
from interfaces.organisers import SEQUENCE_CHOICES, SEQUENCES_ENV
from interfaces.version import __version__
from runner import run  # noqa: F401 - process.run is the benchmarks' and tests' entry (model injectable)
from runner.run import EXIT_SETUP

DEFAULT_QC_DIR = "qc"  # relative to the output folder when --qc is given without a folder


class _Terminated(SystemExit):
    """SIGTERM (`docker stop`) as an exception: the finally blocks remove a half-written file and finish a field
    already being written behind, instead of the process vanishing mid-write."""


def _on_sigterm(signum, _frame):
    raise _Terminated(128 + signum)


def _demo() -> int:
    """`--demo` lives with the dev-side packages (simulation, evaluation), which the algorithm image does not ship."""
    try:
        from simulation.demo import demo
    except ImportError as exc:
        logs.setup()
        log.error("FAILED: --demo needs the dev-side packages simulation and evaluation (a checkout of the repository, "
                  "not the algorithm image): %s", one_line(exc))
        return EXIT_SETUP
    return demo()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default="/input", help="input folder (default /input)")
    parser.add_argument("--output", default="/output", help="output folder (default /output)")
    parser.add_argument("--sequences", choices=sorted(SEQUENCE_CHOICES),
                        help=f"override ${SEQUENCES_ENV} (ceT1 | T2 | all)")
    parser.add_argument("--shard", metavar="K/N",
                        help="process only shard K (from 0) of N of the organisers' folder: the cases at sorted "
                             "positions K, K+N, ...; overrides $REMIND2REG_SHARD, SLURM_ARRAY_TASK_ID/COUNT and "
                             "JOB_COMPLETION_INDEX + $REMIND2REG_SHARDS (0/1: no sharding)")
    parser.add_argument("--qc", nargs="?", const="", default=None, metavar="DIR",
                        help=f"write a QC PNG per pair into DIR (default <output>/{DEFAULT_QC_DIR})")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--demo", action="store_true",
                        help="simulate one small case, register it into demo_output/, print TRE before/after")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.demo:
            return _demo()
        qc_dir = None if args.qc is None else (args.qc or os.path.join(args.output, DEFAULT_QC_DIR))
        return run(args.input, args.output, sequences=args.sequences, qc_dir=qc_dir, shard=args.shard)
    except _Terminated:
        log.error("STOPPED by SIGTERM: the pairs written so far are complete; no partial file is left")
        raise


if __name__ == "__main__":
    sys.exit(main())
