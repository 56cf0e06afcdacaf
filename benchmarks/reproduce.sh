#!/usr/bin/env bash
# Reproduces the tables of docs/BENCHMARKS.md: datasets from fixed seeds, then run_benchmark on each.
#   benchmarks/reproduce.sh [WORK_DIR]      (default /tmp/remind2reg-bench; needs ../shared/data)
# Sets (each a table):
#   hybrid5  REAL RESECT case 24 iUS, its T1/FLAIR deformed by known fields (5 mm mean): every method
#   sim256   SIMULATED post-resection cases at the challenge size (256^3, 0.5 mm): identity, model,
#            and ceT1+T2 fused (the default registers each image's own sequence only).
#            The MI peer runs on hybrid5 only: at 256^3 it took about 10 min per pair on the 2-core VM.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${1:-/tmp/remind2reg-bench}
mkdir -p "$WORK"
data() { [ -f "$WORK/$1/ReMIND2Reg_dataset.json" ] || $PY -m simulation --out "$WORK/$1" "${@:2}"; }
data hybrid5 --n 6 --seed 0 --hybrid --magnitude 5
data sim256 --n 4 --seed 3000 --anatomy mixed --shape 256 --no-field
$PY -m benchmarks.run_benchmark --cases "$WORK/hybrid5" --out "$WORK/out_hybrid5" \
    --title "Hybrid real iUS (RESECT 24 + known 5 mm deformations), 6 cases x 2 MR"
$PY -m benchmarks.run_benchmark --cases "$WORK/sim256" --out "$WORK/out_sim256" \
    --methods identity,model,abl-fused-sequences \
    --title "Simulated post-resection, 256^3 at 0.5 mm, 4 cases x 2 MR"
cat "$WORK"/out_*/benchmark.md
