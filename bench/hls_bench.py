"""Benchmark of the proxy's HLS: hundreds of players polling playlists and fetching segments like
real players, against the simulator playing real video.

    scripts/make-clips.sh build/clips                    # once: the simulator's H.264/AAC clips
    .venv/bin/python bench/hls_bench.py                  # both scenarios, 500 players, 60 s each
    .venv/bin/python bench/hls_bench.py --scenario 1 --players 500 --seconds 60 --processes 2

Scenarios: 1 = every player on one channel, 2 = the players spread over 20 channels.

A player does what hls.js or an Apple player does: GET the master playlist once, then reload its
media playlist once per EXT-X-TARGETDURATION (half that when nothing changed, RFC 8216 6.3.4),
starting at a random phase, and fetch every new segment in order on its own keep-alive
connection. Players are asyncio Protocols on uvloop that only count segment bytes, spread over
``--processes`` worker processes so no client process is the bottleneck (each worker's own CPU
share is printed: a worker near 100 % of a core would make the latencies the client's, not the
proxy's).

Per scenario it prints, over the ``--seconds`` measuring window (after the ramp and a warm-up):
- proxy CPU seconds per GB served (utime+stime from /proc/<pid>/stat; bytes are the playlist and
  segment bodies the players received), and the proxy's share of one core, also before the
  players came (channels live, only the observers reloading: the part that is not serving);
- playlist and segment latency p50/p99 (request written → full body received);
- errors (non-200 answers, short bodies, lost connections);
- the live edge twice: the proxy's own ``acefleet_proxy_hls_live_edge_seconds`` histogram (a
  segment's first keyframe byte entering the proxy → the segment listed; p50/p99 interpolated
  within buckets, and the exact mean), and from the client side: one observer per channel reloads
  the playlist every 100 ms and takes "wall clock when a segment first appears minus its
  EXT-X-PROGRAM-DATE-TIME" (the observers' reloads are load on the proxy but are not in the
  latency figures);
- engine sessions per channel (the simulator's /_sim/sessions): 1 means the players shared it.

Targets (issue 13): <= 0.5 CPU-s/GB, playlist p99 <= 20 ms, live edge <= one target duration
+ 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import resource
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import procs  # noqa: E402

LOGS = Path("/tmp/acefleet-hls-bench")
CLIPS = REPO / "build" / "clips"
OBSERVER_POLL_S = 0.1
BASELINE_S = 5.0  # the proxy's CPU with the channels live and only the observers reloading
LIVE_EDGE = "acefleet_proxy_hls_live_edge_seconds"


# --- a minimal keep-alive HTTP/1.1 client -------------------------------------------------
class Lost(Exception):
    """The connection closed before the response was complete."""


class HttpConn(asyncio.Protocol):
    """One keep-alive connection, one request at a time, Content-Length bodies only (the proxy's
    HLS answers all carry it). Segment bodies are counted, not kept: the client must stay cheap."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.body = bytearray()
        self.keep = False
        self.status = 0
        self.need = -1  # body bytes still expected; -1 while the head is being read
        self.got = 0
        self.first = -1  # the body's first byte (0x47 for a TS segment)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(Lost(repr(exc)))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            return
        if self.need < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self.head[end + 4 :])
            lines = bytes(self.head[:end]).split(b"\r\n")
            self.status = int(lines[0].split()[1])
            self.need = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.need = int(value)
            self.head.clear()
        if data:
            if self.first < 0:
                self.first = data[0]
            if self.keep:
                self.body += data
            self.got += len(data)
        if self.got >= self.need and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, target: str, keep: bool) -> tuple[int, bytes, int]:
        """(status, body if ``keep``, body length)."""
        if self.closed or self.transport is None:
            raise Lost("closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.keep, self.need, self.got, self.first = keep, -1, 0, -1
        self.body = bytearray()
        self.transport.write(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        try:
            await self.waiter
        finally:
            self.waiter = None
        return self.status, bytes(self.body), self.got


async def connect(port: int) -> HttpConn:
    _, conn = await asyncio.get_running_loop().create_connection(HttpConn, "127.0.0.1", port)
    return conn


# --- playlists ----------------------------------------------------------------------------
@dataclass
class Entry:
    seq: int
    uri: str
    duration: float
    program_time: float | None  # EXT-X-PROGRAM-DATE-TIME as a UNIX time


def variant_of(master: bytes) -> str:
    """The (only) variant URI of a master playlist."""
    return next(x for x in master.decode().splitlines() if x and not x.startswith("#"))


def parse_media(text: bytes, with_times: bool = False) -> tuple[float, list[Entry]]:
    """(EXT-X-TARGETDURATION, entries) of a media playlist."""
    target, seq, duration = 6.0, 0, 0.0
    stamp: float | None = None
    entries: list[Entry] = []
    for line in text.decode().splitlines():
        if not line.startswith("#"):
            if line:
                entries.append(Entry(seq, line, duration, stamp))
                seq, stamp = seq + 1, None
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line[22:])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line[22:])
        elif with_times and line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            stamp = datetime.fromisoformat(line[25:]).timestamp()
    return target, entries


