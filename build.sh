#!/usr/bin/env bash
# Build the challenge images from ONE Dockerfile (build context = repository root):
#   remind2reg-cet1 (REMIND2REG_SEQUENCES=ceT1), remind2reg-t2 (T2); with ALL=1 also remind2reg (all).
# Every image is tagged NAME and NAME:VERSION (VERSION from interfaces/version.py, the one version source) and
# carries the OCI labels org.opencontainers.image.version/revision/source (git commit, origin URL).
# Usage: ./build.sh [TAG_PREFIX]   (default remind2reg); prints the build time and image sizes.
set -euo pipefail
cd "$(dirname "$0")"
PREFIX="${1:-remind2reg}"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' interfaces/version.py)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
[ "$REVISION" = unknown ] || git diff --quiet HEAD 2>/dev/null || REVISION="$REVISION-dirty"
SOURCE="${SOURCE_URL:-$(git remote get-url origin 2>/dev/null || true)}"
BUILD_ARGS=(--build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" --build-arg SOURCE="$SOURCE")
builds=("ceT1:${PREFIX}-cet1" "T2:${PREFIX}-t2")
[ "${ALL:-0}" = 1 ] && builds+=("all:${PREFIX}")
for item in "${builds[@]}"; do
  seq="${item%%:*}" image="${item#*:}"
  start=$(date +%s)
  tags=(-t "$image" -t "$image:$VERSION")
  docker build --platform=linux/amd64 "${BUILD_ARGS[@]}" --build-arg SEQUENCES="$seq" "${tags[@]}" . >&2
  # some engines (Podman/buildah) reuse a cached ENV/LABEL layer built with another --build-arg value: verify
  baked() { echo "$(docker run --rm --network none --entrypoint printenv "$image" REMIND2REG_SEQUENCES)" \
    "$(docker image inspect "$image" --format '{{index .Config.Labels "org.opencontainers.image.revision"}}')"; }
  if [ "$(baked)" != "$seq $REVISION" ]; then
    echo "$image: cached layers baked '$(baked)', expected '$seq $REVISION': rebuilding without cache" >&2
    docker build --no-cache --platform=linux/amd64 "${BUILD_ARGS[@]}" --build-arg SEQUENCES="$seq" "${tags[@]}" . >&2
    [ "$(baked)" = "$seq $REVISION" ] || { echo "FAIL: $image baked '$(baked)', expected '$seq $REVISION'" >&2; exit 1; }
  fi
  size=$(docker image inspect "$image" --format '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')
  echo "built $image and $image:$VERSION (SEQUENCES=$seq, revision $REVISION) in $(( $(date +%s) - start )) s, size $size"
done
