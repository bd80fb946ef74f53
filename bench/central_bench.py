"""Benchmark acefleet-central: claim latency and throughput with a heartbeating fleet, and the
cost of ingesting one heartbeat.

Central runs as a real subprocess on loopback (SQLite history in a temp dir). The load comes
from a small hand-rolled keep-alive HTTP/1.1 client (httpx would cost the client more CPU than
central spends answering), in two processes: one heartbeats every host every interval, the other
sends claims open-loop at a fixed rate (latency is measured from each claim's scheduled time, so
a stalled server cannot hide queued requests) and releases each granted claim after --hold s.

1. Heartbeat ingest: --hb-burst heartbeats of a --engines-engine host back to back; central's
   CPU (utime+stime from /proc) per heartbeat, and the client-observed latency.
2. Claims at --rate/s for --duration s while --hosts hosts x --engines engines heartbeat every
   --interval s: p50/p90/p99/max claim latency, claims/s achieved, answers by status, central CPU.
3. Closed loop, --conns connections as fast as they go for 5 s: the most claims/s central gives.

    .venv/bin/python bench/central_bench.py [--hosts 100] [--engines 20] [--rate 500]
        [--duration 20] [--interval 2] [--hold 1] [--conns 32]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from acefleet.wire import EngineReport, Heartbeat, ProxySnapshot
from tests.support import procs

KEY = "bench-central-service-key-01"
VIEWER = "bench-central-viewer-key-01"


class Conn:
    """One keep-alive HTTP/1.1 connection; just enough protocol for central's JSON answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: central\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data

    def close(self) -> None:
        self.writer.close()


def host_name(i: int) -> str:
    return f"edge{i:03}"


def heartbeat(i: int, engines: int, seq: int) -> bytes:
    host = host_name(i)
    reports = [
        EngineReport(
            id=f"{host}-eng{n}",
            host=host,
            endpoint=f"127.0.0.1:{19000 + n}",
            http_port=19000 + n,
            profile="sim",
            health="healthy",  # type: ignore[arg-type]
            stream_cap=1,
            streams=0,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for n in range(engines)
    ]
    hb = Heartbeat(
        host=host, agent_url=f"http://{host}:8100", seq=seq, engines=reports, max_engines=engines
    )
    return hb.model_dump_json().encode()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 0.5) * 1e3:.2f} ms, p90 {pct(values, 0.9) * 1e3:.2f} ms, "
        f"p99 {pct(values, 0.99) * 1e3:.2f} ms, max {max(values) * 1e3:.2f} ms (n={len(values)})"
    )


# --- heartbeats in their own process ------------------------------------------------------------


def heartbeat_process(
    port: int, hosts: int, engines: int, interval: float, stop_at: float, out: Any
) -> None:
    async def run() -> list[float]:
        conns = [await Conn.open(port) for _ in range(4)]
        bodies = [heartbeat(i, engines, 0) for i in range(hosts)]
        lat: list[float] = []
        seq = 1
        start = time.monotonic()
        while time.monotonic() < stop_at:
            for i in range(hosts):
                when = start + (seq - 1) * interval + i * interval / hosts
                delay = when - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() >= stop_at:
                    break
                t = time.perf_counter()
                status, _ = await conns[i % 4].request(
                    "POST", f"/v1/hosts/{host_name(i)}/heartbeat", bodies[i]
                )
                lat.append(time.perf_counter() - t)
                assert status == 200, status
            seq += 1
        for c in conns:
            c.close()
        return lat

    out.put(asyncio.run(run()))


# --- claims ------------------------------------------------------------------------------------


