#!/usr/bin/env bash
# The model's GPU checks in ONE call of a lent GPU machine (docs/BENCHMARKS.md, "Device check"):
# CUDA vs CPU field agreement, CUDA determinism, a 256^3 pair end to end through process.py, peak GPU memory.
#
#   1. here, with network:  benchmarks/device_check.sh --prepare
#      -> .device/ (git-ignored): SimpleITK + nibabel wheels for the GPU machine's Python (it has torch, numpy,
#         scipy, pytest, not these), and a copy of ../shared/data/resect-case24 (read there, never committed)
#   2. there: the device tool's run with command "bash benchmarks/device_check.sh", carry [".device"],
#      timeout_s 540 (about 4 min of work on a 16-core H200 machine is expected; unmeasured so far)
#   Results: $OUT/device_check.md (tables), device_check.json, gpu.txt, pytest.log, the model runs' logs.
# Without a GPU it runs too ("model" is then the CPU): SIZE=128 PY=.venv/bin/python benchmarks/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    set -e
    mkdir -p .device/whl .device/data/resect-case24
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .device/whl "SimpleITK>=2.3" "nibabel>=5.0"
    cp ../shared/data/resect-case24/{us,t1,flair}.nii.gz ../shared/data/resect-case24/*_landmarks_vox.csv \
        .device/data/resect-case24/
    du -sh .device
    echo "prepared: carry .device (the device tool takes at most 64 MiB with the working tree)"
    exit 0
fi

PY=${PY:-python3}   # the GPU machine's python3 holds torch; here: PY=.venv/bin/python
OUT=${OUT:-/tmp/device_check_out}
mkdir -p "$OUT"
if [ -d .device/whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .device/whl/*.whl || { echo "wheel install failed"; exit 3; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d .device/data/resect-case24 ] && export REMIND_SHARED_DATA="$PWD/.device/data"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'threads', torch.get_num_threads())"
} 2>&1 | tee "$OUT/gpu.txt"
timeout 180 $PY -m pytest -q -p no:cacheprovider test/test_model.py -k "cuda or deterministic" 2>&1 \
    | tee "$OUT/pytest.log"
$PY -m benchmarks.device_check --out "$OUT" --size "${SIZE:-256}"
