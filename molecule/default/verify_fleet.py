#!/usr/bin/env python3
"""Fleet-level checks of the lab topology, from the machine (run by Molecule's verify.yml).

Each check prints one line with what it measured; the script exits 1 when any check fails.
Traffic goes only to the VIP (after checking it routes to a local bridge) and, through
``docker exec``, to the hosts' own loopback.

    verify_fleet.py --vip 172.30.78.250 --prefix acefleet-m- --agent-key KEY [--checks a,b]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TS_PACKET = 188
ALL_CHECKS = ("stream", "sharing", "edges", "drain", "reload", "failover")


def run(args: list[str], timeout: float = 30) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    return done.stdout


def dexec(container: str, cmd: str, timeout: float = 30) -> str:
    return run(["docker", "exec", container, "sh", "-c", cmd], timeout)


@dataclass
class Viewer:
    """One player on the VIP: reads a channel, and (optionally) reconnects like a player would."""

    vip: str
    channel: str
    reconnect: bool = False
    stall_timeout: float = 3.0
    port: int = 80
    edge: str = ""
    status: int = 0
    bytes: int = 0
    ts_valid: bool = True
    connections: int = 0
    gaps: list[float] = field(default_factory=list)  # seconds without bytes, per reconnect
    max_stall: float = 0.0  # longest pause between two reads of one connection
    last_byte: float = 0.0
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def wait_playing(self, timeout: float = 45) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread and self._thread.is_alive():
            if self.bytes:
                return True
            time.sleep(0.1)
        return self.bytes > 0

    def start(self) -> Viewer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Viewer:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        lost_at = 0.0
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self._read_once(lost_at)
            except (OSError, http.client.HTTPException) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
            if not self.reconnect:
                return
            lost_at = lost_at or self.last_byte or time.monotonic()
            self._stop.wait(0.2)

    def _read_once(self, lost_at: float) -> None:
        # Connect quickly or try again (the first SYN after a VIP move can be lost while the
        # bridge learns the new MAC address), then wait patiently for the first byte: a channel
        # whose viewers were all gone for a moment is opened again (claim, engine prebuffer).
        conn = http.client.HTTPConnection(self.vip, self.port, timeout=self.stall_timeout + 2)
        conn.connect()
        # Keep the socket: getresponse() drops conn.sock for a response read until close.
        sock = conn.sock
        sock.settimeout(30)
        try:
            conn.request("GET", f"/ace/getstream?id={self.channel}")
            resp = conn.getresponse()
            self.status, self.edge = resp.status, resp.getheader("X-Acefleet-Edge", "")
            self.connections += 1
            if resp.status != 200:
                return
            if self.reconnect:
                # Like a player: a stream silent this long is dead (a connection whose lb host
                # went away gets no reset, it just stops), so reconnect.
                sock.settimeout(self.stall_timeout)
            pending = b""
            prev = time.monotonic()
            while not self._stop.is_set():
                chunk = resp.read1(65536)
                if not chunk:
                    return
                now = time.monotonic()
                if lost_at:  # first bytes after a reconnect
                    self.gaps.append(now - lost_at)
                    lost_at = 0.0
                elif self.bytes:
                    self.max_stall = max(self.max_stall, now - prev)
                prev = self.last_byte = now
                self.bytes += len(chunk)
                pending += chunk
                whole = len(pending) - len(pending) % TS_PACKET
                if any(pending[i] != 0x47 for i in range(0, whole, TS_PACKET)):
                    self.ts_valid = False
                pending = pending[whole:]
        finally:
            conn.close()


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

    def engine_sessions(self) -> list[dict[str, object]]:
        """Every session on every engine of every edge (the simulator's /_sim/sessions)."""
        sessions: list[dict[str, object]] = []
        for edge in self.edges:
            fmt = '{{ .Label "acefleet.http-port" }}'
            ports = run(
                ["docker", "ps", "--filter", f"label=acefleet.host={edge}", "--format", fmt]
            )
            for port in ports.split():
                out = dexec(edge, f"curl -s --max-time 3 http://127.0.0.1:{port}/_sim/sessions")
                try:
                    sessions += [dict(s, edge=edge) for s in json.loads(out)["sessions"]]
                except (ValueError, KeyError):
                    continue
        return sessions

    def haproxy(self, lb: str, command: str) -> str:
        return dexec(lb, f"echo '{command}' | socat - /run/haproxy/admin.sock", 30)

    def served_by(self, channels: list[str]) -> dict[str, str]:
        viewers = [Viewer(self.vip, ch).start() for ch in channels]
        for v in viewers:
            v.wait_playing()
        for v in viewers:
            v.stop()
        self.failures = [f"{v.channel}: HTTP {v.status} {v.error}" for v in viewers if not v.bytes]
        return {v.channel: v.edge for v in viewers if v.status == 200 and v.bytes}

    def agent(self, edge: str, method: str, path: str) -> str:
        auth = f"-H 'Authorization: Bearer {self.agent_key}'"
        return dexec(edge, f"curl -s -X {method} {auth} http://127.0.0.1:8100{path}", 30)

    # --- checks --------------------------------------------------------------------------------

    def check_stream(self) -> tuple[bool, str]:
        v = Viewer(self.vip, "verify-stream").start()
        v.wait_playing()
        time.sleep(4)
        v.stop()
        ok = v.status == 200 and v.bytes > 100 * TS_PACKET and v.ts_valid
        return (
            ok,
            f"HTTP {v.status} via {v.edge or '?'}: {v.bytes} bytes in 4 s, TS sync {v.ts_valid}",
        )

    def check_sharing(self) -> tuple[bool, str]:
        viewers = [Viewer(self.vip, "verify-shared").start() for _ in range(3)]
        for v in viewers:
            v.wait_playing()
        time.sleep(1)
        sessions = [s for s in self.engine_sessions() if s.get("content_id") == "verify-shared"]
        for v in viewers:
            v.stop()
        playing = sum(1 for v in viewers if v.bytes > 0)
        edges = {v.edge for v in viewers}
        ok = playing == 3 and len(sessions) == 1 and len(edges) == 1
        return (
            ok,
            f"3 viewers playing={playing} on edges {sorted(edges)}, "
            f"engine sessions of the channel={len(sessions)}",
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
        live = Viewer(self.vip, on_first[0]).start()
        live.wait_playing()
        before = live.bytes
        self.agent(self.edges[0], "POST", "/v1/drain")
        for lb in self.lbs:
            self.haproxy(lb, f"set server edges/{first} state drain")
        time.sleep(3)
        moved = self.served_by([f"verify-drained-{i}" for i in range(6)])
        during = live.bytes
        time.sleep(2)
        live.stop()
        self.agent(self.edges[0], "DELETE", "/v1/drain")
        for lb in self.lbs:
            self.haproxy(lb, f"set server edges/{first} state ready")
        new_edges = sorted(set(moved.values()))
        kept = live.bytes > during > before and live.connections == 1
        ok = new_edges == [second] and len(moved) == 6 and kept
        return ok, (
            f"new channels while {first} drains served by {new_edges} ({len(moved)}/6); {first}'s "
            f"viewer kept playing: {kept} ({live.bytes - before} bytes during drain, "
            f"longest stall {live.max_stall:.2f} s)"
        )

    def check_reload(self) -> tuple[bool, str]:
        lb = self.vip_holder()
        live = Viewer(self.vip, "verify-reload").start()
        live.wait_playing()
        pid = dexec(lb, "systemctl show -p MainPID --value haproxy").strip()
        dexec(lb, "echo '# verify_fleet: a configuration change' >> /etc/haproxy/haproxy.cfg")
        dexec(lb, "systemctl reload haproxy")
        time.sleep(3)
        before = live.bytes
        time.sleep(2)
        live.stop()
        dexec(
            lb, "sed -i '/^# verify_fleet: /d' /etc/haproxy/haproxy.cfg && systemctl reload haproxy"
        )
        same = dexec(lb, "systemctl show -p MainPID --value haproxy").strip() == pid
        ok = same and live.connections == 1 and live.bytes > before and live.max_stall < 2
        return ok, (
            f"reload on {lb}: master kept (pid {pid}): {same}, stream kept its connection: "
            f"{live.connections == 1}, longest stall {live.max_stall:.2f} s"
        )

    def check_failover(self) -> tuple[bool, str]:
        holder = self.wait_vip()
        if not holder:
            return False, "no lb host holds the VIP"
        other = next(lb for lb in self.lbs if lb != holder)
        live = Viewer(self.vip, "verify-failover", reconnect=True).start()
        live.wait_playing()
        time.sleep(1)
        stopped = time.monotonic()
        run(["docker", "stop", "-t", "10", holder], 60)
        moved_to = self.wait_vip(30)
        vip_move = time.monotonic() - stopped
        deadline = time.monotonic() + 45
        while not live.gaps and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        live.stop()
        run(["docker", "start", holder], 60)
        back = self._wait_lb_back(holder)
        gap = live.gaps[0] if live.gaps else float("inf")
        if not live.gaps:
            return (
                False,
                f"no bytes after {holder} stopped: {live.connections} connections, "
                f"last HTTP {live.status}, last error {live.error!r}",
            )
        ok = moved_to == other and live.gaps != [] and gap < 10
        return ok, (
            f"stopped {holder}: VIP on {moved_to or 'nobody'} after {vip_move:.1f} s; the viewer "
            f"reconnected after a gap of {gap:.2f} s without bytes ({live.connections} "
            f"connections; it reconnects on a close or after {live.stall_timeout:.0f} s of "
            "silence); "
            f"{holder} back and serving: {back}"
        )

    def _wait_lb_back(self, lb: str) -> bool:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if dexec(lb, "systemctl is-active haproxy keepalived", 30).split() == ["active"] * 2:
                return bool(self.wait_vip(10))
            time.sleep(1)
        return False


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