async def open_loop_claims(
    port: int, hosts: int, rate: float, duration: float, hold: float, conns_n: int
) -> dict[str, Any]:
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(conns_n):
        pool.put_nowait(await Conn.open(port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    kinds: dict[str, int] = {}
    releases: list[asyncio.Task[None]] = []
    rng = random.Random(5)

    async def release(claim_id: str) -> None:
        await asyncio.sleep(hold)
        conn = await pool.get()
        try:
            await conn.request("DELETE", f"/v1/claims/{claim_id}")
        finally:
            pool.put_nowait(conn)

    async def one(n: int, scheduled: float) -> None:
        host = host_name(rng.randrange(hosts))
        body = json.dumps(
            {"content_key": f"id:bench{n}", "proxy_id": f"proxy-{host}", "host": host}
        ).encode()
        conn = await pool.get()
        try:
            status, data = await conn.request("POST", "/v1/claims", body)
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            grant = json.loads(data)
            kinds[grant["kind"]] = kinds.get(grant["kind"], 0) + 1
            releases.append(asyncio.create_task(release(grant["claim_id"])))

    total = int(rate * duration)
    tasks = []
    t0 = time.perf_counter()
    for n in range(total):
        scheduled = t0 + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*releases)
    while not pool.empty():
        pool.get_nowait().close()
    return {
        "latencies": latencies,
        "statuses": statuses,
        "kinds": kinds,
        "elapsed": elapsed,
        "total": total,
    }


async def closed_loop_claims(
    port: int, hosts: int, conns_n: int, seconds: float
) -> tuple[int, float]:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        conn = await Conn.open(port)
        n = 0
        while time.perf_counter() < stop:
            host = host_name((w + n) % hosts)
            body = json.dumps(
                {"content_key": f"id:max{w}-{n}", "proxy_id": f"p-{host}", "host": host}
            ).encode()
            status, data = await conn.request("POST", "/v1/claims", body)
            if status == 200:
                await conn.request("DELETE", f"/v1/claims/{json.loads(data)['claim_id']}")
            done += 1
            n += 1
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(conns_n)))
    return done, time.perf_counter() - t0


async def heartbeat_burst(port: int, engines: int, count: int) -> list[float]:
    conn = await Conn.open(port)
    body = heartbeat(999, engines, 0)
    lat = []
    for _ in range(count):
        t = time.perf_counter()
        status, _ = await conn.request("POST", f"/v1/hosts/{host_name(999)}/heartbeat", body)
        lat.append(time.perf_counter() - t)
        assert status == 200
    conn.close()
    return lat


async def register(port: int, hosts: int, engines: int) -> None:
    conn = await Conn.open(port)
    for i in range(hosts):
        host = host_name(i)
        status, _ = await conn.request(
            "POST", f"/v1/hosts/{host}/heartbeat", heartbeat(i, engines, 0)
        )
        assert status == 200
        snap = ProxySnapshot(host=host, url=f"http://{host}:6880", streams=[])
        status, _ = await conn.request(
            "PUT", f"/v1/proxies/proxy-{host}/streams", snap.model_dump_json().encode()
        )
        assert status == 200
    conn.close()


