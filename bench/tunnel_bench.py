"""What a VPN tunnel going down, or rotated, costs the viewers of a channel it carries.

    .venv/bin/python bench/tunnel_bench.py                     # --runs 2 --viewers 2
    .venv/bin/python bench/tunnel_bench.py --events down,rotation  # without "dies"
    .venv/bin/python bench/tunnel_bench.py --runs 3 --viewers 4 --watch 10

One fleet for every run (tests/fleet/tunnel_fleet.py): central, an agent with two Gluetun
stand-in tunnels of two engine-sim engines each (realistic timing: 0.5-s start call, 8-s
prebuffer, the initial burst) in the real dockerd, one proxy with its defaults (no standby until
a move asks for one). Per run, each event of ``--events`` in turn, each on a fresh channel with
``--viewers`` viewers, once they have watched it for ``--steady`` s:

- down: the stand-in carrying the channel's engine is told to stop its VPN
  (``PUT /v1/vpn/status {"status": "stopped"}``); it is started again after the event;
- rotation: an operator's ``POST /v1/hosts/{host}/tunnels/{name}/rotate`` on central for the
  tunnel carrying the channel;
- dies: as down, and once the move's standby is placed and prebuffering, the old engine is
  killed (``docker kill``): a real Gluetun's engines lose their peers with the VPN, the stand-in's
  do not, so this is the worst a real tunnel loss can do. The proxy waits for that standby.

Printed per event: the move time, from the event to the proxy's ``standby_promoted`` (its log)
and to the new upstream in its ``/ace/status`` (polled every 0.1 s); the longest time any viewer
went without a byte, and without a frame (a video PES start), from the event to ``--watch`` s
after the move (and, to compare, without a byte over the ``--steady`` s before the event), and
one viewer's silences over 0.25 s with when they began after the event; the proxy's own gap
(last old byte → first new one, from that log line); connections the proxy closed and
reconnects (a viewer whose connection ends connects again, as a player would); the proxy's moved
promotions and failovers over the event.

Viewers run in this process (asyncio Protocols that note when each video PES starts). Logs stay
in /tmp/acefleet-tunnel-bench.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet.harness import docker as fleet_docker  # noqa: E402
from tests.fleet.tunnel_fleet import (  # noqa: E402
    ENGINES_PER_TUNNEL,
    TunnelFleet,
    open_tunnel_fleet,
)

LOGS = Path("/tmp/acefleet-tunnel-bench")
VIDEO_PID = 0x100  # the simulator's video PID
MOVED = ("acefleet_proxy_standby_promotions_total", 'reason="moved"')
FAILOVERS = "acefleet_proxy_failovers_total"


# --- viewers that note frames and reconnect ---------------------------------------------------
@dataclass(eq=False)
class FrameViewer(asyncio.Protocol):
    """One connection: notes when bytes and video PES starts (frames) arrive."""

    watcher: Watcher
    head: bytes = b""
    body: bool = False
    rest: bytes = b""

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data, self.body = self.head[end + 4 :], True
        if not data:
            return
        self.watcher.byte_times.append(now)
        buf = self.rest + data
        whole = len(buf) - len(buf) % 188
        for at in range(0, whole, 188):
            pid = ((buf[at + 1] & 0x1F) << 8) | buf[at + 2]
            if pid == VIDEO_PID and buf[at + 1] & 0x40:
                self.watcher.frame_times.append(now)
        self.rest = buf[whole:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.watcher.lost.set()


@dataclass(eq=False)
class Watcher:
    """A player on ``port``/``target``: connects again whenever its connection ends."""

    port: int
    target: str
    byte_times: list[float] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    closed: int = 0  # connections that ended while watching
    reconnects: int = 0
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    transport: asyncio.BaseTransport | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.lost.clear()
            transport, _ = await loop.create_connection(
                lambda: FrameViewer(self), "127.0.0.1", self.port
            )
            self.transport = transport
            transport.write(f"GET {self.target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            await self.lost.wait()
            self.closed += 1
            self.reconnects += 1
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.close()


def longest_gap(times: list[float], since: float, until: float) -> float:
    """The longest interval between consecutive events that ends in [since, until], counting a
    silence still running at ``until``."""
    inside = [b - a for a, b in itertools.pairwise(times) if since <= b <= until]
    tail = until - times[-1] if times else until - since
    return max([*inside, tail], default=0.0)


# --- one event ----------------------------------------------------------------------------------
async def until(what: str, fn: Any, within: float, every: float = 0.2) -> Any:
    end = time.monotonic() + within
    while not (got := await asyncio.to_thread(fn)):
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(every)
    return got


def channel(fleet: TunnelFleet, key: str) -> dict[str, Any]:
    for c in fleet.proxy_status(0)["channels"]:
        if c["key"] == key:
            return dict(c)
    return {}


def promotion(fleet: TunnelFleet, key: str) -> dict[str, Any]:
    """The proxy's ``standby_promoted`` log line of channel ``key`` ({} while there is none)."""
    proxy = fleet.only.proxy
    assert proxy is not None
    for line in proxy.log_path.read_text().splitlines():
        if '"standby_promoted"' in line:
            event: dict[str, Any] = json.loads(line)
            if event.get("channel") == key:
                return event
    return {}


