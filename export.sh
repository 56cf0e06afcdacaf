#!/usr/bin/env bash
# Export the images for upload: `docker save | gzip` per image (Grand Challenge and the organisers take this),
# plus model.tar.gz of resources/ when it holds weight files (the platform extracts it to /opt/ml/model/,
# where its config.json overrides the baked resources/config.json).
# Each archive holds both tags, IMAGE and IMAGE:VERSION (VERSION from interfaces/version.py).
# Usage: ./export.sh [OUT_DIR] [IMAGE ...]   (default: export/ and remind2reg-cet1 remind2reg-t2)
set -euo pipefail
cd "$(dirname "$0")"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' interfaces/version.py)"
OUT="${1:-export}"; shift || true
IMAGES=("$@"); [ ${#IMAGES[@]} -gt 0 ] || IMAGES=(remind2reg-cet1 remind2reg-t2)
mkdir -p "$OUT"
for image in "${IMAGES[@]}"; do
  start=$(date +%s)
  docker image inspect "$image:$VERSION" >/dev/null 2>&1 \
    || { echo "no image $image:$VERSION: run ./build.sh first (the version is $VERSION)" >&2; exit 1; }
  docker save "$image" "$image:$VERSION" | gzip -1 > "$OUT/$image.tar.gz.partial"
  mv "$OUT/$image.tar.gz.partial" "$OUT/$image.tar.gz"
  echo "$OUT/$image.tar.gz ($image, $image:$VERSION): $(du -h "$OUT/$image.tar.gz" | cut -f1) in $(( $(date +%s) - start )) s"
done
weights=$(find resources -type f ! -name '*.json' ! -name '*.md' | head -1)
if [ -n "$weights" ]; then
  tar -czf "$OUT/model.tar.gz" -C resources .
  echo "$OUT/model.tar.gz: $(du -h "$OUT/model.tar.gz" | cut -f1) (resources/ with weights)"
else
  echo "no weight files in resources/ (training-free model): no model.tar.gz needed"
fi
