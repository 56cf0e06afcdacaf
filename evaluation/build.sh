#!/usr/bin/env bash
# Build the evaluation image; the build context is the repository root (the image needs interfaces/).
# Tagged IMAGE and IMAGE:VERSION (interfaces/version.py), with the OCI labels (version, git revision, source).
set -euo pipefail
IMAGE="${1:-remind2reg-eval}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/interfaces/version.py")"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
[ "$REVISION" = unknown ] || git -C "$ROOT" diff --quiet HEAD 2>/dev/null || REVISION="$REVISION-dirty"
SOURCE="${SOURCE_URL:-$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)}"
docker build -f "$ROOT/evaluation/Dockerfile" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
  --build-arg SOURCE="$SOURCE" -t "$IMAGE" -t "$IMAGE:$VERSION" "$ROOT"
