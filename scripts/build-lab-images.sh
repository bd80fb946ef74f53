#!/usr/bin/env bash
# Build the lab/Molecule host image acefleet/lab-host:bookworm FROM acefleet/base:bookworm
# (built by scripts/build-images.sh). Cached by input hash: the image carries a label with the
# hash of its Dockerfile and of its base image id, and is rebuilt only when one of them changes.
#   ACEFLEET_LAB_BASE=image:tag   build from another bookworm base (default acefleet/base:bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need docker docker.io

BASE=${ACEFLEET_LAB_BASE:-acefleet/base:bookworm}
IMAGE=acefleet/lab-host:bookworm

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  if [[ $BASE == acefleet/base:bookworm && -x scripts/build-images.sh ]]; then
    scripts/build-images.sh
  fi
  docker image inspect "$BASE" >/dev/null 2>&1 \
    || die "base image $BASE is missing: run scripts/build-images.sh (or set ACEFLEET_LAB_BASE)"
fi

base_id=$(docker image inspect -f '{{.Id}}' "$BASE")
hash=$( { cat images/lab-host/Dockerfile; echo "$base_id"; } | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{ index .Config.Labels "acefleet.input-hash" }}' "$IMAGE" 2>/dev/null || true)
if [[ $have == "$hash" ]]; then
  exit 0
fi
step "building $IMAGE from $BASE (input hash $hash)"
docker build -q --build-arg "BASE=$BASE" --label "acefleet.input-hash=$hash" \
  --label acefleet.role=lab-host -t "$IMAGE" images/lab-host >/dev/null
