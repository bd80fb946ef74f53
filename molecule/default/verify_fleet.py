#!/usr/bin/env python3
"""Fleet-level checks of the lab topology, from the machine (run by Molecule's verify.yml).

Each check prints one line with what it measured; the script exits 1 when any check fails.
Traffic goes only to the VIP (after checking it routes to a local bridge) and, through
``docker exec``, to the hosts' own loopback.

    verify_fleet.py --vip 172.30.78.250 --prefix acefleet-m- --agent-key KEY [--checks a,b]

The operator API (control_failover) is asked with --operator-key, by default the lab's
(inventories/lab/group_vars/all/vault.yml: the lab and Molecule share those group_vars).

The HLS checks play with ffmpeg and read playlists with the ``m3u8`` package, the playlist
checks read the M3U with ``ipytv`` (both the project's dev extra) and the guide with ``lxml``, and
play with VLC (``cvlc``): run them with the checkout's .venv python (Molecule's verify.yml uses the
python that runs Ansible, scripts/lab.sh uses .venv/bin/python).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The players are the test suite's viewer (standard library only), from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.viewers import PACKET_SIZE, Viewer, ViewerThread

ALL_CHECKS = (
    "tunnels", "stream", "sharing", "zero_drop", "hls", "playlist", "playlist_central_down",
    "edges", "drain", "reload", "hls_failover", "control_failover", "failover",
)  # fmt: skip
# tunnels: how long the edges' VPN tunnels may take to be healthy with their engines in them
# (a stand-in connects in a second; the engines start once their tunnel is healthy).
TUNNELS_WAIT_S = 90.0
# tunnel_rotation: a new generation connects, the old one's engines drain (the proxies move
# their channels after a standby's prebuffer), the old container goes once empty.
TUNNEL_ROTATION_WAIT_S = 240.0
# Seconds VLC plays the playlist's first channel (recorded, then decoded by ffprobe: >= 3 s).
VLC_SECONDS = 8
# Debian's XMLTV DTD (libxmltv-perl, scripts/bootstrap.sh installs it).
XMLTV_DTD = Path("/usr/share/sgml/xmltv/dtd/0.5/xmltv.dtd")
HDHOMERUN_FIELDS = {
    "FriendlyName", "Manufacturer", "ModelNumber", "FirmwareName", "FirmwareVersion",
    "DeviceID", "DeviceAuth", "BaseURL", "LineupURL", "TunerCount",
}  # fmt: skip
# Media seconds ffmpeg plays across the engine kill: it starts with the ~3 segments a live
# playlist lists (~12 s), plays ~8 s before the kill, and needs the rest after the failover.
HLS_FAILOVER_SECONDS = 40.0
# zero_drop: how long the players play on after the engine kill (the failover, a new standby).
ZERO_DROP_AFTER_KILL_S = 8.0
# zero_drop's real change for the rolling update, next to the reinstalled wheel: a proxy setting.
ZERO_DROP_CHANGE = "proxy_max_viewers=1999"
# control_failover: central's port on the control hosts and HAProxy's operator port on the VIP,
# and the lab CA the pki role puts on every host (acefleet_tls_internal).
CENTRAL_PORT = 8000
CONTROL_CA = "/etc/acefleet/tls/ca.crt"
# The lab's vault in clear (Molecule links the lab's group_vars): the default operator key.
LAB_VAULT = Path(__file__).resolve().parents[2] / "inventories/lab/group_vars/all/vault.yml"
# After the active control host is killed: the operator API must answer within this (issue 16:
# "within seconds"; keepalived's election plus central's takeover plus HAProxy's checks).
CONTROL_API_BOUND_S = 30.0
# How long the takeover is watched for at most (the figures say how long it really took).
CONTROL_TAKEOVER_WAIT_S = 60.0
# The live players play on at least this long after the kill...
CONTROL_PLAY_AFTER_KILL_S = 20.0
# ...and none is silent longer than this meanwhile (the data path does not go through central).
CONTROL_SILENCE_BOUND_S = 5.0
# After central is out of its warm-up and lists the watched streams: a few seconds more for the
# proxies' and agents' next reports before the engines' sessions are counted.
CONTROL_SETTLE_EXTRA_S = 3.0
# How long the returned control host is watched for keeping its hands off the VIP (nopreempt):
# several VRRP advertisement intervals after its central is alive again.
CONTROL_NOPREEMPT_WATCH_S = 8.0


def run(args: list[str], timeout: float = 30) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    return done.stdout


def dexec(container: str, cmd: str, timeout: float = 30) -> str:
    return run(["docker", "exec", container, "sh", "-c", cmd], timeout)


def probe(container: str, cmd: str, timeout: float = 10) -> str:
    """``dexec`` for polls of a host that may be dead or booting: a hung exec is no answer."""
    try:
        return dexec(container, cmd, timeout)
    except subprocess.TimeoutExpired:
        return ""


def json_object(text: str | bytes) -> dict[str, Any]:
    """``text`` as a JSON object; empty when it is not one."""
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def wait_until(done: Callable[[], bool], timeout: float, every: float = 0.5) -> float | None:
    """Seconds until ``done()`` held, or None when it did not within ``timeout``."""
    started = time.monotonic()
    while True:
        if done():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(every)


def control_vip_of(vip: str) -> str:
    """The control VIP of the lab topology: the player VIP's address with last octet .251."""
    address = ipaddress.IPv4Address(vip)
    return str(ipaddress.IPv4Address(int(address) & ~0xFF | 251))


def lab_operator_key() -> str:
    """The lab's operator key, from its vault in clear ("" when the file is not there)."""
    try:
        text = LAB_VAULT.read_text(encoding="utf-8")
    except OSError:
        return ""
    found = re.search(r"^vault_acefleet_operator_api_key:\s*[\"']?([^\"'\s]+)", text, re.M)
    return found.group(1) if found else ""


def docker_inspect(names: list[str]) -> list[dict[str, Any]]:
    """``docker inspect`` of these containers (those that exist)."""
    try:
        found = json.loads(run(["docker", "inspect", *names]) or "[]")
    except ValueError:
        return []
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def network_addresses(container: dict[str, Any]) -> list[str]:
    """The container's addresses on its Docker networks."""
    networks = container.get("NetworkSettings", {}).get("Networks") or {}
    return [str(n["IPAddress"]) for n in networks.values() if n.get("IPAddress")]


def namespace_address(owner: str, edge: str) -> str:
    """Where ``edge`` reaches a service in ``owner``'s network namespace: its own loopback when
    ``owner`` is the edge, else ``owner``'s address on its network ("" when it has none)."""
    found = docker_inspect([owner])
    if not found or found[0]["Name"].lstrip("/") == edge:
        return "127.0.0.1"
    addresses = network_addresses(found[0])
    return addresses[0] if addresses else ""


def seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "never"


