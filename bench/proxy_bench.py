"""Benchmark of acefleet-proxy against the engine simulator, with real viewer connections.

    .venv/bin/python bench/proxy_bench.py                      # every scenario, once
    .venv/bin/python bench/proxy_bench.py --scenario 1 --runs 3 --seconds 10

Per scenario it prints: aggregate and per-viewer throughput, stalled viewers (>1 s without a
byte while measuring), TTFB p50/p99 (viewers joining a live channel), proxy CPU seconds per GB
sent (utime+stime from /proc), peak RSS, upstream sessions per channel (from the simulator's
/_sim/sessions), and for the throughput scenario the same viewers straight against the simulator
(one session each: an engine allows one reader per session) as the ceiling.

Viewers run in this process on uvloop Protocols that only count bytes (the shared viewer of
tests/support/viewers.py, TS check off), so the client costs as little as possible; the proxy's
CPU is measured from its own /proc entry, not ours.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import procs  # noqa: E402
from tests.support.viewers import Viewer  # noqa: E402

RATE_BPS = 4_000_000
LOGS = Path("/tmp/acefleet-proxy-bench")


# --- viewers --------------------------------------------------------------------------------
async def open_viewer(port: int, target: str, rate: float | None = None) -> Viewer:
    """A viewer that only counts bytes (no TS check: the client should cost as little as it can)."""
    return await Viewer(f"http://127.0.0.1:{port}{target}", rate=rate, check_ts=False).open()


# --- processes ----------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    return procs.memory_kib(pid) / 1024


def get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return json.loads(resp.read())


def start_sim(bitrate: int) -> procs.Service:
    port = procs.free_port()
    return procs.start(
        "acefleet-engine-sim",
        [
            "--http-port", str(port), "--timing", "fast", "--idle-timeout", "60",
            "--bitrate", str(bitrate), "--log-level", "warning",
        ],
        port=port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=LOGS,
    )  # fmt: skip


# more proxy flags for every scenario (--proxy-arg), to compare settings with the same bench
PROXY_ARGS: list[str] = []


def start_proxy(sim: procs.Service, *extra: str) -> procs.Service:
    port = procs.free_port()
    return procs.start(
        "acefleet-proxy",
        [
            "--host", "127.0.0.1", "--port", str(port), "--engines", f"127.0.0.1:{sim.port}@256",
            "--max-upstreams", "256",
            "--max-viewers", "5000", "--max-connections", "6000", "--client-burst", "100000",
            "--client-rate", "100000", "--grace-s", "2", "--log-level", "warning",
            "--drain-timeout-s", "0", *extra, *PROXY_ARGS,
        ],
        port=port,
        ready_path="/readyz",
        log_dir=LOGS,
    )  # fmt: skip


# --- scenarios -------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.name}: " + ", ".join(f"{k}={v}" for k, v in self.figures.items())


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(
    viewers: list[Viewer], seconds: float, pid: int | None
) -> tuple[dict[str, float], list[int]]:
    """Open the measuring window, wait, and summarise; returns figures and each viewer's bytes
    in the window."""
    t0 = time.monotonic()
    start = [v.received for v in viewers]
    cpu0 = procs.cpu_seconds(pid) if pid else 0.0
    peak = 0.0
    end = t0 + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.25)
        if pid:
            peak = max(peak, rss_mb(pid))
    t1 = time.monotonic()
    cpu = procs.cpu_seconds(pid) - cpu0 if pid else 0.0
    got = [v.received - b for v, b in zip(viewers, start, strict=True)]
    moved = sum(got)
    rates = [n / (t1 - t0) for n in got]
    figures = {
        "aggregate_MBps": round(moved / (t1 - t0) / 1e6, 1),
        "viewer_MBps_min": round(min(rates) / 1e6, 3),
        "viewer_MBps_median": round(statistics.median(rates) / 1e6, 3),
        "stalled": sum(1 for v in viewers if window_gap(v, t0, t1) > 1.0),
        "errors": sum(1 for v in viewers if v.error or v.closed),
    }
    if pid:
        figures["cpu_s_per_GB"] = round(cpu / (moved / 1e9), 3) if moved else float("nan")
        figures["proxy_cpu_pct"] = round(100 * cpu / (t1 - t0))
        figures["peak_rss_MB"] = round(peak, 1)
    return figures, got


def window_gap(v: Viewer, t0: float, t1: float) -> float:
    """The longest silence of ``v`` inside [t0, t1], a trailing one included."""
    inside = (min(length, start + length - t0) for start, length in v.gaps if start + length >= t0)
    return max(max(inside, default=0.0), t1 - max(v.last_byte_at or t0, t0))


def ttfb(viewers: list[Viewer]) -> dict[str, float]:
    values = [
        (v.first_byte_at - v.opened_at) * 1000
        for v in viewers
        if v.first_byte_at is not None and v.opened_at is not None
    ]
    return {"ttfb_p50_ms": round(pct(values, 50), 1), "ttfb_p99_ms": round(pct(values, 99), 1)}


def upstream_bytes(proxy: procs.Service) -> dict[str, int]:
    status = get_json(f"{proxy.url}/ace/status")
    return {c["key"]: int(c["bytes_in"]) for c in status["channels"]}


def content_path(sim: procs.Service, content_id: str) -> str:
    """The source's final TS path for a new session (format=json, then any redirect)."""
    query = f"format=json&id={content_id}&pid=bench-{content_id}"
    playback = get_json(f"{sim.url}/ace/getstream?{query}")["response"]["playback_url"]
    if "/play/" in playback:  # the unpaced source does not redirect
        return str(urllib.parse.urlsplit(playback).path)
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request("GET", urllib.parse.urlsplit(playback).path)
    location = conn.getresponse().getheader("Location") or ""
    conn.close()
    return urllib.parse.urlsplit(location).path


