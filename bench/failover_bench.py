"""Failover gap with and without a warm standby, with the simulator's realistic timing.

    .venv/bin/python bench/failover_bench.py                   # both modes, 2 runs each
    .venv/bin/python bench/failover_bench.py --runs 3 --viewers 4 --mode standby

Per run: three simulators (realistic timing: 0.5-s start call, 8-s prebuffer, the initial
burst; no 10-s engine boot) and one proxy with the three as its static engine list; viewers
watch one channel; once the channel is steady (and, in standby mode, its standby live) the
primary's simulator is killed with SIGKILL (what ``docker kill`` does to an engine). Printed:

- the longest time any viewer went without a byte, and without a frame (a video PES start),
  from the kill on; null packets of a gap fill are bytes but not frames;
- reconnects (a viewer whose connection ended);
- the proxy's own measure (acefleet_proxy_failover_gap_seconds: last old byte to first new one);
- what the standby costs while nothing fails: engine sessions of the channel (all simulators'
  ``/_sim/sessions``), and CPU seconds of the proxy and of the simulators over ``--steady`` s.

Viewers run in this process (asyncio Protocols that note when each video PES starts); the CPU
figures come from the processes' own /proc entries.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import procs  # noqa: E402

LOGS = Path("/tmp/acefleet-failover-bench")
VIDEO_PID = 0x100  # the simulator's video PID
CONTENT = "fa11fa11fa11fa11fa11fa11fa11fa11fa11fa11"
SIM_ARGS = ["--timing", "realistic", "--startup-delay", "0", "--media", "synthetic"]


def get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return json.loads(resp.read())


def metric(url: str, name: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


# --- viewers that note frames ---------------------------------------------------------------
@dataclass(eq=False)
class FrameViewer(asyncio.Protocol):
    """Reads one stream; notes when bytes and video PES starts (frames) arrive."""

    head: bytes = b""
    body: bool = False
    rest: bytes = b""
    byte_times: list[float] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    nulls: int = 0
    closed: bool = False

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
        self.byte_times.append(now)
        buf = self.rest + data
        whole = len(buf) - len(buf) % 188
        for at in range(0, whole, 188):
            pid = ((buf[at + 1] & 0x1F) << 8) | buf[at + 2]
            if pid == VIDEO_PID and buf[at + 1] & 0x40:
                self.frame_times.append(now)
            elif pid == 0x1FFF:
                self.nulls += 1
        self.rest = buf[whole:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


def longest_gap(times: list[float], since: float) -> float:
    """The longest interval between consecutive events that ends after ``since``."""
    gaps = [b - a for a, b in itertools.pairwise(times) if b >= since]
    return max(gaps, default=0.0)


async def open_viewer(port: int) -> tuple[asyncio.Transport, FrameViewer]:
    loop = asyncio.get_running_loop()
    transport, viewer = await loop.create_connection(FrameViewer, "127.0.0.1", port)
    target = f"/ace/getstream?infohash={CONTENT}"
    transport.write(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    return transport, viewer


# --- one run --------------------------------------------------------------------------------
def sessions_of_channel(sims: list[procs.Service]) -> int:
    count = 0
    for sim in sims:
        if sim.alive():
            count += len(get_json(sim.url + "/_sim/sessions")["sessions"])
    return count


async def until(what: str, fn: Any, within: float) -> None:
    end = time.monotonic() + within
    while not await asyncio.to_thread(fn):
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def run_once(
    standby: bool, viewers_n: int, steady_s: float, watch_s: float
) -> dict[str, Any]:
    sims = []
    for _ in range(3):
        port = procs.free_port()
        sims.append(
            procs.start(
                "acefleet-engine-sim",
                ["--http-port", str(port), "--host", "127.0.0.1", *SIM_ARGS],
                port=port,
                ready_path="/webui/api/service?method=get_version",
                log_dir=LOGS,
            )
        )
    port = procs.free_port()
    proxy = procs.start(
        "acefleet-proxy",
        ["--host", "127.0.0.1", "--port", str(port), "--log-format", "json",
         "--engines", ",".join(f"127.0.0.1:{s.port}" for s in sims)],
        port=port,
        ready_path="/readyz",
        log_dir=LOGS,
        env={
            "ACEFLEET_PROXY_STANDBY_MIN_VIEWERS": "2" if standby else "0",
            "ACEFLEET_PROXY_CLIENT_BURST": "1000",
            "ACEFLEET_PROXY_CLIENT_RATE": "1000",
        },
    )  # fmt: skip
    conns: list[tuple[asyncio.Transport, FrameViewer]] = []
    try:
        conns = [await open_viewer(port) for _ in range(viewers_n)]
        viewers = [v for _, v in conns]
        await until("first bytes", lambda: all(v.frame_times for v in viewers), 60)

        def channel() -> dict[str, Any]:
            chans: list[dict[str, Any]] = get_json(proxy.url + "/ace/status")["channels"]
            return chans[0]

        if standby:
            await until(
                "a live standby",
                lambda: (channel().get("standby") or {}).get("state") == "live",
                60,
            )
        # past the engines' initial burst, then the steady cost of what runs
        await asyncio.sleep(4)
        pids = [proxy.proc.pid] + [s.proc.pid for s in sims]
        cpu0 = [procs.cpu_seconds(p) for p in pids]
        await asyncio.sleep(steady_s)
        cpu1 = [procs.cpu_seconds(p) for p in pids]
        sessions = sessions_of_channel(sims)
        primary = channel()["upstream"]
        victim = next(s for s in sims if f"127.0.0.1:{s.port}" == primary)
        killed_at = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        await asyncio.sleep(watch_s)
        return {
            "byte_gap": max(longest_gap(v.byte_times, killed_at) for v in viewers),
            "frame_gap": max(longest_gap(v.frame_times, killed_at) for v in viewers),
            "reconnects": sum(v.closed for v in viewers),
            "silences": [
                (round(a - killed_at, 2), round(b - a, 2))
                for a, b in itertools.pairwise(viewers[0].byte_times)
                if b >= killed_at and b - a > 0.5
            ],
            "nulls": max(v.nulls for v in viewers),
            "proxy_gap": metric(proxy.url, "acefleet_proxy_failover_gap_seconds_sum"),
            "sessions": sessions,
            "proxy_cpu": (cpu1[0] - cpu0[0]) / steady_s,
            "engines_cpu": sum(b - a for a, b in zip(cpu0[1:], cpu1[1:], strict=True)) / steady_s,
        }
    finally:
        for transport, _ in conns:
            transport.close()
        proxy.stop()
        for sim in sims:
            sim.stop()


def summary(name: str, runs: list[dict[str, Any]]) -> None:
    def col(key: str) -> str:
        values = [r[key] for r in runs]
        if isinstance(values[0], float):
            return f"median {statistics.median(values):.3f}, max {max(values):.3f}"
        return f"{values}"

    print(f"\n== {name} ({len(runs)} runs)")
    print(f"  longest without a byte  (s): {col('byte_gap')}")
    print(f"  longest without a frame (s): {col('frame_gap')}")
    print(f"  proxy's failover gap    (s): {col('proxy_gap')}")
    print(f"  silences > 0.5 s of one viewer (start after the kill, length): {col('silences')}")
    print(f"  reconnects: {col('reconnects')}   null packets per viewer: {col('nulls')}")
    print(f"  engine sessions of the channel: {col('sessions')}")
    print(f"  proxy CPU while steady (share of a core): {col('proxy_cpu')}")
    print(f"  simulators' CPU while steady (share of a core): {col('engines_cpu')}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["standby", "none", "both"], default="both")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--viewers", type=int, default=4)
    ap.add_argument("--steady", type=float, default=10.0, help="seconds of steady CPU measure")
    ap.add_argument("--watch", type=float, default=15.0, help="seconds watched after the kill")
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()}")
    modes = ["standby", "none"] if args.mode == "both" else [args.mode]
    for mode in modes:
        runs = [
            await run_once(mode == "standby", args.viewers, args.steady, args.watch)
            for _ in range(args.runs)
        ]
        summary("with a warm standby" if mode == "standby" else "without a standby", runs)
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
