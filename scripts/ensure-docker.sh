#!/usr/bin/env bash
# Make sure a Docker daemon answers. On machines without systemd as PID 1 (CI, containers) start
# dockerd in the background and wait for its socket.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need docker docker.io
need dockerd docker.io
if docker info >/dev/null 2>&1; then exit 0; fi
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
  step "starting docker with systemctl"
  as_root systemctl start docker
else
  step "starting dockerd in the background (log: /var/log/acefleet-dockerd.log)"
  as_root sh -c 'nohup dockerd >/var/log/acefleet-dockerd.log 2>&1 &'
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
die "dockerd did not answer within 30 s; see /var/log/acefleet-dockerd.log"
