#!/usr/bin/env bash
# The local lab: a real multi-host acefleet fleet as systemd containers on one Docker network
# (lb1, lb2, control1, control2, db1, edge1, edge2), rolled out by the real site.yml.
#   scripts/lab.sh up        set everything up (bootstrap, images), run site.yml with the demo
#                            catalog and guide, show a stream (TS, then ~10 s over HLS), VLC
#                            playing the playlist, and TLS on the VIP (openssl verifies the chain
#                            against the lab CA, a channel read over HTTPS)
#   scripts/lab.sh down      remove the lab: containers, their engines and VPN tunnels, the network
#   scripts/lab.sh status    what runs
#   scripts/lab.sh tunnels   central lists each edge's VPN tunnels (two stand-ins) healthy, with
#                            their forwarded ports, and the engines sit in them (up shows it too)
#   scripts/lab.sh tunnel-rotation  an operator rotates (through central's API on the VIP) the
#                            VPN tunnel under a watched channel: the channel moves, players kept
#   scripts/lab.sh play ARGS run ansible-playbook against the lab (e.g. playbooks/rolling_update.yml)
#   scripts/lab.sh alerts    kill an engine of edge1, wait for Prometheus (control1) to raise its alert
#   scripts/lab.sh tls       the TLS proof of up again (open mode: a channel over HTTPS)
#   scripts/lab.sh hls [S]   ffmpeg plays S seconds (default 60) of a channel over HLS through the VIP,
#                            next to a TS viewer of it: errors, DTS, playlists (m3u8), engine sessions
#   scripts/lab.sh reload-proxy EDGE   hitless reload of EDGE's proxy (systemctl reload): its new
#                            process, the viewers it kept
#   scripts/lab.sh zero-drop players through the VIP while rolling_update.yml runs (new wheel, a
#                            changed proxy setting) and a watched channel's engine is killed
#   scripts/lab.sh control-failover  players through the VIP while the active control host is
#                            killed (docker kill): the control VIP moves, the API answers, new
#                            channels start; the host comes back as the standby
# Environment: ACEFLEET_LAB_SUBNET (default 172.30.77.0/24; the VIP is .250 of it, the control
#              VIP .251),
#              ACEFLEET_LAB_SKIP_BOOTSTRAP=1 to skip scripts/bootstrap.sh,
#              ACEFLEET_LAB_TOKENS=1 (up) for token mode: per-player secret playlist URLs, stream
#              tokens checked by the proxies (lab keys in .lab/tokens.yml; up without it: open mode).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PREFIX=acefleet-lab
NETWORK=acefleet-lab
SUBNET=${ACEFLEET_LAB_SUBNET:-172.30.77.0/24}
VIP=${SUBNET%.*/*}.250
CONTROL_VIP=${SUBNET%.*/*}.251
HOSTS=(lb1 lb2 control1 control2 db1 edge1 edge2)
IMAGE=acefleet/lab-host:bookworm
CHANNEL=verify-stream
# The fleet checks run with the checkout's python: the HLS check parses playlists with m3u8 (dev extra).
PY=$PWD/.venv/bin/python
# The demo catalog and guide (scripts/demo-catalog.py) the lab's central gets
# (inventories/lab/group_vars/control/central.yml reads this variable).
export ACEFLEET_LAB_VIP=$VIP ACEFLEET_LAB_CONTROL_VIP=$CONTROL_VIP ANSIBLE_CONFIG=$PWD/ansible.cfg ACEFLEET_LAB_DEMO_DIR=$PWD/.lab/demo
# The edges' VPN tunnels attach to the lab network (inventories/lab/group_vars/edges/vpn.yml).
export ACEFLEET_LAB_NETWORK=$NETWORK
# Token mode's extra vars (acefleet_token_keys, acefleet_tokens_required): present only while
# the lab runs in token mode, and then passed to every lab playbook (up, play).
TOKENS_VARS=$PWD/.lab/tokens.yml
# The lab's operator key (its vault in clear): the token mode's demo player is made with it.
OPERATOR_KEY=$(sed -n 's/^vault_acefleet_operator_api_key: *//p' inventories/lab/group_vars/all/vault.yml)