def server_claim_histogram(url: str) -> str:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    count = total = 0.0
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("acefleet_central_claim_duration_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith("acefleet_central_claim_duration_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("acefleet_central_claim_duration_seconds_sum"):
            total = float(line.split()[-1])
    p99_bound = next((le for le, c in buckets if count and c >= 0.99 * count), float("nan"))
    return (
        f"inside central: mean {total / count * 1e6:.0f} us over {int(count)} claims, "
        f"p99 <= {p99_bound * 1e3:.1f} ms (histogram bucket)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--engines", type=int, default=20)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--hb-burst", type=int, default=500)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="central-bench-") as tmp:
        port = procs.free_port()
        env = {
            "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
            "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/central.db",
            "ACEFLEET_CENTRAL_SERVICE_KEYS": KEY,
            "ACEFLEET_CENTRAL_VIEWER_KEYS": VIEWER,
            "ACEFLEET_CENTRAL_HEARTBEAT_INTERVAL_S": str(args.interval),
            "ACEFLEET_CENTRAL_STALE_AFTER_S": str(args.interval * 5),
            "ACEFLEET_CENTRAL_LOST_AFTER_S": str(args.interval * 15),
            "ACEFLEET_CENTRAL_WARMUP_S": "0",
            "ACEFLEET_CENTRAL_WARM_BUFFER_PER_EDGE": "0",
            "ACEFLEET_CENTRAL_LOG_LEVEL": "warning",
            "ACEFLEET_CENTRAL_SERVICE_RATE_LIMIT_RPS": "100000",
        }
        svc = procs.start(
            "acefleet-central", [], port=port, ready_path="/readyz", log_dir=Path(tmp), env=env
        )
        try:
            print(
                f"central pid {svc.proc.pid} on {svc.url}; {os.cpu_count()} cpus, "
                f"load {os.getloadavg()[0]:.1f}"
            )
            asyncio.run(register(port, args.hosts, args.engines))

            cpu0 = procs.cpu_seconds(svc.proc.pid)
            hb_lat = asyncio.run(heartbeat_burst(port, args.engines, args.hb_burst))
            cpu1 = procs.cpu_seconds(svc.proc.pid)
            per_hb = (cpu1 - cpu0) / args.hb_burst
            print(
                f"\n[1] heartbeat ingest, {args.engines} engines each, {args.hb_burst} back to back"
            )
            print(
                f"    central CPU per heartbeat: {per_hb * 1e3:.2f} ms "
                f"=> {per_hb / args.interval * 1e3:.3f} ms CPU per host per second at "
                f"{args.interval:g} s interval; {args.hosts} hosts: "
                f"{per_hb * args.hosts / args.interval * 100:.1f} % of a core"
            )
            print(f"    latency: {summary_ms(hb_lat)}")

            out: Any = mp.get_context("spawn").Queue()
            stop_at = time.monotonic() + args.duration + 2
            beater = mp.get_context("spawn").Process(
                target=heartbeat_process,
                args=(port, args.hosts, args.engines, args.interval, stop_at, out),
            )
            beater.start()
            time.sleep(1.0)  # heartbeats flowing before claims start
            gc.collect()
            gc.freeze()  # the load generator's own GC passes must not count as claim latency
            cpu0 = procs.cpu_seconds(svc.proc.pid)
            client0 = time.process_time()
            res = asyncio.run(
                open_loop_claims(port, args.hosts, args.rate, args.duration, args.hold, args.conns)
            )
            client_cpu = time.process_time() - client0
            cpu1 = procs.cpu_seconds(svc.proc.pid)
            hb_during = out.get(timeout=args.duration + 30)
            beater.join(timeout=10)
            lat = res["latencies"]
            print(
                f"\n[2] open loop: {args.rate:g} claims/s for {args.duration:g} s, "
                f"{args.hosts} hosts x {args.engines} engines heartbeating every "
                f"{args.interval:g} s, claims held {args.hold:g} s"
            )
            print(
                f"    claims: {res['total']} sent in {res['elapsed']:.2f} s = "
                f"{res['total'] / res['elapsed']:.0f}/s; statuses {res['statuses']}, "
                f"grants {res['kinds']}"
            )
            print(f"    claim latency (client, from scheduled send): {summary_ms(lat)}")
            print(f"    heartbeats meanwhile: {len(hb_during)}, latency {summary_ms(hb_during)}")
            print(
                f"    central CPU: {(cpu1 - cpu0) / res['elapsed'] * 100:.0f} % of a core, "
                f"{(cpu1 - cpu0) / res['total'] * 1e3:.2f} ms per claim (incl. its DELETE and "
                f"the heartbeats); claim client CPU {client_cpu / res['elapsed'] * 100:.0f} %"
            )
            print(f"    {server_claim_histogram(svc.url)}")

            done, secs = asyncio.run(closed_loop_claims(port, args.hosts, args.conns, 5.0))
            print(
                f"\n[3] closed loop, {args.conns} connections: {done / secs:.0f} claims/s "
                f"(each followed by its DELETE)"
            )
            print(
                f"\nmedian heartbeat latency during claims: "
                f"{statistics.median(hb_during) * 1e3:.2f} ms"
            )
        finally:
            svc.stop()


if __name__ == "__main__":
    main()
