"""Central's CPU per service request under two configurations, A and B, measured side by side.

Two centrals run at once, identical but for the settings given to each (--a, --b: setting=value
pairs, comma-separated, as ACEFLEET_CENTRAL_<SETTING> would set them); the same request mix is
sent to each in turn, in alternating blocks, so a drift of the machine (steal, other load)
reaches both alike. On this 2-core box two whole runs of central_fleet_bench.py minutes apart
differed by up to 40 % in central's CPU and 2x in claim p99 with the same code
(bench/results/central.md): a change smaller than that needs this harness to be seen at all.

One block: --ops operations from --conns keep-alive connections; an operation is what a proxy
and an agent do for one channel start: a 20-engine heartbeat, a claim, an event batch
(its stream_started, and the stream_ended of the connection's previous one), the claim's
DELETE. Per block, each central's CPU time (utime + stime of its
process, history thread included) per request.

    .venv/bin/python bench/central_ab_bench.py --a gc_full_interval_s=60 --b gc_full_interval_s=0
        [--hosts 50] [--engines 20] [--ops 2500] [--rounds 6] [--conns 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.central_fleet_bench import FAILURES, Conn, heartbeat_body, host_name, service_key
from tests.support import procs

REQUESTS_PER_OP = 4
VARIANTS = ("A", "B")


def settings_env(pairs: str) -> dict[str, str]:
    """``name=value,name=value`` as central's environment variables."""
    env = {}
    for pair in filter(None, pairs.split(",")):
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"not a setting=value pair: {pair!r}")
        env[f"ACEFLEET_CENTRAL_{name.strip().upper()}"] = value.strip()
    return env


def start(variant: str, tmp: Path, settings: dict[str, str]) -> procs.Service:
    port = procs.free_port()
    env = {
        "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
        "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/{variant}.db",
        "ACEFLEET_CENTRAL_SERVICE_KEYS": f"edges0:{service_key(0)}",
        "ACEFLEET_CENTRAL_OPERATOR_KEYS": f"ops:{service_key(1)}-operator",
        "ACEFLEET_CENTRAL_WARM_BUFFER_PER_EDGE": "0",
        "ACEFLEET_CENTRAL_WARMUP_S": "0",
        "ACEFLEET_CENTRAL_LOG_LEVEL": "warning",
        **settings,
    }
    return procs.start(
        "acefleet-central", [], port=port, ready_path="/readyz", log_dir=tmp / variant, env=env
    )


async def block(
    port: int, args: argparse.Namespace, seqs: dict[int, int], ops: int
) -> dict[int, int]:
    """``ops`` operations over --conns connections; the answers' statuses counted."""
    statuses: dict[int, int] = {}
    todo = iter(range(ops))

    def count(status: int) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    async def one(conn: Conn) -> None:
        ended: list[dict[str, object]] = []  # the connection's previous stream ends in the batch
        for n in todo:
            i = n % args.hosts
            host = host_name(i)
            seqs[i] += 1
            beat = heartbeat_body(i, args.engines, seqs[i], {})
            count((await conn.request("POST", f"/v1/hosts/{host}/heartbeat", beat))[0])
            key = f"id:{uuid.uuid4().hex}"
            claim = {"content_key": key, "proxy_id": f"p-{host}", "host": host}
            status, body = await conn.request("POST", "/v1/claims", json.dumps(claim).encode())
            count(status)
            if status != 200:
                continue
            grant = json.loads(body)
            stream = {
                "type": "stream_started",
                "stream_id": uuid.uuid4().hex,
                "at": "2026-01-01T00:00:00+00:00",
                "content_key": key,
                "claim_id": grant["claim_id"],
                "engine_id": grant["engine"]["id"] if grant.get("engine") else None,
                "host": host,
            }
            events = [{**stream, "event_id": uuid.uuid4().hex}, *ended]
            ended = [
                {
                    "event_id": uuid.uuid4().hex,
                    "type": "stream_ended",
                    "stream_id": stream["stream_id"],
                    "at": "2026-01-01T00:00:01+00:00",
                    "reason": "idle",
                }
            ]
            batch = {"proxy_id": f"p-{host}", "events": events}
            count((await conn.request("POST", "/v1/events", json.dumps(batch).encode()))[0])
            count((await conn.request("DELETE", f"/v1/claims/{grant['claim_id']}"))[0])

    conns = [Conn(port, service_key(0)) for _ in range(args.conns)]
    try:
        await asyncio.gather(*(one(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", default="", help="A's settings: name=value[,name=value]")
    ap.add_argument("--b", default="", help="B's settings: name=value[,name=value]")
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--engines", type=int, default=20)
    ap.add_argument("--ops", type=int, default=2500, help="operations per block")
    ap.add_argument("--rounds", type=int, default=6, help="blocks per central")
    ap.add_argument("--conns", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="central-ab-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        given = {"A": settings_env(args.a), "B": settings_env(args.b)}
        services = {v: start(v, tmp, given[v]) for v in VARIANTS}
        try:
            seqs = {v: dict.fromkeys(range(args.hosts), 0) for v in VARIANTS}
            for v, svc in services.items():  # warm up: every host known, code paths run once
                asyncio.run(block(svc.port, args, seqs[v], 200))
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            for v in VARIANTS:
                print(f"{v}: {(args.a if v == 'A' else args.b) or '(defaults)'}")
            print(
                f"{args.hosts} hosts x {args.engines} engines; blocks of {args.ops} operations "
                f"({args.ops * REQUESTS_PER_OP} requests) from {args.conns} connections, "
                f"{args.rounds} per central, alternating; load {load}"
            )
            cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            rate: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in range(args.rounds):
                order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
                for v in order:
                    svc = services[v]
                    c0, t0 = procs.cpu_seconds(svc.proc.pid), time.monotonic()
                    statuses = asyncio.run(block(svc.port, args, seqs[v], args.ops))
                    time.sleep(0.3)  # history rows of the block written (its thread's CPU)
                    used = procs.cpu_seconds(svc.proc.pid) - c0
                    wall = time.monotonic() - t0 - 0.3
                    n = sum(statuses.values())
                    cpu[v].append(used / n * 1e6)
                    rate[v].append(n / wall)
                    bad = {s: k for s, k in statuses.items() if s not in (200, 204)}
                    if bad:
                        print(f"    {v} round {r}: answers other than 200/204: {bad}")
            for v in VARIANTS:
                q = statistics.quantiles(cpu[v], n=4)
                every = ", ".join(f"{x:.0f}" for x in cpu[v])
                print(
                    f"  {v:8s} central CPU per request: median {statistics.median(cpu[v]):.0f} us "
                    f"(quartiles {q[0]:.0f}-{q[2]:.0f}; each block {every}); "
                    f"requests/s median {statistics.median(rate[v]):.0f}"
                )
            ratio = statistics.median(cpu["A"]) / statistics.median(cpu["B"])
            print(f"  A / B CPU per request (medians): {ratio:.2f}")
            if FAILURES:
                print(f"  requests without an answer: {dict(FAILURES)}")
        finally:
            for svc in services.values():
                svc.stop()


if __name__ == "__main__":
    main()