caps_for() {  # the capabilities each kind of host needs (--privileged fails on these machines)
  case $1 in
    # keepalived (VRRP) on lb hosts for the VIP, on control hosts for the control VIP
    lb* | control*) echo "--cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add NET_RAW --cap-add NET_BROADCAST" ;;
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

remove_engines() {  # the sibling containers the lab's agents created, by label: engines and
                    # VPN tunnels (acefleet.host=<edge container> on both), after the agents are gone
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

playbook() {  # ansible-playbook against the lab, in token mode with its keys
  local extra=()
  [[ -f $TOKENS_VARS ]] && extra=(-e "@$TOKENS_VARS")
  ansible-playbook -i inventories/lab/hosts.yml "${extra[@]}" "$@"
}

token_mode() {  # ACEFLEET_LAB_TOKENS=1: lab-only keys (generated once, kept); else open mode
  if [[ ${ACEFLEET_LAB_TOKENS:-} != 1 ]]; then rm -f "$TOKENS_VARS"; return; fi
  local key
  if [[ -f $TOKENS_VARS ]]; then return; fi
  mkdir -p "$(dirname "$TOKENS_VARS")"
  key=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
  (
    umask 077  # only this file: the key is the lab's, but still a key
    printf '%s\n' "# Lab-only stream-token key, generated by scripts/lab.sh (ACEFLEET_LAB_TOKENS=1)." \
      "acefleet_token_keys: [\"lab1:$key\"]" "acefleet_tokens_required: true" >"$TOKENS_VARS"
  )
}

demo_player() {  # token mode: the lab's demo player (made once, its secret rotated) → its URLs
  "$PY" - "http://$VIP:8000" "$OPERATOR_KEY" <<'PYEOF'
import json, sys, urllib.request
base, key = sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)
found = [p for p in call("GET", "/v1/players")["items"] if p["name"] == "lab demo"]
made = (call("POST", f"/v1/players/{found[0]['id']}/secret") if found
        else call("POST", "/v1/players", {"name": "lab demo", "groups": [], "max_streams": 4}))
print(made["playlist_url"], made["guide_url"], made["hdhomerun_url"])
PYEOF
}

show_stream() {  # a stream through the VIP (TS, then ~10 s over HLS), then VLC plays the playlist
  local playlist_path=${1:-/playlist.m3u} code
  vip_routes_here || return 1
  if [[ -f $TOKENS_VARS ]]; then
    step "token mode: a stream URL without a token is refused by the edge (401 token_required)"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "http://$VIP/ace/getstream?id=$CHANNEL")
    [[ $code == 401 ]] || die "http://$VIP/ace/getstream?id=$CHANNEL answered $code, not 401"
    echo "    http://$VIP/ace/getstream?id=$CHANNEL → HTTP $code"
  else
    step "streaming a channel through the VIP (a new channel takes seconds to its first byte)"
    "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
      --agent-key unused --checks stream
    step "the same over HLS: ffmpeg plays 10 s next to a TS viewer (scripts/lab.sh hls for longer)"
    "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
      --agent-key unused --checks hls --hls-seconds 10
  fi
  step "VLC plays the playlist through the VIP ($playlist_path): guide, HDHomeRun files, 8 s recorded"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks playlist --playlist-path "$playlist_path"
}