@dataclass
class LivePlayers:
    """Players that must not drop (:meth:`Fleet.live_players`): TS viewers, none reconnecting,
    and ffmpeg on the first one's channel; after the block, what ffmpeg logged and recorded."""

    ts: list[Viewer]
    ffmpeg: FfmpegTsPlayer
    errors: list[str] = field(default_factory=list)
    recorded: float = 0.0  # seconds of video in ffmpeg's recording

    def received(self) -> list[int]:
        return [v.received for v in self.ts]

    def silences_since(self, t: float) -> list[float]:
        """Each TS viewer's longest silence that ended after ``t``."""
        return [v.longest_gap_since(t) for v in self.ts]

    def ts_kept(self) -> list[bool]:
        """Each TS viewer still on its one connection (none reconnects: a drop ends it)."""
        return [not v.closed and v.connections == 1 for v in self.ts]

    def grew_since(self, received: list[int]) -> list[bool]:
        return [v.received > n for v, n in zip(self.ts, received, strict=True)]

    def aligned(self) -> bool:
        return all(v.misaligned == 0 for v in self.ts)


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.vip = args.vip
        self.prefix = args.prefix
        self.agent_key = args.agent_key
        self.lbs = [f"{args.prefix}lb1", f"{args.prefix}lb2"]
        self.edges = [f"{args.prefix}edge1", f"{args.prefix}edge2"]
        # HAProxy's server names are the inventory names (the lab's are shorter than the
        # container names).
        self.servers = [f"{args.server_prefix}edge1", f"{args.server_prefix}edge2"]
        self.results: dict[str, dict[str, object]] = {}
        self.failures: list[str] = []
        self.players = ViewerThread()
        self.hls_seconds = float(args.hls_seconds)
        self.playlist_path = args.playlist_path
        self.inventory = args.inventory
        # The standby central (docs/standby-central.md): two control hosts, one control VIP.
        self.controls = [f"{args.prefix}control1", f"{args.prefix}control2"]
        # container → inventory name (the name on its certificate, the lab's are shorter)
        self.control_names = {
            c: f"{args.server_prefix}{c.removeprefix(args.prefix)}" for c in self.controls
        }
        self.control_vip = args.control_vip or control_vip_of(args.vip)
        self.operator_key = args.operator_key or lab_operator_key()
        self.tunnel_names = [n for n in args.tunnels.split(",") if n]

    def watch(self, channel: str, reconnect: bool = False) -> Viewer:
        """A player on the VIP; with ``reconnect`` it connects again after a close or 3 s of
        silence (a connection whose lb host went away gets no reset, it just stops)."""
        url = f"http://{self.vip}/ace/getstream?id={channel}"
        return self.players.start(Viewer(url, reconnect=reconnect, stall_timeout=3.0))

    def wait_playing(self, viewer: Viewer) -> bool:
        return self.players.wait_playing(viewer, timeout=45)

    def stop(self, viewer: Viewer) -> Viewer:
        return self.players.stop(viewer)

    @contextlib.contextmanager
    def live_players(self, a: str, b: str) -> Iterator[LivePlayers]:
        """Players through the VIP that must not drop, none of which reconnects: a TS viewer on
        ``a`` and one on ``b``, then ffmpeg on ``a`` (A's two viewers are the lab's
        proxy_standby_min_viewers: A keeps a warm standby, B has none). On leaving, ffmpeg is
        stopped (its errors and the seconds of video it recorded are kept) and the viewers
        closed, whatever happened inside."""
        ts = [self.watch(a), self.watch(b)]
        try:
            for v in ts:
                self.wait_playing(v)
            with tempfile.TemporaryDirectory(prefix="verify-players-") as tmp:
                url = f"http://{self.vip}/ace/getstream?id={a}"
                live = LivePlayers(ts, FfmpegTsPlayer(url, Path(tmp) / "a.ts"))
                try:
                    yield live
                finally:
                    live.errors = live.ffmpeg.stop()
                    live.recorded = video_packets(live.ffmpeg.record)[0]
        finally:
            for v in ts:
                self.stop(v)

    def vip_holder(self) -> str:
        for lb in self.lbs:
            if f"inet {self.vip}/" in dexec(lb, "ip -4 -o addr show", 30):
                return lb
        return ""

    def wait_vip(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holder = self.vip_holder()
            if holder:
                return holder
            time.sleep(0.5)
        return ""

    def engines_of(self, edge: str) -> list[tuple[str, str, str]]:
        """(container, address, HTTP port) of each running engine of ``edge`` (its VPN tunnels
        carry the edge's label too, but no HTTP port), the address as the edge reaches it:
        127.0.0.1 for an engine in the edge's own network namespace, else the address of the
        container whose namespace it joined (its VPN tunnel) on the lab network."""
        fmt = '{{ .Names }} {{ .Label "acefleet.http-port" }}'
        listed = run(
            ["docker", "ps", "--filter", f"label=acefleet.host={edge}", "--filter",
             "label=acefleet.http-port", "--format", fmt]
        )  # fmt: skip
        rows = [line.split(" ", 1) for line in listed.splitlines() if " " in line]
        if not rows:
            return []
        owners = {
            c["Name"].lstrip("/"): str(c["HostConfig"]["NetworkMode"])
            for c in docker_inspect([name for name, _ in rows])
        }
        addresses: dict[str, str] = {}
        found = []
        for name, port in rows:
            mode = owners.get(name, "")
            if mode.startswith("container:") and mode not in addresses:
                addresses[mode] = namespace_address(mode.removeprefix("container:"), edge)
            found.append((name, addresses.get(mode, "127.0.0.1"), port))
        return found

    def engine_sessions(self) -> list[dict[str, object]]:
        """Every session on every engine of every edge (the simulator's /_sim/sessions), with the
        engine's container name."""
        sessions: list[dict[str, object]] = []
        for edge in self.edges:
            for container, address, port in self.engines_of(edge):
                url = f"http://{address}:{port}/_sim/sessions"
                out = dexec(edge, f"curl -s --max-time 3 {url}")
                try:
                    found = json.loads(out)["sessions"]
                except (ValueError, KeyError):
                    continue
                sessions += [dict(s, edge=edge, container=container) for s in found]
        return sessions

    def channel_sessions(self, channel: str) -> list[dict[str, object]]:
        return [s for s in self.engine_sessions() if s.get("content_id") == channel]

    def proxy_channel(self, edge: str, channel: str) -> dict[str, Any]:
        """The edge proxy's /ace/status entry of ``channel`` (empty when it has none)."""
        try:
            status = json.loads(
                dexec(edge, "curl -s --max-time 5 http://127.0.0.1:6880/ace/status")
            )
        except ValueError:
            return {}
        for entry in status.get("channels", []):
            if channel in str(entry.get("key", "")) or any(channel in k for k in entry["keys"]):
                return dict(entry)
        return {}

    def primary_engine(self, channel: str, edge: str) -> str:
        """The engine container feeding ``channel`` on ``edge``: the one its proxy names as the
        upstream (host:port, the engine's published port label), else its oldest session (a
        standby opens after the primary)."""
        # the proxies name their edge as the inventory does (the lab's are shorter than the
        # container names)
        edge = edge if edge.startswith(self.prefix) else f"{self.prefix}{edge}"
        upstream = str(self.proxy_channel(edge, channel).get("upstream") or "")
        port = upstream.rpartition(":")[2]
        if port.isdigit():
            for container, _, label in self.engines_of(edge):
                if label == port:
                    return container
        sessions = sorted(self.channel_sessions(channel), key=lambda s: float(str(s["started_at"])))
        return str(sessions[0]["container"]) if sessions else ""

    def proxy_pids(self) -> dict[str, str]:
        return {
            edge: dexec(edge, "systemctl show -p MainPID --value acefleet-proxy").strip()
            for edge in self.edges
        }

    def haproxy(self, lb: str, command: str) -> str:
        return dexec(lb, f"echo '{command}' | socat - /run/haproxy/admin.sock", 30)

    def served_by(self, channels: list[str]) -> dict[str, str]:
        viewers = {ch: self.watch(ch) for ch in channels}
        for v in viewers.values():
            self.wait_playing(v)
        for v in viewers.values():
            self.stop(v)
        self.failures = [
            f"{ch}: HTTP {v.status} {v.error}" for ch, v in viewers.items() if not v.received
        ]
        return {ch: v.edge for ch, v in viewers.items() if v.status == 200 and v.received}

    def agent(self, edge: str, method: str, path: str) -> str:
        auth = f"-H 'Authorization: Bearer {self.agent_key}'"
        return dexec(edge, f"curl -s -X {method} {auth} http://127.0.0.1:8100{path}", 30)

    def tunnel_problems(self, edge: str, hosts: dict[str, Any]) -> tuple[list[str], str]:
        """What is wrong with ``edge``'s VPN tunnels (``self.tunnel_names``), and a line of what
        they are: central lists each once (not retiring), healthy, with a public IP and a
        forwarded port; each is a running container of the edge (labels acefleet.host and
        acefleet.vpn-tunnel); every engine of the edge runs in one of them (its network
        namespace, label acefleet.tunnel); in a tunnel with engines, exactly one engine's P2P
        port is the tunnel's forwarded port."""
        host = next((h for h in hosts.get("items", []) if h.get("name") == edge), None)
        if host is None:
            return [f"{edge}: not in central's /v1/hosts"], ""
        reports = [t for t in host.get("tunnels") or [] if t.get("state") != "retiring"]
        names = sorted(str(t.get("name")) for t in reports)
        if names != sorted(self.tunnel_names):
            return [f"{edge}: central lists the tunnels {names}, not {self.tunnel_names}"], ""
        problems: list[str] = []
        containers = {c["Name"].lstrip("/"): c for c in docker_inspect(
            [str(t["container"]) for t in reports])}  # fmt: skip
        ids: dict[str, str] = {}  # container id → tunnel name
        for t in reports:
            name, port = str(t["name"]), t.get("forwarded_port")
            if t.get("state") != "healthy" or not t.get("public_ip"):
                problems.append(f"{edge}/{name}: {t.get('state')} ({t.get('reason')})")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                problems.append(f"{edge}/{name}: no forwarded port ({port})")
            found = containers.get(str(t["container"]))
            labels = (found or {}).get("Config", {}).get("Labels") or {}
            if not found or not found["State"]["Running"]:
                problems.append(f"{edge}/{name}: its container {t['container']} does not run")
            elif labels.get("acefleet.host") != edge or labels.get("acefleet.vpn-tunnel") != name:
                problems.append(f"{edge}/{name}: {t['container']} carries the labels {labels}")
            else:
                ids[found["Id"]] = name
                ids[str(t["container"])] = name
        engines = docker_inspect([c for c, _, _ in self.engines_of(edge)])
        carried: dict[str, list[str]] = {str(t["name"]): [] for t in reports}
        for engine in engines:
            labels = engine["Config"].get("Labels") or {}
            owner = str(engine["HostConfig"]["NetworkMode"]).removeprefix("container:")
            tunnel = ids.get(owner)
            if tunnel is None or labels.get("acefleet.tunnel") != tunnel:
                problems.append(
                    f"{edge}: engine {engine['Name'].lstrip('/')} is not in a tunnel's namespace "
                    f"(network {engine['HostConfig']['NetworkMode']}, tunnel label "
                    f"{labels.get('acefleet.tunnel')})"
                )
                continue
            carried[tunnel].append(str(labels.get("acefleet.p2p-port")))
        if not engines:
            problems.append(f"{edge}: no engine runs")
        for t in reports:
            ports = carried[str(t["name"])]
            if ports and ports.count(str(t.get("forwarded_port"))) != 1:
                problems.append(
                    f"{edge}/{t['name']}: forwarded port {t.get('forwarded_port')}, its engines' "
                    f"P2P ports {ports} (exactly one must be the forwarded port)"
                )
        line = f"{edge.removeprefix(self.prefix)}: " + ", ".join(
            f"{t['name']} {t.get('state')} {t.get('public_ip')} port {t.get('forwarded_port')} "
            f"engines {len(carried[str(t['name'])])}/{t.get('engine_cap')} (g{t.get('generation')})"
            for t in sorted(reports, key=lambda r: str(r["name"]))
        )
        return problems, line

    # --- checks --------------------------------------------------------------------------------

    def check_tunnels(self) -> tuple[bool, str]:
        """Issue 18: each edge runs its VPN tunnels (the lab: two Gluetun stand-ins) and central
        knows them: GET /v1/hosts through the VIP lists each edge's tunnels healthy with their
        forwarded ports, and Docker shows the engines inside them (:meth:`tunnel_problems`).
        Waits up to TUNNELS_WAIT_S for tunnels that are still connecting."""
        seen: dict[str, Any] = {"problems": ["nothing asked yet"], "lines": []}

        def settled() -> bool:
            status, hosts = self.central_api("/v1/hosts", timeout=10)
            if status != 200:
                seen["problems"] = [f"GET /v1/hosts through the VIP: HTTP {status} {hosts}"]
                return False
            found = [self.tunnel_problems(edge, hosts) for edge in self.edges]
            seen["problems"] = [p for problems, _ in found for p in problems]
            seen["lines"] = [line for _, line in found if line]
            return not seen["problems"]

        took = wait_until(settled, TUNNELS_WAIT_S, every=2)
        detail = "; ".join(seen["lines"])
        if took is None:
            return False, f"{'; '.join(seen['problems'][:6])} [{detail}]"
        return True, f"{detail} (settled after {took:.0f} s)"

    def check_stream(self) -> tuple[bool, str]:
        v = self.watch("verify-stream")
        self.wait_playing(v)
        time.sleep(4)
        self.stop(v)
        ts_valid = v.misaligned == 0
        ok = v.status == 200 and v.received > 100 * PACKET_SIZE and ts_valid
        return (
            ok,
            f"HTTP {v.status} via {v.edge or '?'}: {v.received} bytes in 4 s, TS sync {ts_valid}",
        )

    def check_sharing(self) -> tuple[bool, str]:
        viewers = [self.watch("verify-shared") for _ in range(3)]
        for v in viewers:
            self.wait_playing(v)
        time.sleep(1)
        sessions = [s for s in self.engine_sessions() if s.get("content_id") == "verify-shared"]
        for v in viewers:
            self.stop(v)
        playing = sum(1 for v in viewers if v.received > 0)
        edges = {v.edge for v in viewers}
        ok = playing == 3 and one_source(sessions) and len(edges) == 1
        return (
            ok,
            f"3 viewers playing={playing} on edges {sorted(edges)}, engine sessions of the "
            f"channel={len(sessions)} (a second one on another engine is its warm standby)",
        )

    def check_edges(self) -> tuple[bool, str]:
        where = self.served_by([f"verify-edges-{i}" for i in range(10)])
        edges = sorted(set(where.values()))
        return len(edges) == 2, f"10 channels served={len(where)} by {edges} {self.failures[:3]}"

    def wait_edges_weighted(self, timeout: float = 40) -> None:
        """Until HAProxy weighs every edge at 50 or more again: the agent-check lowers an edge's
        weight while earlier checks' channels linger there (the proxy's grace period)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.haproxy(self.vip_holder() or self.lbs[0], "show servers state edges")
            rows = [ln.split() for ln in lines.splitlines() if ln and not ln.startswith("#")]
            weights = [int(r[7]) for r in rows if len(r) > 7 and r[7].isdigit()]
            if weights and min(weights) >= 50:
                return
            time.sleep(1)

    def check_drain(self) -> tuple[bool, str]:
        self.wait_edges_weighted()
        where = self.served_by([f"verify-drain-{i}" for i in range(8)])
        first, second = self.servers
        on_first = [ch for ch, edge in where.items() if edge == first]
        if not on_first:
            return False, f"no channel hashed to {first}: {where} {self.failures[:3]}"
        live = self.watch(on_first[0])
        self.wait_playing(live)
        before = live.received
        self.agent(self.edges[0], "POST", "/v1/drain")
        for lb in self.lbs:
            self.haproxy(lb, f"set server edges/{first} state drain")
        time.sleep(3)
        moved = self.served_by([f"verify-drained-{i}" for i in range(6)])
        during = live.received
        time.sleep(2)
        self.stop(live)
        self.agent(self.edges[0], "DELETE", "/v1/drain")
        for lb in self.lbs:
            self.haproxy(lb, f"set server edges/{first} state ready")
        new_edges = sorted(set(moved.values()))
        kept = live.received > during > before and live.connections == 1
        ok = new_edges == [second] and len(moved) == 6 and kept
        return ok, (
            f"new channels while {first} drains served by {new_edges} ({len(moved)}/6); {first}'s "
            f"viewer kept playing: {kept} ({live.received - before} bytes during drain, "
            f"longest stall {live.longest_gap():.2f} s)"
        )

    def check_reload(self) -> tuple[bool, str]:
        lb = self.vip_holder()
        live = self.watch("verify-reload")
        self.wait_playing(live)
        pid = dexec(lb, "systemctl show -p MainPID --value haproxy").strip()
        dexec(lb, "echo '# verify_fleet: a configuration change' >> /etc/haproxy/haproxy.cfg")
        dexec(lb, "systemctl reload haproxy")
        time.sleep(3)
        before = live.received
        time.sleep(2)
        self.stop(live)
        dexec(
            lb, "sed -i '/^# verify_fleet: /d' /etc/haproxy/haproxy.cfg && systemctl reload haproxy"
        )
        same = dexec(lb, "systemctl show -p MainPID --value haproxy").strip() == pid
        stall = live.longest_gap()
        ok = same and live.connections == 1 and live.received > before and stall < 2
        return ok, (
            f"reload on {lb}: master kept (pid {pid}): {same}, stream kept its connection: "
            f"{live.connections == 1}, longest stall {stall:.2f} s"
        )

    def check_zero_drop(self) -> tuple[bool, str]:
        """Operations while people watch (issue 15): players on two channels through the VIP,
        none of which reconnects: A has a TS viewer and an ffmpeg player (two viewers: the lab's
        proxy_standby_min_viewers, so A keeps a warm standby), B one TS viewer (no standby).
        playbooks/rolling_update.yml runs with a real change (the wheel reinstalled on every
        host but the lb hosts, a proxy setting bumped: the proxies reload for the new code and
        the new config, the agents and central restart); then the engine feeding A is killed.
        Passes when every player still has its one connection (ffmpeg still running), the
        rolling update succeeded and both proxies run as new processes; the longest silences
        are recorded."""
        if not self.inventory:
            return False, "no --inventory: the rolling update needs the fleet's inventory"
        a, b = "verify-zero-a", "verify-zero-b"
        with self.live_players(a, b) as live:
            ts_a, ts_b = live.ts
            standby = self.wait_sessions(a, 2, 30)
            pids = self.proxy_pids()
            updated_at = time.monotonic()
            rc, log = self.rolling_update()
            update_s = time.monotonic() - updated_at
            new_pids = self.proxy_pids()
            update_gaps = live.silences_since(updated_at)
            victim = self.primary_engine(a, ts_a.edge)
            at_kill = live.received()
            killed_at = time.monotonic()
            if victim:
                run(["docker", "kill", victim], 60)
            time.sleep(ZERO_DROP_AFTER_KILL_S)
            after = self.channel_sessions(a)
            kill_gaps = live.silences_since(killed_at)
            kept = live.ts_kept()
            ffmpeg_kept = live.ffmpeg.running()
            grew = live.grew_since(at_kill)
        errors, recorded = live.errors, live.recorded
        reloaded = all(new_pids[e] not in ("", "0", pids[e]) for e in self.edges)
        aligned = live.aligned()
        ok = rc == 0 and all(kept) and ffmpeg_kept and bool(victim) and reloaded and all(grew)
        ok = ok and aligned
        failed = "" if rc == 0 else f" rolling update failed (rc {rc}): {log[-600:]!r};"
        # the playbook's own account of each edge ("N viewers before, M after")
        kept_by_edge = re.findall(r"(\S+: \d+ viewers before,\s+\d+ after)", log)
        players = (
            f"players: A ({a}: TS viewer + ffmpeg via {ts_a.edge or '?'}, warm standby before "
            f"the update: {standby}), B ({b}: TS viewer via {ts_b.edge or '?'})"
        )
        update = (
            f"rolling_update.yml (wheel reinstalled, {ZERO_DROP_CHANGE}) rc {rc} in "
            f"{update_s:.0f} s;{failed} proxies reloaded into new processes: {reloaded} "
            f"({pids} → {new_pids}), {kept_by_edge}; longest silence during the update "
            f"A {update_gaps[0]:.2f} s, B {update_gaps[1]:.2f} s"
        )
        kill = (
            f"killed A's engine {victim or 'none found'}: longest silence after "
            f"A {kill_gaps[0]:.2f} s, B {kill_gaps[1]:.2f} s, A's sessions now {len(after)}"
        )
        kept_text = (
            f"connections kept (no reconnects): TS A {kept[0]}, TS B {kept[1]}, ffmpeg "
            f"{ffmpeg_kept} ({recorded:.1f} s of video recorded, {len(errors)} errors"
            f"{_first(errors)}); TS sync kept: {aligned}"
        )
        return ok, f"{players}; {update}; {kill}; {kept_text}"

    def wait_sessions(self, channel: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.channel_sessions(channel)) >= count:
                return True
            time.sleep(1)
        return False

    def rolling_update(self) -> tuple[int, str]:
        """playbooks/rolling_update.yml against this fleet's inventory, with a real change: the
        wheelhouse marker removed on the edges and control hosts (the venv role reinstalls the
        wheel: new code) and a proxy setting changed."""
        for host in [*self.edges, *self.controls]:
            dexec(host, "rm -f /opt/acefleet/venv/.wheelhouse-*")
        root = Path(__file__).resolve().parents[2]
        playbook = shutil.which("ansible-playbook") or str(
            Path(sys.executable).parent / "ansible-playbook"
        )
        argv = [playbook, "-i", self.inventory, "-e", ZERO_DROP_CHANGE]
        argv.append(str(root / "playbooks" / "rolling_update.yml"))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as exc:
            return -1, f"timed out: {exc.stdout!r}"
        return done.returncode, done.stdout + done.stderr

    def check_failover(self) -> tuple[bool, str]:
        holder = self.wait_vip()
        if not holder:
            return False, "no lb host holds the VIP"
        other = next(lb for lb in self.lbs if lb != holder)
        live = self.watch("verify-failover", reconnect=True)
        self.wait_playing(live)
        time.sleep(1)
        stopped = time.monotonic()
        run(["docker", "stop", "-t", "10", holder], 60)
        moved_to = self.wait_vip(30)
        vip_move = time.monotonic() - stopped
        deadline = time.monotonic() + 45
        while not live.reconnect_gaps and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        self.stop(live)
        run(["docker", "start", holder], 60)
        back = self._wait_lb_back(holder)
        gap = live.reconnect_gaps[0] if live.reconnect_gaps else float("inf")
        if not live.reconnect_gaps:
            return (
                False,
                f"no bytes after {holder} stopped: {live.connections} connections, "
                f"last HTTP {live.status}, last error {live.error!r}",
            )
        ok = moved_to == other and live.reconnect_gaps != [] and gap < 10
        return ok, (
            f"stopped {holder}: VIP on {moved_to or 'nobody'} after {vip_move:.1f} s; the viewer "
            f"reconnected after a gap of {gap:.2f} s without bytes ({live.connections} "
            f"connections; it reconnects on a close or after {live.stall_timeout:.0f} s of "
            "silence); "
            f"{holder} back and serving: {back}"
        )

    # --- VPN tunnels: an operator rotates the tunnel under a watched channel -----------------

    def post_central(self, path: str, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        """POST ``path`` of the operator API through the VIP (like :meth:`central_api`)."""
        url = f"http://{self.vip}:{CENTRAL_PORT}{path}"
        request = urllib.request.Request(
            url, method="POST", headers={"X-API-Key": self.operator_key}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json_object(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json_object(exc.read())
        except (OSError, http.client.HTTPException) as exc:
            return 0, {"error": f"{type(exc).__name__}: {exc}"}

    def engine_tunnel(self, engine: str) -> tuple[str, str]:
        """(tunnel name, the container whose network namespace ``engine`` runs in)."""
        found = docker_inspect([engine]) if engine else []
        if not found:
            return "", ""
        labels = found[0]["Config"].get("Labels") or {}
        owner = str(found[0]["HostConfig"]["NetworkMode"]).removeprefix("container:")
        return str(labels.get("acefleet.tunnel") or ""), owner

    def check_tunnel_rotation(self) -> tuple[bool, str]:
        """Issue 18, a lab check (scripts/lab.sh tunnel-rotation; not in Molecule's list): an
        operator rotates, through central's API on the VIP, the VPN tunnel whose engine feeds a
        watched channel (two TS viewers and ffmpeg on it, none reconnecting; a second channel's
        viewer besides). Central forwards it to the edge's agent at the URL the agent announced;
        the agent starts the tunnel's next generation, drains the old one's engines (the proxy
        moves the channel make-before-break) and removes the old container. Passes when the
        channel ends up on an engine outside the old container, that container is gone, and
        every player kept its one connection and got bytes after the move."""
        a, b = "verify-rotation-a", "verify-rotation-b"
        with self.live_players(a, b) as live:
            edge = live.ts[0].edge
            engine = self.primary_engine(a, edge)
            tunnel, old = self.engine_tunnel(engine)
            if not tunnel:
                return False, f"the engine feeding {a} ({engine or 'none found'}) is in no tunnel"
            host = edge if edge.startswith(self.prefix) else f"{self.prefix}{edge}"
            asked = time.monotonic()
            status, answer = self.post_central(f"/v1/hosts/{host}/tunnels/{tunnel}/rotate")
            if status != 202:
                return False, f"rotate {host}/{tunnel} through central: HTTP {status} {answer}"
            seen: dict[str, str] = {}

            def moved() -> bool:
                seen["engine"] = now = self.primary_engine(a, edge)
                seen["in"] = self.engine_tunnel(now)[1]
                gone = not docker_inspect([old])
                return bool(now) and seen["in"] not in ("", old) and gone

            took = wait_until(moved, TUNNEL_ROTATION_WAIT_S, every=2)
            received = live.received()
            time.sleep(3)
            grew = live.grew_since(received)
            kept = live.ts_kept()
            ffmpeg_kept = live.ffmpeg.running()
            silences = live.silences_since(asked)
        errors, recorded = live.errors, live.recorded
        ok = took is not None and all(kept) and all(grew) and ffmpeg_kept and live.aligned()
        return ok, (
            f"rotated {host}/{tunnel} (generation {answer.get('generation')}) under {a} via "
            f"{edge or '?'}: engine {engine} in {old[:12]} → {seen.get('engine')} in "
            f"{seen.get('in', '')[:12]}, the old container gone and the channel moved: "
            f"{seconds(took)} (at most {seconds(TUNNEL_ROTATION_WAIT_S)}); "
            f"connections kept (no reconnects): TS {kept}, ffmpeg {ffmpeg_kept} ({recorded:.1f} s "
            f"of video, {len(errors)} errors{_first(errors)}); bytes after: {grew}; longest "
            f"silences {[round(x, 2) for x in silences]} s"
        )

    # --- the standby central: kill the active control host under live players ----------------

    def control_vip_holders(self) -> list[str]:
        """The control hosts with the control VIP on an interface (keepalived put it there)."""
        vip = f"inet {self.control_vip}/"
        return [c for c in self.controls if vip in probe(c, "ip -4 -o addr show")]

    def central_health(self, control: str, path: str) -> tuple[int, dict[str, Any]]:
        """``path`` (/livez, /readyz) of the central on ``control``, asked on the host itself:
        HTTPS checked against the lab CA under the host's inventory name (acefleet_tls_internal,
        as keepalived's track command asks), else plain HTTP. (status, JSON body); 0 when
        nothing answered."""
        name = self.control_names[control]
        targets = (
            f"--cacert {CONTROL_CA} --resolve {name}:{CENTRAL_PORT}:127.0.0.1 "
            f"https://{name}:{CENTRAL_PORT}{path}",
            f"http://127.0.0.1:{CENTRAL_PORT}{path}",
        )
        for target in targets:
            out = probe(control, f"curl -s --max-time 3 -w '\\n%{{http_code}}' {target}")
            body, _, code = out.rstrip().rpartition("\n")
            if code.strip().isdigit() and int(code) > 0:
                return int(code), json_object(body)
        return 0, {}

    def central_standby(self, control: str) -> bool:
        """The central on ``control`` lives and is the standby: /livez 200, /readyz 503
        ``standby``."""
        status, body = self.central_health(control, "/readyz")
        alive = self.central_health(control, "/livez")[0] == 200
        return alive and status == 503 and body.get("status") == "standby"

    def central_api(self, path: str, timeout: float = 2) -> tuple[int, dict[str, Any]]:
        """GET ``path`` of the operator API in plain HTTP through the VIP (HAProxy's control
        port sends it to the central whose /readyz answers 200), with the operator key.
        (status, JSON body); 0 when nothing answered in time."""
        url = f"http://{self.vip}:{CENTRAL_PORT}{path}"
        try:
            status, _, body = fetch(url, timeout, {"X-API-Key": self.operator_key})
        except (OSError, http.client.HTTPException) as exc:
            return 0, {"error": f"{type(exc).__name__}: {exc}"}
        return status, json_object(body)

    def find_active_control(self, timeout: float = 30) -> tuple[str, str]:
        """The active control host: the only one with the control VIP, and its central the only
        ready one (/readyz 200). ("", what was seen) when there is none or both look active
        after ``timeout`` s (a VIP that has just moved settles meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            holders = self.control_vip_holders()
            health = {c: self.central_health(c, "/readyz") for c in self.controls}
            ready = [c for c, (status, _) in health.items() if status == 200]
            if len(holders) == 1 and ready == holders:
                return holders[0], ""
            if time.monotonic() > deadline:
                return "", (
                    f"no single active control host: control VIP {self.control_vip} on "
                    f"{holders or 'no host'}, central ready (/readyz 200) on {ready or 'no host'}; "
                    f"/readyz asked on each host (0: no answer over HTTPS with {CONTROL_CA} "
                    f"under its inventory name, nor plain): {health}"
                )
            time.sleep(1)

    def wait_takeover(self, survivor: str, since: float) -> dict[str, float | None]:
        """Seconds from ``since`` until ``survivor`` holds the control VIP ("vip"), and until the
        operator API through the VIP answers 200 on /readyz ("readyz") and on an authenticated
        GET /v1/engines ("api"); None for what did not happen within CONTROL_TAKEOVER_WAIT_S."""
        marks: dict[str, float | None] = dict.fromkeys(("vip", "readyz", "api"))
        asks = (("readyz", "/readyz"), ("api", "/v1/engines"))
        while None in marks.values() and time.monotonic() < since + CONTROL_TAKEOVER_WAIT_S:
            if marks["vip"] is None and survivor in self.control_vip_holders():
                marks["vip"] = time.monotonic() - since
            for mark, path in asks:
                if marks[mark] is None and self.central_api(path)[0] == 200:
                    marks[mark] = time.monotonic() - since
            time.sleep(0.2)
        return marks

    def wait_central_streams(self, channels: list[str], timeout: float) -> tuple[float | None, int]:
        """Until the active central (through the VIP) is out of its warm-up and lists a live
        stream of each of ``channels`` (the proxies' snapshots rebuilt its view): the seconds
        that took (None: not within ``timeout``) and how many of them it lists."""
        wanted = {f"id:{ch}" for ch in channels}
        listed: set[str] = set()

        def known() -> bool:
            nonlocal listed
            status, body = self.central_api("/v1/streams", 5)
            items = body.get("items")
            keys = (
                {str(i.get("content_key")) for i in items if isinstance(i, dict)}
                if isinstance(items, list)
                else set()
            )
            listed = wanted & keys
            return status == 200 and body.get("warming_up") is False and listed == wanted

        return wait_until(known, timeout, 1.0), len(listed)

    def prometheus_ready(self, control: str) -> bool:
        """Prometheus answers on ``control`` (the monitoring host: a later Molecule step asks
        it for the engine alert)."""
        out = probe(control, "curl -fsS --max-time 3 http://127.0.0.1:9090/-/ready && echo ok")
        return out.strip().endswith("ok")

    def restore_control(self, host: str, survivor: str, prometheus: bool) -> tuple[bool, str]:
        """``docker start`` the killed control host: systemd up again, its central alive but the
        standby (/livez 200, /readyz 503 ``standby``), the control VIP still on ``survivor``
        (nopreempt: a move costs a warm-up) while it is watched for CONTROL_NOPREEMPT_WATCH_S,
        and, where Prometheus ran, Prometheus ready again."""
        run(["docker", "start", host], 60)
        states = ("running", "degraded")
        # reported, not judged: what is judged is central, the VIP and Prometheus
        system = wait_until(
            lambda: probe(host, "systemctl is-system-running").strip() in states, 120, 1.0
        )
        standby = wait_until(lambda: self.central_standby(host), 120, 1.0)
        stayed = True
        if standby is not None:
            deadline = time.monotonic() + CONTROL_NOPREEMPT_WATCH_S
            while time.monotonic() < deadline:
                stayed = stayed and self.control_vip_holders() == [survivor]
                time.sleep(0.5)
        still_standby = self.central_standby(host)
        serving = self.central_health(survivor, "/readyz")[0] == 200
        ready = wait_until(lambda: self.prometheus_ready(host), 60, 1.0) if prometheus else None
        ok = standby is not None and stayed and still_standby and serving
        ok = ok and (ready is not None or not prometheus)
        text = (
            f"{host} started again: systemd running after {seconds(system)}, its central alive and "
            f"standby (/livez 200, /readyz 503 standby) after {seconds(standby)} more, still "
            f"standby {CONTROL_NOPREEMPT_WATCH_S:.0f} s later: {still_standby}; the control VIP "
            f"stayed on {survivor} (nopreempt): {stayed}, whose central is ready: {serving}"
        )
        if prometheus:
            text += f"; Prometheus on {host} ready after {seconds(ready)}"
        return ok, text

    def check_control_failover(self) -> tuple[bool, str]:
        """The standby central under live players (issue 16's Molecule proof): the active control
        host is killed (``docker kill``: a host loss, not a clean stop) while TS viewers and
        ffmpeg play two channels through the VIP. Passes when the control VIP moves to the
        other control host and the operator API through the VIP answers (/readyz and an
        authenticated GET) within CONTROL_API_BOUND_S; a channel nobody watched before starts
        during the new central's warm-up; no player dropped or went silent longer than
        CONTROL_SILENCE_BOUND_S over at least CONTROL_PLAY_AFTER_KILL_S; once the takeover
        settled, every watched channel has one source fleet-wide (one_source, on one edge);
        and the killed host, started again, stays the standby (nopreempt)."""
        if not self.operator_key:
            return False, f"no --operator-key (and none in {LAB_VAULT})"
        active, problem = self.find_active_control()
        if not active:
            return False, problem
        survivor = next(c for c in self.controls if c != active)
        before_status, before_body = self.central_health(survivor, "/readyz")
        was_standby = before_status == 503 and before_body.get("status") == "standby"
        prometheus = self.prometheus_ready(active)
        a, b = "verify-control-a", "verify-control-b"
        # a channel no check (nor an earlier run on this fleet) has opened: the simulator plays
        # any id
        new = f"verify-control-new-{int(time.time())}"
        killed = restored = False
        try:
            with self.live_players(a, b) as live:
                ts_a, ts_b = live.ts
                if not all(v.received for v in live.ts):
                    # nothing to keep playing: no reason to kill a control host
                    return False, "players did not start: " + ", ".join(
                        f"{v.url} HTTP {v.status} {v.error or ''}" for v in live.ts
                    )
                warm_standby = self.wait_sessions(a, 2, 30)
                at_kill = live.received()
                killed_at = time.monotonic()
                run(["docker", "kill", active], 60)
                killed = True
                marks = self.wait_takeover(survivor, killed_at)
                _, health = self.central_api("/readyz")
                warming = health.get("warming_up") is True
                fresh = self.watch(new)
                try:
                    self.wait_playing(fresh)
                    play_on = killed_at + CONTROL_PLAY_AFTER_KILL_S - time.monotonic()
                    time.sleep(max(0.0, play_on))
                    settled, listed = self.wait_central_streams([a, b, new], 45)
                    time.sleep(CONTROL_SETTLE_EXTRA_S)
                    sessions = self.engine_sessions()
                    played = time.monotonic() - killed_at
                    silences = live.silences_since(killed_at)
                    kept = live.ts_kept()
                    ffmpeg_kept = live.ffmpeg.running()
                    grew = live.grew_since(at_kill)
                finally:
                    self.stop(fresh)
            restored = True
            back_ok, back = self.restore_control(active, survivor, prometheus)
        finally:
            if killed and not restored:
                run(["docker", "start", active], 60)

        api_s = marks["api"]
        answered = api_s is not None and api_s <= CONTROL_API_BOUND_S
        answered = answered and marks["readyz"] is not None
        moved = marks["vip"] is not None
        first_byte = (
            fresh.first_byte_at - fresh.started_at if fresh.first_byte_at is not None else None
        )
        fresh_ok = fresh.status == 200 and fresh.received >= 100 * PACKET_SIZE
        fresh_ok = fresh_ok and fresh.misaligned == 0
        quiet = max(silences) <= CONTROL_SILENCE_BOUND_S
        players_ok = all(kept) and ffmpeg_kept and all(grew) and quiet and live.aligned()
        by_channel: dict[str, list[dict[str, object]]] = {}
        for s in sessions:
            by_channel.setdefault(str(s.get("content_id")), []).append(s)

        def single(found: list[dict[str, object]]) -> bool:
            # one engine session, or a warm standby's second on another engine of the same edge
            return one_source(found) and len({s.get("edge") for s in found}) == 1

        watched = {ch: by_channel.get(ch, []) for ch in (a, b, new)}
        sources_ok = all(single(found) for found in watched.values())
        # reported, not judged: channels earlier checks left lingering
        others = sorted(
            ch for ch, found in by_channel.items() if ch not in watched and not single(found)
        )
        rebuilt = settled is not None
        ok = moved and answered and fresh_ok and players_ok and rebuilt and sources_ok and back_ok

        def where(found: list[dict[str, object]]) -> str:
            engines = sorted(f"{s.get('container')}" for s in found)
            return f"{len(found)} session(s) {engines}"

        before = (
            f"control VIP {self.control_vip} on {active} (central ready), {survivor}'s central "
            f"/readyz {before_status} {before_body.get('status', '')!r} (standby: {was_standby})"
        )
        players = (
            f"players through the VIP: A ({a}: TS viewer + ffmpeg via {ts_a.edge or '?'}, warm "
            f"standby before the kill: {warm_standby}), B ({b}: TS viewer via {ts_b.edge or '?'})"
        )
        takeover = (
            f"docker kill {active}: control VIP on {survivor} after {seconds(marks['vip'])}, "
            f"operator API through http://{self.vip}:{CENTRAL_PORT}: /readyz 200 after "
            f"{seconds(marks['readyz'])}, authenticated GET /v1/engines 200 after "
            f"{seconds(api_s)} (bound {CONTROL_API_BOUND_S:.0f} s)"
        )
        started = (
            f"new channel {new} started right after (central warming up: {warming}): HTTP "
            f"{fresh.status} via {fresh.edge or '?'}, first byte after {seconds(first_byte)}, "
            f"{fresh.received} bytes, TS sync {fresh.misaligned == 0}"
        )
        kept_text = (
            f"{played:.0f} s after the kill: connections kept (no reconnects) TS A {kept[0]}, "
            f"TS B {kept[1]}, ffmpeg {ffmpeg_kept}; bytes kept coming: {grew}; longest silence "
            f"A {silences[0]:.2f} s, B {silences[1]:.2f} s (bound "
            f"{CONTROL_SILENCE_BOUND_S:.0f} s); ffmpeg recorded {live.recorded:.1f} s of video, "
            f"{len(live.errors)} errors{_first(live.errors)}; TS sync kept: {live.aligned()}"
        )
        settle = (
            f"takeover settled (out of warm-up, lists {listed}/3 watched streams) after "
            f"{seconds(settled)} more; engine sessions fleet-wide: "
            + ", ".join(f"{ch} {where(found)}" for ch, found in watched.items())
            + f"; one source each: {sources_ok}; other channels with more: {others or 'none'}"
        )
        return ok, f"{before}; {players}; {takeover}; {started}; {kept_text}; {settle}; {back}"

    def check_hls(self) -> tuple[bool, str]:
        """An HLS player (ffmpeg) and a TS viewer of one channel through the VIP: the player
        decodes hls_seconds with no error and monotonic video DTS, the playlists parse (m3u8)
        and keep their promises, and both viewers are fed by one engine session."""
        channel = "verify-hls"
        ts = self.watch(channel)
        self.wait_playing(ts)
        watch = HlsWatch(self.vip, channel)
        if not watch.open():
            self.stop(ts)
            return False, f"HLS did not start via {watch.edge or '?'}: {watch.problems[:3]}"
        watch.start()
        listed_first = watch.last_sequence
        with tempfile.TemporaryDirectory(prefix="verify-hls-") as tmp:
            player = FfmpegPlayer(watch.master_url, self.hls_seconds, Path(tmp) / "hls.ts")
            time.sleep(3)
            # both play now (a short run's ffmpeg may be done by the time the engines answered)
            together = player.running() and ts.status == 200
            ts_before = ts.received
            sessions = self.channel_sessions(channel)
            rc, errors = player.wait()
            decoded, packets, backwards = video_packets(player.record)
        watch.stop()
        ts_bytes = ts.received - ts_before
        self.stop(ts)
        kinds = sorted({str(s.get("kind")) for s in sessions})
        shared = together and one_source(sessions) and kinds == ["ts"] and ts.edge == watch.edge
        played = rc == 0 and not errors and decoded >= 0.95 * self.hls_seconds
        # new segments were listed while it played (the media sequence itself moves only once
        # the window is full)
        playlists = not watch.problems and watch.last_sequence > listed_first
        ok = played and backwards == 0 and playlists and shared and ts_bytes > 0
        return ok, (
            f"ffmpeg over HLS via {watch.edge or '?'}: {decoded:.1f} s decoded in "
            f"{player.wall:.1f} s, rc {rc}, {len(errors)} errors{_first(errors)}, video DTS "
            f"monotonic: {backwards == 0} ({packets} packets); playlists (m3u8): target "
            f"{watch.target_duration} s, last segment {listed_first}→{watch.last_sequence} over "
            f"{watch.polls} polls, problems {watch.problems[:3]}; "
            f"TS viewer (via {ts.edge or '?'}, {ts_bytes} bytes meanwhile) + HLS player + "
            f"playlist poller → {len(sessions)} engine session(s) of the channel {kinds}"
        )

    def check_hls_failover(self) -> tuple[bool, str]:
        """While ffmpeg plays a channel over HLS through the VIP, the engine feeding it is
        killed: the player keeps getting segments, after an EXT-X-DISCONTINUITY, and the media
        sequence never goes back."""
        channel, seconds = "verify-hls-failover", HLS_FAILOVER_SECONDS
        watch = HlsWatch(self.vip, channel)
        if not watch.open():
            return False, f"HLS did not start via {watch.edge or '?'}: {watch.problems[:3]}"
        watch.start()
        with tempfile.TemporaryDirectory(prefix="verify-hls-") as tmp:
            # ffmpeg starts a live playlist 3 segments from its end: from here at the earliest.
            start = max(watch.sequences[-1], watch.last_sequence - 2)
            player = FfmpegPlayer(watch.master_url, seconds, Path(tmp) / "hls.ts")
            # Play on until two more segments were listed: ffmpeg is past its start-up burst.
            first = watch.last_sequence
            deadline = time.monotonic() + 30
            while watch.last_sequence < first + 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            sessions = self.channel_sessions(channel)
            victim = self.primary_engine(channel, watch.edge)
            if not one_source(sessions) or not victim:
                player.proc.kill()
                player.wait()
                watch.stop()
                return False, f"{len(sessions)} engine sessions of the channel before the kill"
            playing = player.running()
            size_at_kill = player.record.stat().st_size if player.record.is_file() else 0
            seq_at_kill = watch.last_sequence
            killed_at = time.monotonic()
            run(["docker", "kill", victim], 60)
            rc, errors = player.wait()
            grew = (player.record.stat().st_size if player.record.is_file() else 0) - size_at_kill
            decoded, packets, backwards = video_packets(player.record)
        watch.stop()
        after = self.channel_sessions(channel)
        cuts = [(at - killed_at, seq) for at, seq in watch.discontinuities if at >= killed_at]
        newer = sorted(seq for seq in watch.listed if seq > seq_at_kill)
        moved = one_source(after) and victim not in {s.get("container") for s in after}
        # All the media ffmpeg could have had before the discontinuity; what it decoded beyond
        # that came from the segments after it.
        before_cut = (
            sum(d for seq, d in watch.durations.items() if start <= seq < cuts[0][1])
            if cuts
            else seconds
        )
        after_cut = decoded - before_cut
        played = rc == 0 and decoded >= 0.95 * seconds and grew > 0 and after_cut > 1
        ok = playing and played and bool(cuts) and not watch.problems and moved
        where = f"{after[0].get('container')}" if after else "none"
        cut = f"segment {cuts[0][1]} listed {cuts[0][0]:.1f} s after the kill" if cuts else "none"
        return ok, (
            f"killed {victim} at segment {seq_at_kill} while ffmpeg played (running: {playing}); "
            f"ffmpeg: rc {rc}, {decoded:.1f}/{seconds:.0f} s decoded in {player.wall:.1f} s, "
            f"{len(errors)} errors{_first(errors)}, {grew} bytes recorded after the kill, "
            f"video DTS steps not forward: {backwards} ({packets} packets); "
            f"EXT-X-DISCONTINUITY: {cut}; {len(newer)} segments after the kill; ffmpeg played "
            f"{after_cut:.1f} s after the discontinuity (at least); "
            f"media sequence {watch.sequences[0]}→{watch.sequences[-1]}, problems "
            f"{watch.problems[:3]}; the channel's engine now: {where}"
        )

    def check_playlist(self) -> tuple[bool, str]:
        """What players read, through the VIP (HAProxy sends it to central): the M3U parsed by
        ipytv, the XMLTV guide (well-formed, valid against the XMLTV DTD, only the playlist's
        tvg-ids), the HDHomeRun files; then VLC opens the playlist URL and plays its first
        channel through the VIP, and ffprobe decodes the recording."""
        base = f"http://{self.vip}{self.playlist_path.rsplit('/', 1)[0]}"
        url = f"http://{self.vip}{self.playlist_path}"
        problems: list[str] = []
        status, headers, body = fetch(url, 30)
        served_by = headers.get("x-acefleet-served-by", "?")
        if status != 200:
            return False, f"{url}: HTTP {status} via {served_by}: {body[:200]!r}"
        channels, tvg_ids = read_playlist(body.decode(), f"{base}/epg.xml", self.vip, problems)
        programmes = read_guide(f"{base}/epg.xml", tvg_ids, problems)
        tuners = read_hdhomerun(base, channels, problems)
        with tempfile.TemporaryDirectory(prefix="verify-vlc-") as tmp:
            rc, recorded, log = vlc_record(url, Path(tmp))
        played = recorded >= 3
        if not played:
            problems.append(f"VLC: rc {rc}, {recorded:.1f} s decoded: {log[-300:]!r}")
        ok = not problems and played
        return ok, (
            f"{url} via {served_by}: {len(channels)} channels (ipytv), guide {programmes} "
            f"programmes of {len(tvg_ids)} tvg-ids (XMLTV DTD), HDHomeRun {tuners} tuners, "
            f"{len(channels)} lineup entries; VLC played it {VLC_SECONDS} s: {recorded:.1f} s "
            f"recorded and decoded (ffprobe); problems {problems[:4]}"
        )

    def player_files_servers(self) -> dict[str, str]:
        """HAProxy's view of the player files' servers on the VIP holder: name → state (2 up)."""
        lines = self.haproxy(self.vip_holder() or self.lbs[0], "show servers state player_files")
        rows = [ln.split() for ln in lines.splitlines() if ln and not ln.startswith("#")]
        return {r[3]: r[5] for r in rows if len(r) > 5}

    def wait_centrals(self, up: bool, timeout: float = 90) -> bool:
        """Until HAProxy (on the VIP holder) sees a control host's central up in the player
        files backend (``up``), or every one of them down. With a standby central, the standby
        is down there too (its /readyz answers 503)."""
        names = set(self.control_names.values())

        def seen() -> bool:
            states = [s for name, s in self.player_files_servers().items() if name in names]
            return bool(states) and ("2" in states if up else all(s == "0" for s in states))

        return wait_until(seen, timeout) is not None

    def check_playlist_central_down(self) -> tuple[bool, str]:
        """Central stopped on every control host (with a standby central, stopping the active
        one only moves the control VIP, and the standby takes over): the playlist and the guide
        still answer through the VIP, from an edge's copy of the catalog, the same bytes central
        served; then central again, on whichever control host takes the control VIP."""
        url = f"http://{self.vip}{self.playlist_path}"
        guide = f"{url.rsplit('/', 1)[0]}/epg.xml"
        before = [fetch(u, 30) for u in (url, guide)]
        if any(status != 200 for status, _, _ in before):
            return False, f"before: HTTP {[status for status, _, _ in before]}"
        try:
            for control in self.controls:
                dexec(control, "systemctl stop acefleet-central", 60)
            down = self.wait_centrals(up=False)
            during = [fetch(u, 30) for u in (url, guide)]
        finally:
            for control in self.controls:
                dexec(control, "systemctl start acefleet-central", 60)
        back = self.wait_centrals(up=True)
        after = fetch(url, 30)
        by = [headers.get("x-acefleet-served-by", "?") for _, headers, _ in during]
        same = [d[2] == b[2] for d, b in zip(during, before, strict=True)]
        from_edge = all(name in self.servers for name in by)
        served_again = after[1].get("x-acefleet-served-by", "?")
        ok = (
            down
            and all(status == 200 for status, _, _ in during)
            and from_edge
            and all(same)
            and back
            and after[0] == 200
            and served_again in self.control_names.values()
        )
        return ok, (
            f"central stopped on {self.controls} (HAProxy saw them down: {down}): playlist and "
            f"guide HTTP {[status for status, _, _ in during]} served by {by}, the bytes central "
            f"served: {same}; central back: {back}, serving again: HTTP {after[0]} by "
            f"{served_again} (before: {before[0][1].get('x-acefleet-served-by', '?')})"
        )

    def _wait_lb_back(self, lb: str) -> bool:
        """``lb`` (the VIP's holder before it stopped) serves and holds the VIP again: the lb
        VIP preempts, so it moves back once ``lb``'s HAProxy is healthy. Waited for here, or the
        next check's players would connect during that move and fail."""
        services = "systemctl is-active haproxy keepalived"
        active = wait_until(lambda: dexec(lb, services, 30).split() == ["active"] * 2, 90, 1.0)
        if active is None or wait_until(lambda: self.vip_holder() == lb, 90 - active) is None:
            return False
        time.sleep(2)  # the gratuitous ARPs of the move reach the machine
        return True


# --- HLS: playlists through the VIP, ffmpeg as the player -------------------------------------


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RuntimeError(
            f"{name} is missing: run scripts/bootstrap.sh (or apt-get install ffmpeg)"
        )
    return found


def m3u8_module() -> Any:
    """The ``m3u8`` package: a playlist parser nobody here wrote."""
    try:
        import m3u8  # here: the other checks run without the dev extra
    except ImportError as exc:
        raise RuntimeError(
            "the m3u8 package is missing: run this with the checkout's .venv python "
            "(scripts/bootstrap.sh installs the dev extra)"
        ) from exc
    return m3u8


def fetch(
    url: str, timeout: float = 60, send: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one GET (with the ``send`` headers); an
    error status is returned, not raised (the proxy's errors are JSON bodies worth printing)."""
    try:
        request = urllib.request.Request(url, headers=send or {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class HlsWatch:
    """One HLS session of a channel, the way a player keeps it: the master playlist once, then
    the media playlist again and again. Records what the playlists promised and whether they
    kept it: the media sequence never goes back, a listed segment never changes, discontinuities
    seen (and when)."""

    def __init__(self, vip: str, channel: str) -> None:
        self.m3u8 = m3u8_module()
        self.master_url = f"http://{vip}/ace/manifest.m3u8?id={channel}"
        self.channel = channel
        self.media_url = ""
        self.edge = ""
        self.problems: list[str] = []
        self.target_duration = 0
        self.sequences: list[int] = []
        self.listed: dict[int, str] = {}  # media sequence number → segment URI
        self.durations: dict[int, float] = {}
        self.discontinuities: list[tuple[float, int]] = []  # (seen at, sequence) per new one
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> bool:
        """The master playlist (it waits for the channel's first segment): one variant, relative,
        with the channel's selector; then the first media playlist."""
        status, headers, body = fetch(self.master_url)
        if status != 200:
            self.problems.append(f"master HTTP {status}: {body[:200]!r}")
            return False
        self.edge = headers.get("x-acefleet-edge", "")
        self.check_headers("master", headers)
        master = self.m3u8.loads(body.decode(), uri=self.master_url)
        variants = master.playlists
        if not master.is_variant or len(variants) != 1:
            self.problems.append(f"master is not one variant: {body[:300]!r}")
            return False
        uri = variants[0].uri
        if uri.startswith(("/", "http:", "https:")) or f"id={self.channel}" not in uri:
            self.problems.append(f"variant URI {uri!r} is not relative with the selector")
        self.media_url = variants[0].absolute_uri
        return self.poll()

    def check_headers(self, what: str, headers: dict[str, str]) -> None:
        if headers.get("access-control-allow-origin") != "*":
            self.problems.append(f"{what}: no Access-Control-Allow-Origin: * through the VIP")
        if "mpegurl" not in headers.get("content-type", "").lower():
            self.problems.append(f"{what}: content type {headers.get('content-type')!r}")

    def poll(self) -> bool:
        status, headers, body = fetch(self.media_url)
        self.polls += 1
        if status != 200:
            self.problems.append(f"media playlist HTTP {status}: {body[:200]!r}")
            return False
        if headers.get("x-acefleet-edge", self.edge) != self.edge:
            self.problems.append(f"media playlist from {headers.get('x-acefleet-edge')}")
        self.check_headers("media playlist", headers)
        playlist = self.m3u8.loads(body.decode(), uri=self.media_url)
        self.read(playlist)
        return True

    def read(self, playlist: Any) -> None:
        if int(playlist.version or 0) < 3:
            self.problems.append(f"EXT-X-VERSION {playlist.version}")
        target = int(playlist.target_duration or 0)
        if self.target_duration and target != self.target_duration:
            self.problems.append(f"target duration changed {self.target_duration} → {target}")
        self.target_duration = self.target_duration or target
        first = int(playlist.media_sequence or 0)
        if self.sequences and first < self.sequences[-1]:
            self.problems.append(f"media sequence went back {self.sequences[-1]} → {first}")
        self.sequences.append(first)
        if not playlist.segments:
            self.problems.append("a media playlist without segments")
            return
        if playlist.segments[0].program_date_time is None:
            self.problems.append("no EXT-X-PROGRAM-DATE-TIME on the first segment")
        for offset, segment in enumerate(playlist.segments):
            seq = first + offset
            if self.listed.setdefault(seq, segment.uri) != segment.uri:
                self.problems.append(f"segment {seq} changed: {self.listed[seq]} → {segment.uri}")
            if math.ceil(segment.duration) > target:
                self.problems.append(f"segment {seq} lasts {segment.duration} > target {target}")
            if segment.uri.startswith(("/", "http:", "https:")) or "id=" not in segment.uri:
                self.problems.append(f"segment URI {segment.uri!r} not relative with the selector")
            self.durations[seq] = float(segment.duration)
            if segment.discontinuity and seq not in {d for _, d in self.discontinuities}:
                self.discontinuities.append((time.monotonic(), seq))

    def start(self, every: float = 1.0) -> None:
        """Poll the media playlist in the background, as a player does."""

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    self.poll()
                except Exception as exc:  # a failed poll is a finding, not the end of the check
                    self.problems.append(f"poll: {type(exc).__name__}: {exc}")

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=70)

    @property
    def last_sequence(self) -> int:
        return max(self.listed) if self.listed else -1


class FfmpegPlayer:
    """ffmpeg as an HLS player of the VIP: decodes ``seconds`` of media (``-f null``, every
    error it logs counts) and records a copy of the same session (``-c copy -f mpegts``) for
    ffprobe."""

    def __init__(self, url: str, seconds: float, record: Path) -> None:
        self.url = url
        self.seconds = seconds
        self.record = record
        self.started = time.monotonic()
        self.wall = 0.0
        self.proc = subprocess.Popen(
            [
                tool("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error",
                # an edge that stops answering: an error after 20 s, not a hang
                "-rw_timeout", "20000000",
                "-i", url,
                "-t", str(seconds), "-f", "null", "-",
                "-t", str(seconds), "-c", "copy", "-f", "mpegts", "-y", str(record),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self) -> tuple[int, list[str]]:
        """Its exit code and the lines it logged at level error."""
        try:
            _, err = self.proc.communicate(timeout=self.seconds * 3 + 120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            err += f"\n(killed: still running after {self.seconds * 3 + 120:.0f} s)"
        self.wall = time.monotonic() - self.started
        return self.proc.returncode, [ln for ln in err.splitlines() if ln.strip()]


class FfmpegTsPlayer:
    """ffmpeg as a TS player of the VIP, reconnects off (its default; said here): it records the
    stream (``-c copy``) until stopped, and exits by itself when the connection ends or the
    stream is silent for 20 s: still running means it kept its connection."""

    def __init__(self, url: str, record: Path) -> None:
        self.record = record
        self.proc = subprocess.Popen(
            [
                tool("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error",
                "-reconnect", "0", "-rw_timeout", "20000000",
                "-i", url, "-c", "copy", "-f", "mpegts", "-y", str(record),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> list[str]:
        """Stop it (ffmpeg ends the recording on SIGINT); the lines it logged at level error."""
        if self.running():
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return [ln for ln in err.splitlines() if ln.strip()]


def one_source(sessions: list[dict[str, object]]) -> bool:
    """A channel's engine sessions: one, or two on different engines (the second is its warm
    standby, docs/failover.md)."""
    engines = {s.get("container") for s in sessions}
    return len(sessions) in (1, 2) and len(engines) == len(sessions)


def video_packets(path: Path) -> tuple[float, int, int]:
    """(seconds of video, video packets, DTS steps that do not go forward) of a recording."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0.0, 0, 0
    probe = [tool("ffprobe"), "-v", "error", "-select_streams", "v:0"]
    rate = run([*probe, "-show_entries", "stream=r_frame_rate", "-of", "csv=p=0", str(path)])
    # the first "num/den" line (a TS's program entries print empty lines around it)
    num, den = next((ln.split("/") for ln in rate.split() if "/" in ln), ("25", "1"))
    fps = int(num) / max(1, int(den))
    out = run([*probe, "-show_entries", "packet=dts", "-of", "csv=p=0", str(path)], 120)
    values = [line.split(",")[0].strip() for line in out.splitlines() if line.strip()]
    dts = [int(v) if v.lstrip("-").isdigit() else None for v in values]
    backwards = sum(1 for a, b in itertools.pairwise(dts) if a is None or b is None or b <= a)
    return len(dts) / fps, len(dts), backwards


# --- what players read: the playlist, the guide, the HDHomeRun files; VLC --------------------


def read_playlist(
    text: str, guide_url: str, vip: str, problems: list[str]
) -> tuple[list[Any], set[str]]:
    """The playlist's channels (parsed by ipytv, a parser nobody here wrote) and their tvg-ids;
    every entry must carry what media servers read and a stream URL on the VIP."""
    try:
        from ipytv import playlist as ipytv_playlist  # dev extra, like m3u8
    except ImportError as exc:
        raise RuntimeError(
            "the ipytv package is missing: run this with the checkout's .venv python"
        ) from exc
    parsed = ipytv_playlist.loads(text)
    header = parsed.get_attributes()
    if header.get("url-tvg") != guide_url or header.get("x-tvg-url") != guide_url:
        problems.append(f"#EXTM3U names the guide {header}, not {guide_url}")
    channels = [parsed.get_channel(i) for i in range(parsed.length())]
    if not channels:
        problems.append("a playlist without channels")
    for ch in channels:
        attrs = ch.attributes
        missing = {"tvg-id", "tvg-name", "tvg-logo", "group-title", "tvg-chno"} - set(attrs)
        if missing:
            problems.append(f"{ch.name}: no {sorted(missing)}")
        if not attrs.get("tvg-logo", "").startswith(("http://", "https://")):
            problems.append(f"{ch.name}: logo {attrs.get('tvg-logo')!r}")
        if not ch.url.startswith(f"http://{vip}/ace/getstream?"):
            problems.append(f"{ch.name}: stream URL {ch.url!r} is not on the VIP")
    return channels, {ch.attributes.get("tvg-id", "") for ch in channels} - {""}


def read_guide(url: str, tvg_ids: set[str], problems: list[str]) -> int:
    """The guide's programmes: well-formed, valid against the XMLTV DTD, and only for the
    playlist's channels (central filters it), with a programme on air now."""
    from lxml import etree  # a main dependency of acefleet

    status, _, body = fetch(url, 30)
    if status != 200:
        problems.append(f"{url}: HTTP {status}")
        return 0
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        tv = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        problems.append(f"the guide is not well-formed: {exc}")
        return 0
    if XMLTV_DTD.is_file():
        dtd = etree.DTD(str(XMLTV_DTD))
        if not dtd.validate(tv):
            problems.append(f"XMLTV DTD: {dtd.error_log.filter_from_errors()[:2]}")
    else:
        problems.append(f"{XMLTV_DTD} is missing: run scripts/bootstrap.sh (libxmltv-perl)")
    listed = {c.get("id") for c in tv.iter("channel")}
    programmes = list(tv.iter("programme"))
    foreign = (listed | {p.get("channel") for p in programmes}) - tvg_ids
    if foreign:
        problems.append(f"the guide lists channels the playlist does not: {sorted(foreign)[:3]}")
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    on_air = [p for p in programmes if p.get("start", "")[:14] <= now < p.get("stop", "")[:14]]
    if not programmes or not on_air:
        problems.append(f"{len(programmes)} programmes, {len(on_air)} on air now")
    return len(programmes)


def read_hdhomerun(base: str, channels: list[Any], problems: list[str]) -> int:
    """discover.json, lineup.json and lineup_status.json with the fields media servers read;
    the lineup is the playlist. Returns the announced TunerCount."""
    found: dict[str, bytes] = {}
    for name in ("discover.json", "lineup.json", "lineup_status.json", "device.xml"):
        status, _, body = fetch(f"{base}/{name}", 30)
        if status != 200:
            problems.append(f"{name}: HTTP {status}")
            return 0
        found[name] = body
    discover: dict[str, Any] = json.loads(found["discover.json"])
    lineup: list[dict[str, Any]] = json.loads(found["lineup.json"])
    lineup_status: dict[str, Any] = json.loads(found["lineup_status.json"])
    if set(discover) < HDHOMERUN_FIELDS:
        problems.append(f"discover.json lacks {sorted(HDHOMERUN_FIELDS - set(discover))}")
    if discover.get("BaseURL") != base or discover.get("LineupURL") != f"{base}/lineup.json":
        problems.append(f"discover.json URLs {discover.get('BaseURL')} {discover.get('LineupURL')}")
    if not re.fullmatch(r"[0-9A-F]{8}", str(discover.get("DeviceID", "")), re.I):
        problems.append(f"DeviceID {discover.get('DeviceID')!r}")
    numbers = sorted(str(e.get("GuideNumber")) for e in lineup)
    if numbers != sorted(ch.attributes.get("tvg-chno", "") for ch in channels):
        problems.append(f"lineup numbers {numbers} are not the playlist's")
    if not all({"GuideNumber", "GuideName", "URL"} <= set(e) for e in lineup):
        problems.append("a lineup entry without GuideNumber, GuideName or URL")
    if lineup_status.get("ScanPossible") != 1 or lineup_status.get("Source") != "Cable":
        problems.append(f"lineup_status.json {lineup_status}")
    if b"<URLBase>" not in found["device.xml"]:
        problems.append("device.xml has no URLBase")
    tuners = int(discover.get("TunerCount", 0))
    if tuners < 1:
        problems.append(f"TunerCount {tuners}")
    return tuners


def vlc_record(url: str, work: Path) -> tuple[int, float, str]:
    """VLC (cvlc, headless) opens ``url`` and records what it plays for VLC_SECONDS (the first
    entry only: --play-and-stop, or it would go on through the playlist, rewriting the recording
    for each entry); VLC refuses
    to run as root, so it runs as nobody in a world-writable ``work`` (its HOME, the recording).
    (rc, seconds ffprobe decodes from the recording, VLC's log tail)."""
    os.chmod(work, 0o777)
    out = work / "out.ts"
    argv = [
        tool("cvlc"), "-I", "dummy", "--no-stats", "--play-and-stop", "--play-and-exit",
        f"--run-time={VLC_SECONDS}", "--sout", f"#std{{access=file,mux=ts,dst={out}}}", url,
    ]  # fmt: skip
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    env = {"HOME": str(work), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=VLC_SECONDS + 90, env=env, check=False
        )
        rc, log = done.returncode, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, log = -1, f"timed out: {exc.stderr!r}"
    if not out.is_file() or out.stat().st_size == 0:
        return rc, 0.0, log
    probe = run(
        [tool("ffprobe"), "-v", "error", "-show_entries", "format=duration", "-of", "json",
         str(out)], 60,
    )  # fmt: skip
    try:
        seconds = float(json.loads(probe)["format"]["duration"])
    except (ValueError, KeyError):
        seconds = 0.0
    return rc, seconds, log


def _first(lines: list[str]) -> str:
    """The first few distinct messages of ffmpeg's error lines (without the context address)."""
    distinct = list(dict.fromkeys(re.sub(r" @ 0x[0-9a-f]+", "", ln)[:160] for ln in lines))
    return f" ({'; '.join(distinct[:3])})" if lines else ""


def check_route(vip: str) -> None:
    route = run(["ip", "route", "get", vip])
    if " dev br-" not in route and " dev docker0" not in route:
        sys.exit(f"refusing to send traffic: {vip} does not route to a local bridge ({route!r})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vip", required=True)
    parser.add_argument("--prefix", required=True, help="container name prefix, e.g. acefleet-m-")
    parser.add_argument("--server-prefix", default="", help="prefix of HAProxy's server names")
    parser.add_argument("--agent-key", required=True)
    parser.add_argument("--checks", default=",".join(ALL_CHECKS))
    parser.add_argument(
        "--hls-seconds", type=float, default=20.0, help="media seconds the hls check plays"
    )
    parser.add_argument(
        "--playlist-path",
        default="/playlist.m3u",
        help="the playlist the playlist check reads (token mode: /p/<secret>/playlist.m3u)",
    )
    parser.add_argument(
        "--inventory", default="", help="the fleet's inventory (zero_drop runs rolling_update.yml)"
    )
    parser.add_argument(
        "--control-vip",
        default="",
        help="the control hosts' VIP (default: the VIP's address with last octet .251)",
    )
    parser.add_argument(
        "--operator-key",
        default="",
        help=f"central's operator API key (default: the lab's, from {LAB_VAULT.name})",
    )
    parser.add_argument(
        "--tunnels",
        default="t1,t2",
        help="the VPN tunnels each edge runs (the tunnels check; the lab's: t1,t2)",
    )
    parser.add_argument("--report", help="write the results as JSON here")
    args = parser.parse_args()
    check_route(args.vip)
    fleet = Fleet(args)
    if not fleet.wait_vip(60):
        print("FAIL no lb host holds the VIP")
        return 1
    failed = 0
    for name in args.checks.split(","):
        check: Callable[[], tuple[bool, str]] = getattr(fleet, f"check_{name}")
        started = time.monotonic()
        try:
            ok, detail = check()
        except Exception as exc:  # a broken check must not hide the others
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        failed += not ok
        took = time.monotonic() - started
        print(f"{'PASS' if ok else 'FAIL'} {name:9} {detail} [{took:.1f} s]", flush=True)
        fleet.results[name] = {"ok": ok, "detail": detail, "seconds": round(took, 1)}
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(fleet.results, fh, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
