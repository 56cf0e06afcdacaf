#!/usr/bin/env bash
# Save the evaluation image for upload: docker save | gzip -> remind2reg-eval.tar.gz (in the current folder).
set -euo pipefail
IMAGE="${1:-remind2reg-eval}"
OUT="${2:-remind2reg-eval.tar.gz}"
"$(dirname "$0")/build.sh" "$IMAGE"
docker save "$IMAGE" | gzip -c > "$OUT"
ls -lh "$OUT"