show_tls() {  # the VIP over TLS: openssl verifies the chain, a player reads a channel over HTTPS
  local ca=$PWD/.lab/ca/ca.crt out code hsts
  vip_routes_here || return 1
  [[ -f $ca ]] || die "no lab CA at $ca (the pki play makes it)"
  step "TLS on the VIP: openssl s_client -verify_return_error against the lab CA (.lab/ca/ca.crt)"
  out=$(openssl s_client -connect "$VIP:443" -CAfile "$ca" -verify_return_error -verify_ip "$VIP" \
    -brief </dev/null 2>&1) || die "the VIP's chain does not verify against $ca:"$'\n'"$out"
  grep -E 'Protocol version|Verification' <<<"$out" | sed 's/^/    /'
  if [[ -f $TOKENS_VARS ]]; then
    step "token mode: the demo player's playlist over HTTPS through the VIP"
    code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$ca" --max-time 30 "https://$VIP${1:-/playlist.m3u}")
    [[ $code == 200 ]] || die "https://$VIP${1:-/playlist.m3u} answered $code"
    echo "    https://$VIP${1:-/playlist.m3u} → HTTP $code"
  else
    step "a player reads a channel over HTTPS through the VIP: https://$VIP/ace/getstream?id=$CHANNEL"
    out=$(mktemp)
    # a live stream never ends: read 1 MB of it, then hang up
    curl -sS --cacert "$ca" --max-time 90 "https://$VIP/ace/getstream?id=$CHANNEL" 2>/dev/null \
      | head -c 1000000 >"$out" || true
    "$PY" - "$out" <<'PYEOF' || { rm -f "$out"; die "no MPEG-TS over HTTPS through the VIP"; }
import sys
data = open(sys.argv[1], "rb").read()
packets = len(data) // 188
ok = packets > 1000 and all(data[i * 188] == 0x47 for i in range(packets))
print(f"    {len(data)} bytes, {packets} TS packets, sync bytes {'all right' if ok else 'WRONG'}")
sys.exit(0 if ok else 1)
PYEOF
    rm -f "$out"
  fi
  hsts=$(curl -sS -D - -o /dev/null --cacert "$ca" --max-time 30 "https://$VIP:8443/readyz" \
    | tr -d '\r' | sed -n 's/^strict-transport-security: //Ip')
  [[ -n $hsts ]] || die "the operator TLS port https://$VIP:8443 sends no Strict-Transport-Security"
  echo "    operators: https://$VIP:8443/ (Strict-Transport-Security: $hsts)"
}

hls() {  # hls [SECONDS]: the fleet's hls check, ffmpeg playing SECONDS (default 60)
  local seconds=${1:-60}
  [[ $seconds =~ ^[0-9]+$ ]] || die "hls: SECONDS must be a whole number, not '$seconds'"
  vip_routes_here || return 1
  step "ffmpeg plays $seconds s over HLS through the VIP: http://$VIP/ace/manifest.m3u8?id=verify-hls"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks hls --hls-seconds "$seconds"
}

reload_proxy() {  # reload_proxy EDGE: systemctl reload acefleet-proxy, with what it kept
  local edge=${1:-} name before after status
  [[ $edge == edge1 || $edge == edge2 ]] || die "reload-proxy: EDGE is edge1 or edge2, not '$edge'"
  name=$PREFIX-$edge
  status='curl -s --max-time 5 http://127.0.0.1:6880/ace/status | python3 -c "import json,sys; s=json.load(sys.stdin); print(s[\"viewers\"], \"viewers on\", s[\"upstreams\"], \"channels\")"'
  before=$(docker exec "$name" systemctl show -p MainPID --value acefleet-proxy)
  echo "    before: pid $before, $(docker exec "$name" sh -c "$status")"
  step "systemctl reload acefleet-proxy on $edge (a new process takes over every connection)"
  docker exec "$name" systemctl reload acefleet-proxy || die "the reload failed: the old process keeps serving (journalctl -u acefleet-proxy on $name)"
  after=$(docker exec "$name" systemctl show -p MainPID --value acefleet-proxy)
  echo "    after:  pid $after, $(docker exec "$name" sh -c "$status")"
}

control_failover() {  # the fleet's control_failover check against the lab
  vip_routes_here || return 1
  step "players through the VIP while the active control host is killed (the control VIP $CONTROL_VIP moves)"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks control_failover
}

