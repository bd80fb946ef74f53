"""How many concurrent 4 Mbit/s sessions one simulator process serves at full rate.

For each N of a sweep: start a fresh simulator (fast profile), start N sessions (N contents,
``format=json``), open each ``playback_url`` with a real reader (raw asyncio sockets, following
the engine's two redirects), let the burst pass, then count every reader's bytes over a window.
A round passes when every reader got >= 99 % of the bitrate. Prints one line per round and the
largest passing N, with the simulator's CPU (utime+stime from /proc) over the window.

    .venv/bin/python bench/sim_capacity.py                      # sweep 25..400
    .venv/bin/python bench/sim_capacity.py --sessions 50 100 --window 10 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import procs


class Reader(asyncio.Protocol):
    """Reads one HTTP response; counts body bytes; reports a redirect's Location."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.head = b""
        self.in_body = False
        self.status = 0
        self.location = ""
        self.count = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.answered = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.head[:end].decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "location":
                    self.location = value.strip()
            self.in_body = True
            self.answered.set()
            data = self.head[end + 4 :]
            if self.status != 200 and self.transport is not None:
                self.transport.close()
        self.count += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.answered.set()
        if not self.done.done():
            self.done.set_result(None)


async def open_playback(url: str) -> Reader:
    loop = asyncio.get_running_loop()
    for _ in range(4):
        parts = urlsplit(url)
        req = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
        _, reader = await loop.create_connection(
            lambda r=req: Reader(r),  # type: ignore[misc]
            parts.hostname,
            parts.port,
        )
        await asyncio.wait_for(reader.answered.wait(), 60)
        if reader.status == 302:
            url = reader.location
            continue
        if reader.status != 200:
            raise RuntimeError(f"{url}: HTTP {reader.status}")
        return reader
    raise RuntimeError(f"{url}: too many redirects")


@dataclass
class Round:
    sessions: int
    min_pct: float
    median_pct: float
    sim_cpu_pct: float
    cpu_s_per_gb: float
    reader_cpu_pct: float

    @property
    def ok(self) -> bool:
        return self.min_pct >= 99.0


async def run_round(svc: procs.Service, n: int, window: float, bitrate: int, tag: str) -> Round:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as c:

        async def start(i: int) -> str:
            r = await c.get(f"{svc.url}/ace/getstream?format=json&id=bench-{tag}-{i}&pid=b{i}")
            return str(r.json()["response"]["playback_url"])

        urls = await asyncio.gather(*(start(i) for i in range(n)))
    readers = await asyncio.gather(*(open_playback(u) for u in urls))
    await asyncio.sleep(2.0)  # the burst and any start-up jitter pass
    before = [r.count for r in readers]
    own0 = procs.cpu_seconds(os.getpid())
    cpu0, t0 = procs.cpu_seconds(svc.proc.pid), time.monotonic()
    await asyncio.sleep(window)
    after = [r.count for r in readers]
    cpu1, t1 = procs.cpu_seconds(svc.proc.pid), time.monotonic()
    own1 = procs.cpu_seconds(os.getpid())
    for r in readers:
        if r.transport is not None:
            r.transport.close()
    expected = bitrate / 8 * (t1 - t0)
    pcts = [100.0 * (b - a) / expected for a, b in zip(before, after, strict=True)]
    sent = sum(after) - sum(before)
    return Round(
        sessions=n,
        min_pct=min(pcts),
        median_pct=statistics.median(pcts),
        sim_cpu_pct=100.0 * (cpu1 - cpu0) / (t1 - t0),
        cpu_s_per_gb=(cpu1 - cpu0) / (sent / 1e9) if sent else float("nan"),
        reader_cpu_pct=100.0 * (own1 - own0) / (t1 - t0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[25, 50, 100, 150, 200, 300, 400])
    ap.add_argument(
        "--window",
        type=float,
        default=30.0,
        help="measurement window, s (long: each reader gets 100 ms chunks, 0.3 %% of 30 s)",
    )
    ap.add_argument("--bitrate", type=int, default=4_000_000)
    ap.add_argument("--repeat", type=int, default=1, help="rounds per N (median reported)")
    ap.add_argument("--keep-going", action="store_true", help="do not stop at the first failure")
    args = ap.parse_args()
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "acefleet-bench-sim"
    best = 0
    print(
        f"{'N':>5} {'min %':>7} {'median %':>9} {'sim CPU %':>10} {'CPU s/GB':>9} "
        f"{'readers CPU %':>14}  result"
    )
    for n in args.sessions:
        rounds: list[Round] = []
        for rep in range(args.repeat):
            tag = f"{n}-{rep}"
            port = procs.free_port()
            svc = procs.start(
                "acefleet-engine-sim",
                [
                    "--http-port",
                    str(port),
                    "--timing",
                    "fast",
                    "--bitrate",
                    str(args.bitrate),
                    "--idle-timeout",
                    "120",
                    "--log-level",
                    "warning",
                ],
                port=port,
                ready_path="/webui/api/service?method=get_version",
                log_dir=log_dir,
            )
            try:
                rounds.append(uvloop.run(run_round(svc, n, args.window, args.bitrate, tag)))
            except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                # could not even open N readers in time: that N fails
                print(f"{n:>5} round {rep}: {exc!r}", flush=True)
                rounds.append(Round(n, 0.0, 0.0, float("nan"), float("nan"), float("nan")))
            finally:
                svc.stop()
        mid = sorted(rounds, key=lambda r: r.min_pct)[len(rounds) // 2]
        verdict = "ok" if mid.ok else "FAIL"
        print(
            f"{n:>5} {mid.min_pct:>7.2f} {mid.median_pct:>9.2f} {mid.sim_cpu_pct:>10.1f} "
            f"{mid.cpu_s_per_gb:>9.2f} {mid.reader_cpu_pct:>14.1f}  {verdict}",
            flush=True,
        )
        if mid.ok:
            best = max(best, n)
        elif not args.keep_going:
            break
    print(f"max sessions at >= 99 % of {args.bitrate / 1e6:g} Mbit/s: {best}")


if __name__ == "__main__":
    main()