def sessions(sim: procs.Service) -> int:
    return int(get_json(f"{sim.url}/_sim/sessions")["sessions_started_total"])


async def live_channel_viewers(
    proxy: procs.Service, channels: int, per_channel: int, rate: float | None = None
) -> list[Viewer]:
    """One viewer per channel starts it; the rest join the live channels (TTFB measured)."""
    starters = [
        await open_viewer(proxy.port, f"/ace/getstream?id=bench{c:04d}") for c in range(channels)
    ]
    await asyncio.sleep(2.0)  # past the burst
    for _ in range(100):  # every channel live, so joiners measure a join, not a cold start
        status = await asyncio.to_thread(get_json, f"{proxy.url}/ace/status")
        if sum(1 for c in status["channels"] if c["state"] == "live") >= channels:
            break
        await asyncio.sleep(0.1)
    joiners = []
    for i in range(channels * (per_channel - 1)):
        joiners.append(
            await open_viewer(proxy.port, f"/ace/getstream?id=bench{i % channels:04d}", rate)
        )
        # arrivals 5 ms apart (200/s), so TTFB measures a join, not this client's own backlog
        await asyncio.sleep(0.005)
    await asyncio.sleep(1.0)
    return [*starters, *joiners]


# --- the join probe --------------------------------------------------------------------------
# TTFB of the viewers above is taken in this process, which also reads every viewer's bytes
# (1 GB/s at 2,000 viewers): its own loop lag would be counted as the proxy's. The probe is a
# separate, otherwise idle process that joins live channels one at a time while the load runs.
async def _probe(port: int, targets: list[str], interval: float) -> list[float]:
    ttfbs = []
    for target in targets:
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"probe join refused: {head[:60]!r}")
        await reader.readexactly(1)  # the first byte of the stream
        ttfbs.append((time.perf_counter() - t0) * 1000)
        writer.close()
        await asyncio.sleep(interval)
    return ttfbs


def probe_joins(port: int, targets: list[str], interval: float) -> list[float]:
    """Join each of ``targets`` in turn, ``interval`` s apart; each join's ms to its first byte
    (connect, request, response head and the first stream byte)."""
    return uvloop.run(_probe(port, targets, interval))


async def join_probe(proxy: procs.Service, channels: int, joins: int = 100) -> dict[str, float]:
    """``joins`` probe joins spread over the live channels, 50 ms apart, from another process."""
    targets = [f"/ace/getstream?id=bench{i % channels:04d}" for i in range(joins)]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(probe_joins, proxy.port, targets, 0.05)
        values = await asyncio.wrap_future(future)
    return {
        "join_probe_p50_ms": round(pct(values, 50), 1),
        "join_probe_p99_ms": round(pct(values, 99), 1),
        "join_probe_max_ms": round(max(values), 1),
    }


def close_all(viewers: list[Viewer]) -> None:
    for v in viewers:
        v.close()


