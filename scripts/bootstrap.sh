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
  [haproxy]=haproxy  # tests/agent and tests/ansible run the binary on their own configs
  [prometheus]=promtool  # tests/monitoring: promtool checks and unit-tests the alert rules
  [nodejs]=node [npm]=npm  # scripts/vendor-web.sh: hls.js for the dashboard, from the npm registry
  [libxmltv-perl]=""  # its xmltv.dtd: tests validate the guide central and the proxies serve
  [vlc-bin]=cvlc [vlc-plugin-base]=""  # VLC plays the fleet's M3U playlist in tests and the lab
  [postgresql]=""  # tests/support/postgres.py runs throwaway clusters with its initdb/postgres
  [keepalived]=keepalived  # tests/ansible checks the control VIP's rendered config with it
)
missing=()
for pkg in "${!NEED[@]}"; do
  cmd=${NEED[$pkg]}
  if [[ -n $cmd ]]; then have "$cmd" || missing+=("$pkg")
  else dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); fi
done
if ((${#missing[@]})); then
  step "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Debian's haproxy and prometheus packages enable and (with systemd or sysvinit, unless
# policy-rc.d forbids it) start a system service; only their binaries are wanted here (the tests
# start haproxy on free ports with their own configs, and run promtool). A service the tests
# neither need nor control must not run (prometheus would bind :9090, a node exporter left from
# before :9100): stop and disable what this run installed.
quiet_service() {
  local svc=$1
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$svc ]]; then
    if as_root "/etc/init.d/$svc" status >/dev/null 2>&1; then
      step "stopping the system $svc service (the tests run their own)"
      as_root "/etc/init.d/$svc" stop >/dev/null
    fi
    as_root update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
}
if [[ " ${missing[*]} " == *" haproxy "* ]]; then quiet_service haproxy; fi
if [[ " ${missing[*]} " == *" keepalived "* ]]; then quiet_service keepalived; fi
# Debian's postgresql creates and starts a "main" cluster on :5432; the tests start their own.
if [[ " ${missing[*]} " == *" postgresql "* ]]; then quiet_service postgresql; fi
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  quiet_service prometheus
  quiet_service prometheus-node-exporter
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
# Before the images: the wheelhouse built there must carry the vendored hls.js.
scripts/vendor-web.sh
scripts/build-images.sh
