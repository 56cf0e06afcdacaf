"""Reference methods run through the algorithm's own entrypoint code (process.run), so that reading,
resampling, writing and timing are identical to the model's:

    python -m benchmarks.peers identity --input IN --output OUT
    python -m benchmarks.peers sitk-mi  --input IN --output OUT
    python -m benchmarks.peers mcpo     --input IN --output OUT [--mcpo-source PATH] [--mcpo-device cpu|cuda]
                                        [--mcpo-precision fp32|fp16]

mcpo: the 2025 winner's published script, fetched at benchmark run time and never copied into the project
(benchmarks/mcpo_peer.py; --mcpo-source / $REMIND2REG_MCPO_SOURCE: a local clone, bare git dir or the file;
--mcpo-device / $REMIND2REG_MCPO_DEVICE, default CUDA when available; on the CPU --mcpo-precision /
$REMIND2REG_MCPO_PRECISION fp32 (default) or fp16, its GPU's storage precision at about 0.6 x the memory).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks.mcpo_peer import PRECISIONS, Mcpo, McpoError
from benchmarks.peer_result import PeerResult
from interfaces import conventions as cv
from interfaces import logs


class Identity:
    """No registration: u = 0 (the challenge's 'no registration' row)."""

    device_name = "cpu"

    def register(self, fixed, moving, spacing, target="ceT1"):
        return PeerResult(np.zeros(fixed.shape + (3,), np.float32))


class SitkMutualInformation:
    """SimpleITK Mattes MI, rigid then B-spline (benchmarks/sitk_mi_peer.py), on the target sequence only."""

    device_name = "cpu"

    def register(self, fixed, moving, spacing, target="ceT1"):
        from benchmarks.sitk_mi_peer import register_mi

        # index-space geometry is all an intensity registration needs: the field is returned in voxels
        grid = cv.Grid(tuple(fixed.shape), tuple(float(s) for s in spacing), (0.0, 0.0, 0.0),
                       tuple(np.eye(3).ravel()))
        start = time.perf_counter()
        displacement = register_mi(fixed, moving[target], grid)
        return PeerResult(displacement, {"sitk_mi": time.perf_counter() - start})


PEERS = {"identity": Identity, "sitk-mi": SitkMutualInformation, "mcpo": Mcpo}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--input", required=True, help="organisers' flat folder or Grand Challenge /input")
    parser.add_argument("--output", required=True)
    parser.add_argument("--sequences", default=None, help="ceT1 | T2 | all (default: $REMIND2REG_SEQUENCES or all)")
    parser.add_argument("--mcpo-source", default=None, metavar="PATH",
                        help="mcpo only: a local clone / bare git dir of github.com/wjiazheng/MCPO or its "
                             "MCPO_p4_6543.py (default $REMIND2REG_MCPO_SOURCE, else a clone in ~/.cache/remind2reg)")
    parser.add_argument("--mcpo-device", default=None, choices=("cpu", "cuda"),
                        help="mcpo only (default $REMIND2REG_MCPO_DEVICE, else cuda when available)")
    parser.add_argument("--mcpo-precision", default=None, choices=PRECISIONS,
                        help="mcpo on the CPU only (default $REMIND2REG_MCPO_PRECISION, else fp32): fp16 keeps its "
                             "features and cost volumes in fp16 as its GPU code does, about 0.6 x the memory")
    args = parser.parse_args(argv)
    options = {}
    if args.peer == "mcpo":
        options = {"source": args.mcpo_source, "device": args.mcpo_device, "precision": args.mcpo_precision}
    elif args.mcpo_source or args.mcpo_device or args.mcpo_precision:
        parser.error("--mcpo-source, --mcpo-device and --mcpo-precision apply only to the mcpo peer")
    try:
        registration = PEERS[args.peer](**options)
    except McpoError as exc:  # before any case: the run's one line says why (exit 2, unusable setup)
        logs.setup()
        logs.log.error("FAILED: %s", exc)
        return 2
    import process

    return process.run(args.input, args.output, registration=registration, sequences=args.sequences)


if __name__ == "__main__":
    sys.exit(main())