async def scenario_paced(channels: int, per_channel: int, seconds: float) -> Result:
    sim = start_sim(RATE_BPS)
    proxy = start_proxy(sim)
    try:
        before = sessions(sim)
        viewers = await live_channel_viewers(proxy, channels, per_channel)
        # off the loop: a slow answer must not stop every viewer in this process from reading
        in0 = await asyncio.to_thread(upstream_bytes, proxy)
        probe = asyncio.create_task(join_probe(proxy, channels))  # joins while the load runs
        figures, got = await measure(viewers, seconds, proxy.proc.pid)
        in1 = await asyncio.to_thread(upstream_bytes, proxy)
        figures.update(await probe)
        # judge viewers against what the engine actually delivered in the window (on a loaded
        # machine the simulator's own pacing can fall short of 4 Mbit/s; not the proxy's doing)
        upstream_rate = min(in1.get(k, 0) - in0.get(k, 0) for k in in0) / seconds
        nominal = min(RATE_BPS / 8, upstream_rate)
        rates = [n / seconds for n in got]
        figures["upstream_MBps_min"] = round(upstream_rate / 1e6, 3)
        figures["below_99pct_rate"] = sum(1 for r in rates if r < 0.99 * nominal)
        if per_channel > 1:
            figures.update(ttfb(viewers[channels:]))
        else:  # no joiner: this is the cold start (engine start + prebuffer of the simulator)
            figures["cold_start_ms"] = ttfb(viewers)["ttfb_p50_ms"]
        after = await asyncio.to_thread(sessions, sim)
        figures["upstreams_per_channel"] = (after - before) / channels
        close_all(viewers)
        return Result(f"{channels}ch x {per_channel} viewers @4Mbit/s", figures)
    finally:
        proxy.stop()
        sim.stop()


