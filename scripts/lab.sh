#!/usr/bin/env bash
# The local lab: a real multi-host acefleet fleet as systemd containers on one Docker network
# (lb1, lb2, control1, edge1, edge2), rolled out by the real site.yml.
#   scripts/lab.sh up        set everything up (bootstrap, images), run site.yml, show a stream
#                            (TS, then ~10 s over HLS)
#   scripts/lab.sh down      remove the lab: containers, their engines, the network
#   scripts/lab.sh status    what runs
#   scripts/lab.sh play ARGS run ansible-playbook against the lab (e.g. playbooks/rolling_update.yml)
#   scripts/lab.sh alerts    kill an engine of edge1, wait for Prometheus (control1) to raise its alert
#   scripts/lab.sh hls [S]   ffmpeg plays S seconds (default 60) of a channel over HLS through the VIP,
#                            next to a TS viewer of it: errors, DTS, playlists (m3u8), engine sessions
# Environment: ACEFLEET_LAB_SUBNET (default 172.30.77.0/24; the VIP is .250 of it),
#              ACEFLEET_LAB_SKIP_BOOTSTRAP=1 to skip scripts/bootstrap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PREFIX=acefleet-lab
NETWORK=acefleet-lab
SUBNET=${ACEFLEET_LAB_SUBNET:-172.30.77.0/24}
VIP=${SUBNET%.*/*}.250
HOSTS=(lb1 lb2 control1 edge1 edge2)
IMAGE=acefleet/lab-host:bookworm
CHANNEL=verify-stream
# The fleet checks run with the checkout's python: the HLS check parses playlists with m3u8 (dev extra).
PY=$PWD/.venv/bin/python
export ACEFLEET_LAB_VIP=$VIP ANSIBLE_CONFIG=$PWD/ansible.cfg

caps_for() {  # the capabilities each kind of host needs (--privileged fails on these machines)
  case $1 in
    lb*) echo "--cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add NET_RAW --cap-add NET_BROADCAST" ;;
    *) echo "--cap-add SYS_ADMIN" ;;
  esac
}

create_network() {
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then return; fi
  step "creating the lab network $NETWORK ($SUBNET)"
  docker network create --subnet "$SUBNET" --label acefleet.lab=1 "$NETWORK" >/dev/null
}

create_host() {
  local host=$1 name=$PREFIX-$1 extra=()
  if [[ $(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null) == true ]]; then return; fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  # Edges drive the machine's dockerd (sibling engine containers in the edge's namespace).
  [[ $host == edge* ]] && extra+=(-v /var/run/docker.sock:/var/run/docker.sock)
  # shellcheck disable=SC2046
  docker run -d --name "$name" --hostname "$host" --network "$NETWORK" --network-alias "$host" \
    --label acefleet.lab=1 --label acefleet.lab.host="$host" \
    -v /sys/fs/cgroup:/sys/fs/cgroup:ro --tmpfs /run --tmpfs /run/lock \
    $(caps_for "$host") "${extra[@]}" "$IMAGE" >/dev/null
}

wait_systemd() {  # until systemd in every host finished booting (bounded)
  local host state
  for host in "${HOSTS[@]}"; do
    for _ in $(seq 60); do
      state=$(docker exec "$PREFIX-$host" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && continue 2
      sleep 0.5
    done
    die "systemd in $PREFIX-$host did not finish booting (state: $state)"
  done
}

remove_engines() {  # sibling engine containers the lab's agents created, by label
  local host ids
  for host in edge1 edge2; do
    ids=$(docker ps -aq --filter "label=acefleet.host=$PREFIX-$host")
    [[ -n $ids ]] && docker rm -f $ids >/dev/null
  done
  return 0
}

vip_routes_here() {  # traffic goes to the VIP only when it is one of this machine's bridges
  local route
  route=$(ip route get "$VIP" 2>/dev/null || true)
  if [[ $route != *" dev br-"* ]]; then
    echo "not streaming: $VIP does not route to a local bridge ($route)"; return 1
  fi
}

show_stream() {  # a few seconds of one channel through the VIP as MPEG-TS, then ~10 s over HLS
  vip_routes_here || return 1
  step "streaming a channel through the VIP (a new channel takes seconds to its first byte)"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks stream
  step "the same over HLS: ffmpeg plays 10 s next to a TS viewer (scripts/lab.sh hls for longer)"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks hls --hls-seconds 10
}

hls() {  # hls [SECONDS]: the fleet's hls check, ffmpeg playing SECONDS (default 60)
  local seconds=${1:-60}
  [[ $seconds =~ ^[0-9]+$ ]] || die "hls: SECONDS must be a whole number, not '$seconds'"
  vip_routes_here || return 1
  step "ffmpeg plays $seconds s over HLS through the VIP: http://$VIP/ace/manifest.m3u8?id=verify-hls"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks hls --hls-seconds "$seconds"
}

up() {
  local t0=$SECONDS
  if [[ -z ${ACEFLEET_LAB_SKIP_BOOTSTRAP:-} ]]; then scripts/bootstrap.sh; fi
  export PATH="$PWD/.venv/bin:$PATH"
  scripts/install-collections.sh
  scripts/build-lab-images.sh
  create_network
  step "starting the lab hosts: ${HOSTS[*]}"
  for host in "${HOSTS[@]}"; do create_host "$host"; done
  wait_systemd
  step "running site.yml against the lab"
  ansible-playbook -i inventories/lab/hosts.yml site.yml
  echo
  step "the lab is up in $((SECONDS - t0)) s"
  echo "    stream:    http://$VIP/ace/getstream?id=$CHANNEL"
  echo "    HLS:       http://$VIP/ace/manifest.m3u8?id=$CHANNEL  (VLC, ffplay, Safari; docs/lab.md)"
  echo "    dashboard: http://$VIP:8000/  (acefleet-central on control1, through the VIP)"
  echo "    tear down: scripts/lab.sh down"
  show_stream
}

down() {
  step "removing the lab"
  local host
  for host in edge1 edge2; do docker rm -f "$PREFIX-$host" >/dev/null 2>&1 || true; done
  remove_engines
  for host in "${HOSTS[@]}"; do docker rm -f "$PREFIX-$host" >/dev/null 2>&1 || true; done
  docker network rm "$NETWORK" >/dev/null 2>&1 || true
}

status() {
  docker ps -a --filter label=acefleet.lab=1 --format '{{.Names}}\t{{.Status}}'
  local host
  for host in edge1 edge2; do
    docker ps -a --filter "label=acefleet.host=$PREFIX-$host" --format '{{.Names}}\t{{.Status}}\t(engine)'
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  play) shift; export PATH="$PWD/.venv/bin:$PATH"; ansible-playbook -i inventories/lab/hosts.yml "$@" ;;
  alerts) python3 molecule/default/verify_alerts.py --prefix "$PREFIX-" ;;
  hls) hls "${2:-60}" ;;
  *) echo "usage: $0 up|down|status|play PLAYBOOK [ARGS]|alerts|hls [SECONDS]" >&2; exit 2 ;;
esac
