#!/usr/bin/env bash
# Build the evaluation image; the build context is the repository root (the image needs interfaces/).
set -euo pipefail
IMAGE="${1:-remind2reg-eval}"
docker build -f "$(dirname "$0")/Dockerfile" -t "$IMAGE" "$(dirname "$0")/.."
