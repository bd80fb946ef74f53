#!/usr/bin/env python3
"""Fleet-level checks of the lab topology, from the machine (run by Molecule's verify.yml).

Each check prints one line with what it measured; the script exits 1 when any check fails.
Traffic goes only to the VIP (after checking it routes to a local bridge) and, through
``docker exec``, to the hosts' own loopback.

    verify_fleet.py --vip 172.30.78.250 --prefix acefleet-m- --agent-key KEY [--checks a,b]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The players are the test suite's viewer (standard library only), from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.viewers import PACKET_SIZE, Viewer, ViewerThread  # noqa: E402

ALL_CHECKS = ("stream", "sharing", "edges", "drain", "reload", "failover")


def run(args: list[str], timeout: float = 30) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    return done.stdout


def dexec(container: str, cmd: str, timeout: float = 30) -> str:
    return run(["docker", "exec", container, "sh", "-c", cmd], timeout)


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

    def watch(self, channel: str, reconnect: bool = False) -> Viewer:
        """A player on the VIP; with ``reconnect`` it connects again after a close or 3 s of
        silence (a connection whose lb host went away gets no reset, it just stops)."""
        url = f"http://{self.vip}/ace/getstream?id={channel}"
        return self.players.start(Viewer(url, reconnect=reconnect, stall_timeout=3.0))

    def wait_playing(self, viewer: Viewer) -> bool:
        return self.players.wait_playing(viewer, timeout=45)

    def stop(self, viewer: Viewer) -> Viewer:
        return self.players.stop(viewer)

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

    # --- checks --------------------------------------------------------------------------------

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