# --- players (in worker processes) ----------------------------------------------------------
@dataclass
class Tally:
    """What one worker's players saw inside the measuring window."""

    playlist_ms: list[float] = field(default_factory=list)
    segment_ms: list[float] = field(default_factory=list)
    samples: list[tuple[float, str, float]] = field(default_factory=list)  # (done, kind, ms)
    bytes: int = 0
    segments: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    window_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def player(
    port: int, channel: str, start_at: float, window: tuple[float, float], tally: Tally
) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    t_start, t_end = window
    conn: HttpConn | None = None
    media = ""
    last_seq: int | None = None
    while time.monotonic() < t_end:
        began = time.monotonic()
        target = 6.0
        changed = False
        try:
            if conn is None or conn.closed:
                conn = await connect(port)
            if not media:  # once per player, like a real one
                status, body, _ = await conn.get(f"/ace/manifest.m3u8?id={channel}", True)
                if status != 200:
                    raise Lost(f"master HTTP {status}")
                media = "/ace/" + variant_of(body)
                began = time.monotonic()
            status, body, size = await conn.get(media, True)
            done = time.monotonic()
            if t_start <= done <= t_end:
                tally.playlist_ms.append((done - began) * 1000)
                tally.samples.append((done, "playlist", (done - began) * 1000))
                tally.bytes += size
            if status != 200:
                raise Lost(f"playlist HTTP {status}")
            target, entries = parse_media(body)
            # a new player starts at the live edge; then every segment once, in order
            fresh = [e for e in entries if last_seq is None or e.seq > last_seq]
            if last_seq is None:
                fresh = fresh[-1:]
            base = media.rsplit("/", 1)[0] + "/"
            for entry in fresh:
                t0 = time.monotonic()
                status, _, size = await conn.get(base + entry.uri, False)
                t1 = time.monotonic()
                if status != 200 or conn.first != 0x47:
                    tally.error(f"segment HTTP {status}" if status != 200 else "segment not TS")
                elif t_start <= t1 <= t_end:
                    tally.segment_ms.append((t1 - t0) * 1000)
                    tally.samples.append((t1, "segment", (t1 - t0) * 1000))
                    tally.bytes += size
                    tally.segments += 1
                last_seq = entry.seq
                changed = True
        except (Lost, OSError, ValueError, StopIteration) as exc:
            if t_start <= time.monotonic() <= t_end:
                tally.error(type(exc).__name__ + (f": {exc}" if isinstance(exc, Lost) else ""))
            conn = None
        pause = target if changed else target / 2
        await asyncio.sleep(max(0.0, began + pause - time.monotonic()))
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def worker(
    port: int, channels: list[str], ramp: tuple[float, float], window: tuple[float, float]
) -> Tally:
    """Run this worker's players (a channel each, start times spread over ``ramp``)."""
    tally = Tally()
    rng = random.Random(os.getpid())
    tasks = [
        asyncio.create_task(player(port, ch, rng.uniform(*ramp), window, tally)) for ch in channels
    ]
    await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
    cpu0, t0 = sum(os.times()[:2]), time.monotonic()
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
    tally.cpu_s, tally.window_s = sum(os.times()[:2]) - cpu0, time.monotonic() - t0
    await asyncio.gather(*tasks)
    return tally


def worker_main(port: int, channels: list[str], link: Connection) -> None:
    """A worker process: says it is ready (a spawned interpreter takes a while to import on a
    busy machine), gets the ramp and the window, runs its players, sends back its tally.

    Every process times with time.monotonic(): CLOCK_MONOTONIC is one clock machine-wide
    (uvloop's loop.time() is libuv's cached millisecond clock: too coarse for latencies)."""
    link.send("ready")
    ramp, window = link.recv()
    link.send(uvloop.run(worker(port, channels, ramp, window)))


