#!/usr/bin/env bash
# Reproduces the tables of docs/BENCHMARKS.md: datasets from fixed seeds, then run_benchmark on each.
#   benchmarks/reproduce.sh [WORK_DIR]      (default /tmp/remind2reg-bench; needs ../shared/data)
# Sets (each a table):
#   hybrid5  REAL RESECT case 24 iUS, its T1/FLAIR deformed by known fields (5 mm mean): every method
#   sim256   SIMULATED post-resection cases at the challenge size (256^3, 0.5 mm) with their exact fields:
#            identity, the model and its ablations.
#            The MI peer runs on hybrid5 only: at 256^3 it took about 10 min per pair on the 2-core VM.
#   given    REAL RESECT case 24 as given (no added deformation): a method must not make it worse
#   stress   SIMULATED stress cases (docs/SIMULATION.md, "Stress cases": the pre-operative tumour's enhancing
#            rim against the post-resection cavity's rim, small fans, fans at the brain's edge, 10-15 mm
#            offsets, low-contrast iUS), 128^3 at 1 mm (the 128 mm field of view): identity and the model.
# About 1 h on the 2-core VM.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${1:-/tmp/remind2reg-bench}
mkdir -p "$WORK"
data() { [ -f "$WORK/$1/ReMIND2Reg_dataset.json" ] || $PY -m simulation --out "$WORK/$1" "${@:2}"; }
data hybrid5 --n 6 --seed 0 --hybrid --magnitude 5
data sim256 --n 4 --seed 3000 --anatomy mixed --shape 256
data stress --n 6 --seed 4007 --stress --shape 128   # seeds 4007-4012: every stressor in at least one case
data given --n 1 --seed 0 --hybrid --magnitude 0     # RESECT-24 as given: identity 1.10 mm, must not get worse
$PY -m benchmarks.run_benchmark --cases "$WORK/hybrid5" --out "$WORK/out_hybrid5" \
    --title "Hybrid real iUS (RESECT 24 + known 5 mm deformations), 6 cases x 2 MR"
$PY -m benchmarks.run_benchmark --cases "$WORK/sim256" --out "$WORK/out_sim256" \
    --methods identity,model,abl-global-only,abl-no-adam,abl-no-global,abl-no-inpaint,abl-no-cavity-weight \
    --title "Simulated post-resection, 256^3 at 0.5 mm, 4 cases x 2 MR"
$PY -m benchmarks.run_benchmark --cases "$WORK/stress" --out "$WORK/out_stress" --methods identity,model \
    --title "Stress cases (SIMULATED: tumour vs cavity, small fans, brain edge, 10-15 mm offsets, low contrast), 128^3 at 1 mm, 6 cases x 2 MR"
$PY -m benchmarks.run_benchmark --cases "$WORK/given" --out "$WORK/out_given" --methods identity,model \
    --title "RESECT case 24 as given (REAL iUS, no added deformation; identity 1.10 mm)"
cat "$WORK"/out_*/benchmark.md
# what kind of error the hybrid fields carry over the fan: translation, rotation, strain, the rest (docs/MODEL.md)
$PY -m benchmarks.error_decomposition --cases "$WORK/hybrid5" "$WORK"/out_hybrid5/{identity,model}/
# speed of one 256^3 pair per input layout, medians of 3 (docs/BENCHMARKS.md section 7; a quiet machine)
$PY -m benchmarks.speed --case "$WORK/sim256/imagesTr/ReMIND2Reg_0001" --repeats 3 --json "$WORK/speed.json"
