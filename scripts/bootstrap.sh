#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for acefleet: system packages, a running dockerd, the
# project virtualenv, Ansible collections (without Galaxy) and the offline images.
# Idempotent: every step checks first and says what it does; a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# Debian package -> the command that proves it is there.
declare -A NEED=(
  [docker.io]=dockerd [mmdebstrap]=mmdebstrap [ffmpeg]=ffprobe [chromium]=chromium
  [python3-venv]="" [debian-archive-keyring]="" [git]=git [iproute2]=ip [curl]=curl [make]=make
  [fonts-dejavu-core]=""  # scripts/make-clips.sh burns channel and clock text in with DejaVu
)
missing=()
for pkg in "${!NEED[@]}"; do
  cmd=${NEED[$pkg]}
  if [[ -n $cmd ]]; then command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  else dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); fi
done
if ((${#missing[@]})); then
  step "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

scripts/ensure-docker.sh

if [[ ! -x .venv/bin/python ]] || [[ pyproject.toml -nt .venv/.installed ]]; then
  step "creating the virtualenv .venv and installing acefleet with its dev extra"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi

if [[ -x scripts/install-collections.sh ]]; then scripts/install-collections.sh; fi
scripts/build-images.sh