def counters(fleet: TunnelFleet) -> tuple[float, float]:
    """The proxy's moved promotions and failovers so far."""
    return fleet.proxy_metric(0, *MOVED), fleet.proxy_metric(0, FAILOVERS)


def before(fleet: TunnelFleet, key: str) -> tuple[str, str, dict[str, Any], float, float]:
    """Channel ``key``'s upstream, its tunnel container, its engine, and :func:`counters`."""
    old = str(channel(fleet, key)["upstream"])
    return old, fleet.tunnel_container_of(old), fleet.engine_at(old), *counters(fleet)


def starting_standby(fleet: TunnelFleet, key: str) -> bool:
    return (channel(fleet, key).get("standby") or {}).get("state") == "starting"


async def one_event(
    fleet: TunnelFleet, kind: str, name: str, viewers_n: int, steady_s: float, watch_s: float
) -> dict[str, Any]:
    key = f"id:{name}"
    watchers = [
        Watcher(fleet.only.proxy_port, f"/ace/getstream?id={name}") for _ in range(viewers_n)
    ]
    for w in watchers:
        w.task = asyncio.create_task(w.run())
    try:
        await until("frames for every viewer", lambda: all(w.frame_times for w in watchers), 60)
        await asyncio.sleep(steady_s)  # past the engine's initial burst
        # every look-up off the loop: a blocked loop would show as the viewers' silence
        old, container, engine, moved0, failovers0 = await asyncio.to_thread(before, fleet, key)
        tunnel = str(engine["tunnel"])
        closed_before = [w.closed for w in watchers]

        event_wall, event_at = time.time(), time.monotonic()
        if kind in ("down", "dies"):
            await asyncio.to_thread(lambda: fleet.standin(container).set_vpn(False))
        if kind == "dies":
            await until("the move's standby starting", lambda: starting_standby(fleet, key), 30)
            await asyncio.to_thread(fleet_docker, "kill", engine["id"])
        if kind == "rotation":
            r = await asyncio.to_thread(fleet.rotate, tunnel)
            if r.status_code != 202:
                raise SystemExit(f"rotation refused: {r.status_code} {r.text}")

        def new_upstream() -> bool:
            up = channel(fleet, key).get("upstream")
            return bool(up) and up != old

        await until("the channel's new upstream", new_upstream, within=120, every=0.1)
        upstream_after = time.monotonic() - event_at
        promoted = await until("the promotion in the proxy log", lambda: promotion(fleet, key), 10)
        promoted_at = datetime.fromisoformat(promoted["timestamp"]).timestamp()
        await asyncio.sleep(watch_s)
        end = time.monotonic()
        new = str((await asyncio.to_thread(channel, fleet, key))["upstream"])
        moved_to = await asyncio.to_thread(
            lambda: f"{fleet.engine_at(new).get('tunnel')} ({fleet.tunnel_container_of(new)})"
        )
        moved1, failovers1 = await asyncio.to_thread(counters, fleet)
        return {
            "kind": kind,
            "tunnel": f"{tunnel} ({container})",
            "moved_to": moved_to,
            "move_s": promoted_at - event_wall,
            "upstream_s": upstream_after,
            "byte_gap": max(longest_gap(w.byte_times, event_at, end) for w in watchers),
            "frame_gap": max(longest_gap(w.frame_times, event_at, end) for w in watchers),
            "steady_gap": max(
                longest_gap(w.byte_times, event_at - steady_s, event_at) for w in watchers
            ),
            "silences": [
                (round(a - event_at, 2), round(b - a, 2))
                for a, b in itertools.pairwise(watchers[0].byte_times)
                if b >= event_at and b - a > 0.25
            ],
            "proxy_gap": float(promoted["gap_s"]),
            "closed": sum(w.closed - b for w, b in zip(watchers, closed_before, strict=True)),
            "reconnects": sum(w.reconnects for w in watchers),
            "moved": moved1 - moved0,
            "failovers": failovers1 - failovers0,
            "container": container,
        }
    finally:
        for w in watchers:
            w.stop()


