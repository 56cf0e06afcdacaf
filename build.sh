#!/usr/bin/env bash
# Build the challenge images from ONE Dockerfile (build context = repository root):
#   remind2reg-cet1 (REMIND2REG_SEQUENCES=ceT1), remind2reg-t2 (T2); with ALL=1 also remind2reg (all).
# Usage: ./build.sh [TAG_PREFIX]   (default remind2reg); prints the build time and image sizes.
set -euo pipefail
cd "$(dirname "$0")"
PREFIX="${1:-remind2reg}"
builds=("ceT1:${PREFIX}-cet1" "T2:${PREFIX}-t2")
[ "${ALL:-0}" = 1 ] && builds+=("all:${PREFIX}")
for item in "${builds[@]}"; do
  seq="${item%%:*}" image="${item#*:}"
  start=$(date +%s)
  docker build --platform=linux/amd64 --build-arg SEQUENCES="$seq" -t "$image" . >&2
  # some engines (Podman/buildah) reuse a cached ENV layer built with another --build-arg value: verify
  baked=$(docker run --rm --network none --entrypoint printenv "$image" REMIND2REG_SEQUENCES)
  if [ "$baked" != "$seq" ]; then
    echo "$image: cached layer baked REMIND2REG_SEQUENCES=$baked, rebuilding without cache" >&2
    docker build --no-cache --platform=linux/amd64 --build-arg SEQUENCES="$seq" -t "$image" . >&2
    baked=$(docker run --rm --network none --entrypoint printenv "$image" REMIND2REG_SEQUENCES)
    [ "$baked" = "$seq" ] || { echo "FAIL: $image has REMIND2REG_SEQUENCES=$baked, expected $seq" >&2; exit 1; }
  fi
  size=$(docker image inspect "$image" --format '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')
  echo "built $image (SEQUENCES=$seq) in $(( $(date +%s) - start )) s, size $size"
done