zero_drop() {  # the fleet's zero_drop check against the lab (open mode: the playbook runs bare)
  [[ -f $TOKENS_VARS ]] && die "zero-drop runs the rolling update without the token mode's vars: run it in open mode"
  vip_routes_here || return 1
  step "players through the VIP while rolling_update.yml runs and a watched channel's engine is killed"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks zero_drop --inventory inventories/lab/hosts.yml
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
  step "the demo catalog and guide for central"
  "$PY" scripts/demo-catalog.py "$ACEFLEET_LAB_DEMO_DIR"
  token_mode
  step "running site.yml against the lab ($([[ -f $TOKENS_VARS ]] && echo token || echo open) mode)"
  playbook site.yml
  echo
  step "the lab is up in $((SECONDS - t0)) s"
  if [[ -f $TOKENS_VARS ]]; then
    echo "    stream:    from the player's playlist below (token mode: bare stream URLs answer 401)"
  else
    echo "    stream:    http://$VIP/ace/getstream?id=$CHANNEL"
    echo "    HLS:       http://$VIP/ace/manifest.m3u8?id=$CHANNEL  (VLC, ffplay, Safari; docs/lab.md)"
  fi
  echo "    dashboard: http://$VIP:8000/  (the active acefleet-central, through the VIP)"
  echo "    central:   https://$CONTROL_VIP:8000/  (the control VIP: control1 or control2; db1 holds its database)"
  local playlist_path=/playlist.m3u urls playlist guide hdhomerun
  if [[ -f $TOKENS_VARS ]]; then
    urls=$(demo_player) || die "could not make the demo player through http://$VIP:8000/v1/players"
    read -r playlist guide hdhomerun <<<"$urls"
    playlist_path=/${playlist#http://*/}
    echo "    token mode: the demo player's secret URLs (streams carry tokens; /playlist.m3u is 401)"
  else
    playlist=http://$VIP/playlist.m3u guide=http://$VIP/epg.xml hdhomerun=http://$VIP
  fi
  echo "    TLS:       https://$VIP/ (players), https://$VIP:8443/ (operators); CA .lab/ca/ca.crt"

  echo "    playlist:  $playlist  (VLC, Kodi IPTV Simple, TiviMate; ?format=hls for HLS)"
  echo "    guide:     $guide  (XMLTV)"
  echo "    HDHomeRun: $hdhomerun  (Plex, Jellyfin, Emby: add it as a tuner)"
  echo "    tear down: scripts/lab.sh down"
  tunnels
  show_stream "$playlist_path"
  show_tls "$playlist_path"
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
    docker ps -a --filter "label=acefleet.host=$PREFIX-$host" \
      --format '{{.Names}}\t{{.Status}}\t{{if .Label "acefleet.vpn-tunnel"}}(VPN tunnel {{.Label "acefleet.vpn-tunnel"}}){{else}}(engine{{if .Label "acefleet.tunnel"}} in tunnel {{.Label "acefleet.tunnel"}}{{end}}){{end}}'
  done
}

tunnels() {  # the fleet's tunnels check: central lists each edge's tunnels healthy, ports forwarded
  vip_routes_here || return 1
  step "the edges' VPN tunnels, as central lists them (GET /v1/hosts through the VIP)"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks tunnels
}

tunnel_rotation() {  # rotate the tunnel under a watched channel through central, players kept
  vip_routes_here || return 1
  step "rotate the VPN tunnel under a watched channel (POST /v1/hosts/EDGE/tunnels/NAME/rotate)"
  "$PY" molecule/default/verify_fleet.py --vip "$VIP" --prefix "$PREFIX-" \
    --agent-key unused --checks tunnel_rotation
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  play) shift; export PATH="$PWD/.venv/bin:$PATH"; playbook "$@" ;;
  alerts) python3 molecule/default/verify_alerts.py --prefix "$PREFIX-" ;;
  hls) hls "${2:-60}" ;;
  tls) show_tls ;;
  reload-proxy) reload_proxy "${2:-}" ;;
  zero-drop) export PATH="$PWD/.venv/bin:$PATH"; zero_drop ;;
  control-failover) control_failover ;;
  tunnels) tunnels ;;
  tunnel-rotation) tunnel_rotation ;;
  *) echo "usage: $0 up|down|status|play PLAYBOOK [ARGS]|alerts|hls [SECONDS]|tls|reload-proxy EDGE|zero-drop|control-failover|tunnels|tunnel-rotation" >&2; exit 2 ;;
esac