async def settle(fleet: TunnelFleet, result: dict[str, Any]) -> None:
    """Both tunnels healthy with their engines again, and no rotation left over."""
    if result["kind"] in ("down", "dies"):
        await asyncio.to_thread(lambda: fleet.standin(result["container"]).set_vpn(True))
    await until(
        "no retiring tunnel generation",
        lambda: not [t for t in fleet.tunnels() if t["state"] == "retiring"],
        within=120,
        every=0.5,
    )
    await asyncio.to_thread(fleet.wait_tunnel_engines, ENGINES_PER_TUNNEL)


def summary(kind: str, runs: list[dict[str, Any]]) -> None:
    def col(key: str) -> str:
        values = [r[key] for r in runs]
        if isinstance(values[0], float):
            listed = " ".join(f"{v:.2f}" for v in values)
            return f"median {statistics.median(values):.2f}, max {max(values):.2f} ({listed})"
        return f"{values}"

    title = {
        "down": "tunnel down (VPN stopped)",
        "rotation": "rotation through central",
        "dies": "tunnel down, and the old engine killed while the standby prebuffers",
    }[kind]
    print(f"\n== {title} ({len(runs)} runs)")
    print(f"  from tunnel → to: {col('tunnel')} → {col('moved_to')}")
    print(f"  move: event → proxy's promotion  (s): {col('move_s')}")
    print(f"  move: event → new upstream seen  (s): {col('upstream_s')}")
    print(f"  longest without a byte, any viewer  (s): {col('byte_gap')}")
    print(f"  longest without a frame, any viewer (s): {col('frame_gap')}")
    print(f"  longest without a byte before the event (steady) (s): {col('steady_gap')}")
    print(f"  silences > 0.25 s of one viewer (start after the event, length): {col('silences')}")
    print(f"  proxy's gap at the splice (s): {col('proxy_gap')}")
    print(f"  connections closed: {col('closed')}   reconnects: {col('reconnects')}")
    print(f"  moved promotions: {col('moved')}   failovers: {col('failovers')}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--viewers", type=int, default=2)
    ap.add_argument("--steady", type=float, default=4.0, help="seconds watched before the event")
    ap.add_argument("--watch", type=float, default=6.0, help="seconds watched after the move")
    ap.add_argument("--events", default="down,rotation,dies", help="of down, rotation, dies")
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()}")
    shutil.rmtree(LOGS, ignore_errors=True)
    fleet = await asyncio.to_thread(open_tunnel_fleet, LOGS)
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.events.split(",")}
    try:
        for run in range(args.runs):
            for kind in results:
                result = await one_event(
                    fleet, kind, f"tb{kind}{run}", args.viewers, args.steady, args.watch
                )
                results[kind].append(result)
                await settle(fleet, result)
    finally:
        await asyncio.to_thread(fleet.close)
    for kind, runs in results.items():
        summary(kind, runs)
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
