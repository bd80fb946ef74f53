"""Simulator capacity with real clips: how many TS sessions one simulator process (one core)
keeps at full rate, against the synthetic feed at the same bitrate for reference.

For each session count N (distinct channels, so N engine sessions), N readers start playback,
skip the initial burst, then count bytes for ``--window`` seconds; a session is at full rate when
it received >= 95 % of its feed's bitrate. The simulator's CPU comes from /proc (user+system
over the same window), so "sessions per core" = N / (CPU-seconds per second) while every
session is at full rate. The readers run in this process on uvloop, reading 256 KiB at a time.

    .venv/bin/python bench/video_capacity.py                         # clips, then synthetic
    .venv/bin/python bench/video_capacity.py --media clips --counts 50,100,200

Figures go to bench/results/video.md by hand (with the command line used).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from enginesim.clips_library import list_clips, load_plan  # noqa: E402
from tests.support import procs  # noqa: E402

START_CONCURRENCY = 25  # sessions being started at once


async def _get(
    host: str, port: int, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    return reader, writer, status, headers


async def session(
    base: str,
    name: str,
    counted: list[int],
    slot: int,
    stop: asyncio.Event,
    starts: asyncio.Semaphore,
) -> None:
    """One viewer: format=json start, follow the playback URL's redirects, then read and count."""
    u = urlsplit(base)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    reader, writer, status, headers = await _get(
        host, port, f"/ace/getstream?format=json&id={name}"
    )
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    writer.close()
    path = urlsplit(json.loads(body)["response"]["playback_url"]).path
    for _ in range(3):
        reader, writer, status, headers = await _get(host, port, path)
        if status != 302:
            break
        await reader.readexactly(int(headers.get("content-length", "0")))
        writer.close()
        path = urlsplit(headers["location"]).path
    if status != 200:
        writer.close()
        raise RuntimeError(f"{name}: playback answered HTTP {status}")
    try:
        while not stop.is_set():
            data = await reader.read(256 * 1024)
            if not data:
                break
            counted[slot] += len(data)
    finally:
        writer.close()


async def measure(
    base: str, pid: int, n: int, warmup: float, window: float, tag: str
) -> tuple[list[int], float]:
    counted = [0] * n
    stop = asyncio.Event()
    starts = asyncio.Semaphore(START_CONCURRENCY)
    tasks = [
        asyncio.create_task(session(base, f"cap-{tag}-{n}-{i}", counted, i, stop, starts))
        for i in range(n)
    ]
    # Every session must be playing before the window opens (starts take longer at high N).
    for _ in range(300):  # at most 60 s
        if min(counted) > 0 or all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(warmup)
    before = list(counted)
    cpu0, t0, mine0 = procs.cpu_seconds(pid), time.monotonic(), time.process_time()
    await asyncio.sleep(window)
    cpu1, t1, mine1 = procs.cpu_seconds(pid), time.monotonic(), time.process_time()
    got = [b - a for a, b in zip(before, counted, strict=True)]
    stop.set()
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [
        r for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)
    ]
    if failed:
        print(f"  {len(failed)} sessions failed, e.g. {failed[0]!r}")
    load = os.getloadavg()[0]
    print(
        f"  readers (this process) used {(mine1 - mine0) / (t1 - t0) * 100:.0f} % of a core; "
        f"machine load average {load:.1f} on {os.cpu_count()} cores"
    )
    return got, (cpu1 - cpu0) / (t1 - t0)


def run_media(media: str, args: argparse.Namespace, bitrate: int) -> None:
    logs = Path(tempfile.mkdtemp(prefix="acefleet-video-capacity-"))
    port = procs.free_port()
    extra = (
        ["--media", "clips", "--clip-dir", str(args.clip_dir)]
        if media == "clips"
        else ["--media", "synthetic", "--bitrate", str(bitrate)]
    )
    sim = procs.start(
        "acefleet-engine-sim",
        # Starting hundreds of sessions at once on a busy machine takes longer than the fast
        # profile's 2 s idle timeout between the start call and the playback request.
        [
            "--http-port",
            str(port),
            "--host",
            "127.0.0.1",
            "--timing",
            "fast",
            "--idle-timeout",
            "30",
            *extra,
        ],
        port=port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=logs,
    )
    try:
        for n in args.counts:
            got, cpu = uvloop.run(
                measure(sim.url, sim.proc.pid, n, args.warmup, args.window, media)
            )
            rates = [g * 8 / args.window / bitrate for g in got]
            full = sum(r >= 0.95 for r in rates)
            per_core = n / cpu if cpu > 0 else float("inf")
            per_gb = cpu * args.window / (sum(got) / 1e9) if sum(got) else float("nan")
            print(
                f"{media:9s} N={n:4d}  at full rate {full:4d}/{n}  rate median "
                f"{statistics.median(rates):.3f} min {min(rates):.3f}  sim CPU {cpu * 100:5.1f} % "
                f"of a core ({per_gb:.2f} CPU-s/GB)  -> {per_core:6.0f} sessions/core at this load",
                flush=True,
            )
            if full < n or cpu > 0.95:
                break
    finally:
        sim.stop()


def main() -> int:
    # Each session holds a socket in the simulator and one here: lift the soft fd limit (the
    # simulator subprocess inherits it).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", choices=["clips", "synthetic", "both"], default="both")
    ap.add_argument("--counts", default="25,50,100,200,300", help="session counts to try")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds skipped (burst, start)")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured per step")
    ap.add_argument("--clip-dir", type=Path, default=REPO / "build" / "clips")
    args = ap.parse_args()
    args.counts = [int(c) for c in args.counts.split(",")]
    clips = list_clips(args.clip_dir)
    bitrates = [load_plan(c).bitrate for c in clips]
    bitrate = round(statistics.mean(bitrates))
    print(
        f"clips: {len(clips)} in {args.clip_dir}, {min(bitrates) / 1e6:.3f}-"
        f"{max(bitrates) / 1e6:.3f} Mbit/s (synthetic runs at {bitrate / 1e6:.3f} Mbit/s)"
    )
    for media in ["clips", "synthetic"] if args.media == "both" else [args.media]:
        run_media(media, args, bitrate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
