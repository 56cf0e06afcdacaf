#!/usr/bin/env bash
# Save the evaluation image for upload: docker save | gzip -> remind2reg-eval.tar.gz (in the current folder),
# holding both tags IMAGE and IMAGE:VERSION (interfaces/version.py).
set -euo pipefail
IMAGE="${1:-remind2reg-eval}"
OUT="${2:-remind2reg-eval.tar.gz}"
"$(dirname "$0")/build.sh" "$IMAGE"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$(dirname "$0")/../interfaces/version.py")"
docker save "$IMAGE" "$IMAGE:$VERSION" | gzip -c > "$OUT"   # both tags in one archive
ls -lh "$OUT"
