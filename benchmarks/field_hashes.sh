#!/usr/bin/env bash
# Byte-identity check for behaviour-preserving refactors: makes the benchmark sets from fixed seeds (once, in
# WORK), runs process.py on each exactly as the organisers and the platform do, and prints the SHA-256 of
# every dataset file and every field written. Run it before and after a refactor and diff the two outputs.
#   benchmarks/field_hashes.sh WORK_DIR OUT_DIR > hashes.txt     (needs ../shared/data for the hybrid set)
# Sets: hybrid (real RESECT-24 iUS, 6 cases x 2 MR), sim96 (simulated, 96^3, mixed anatomy, 4 cases x 2 MR),
# sim256 (the challenge's size, 2 cases x 2 MR) and one Grand Challenge job (inputs.json -> DSPF .mha).
# About 10 min on the 2-core VM. SHAPE256=0 skips sim256.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=$1
OUT=$2
mkdir -p "$WORK" "$OUT"
data() { [ -f "$WORK/$1/ReMIND2Reg_dataset.json" ] || $PY -m simulation --out "$WORK/$1" "${@:2}" >&2; }
data hybrid --n 6 --seed 0 --hybrid --magnitude 5
data sim96 --n 4 --seed 500 --anatomy mixed --shape 96
sets="hybrid sim96"
if [ "${SHAPE256:-1}" != 0 ]; then
  data sim256 --n 2 --seed 3000 --anatomy mixed --shape 256
  sets="$sets sim256"
fi

# one Grand Challenge job: the first hybrid case's iUS and both MRs behind inputs.json
gcin="$WORK/gc_job"
if [ ! -f "$gcin/inputs.json" ]; then
  $PY - "$WORK/hybrid/imagesTr" "$gcin" <<'EOF'
import json, os, sys
import SimpleITK as sitk
from interfaces import grand_challenge as gc
src, dst = sys.argv[1:]
entries = []
for modality, slug in sorted(gc.INPUT_SLUGS.items()):
    folder = os.path.join(dst, "images", slug)
    os.makedirs(folder, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(os.path.join(src, f"ReMIND2Reg_0001_{modality:04d}.nii.gz")),
                    os.path.join(folder, "image.mha"))
    entries.append({"interface": {"slug": slug, "kind": "Image", "relative_path": f"images/{slug}"},
                    "image": {"name": "image.mha"}})
with open(os.path.join(dst, "inputs.json"), "w") as handle:
    json.dump(entries, handle)
EOF
fi

for s in $sets; do
  REMIND2REG_TIMINGS=0 $PY process.py --input "$WORK/$s/imagesTr" --output "$OUT/$s" >&2
done
REMIND2REG_TIMINGS=0 $PY process.py --input "$gcin" --output "$OUT/gc_job" >&2
(cd "$WORK" && find $sets -type f \( -name '*.nii.gz' -o -name '*.csv' \) | sort | xargs sha256sum) | sed 's/^/data /'
(cd "$OUT" && find . -type f \( -name '*.nii.gz' -o -name '*.mha' \) | sort | xargs sha256sum) | sed 's/^/field /'