# --- observers (in this process): the live edge as a client sees it --------------------------
async def observer(
    port: int,
    channel: str,
    window: list[float],
    edges: list[float],
    started: asyncio.Event,
    reloads: list[int],
) -> None:
    """Reload the playlist every 100 ms; ``started`` once it is live; records inside
    ``window`` (set later: [start, end]) how late each new segment shows up."""
    conn = await connect(port)
    status, body, _ = await conn.get(f"/ace/manifest.m3u8?id={channel}", True)
    if status != 200:
        raise RuntimeError(f"{channel}: master playlist HTTP {status}: {body[:200]!r}")
    media = "/ace/" + variant_of(body)
    started.set()
    seen: set[int] | None = None
    while time.monotonic() < window[1]:
        _, body, _ = await conn.get(media, True)
        now = time.time()
        if window[0] <= time.monotonic():
            reloads[0] += 1
        _, entries = parse_media(body, with_times=True)
        if seen is None:  # already listed when we came: not a first appearance
            seen = {e.seq for e in entries}
        for e in entries:
            if e.seq not in seen:
                seen.add(e.seq)
                if window[0] <= time.monotonic() and e.program_time is not None:
                    edges.append(now - e.program_time)
        await asyncio.sleep(OBSERVER_POLL_S)
    assert conn.transport is not None
    conn.transport.close()