def start_source() -> procs.Service:
    """bench/proxy_source.py: an unpaced engine stand-in (see its docstring)."""
    port = procs.free_port()
    argv = [sys.executable, str(REPO / "bench" / "proxy_source.py"), "--port", str(port)]
    log_path = LOGS / f"proxy-source-{port}.log"
    proc = subprocess.Popen(argv, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    svc = procs.Service("proxy-source", argv, port, proc, log_path)
    for _ in range(200):
        try:
            get_json(f"{svc.url}/webui/api/service?method=get_version")
            return svc
        except OSError:
            time.sleep(0.05)
    svc.stop()
    raise RuntimeError("bench/proxy_source.py did not start")


def proxy_counter(proxy: procs.Service, name: str) -> float:
    """The sum of a counter's samples (every label) on the proxy's /metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{proxy.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    # a name with its labels ("x_total{end=\"timeout\"}") is matched whole
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
        and (name.endswith("}") or line[len(name) : len(name) + 1] in ("{", " "))
    )


async def scenario_fast(viewers_n: int, seconds: float, bitrate: int) -> list[Result]:
    sim = start_source() if bitrate == 0 else start_sim(bitrate)
    proxy = start_proxy(sim)
    out = []
    try:
        viewers = await live_channel_viewers(proxy, 1, viewers_n)
        holds = "acefleet_proxy_upstream_holds_total{end="
        counted = (
            "acefleet_proxy_viewer_skips_total",
            *(f'{holds}"{end}"}}' for end in ("caught_up", "starved", "timeout")),
        )
        before = [await asyncio.to_thread(proxy_counter, proxy, name) for name in counted]
        figures, _ = await measure(viewers, seconds, proxy.proc.pid)
        # every skip is a jump in the viewer's stream (a continuity break its player sees); a
        # hold is the proxy pausing its upstream for its slowest viewers (backpressure.py rule 5)
        after = [await asyncio.to_thread(proxy_counter, proxy, name) for name in counted]
        skips, caught_up, starved, timeout = (
            int(b - a) for a, b in zip(before, after, strict=True)
        )
        figures |= {
            "skips": skips,
            "holds_caught_up": caught_up,
            "holds_starved": starved,
            "holds_timeout": timeout,
        }
        close_all(viewers)
        out.append(Result(f"1ch x {viewers_n} fast readers via proxy", figures))
        # the ceiling: the same viewers straight to the simulator, one session each
        direct = [
            await open_viewer(sim.port, await asyncio.to_thread(content_path, sim, f"direct{i}"))
            for i in range(viewers_n)
        ]
        await asyncio.sleep(2.0)
        figures, _ = await measure(direct, seconds, None)
        close_all(direct)
        out.append(Result(f"{viewers_n} readers straight to the source", figures))
        return out
    finally:
        proxy.stop()
        sim.stop()


async def scenario_slow(fast_n: int, slow_n: int, seconds: float) -> Result:
    sim = start_sim(RATE_BPS)
    proxy = start_proxy(sim)
    try:
        fast = await live_channel_viewers(proxy, 1, fast_n)
        slow = [
            await open_viewer(proxy.port, "/ace/getstream?id=bench0000", RATE_BPS / 80)
            for _ in range(slow_n)
        ]
        slow_start = [v.received for v in slow]
        figures, _ = await measure(fast, seconds, proxy.proc.pid)
        figures["slow_viewer_MBps"] = [
            round((v.received - b) / seconds / 1e6, 3)
            for v, b in zip(slow, slow_start, strict=True)
        ]
        close_all([*fast, *slow])
        return Result(f"1ch x {fast_n} fast + {slow_n} at 1/10 rate (fast viewers)", figures)
    finally:
        proxy.stop()
        sim.stop()


async def scenario_churn(seconds: float) -> Result:
    sim = start_sim(RATE_BPS)
    proxy = start_proxy(sim)
    try:
        pid = proxy.proc.pid
        start_rss = rss_mb(pid)
        warm = await churn_round(proxy, seconds / 4)
        await asyncio.sleep(4.0)
        baseline = rss_mb(pid)  # after a warm-up round: heap arenas and imports are in
        main = await churn_round(proxy, seconds)
        during = rss_mb(pid)
        await asyncio.sleep(4.0)  # grace (2 s) plus the stop calls
        after_main = rss_mb(pid)
        again = await churn_round(proxy, seconds)  # a leak keeps growing; arenas do not
        await asyncio.sleep(4.0)
        status = get_json(f"{proxy.url}/ace/status")
        sims = get_json(f"{sim.url}/_sim/sessions")
        return Result(
            f"churn over 2 channels for {seconds:g} s (after a {seconds / 4:g} s warm-up)",
            {
                "viewers_opened": main[0],
                "errors": main[1] + warm[1] + again[1],
                "upstreams_after": status["upstreams"],
                "engine_sessions_after": len(sims["sessions"]),
                "engine_sessions_total": sims["sessions_started_total"],
                "rss_start_MB": round(start_rss, 1),
                "rss_after_warmup_MB": round(baseline, 1),
                "rss_during_MB": round(during, 1),
                "rss_after_MB": round(after_main, 1),
                "rss_after_2nd_round_MB": round(rss_mb(pid), 1),
            },
        )
    finally:
        proxy.stop()
        sim.stop()


async def churn_round(proxy: procs.Service, seconds: float) -> tuple[int, int]:
    """Viewers come and go (30 at a time, 0.2-2 s each); returns (opened, errors)."""
    errors = opened = 0
    live: list[tuple[Viewer, float]] = []
    rng = random.Random(7)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.monotonic()
        for item in [x for x in live if x[1] <= now]:
            v = item[0]
            if v.error or (v.closed and v.first_byte_at is None):
                errors += 1
            v.close()
            live.remove(item)
        while len(live) < 30:
            v = await open_viewer(proxy.port, f"/ace/getstream?id=churn{rng.randrange(2)}")
            opened += 1
            live.append((v, now + rng.uniform(0.2, 2.0)))
        await asyncio.sleep(0.05)
    for v, _ in live:
        errors += 1 if v.error else 0
        v.close()
    return opened, errors


async def run(args: argparse.Namespace) -> None:
    chosen = set(args.scenario or ["1", "2", "3", "4", "5"])
    for run_no in range(args.runs):
        print(f"# run {run_no + 1}/{args.runs}", flush=True)
        results: list[Result] = []
        if "1" in chosen:
            for n in args.viewers:
                results.append(await scenario_paced(1, n, args.seconds))
                print(results[-1].line(), flush=True)
        if "2" in chosen:
            results.append(await scenario_paced(args.channels, 10, args.seconds))
            print(results[-1].line(), flush=True)
        if "3" in chosen:
            for r in await scenario_fast(50, args.seconds, args.fast_bitrate):
                print(r.line(), flush=True)
        if "4" in chosen:
            print((await scenario_slow(20, 2, args.seconds)).line(), flush=True)
        if "5" in chosen:
            print((await scenario_churn(args.churn_seconds)).line(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=["1", "2", "3", "4", "5"])
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window")
    parser.add_argument(
        "--channels", type=int, default=20, help="channels of scenario 2 (10 viewers each)"
    )
    parser.add_argument("--churn-seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--fast-bitrate",
        type=int,
        default=0,
        help="source for the 'as fast as they read' scenario: 0 = bench/proxy_source.py "
        "(unpaced), else the simulator at this bit/s (its maximum is 100 Mbit/s)",
    )
    parser.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        help="one more acefleet-proxy argument for every scenario (repeat: --proxy-arg=--batch-ms "
        "--proxy-arg=200)",
    )
    args = parser.parse_args()
    PROXY_ARGS.extend(args.proxy_arg)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    LOGS.mkdir(parents=True, exist_ok=True)
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
