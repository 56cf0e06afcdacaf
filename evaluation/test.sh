#!/usr/bin/env bash
# Build the image, make a small synthetic case (2 patients x ceT1/T2, 32^3, one deliberately broken field),
# run the container exactly as the platform does (no network, read-only inputs) in both layouts, check
# metrics.json and that the last stderr line names the broken pair; then once more with --missing identity.
# Needs the project's Python (numpy, SimpleITK, nibabel) on the host to make the case.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
IMAGE="${IMAGE:-remind2reg-eval}"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3 )}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

start=$(date +%s)
"$HERE/build.sh" "$IMAGE"
echo "build: $(( $(date +%s) - start )) s; image size: $(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

cd "$ROOT"
"$PYTHON" -m evaluation.tests.make_test_case "$WORK"
chmod -R a+rX "$WORK"
for layout in organisers gc; do
  mkdir -p "$WORK/out-$layout" && chmod 777 "$WORK/out-$layout"
  start=$(date +%s.%N)
  set +e
  docker run --rm --network none \
    -v "$WORK/in-$layout":/input:ro \
    -v "$WORK/gt":/opt/ml/input/data/ground_truth:ro \
    -v "$WORK/out-$layout":/output \
    "$IMAGE" 2>"$WORK/stderr-$layout"
  code=$?
  set -e
  cat "$WORK/stderr-$layout" >&2
  echo "$layout layout: exit $code (1 expected: one broken field), run $(echo "$(date +%s.%N) - $start" | bc) s"
  [ "$code" = 1 ] || { echo "FAIL: expected exit status 1"; exit 1; }
  "$PYTHON" -m evaluation.tests.make_test_case --check "$WORK/out-$layout/metrics.json" "$WORK/expected.json" \
    "$WORK/stderr-$layout"
done
# the same broken field under --missing identity (arguments after the image reach the evaluation): exit 0
mkdir -p "$WORK/out-identity" && chmod 777 "$WORK/out-identity"
docker run --rm --network none \
  -v "$WORK/in-organisers":/input:ro \
  -v "$WORK/gt":/opt/ml/input/data/ground_truth:ro \
  -v "$WORK/out-identity":/output \
  "$IMAGE" --missing identity || { echo "FAIL: --missing identity should exit 0"; exit 1; }
"$PYTHON" -m evaluation.tests.make_test_case --check-identity "$WORK/out-identity/metrics.json" "$WORK/expected.json"
echo "evaluation/test.sh: PASS"