# --- processes, metrics -----------------------------------------------------------------------
def get_text(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return str(resp.read().decode())


def start_sim() -> procs.Service:
    if not any(CLIPS.glob("*.ts")):
        raise SystemExit(f"no clips in {CLIPS}: run scripts/make-clips.sh build/clips first")
    port = procs.free_port()
    return procs.start(
        "acefleet-engine-sim",
        [
            "--http-port", str(port), "--timing", "fast", "--idle-timeout", "60",
            "--media", "clips", "--clip-dir", str(CLIPS), "--log-level", "warning",
        ],
        port=port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=LOGS,
    )  # fmt: skip


def start_proxy(sim: procs.Service) -> procs.Service:
    port = procs.free_port()
    return procs.start(
        "acefleet-proxy",
        [
            "--host", "127.0.0.1", "--port", str(port), "--engines", f"127.0.0.1:{sim.port}@64",
            "--max-viewers", "5000", "--max-connections", "6000", "--client-burst", "100000",
            "--client-rate", "100000", "--grace-s", "2", "--log-level", "warning",
            "--drain-timeout-s", "0",
        ],
        port=port,
        ready_path="/readyz",
        log_dir=LOGS,
    )  # fmt: skip


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / procs.CLOCK_TICKS, int(fields[12]) / procs.CLOCK_TICKS


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative (le, count) buckets, sum, count) of a Prometheus histogram in ``text``."""
    buckets = [
        (float(m.group(1)), float(m.group(2)))
        for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)
    ]
    total = re.search(rf"^{name}_sum (\S+)$", text, re.M)
    count = re.search(rf"^{name}_count (\S+)$", text, re.M)
    return buckets, float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    low_le, low_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return low_le  # beyond the last finite bound: that bound is all we know
            inside = count - low_count
            return low_le + (le - low_le) * ((rank - low_count) / inside if inside else 1.0)
        low_le, low_count = le, count
    return low_le


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- a scenario -------------------------------------------------------------------------------
async def scenario(
    players: int, channels: int, seconds: float, processes: int
) -> tuple[dict[str, Any], list[tuple[float, str, float]]]:
    """The figures, and every latency sample as (seconds into the window, kind, ms)."""
    sim = start_sim()
    proxy = start_proxy(sim)
    names = [f"hlsbench{c:02d}" for c in range(channels)]
    print(f"#   proxy pid {proxy.proc.pid}, simulator pid {sim.proc.pid}", flush=True)
    try:
        # every channel live (each observer's master playlist waits for a first segment)
        ctx = mp.get_context("spawn")
        links, workers = [], []
        for k in range(processes):
            mine = [names[i % channels] for i in range(k, players, processes)]
            here, there = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(proxy.port, mine, there))
            proc.start()
            links.append(here)
            workers.append(proc)
        # every channel live: each observer's master playlist waits for its first segment
        window = [float("inf"), float("inf")]
        edges: list[float] = []
        reloads = [0]  # the observers' playlist reloads in the window (load on the proxy too)
        started = [asyncio.Event() for _ in names]
        watchers = [
            asyncio.create_task(observer(proxy.port, ch, window, edges, ev, reloads))
            for ch, ev in zip(names, started, strict=True)
        ]
        for ev in started:
            await ev.wait()
        for link in links:
            assert await asyncio.to_thread(link.recv) == "ready"
        # the proxy's CPU before any player: the channels' ingest and the observers' reloads
        idle0, i0 = procs.cpu_seconds(proxy.proc.pid), time.monotonic()
        await asyncio.sleep(BASELINE_S)
        idle_pct = 100 * (procs.cpu_seconds(proxy.proc.pid) - idle0) / (time.monotonic() - i0)
        now = time.monotonic()
        ramp = (now + 0.2, now + 6.2)  # players start over one EXT-X-TARGETDURATION
        t_start = ramp[1] + 8.0  # warm-up: every player past its first fetches
        window[:] = [t_start, t_start + seconds]
        for link in links:
            link.send((ramp, tuple(window)))
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        metrics0 = await asyncio.to_thread(get_text, f"{proxy.url}/metrics")
        (user0, sys0), w0 = cpu_split(proxy.proc.pid), time.monotonic()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        (user1, sys1), wall = cpu_split(proxy.proc.pid), time.monotonic() - w0
        cpu, system = user1 - user0 + sys1 - sys0, sys1 - sys0
        metrics1 = await asyncio.to_thread(get_text, f"{proxy.url}/metrics")
        status = json.loads(await asyncio.to_thread(get_text, f"{proxy.url}/ace/status"))
        tallies: list[Tally] = [await asyncio.to_thread(link.recv) for link in links]
        for proc in workers:
            proc.join(timeout=30)
        await asyncio.gather(*watchers)
        sims = json.loads(await asyncio.to_thread(get_text, f"{sim.url}/_sim/sessions"))
    finally:
        proxy.stop()
        sim.stop()
    rows = sorted((t - t_start, kind, ms) for tally in tallies for t, kind, ms in tally.samples)
    b0, s0, n0 = histogram(metrics0, LIVE_EDGE)
    b1, s1, n1 = histogram(metrics1, LIVE_EDGE)
    window_buckets = [(le, c - c0) for (le, c), (_, c0) in zip(b1, b0, strict=True)]
    served = sum(t.bytes for t in tallies)
    errors: dict[str, int] = {}
    for t in tallies:
        for kind, n in t.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    playlist_ms = [x for t in tallies for x in t.playlist_ms]
    segment_ms = [x for t in tallies for x in t.segment_ms]
    figures = {
        "players": players,
        "channels": channels,
        "client_processes": processes,
        "window_s": round(wall, 1),
        "served_GB": round(served / 1e9, 3),
        "served_MBps": round(served / wall / 1e6, 1),
        "proxy_cpu_s": round(cpu, 2),
        "proxy_cpu_pct": round(100 * cpu / wall, 1),
        "proxy_cpu_system_share": round(system / cpu, 2) if cpu else float("nan"),
        "cpu_s_per_GB": round(cpu / (served / 1e9), 3) if served else float("nan"),
        "proxy_cpu_pct_before_players": round(idle_pct, 1),
        "playlists": len(playlist_ms),
        "observer_playlists": reloads[0],
        "playlist_p50_ms": round(pct(playlist_ms, 50), 2),
        "playlist_p99_ms": round(pct(playlist_ms, 99), 2),
        "segments": len(segment_ms),
        "segment_p50_ms": round(pct(segment_ms, 50), 2),
        "segment_p99_ms": round(pct(segment_ms, 99), 2),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "client_cpu_pct_per_process": [round(100 * t.cpu_s / t.window_s) for t in tallies],
        "live_edge_proxy_p50_s": round(bucket_quantile(window_buckets, 0.5), 2),
        "live_edge_proxy_p99_s": round(bucket_quantile(window_buckets, 0.99), 2),
        "live_edge_proxy_mean_s": round((s1 - s0) / (n1 - n0), 3) if n1 > n0 else float("nan"),
        "live_edge_proxy_n": int(n1 - n0),
        "live_edge_client_p50_s": round(pct(edges, 50), 2),
        "live_edge_client_p99_s": round(pct(edges, 99), 2),
        "live_edge_client_mean_s": round(statistics.fmean(edges), 3) if edges else float("nan"),
        "live_edge_client_n": len(edges),
        "hls_viewers_at_end": status.get("hls_viewers"),
        "engine_sessions_per_channel": sims["sessions_started_total"] / channels,
    }
    return figures, rows


async def run(args: argparse.Namespace) -> None:
    chosen = args.scenario or ["1", "2"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()}")
    for run_no in range(args.runs):
        for which in chosen:
            channels = 1 if which == "1" else args.channels
            figures, rows = await scenario(args.players, channels, args.seconds, args.processes)
            if args.dump:  # every latency sample, for a closer look than the percentiles
                dump = args.dump.with_suffix(f".s{which}.r{run_no + 1}.jsonl")
                dump.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
            label = f"run {run_no + 1}: {args.players} players on {channels} channel(s)"
            print(f"{label}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
            print(f"#   load after: {os.getloadavg()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=["1", "2"])
    parser.add_argument("--players", type=int, default=500)
    parser.add_argument("--channels", type=int, default=20, help="channels of scenario 2")
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    parser.add_argument("--processes", type=int, default=2, help="player worker processes")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--dump", type=Path, help="write every latency sample (JSON lines) next to this path"
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    LOGS.mkdir(parents=True, exist_ok=True)
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
