"""Benchmark acefleet-central against a big fleet: 500 edges x 20 engines heartbeating, 200
proxies sending events and snapshots, 2,000 claims/s, 50 operators on the live feed, and a
SIGKILL + restart of central under that load.

Central runs as the real console script on loopback (SQLite history in a temp dir). The load is
simulated agents and proxies over real HTTP, from --workers processes with a hand-rolled
keep-alive HTTP/1.1 client (httpx would cost the load more CPU than central spends answering).
Worker w owns the edges i with i % workers == w: it heartbeats each of them every --interval s
(phases spread evenly, the engine ``streams`` counts taken from its proxy's live sessions, as an
agent reports them) and runs the proxy of each of the first --proxies edges the way proxy/ does:

- claims (``POST /v1/claims``) open loop, --rate/s over all proxies, latency from each claim's
  scheduled send time; a content already live on that proxy is joined, not claimed;
- an engine grant becomes a stream: ``stream_started`` goes into the proxy's event queue (one
  ``POST /v1/events`` batch after 0.2 s of gathering, retried with backoff while central is
  away), after --hold s the stream ends: ``stream_ended`` event plus ``DELETE`` of the claim;
  a relay grant is held and released the same way;
- --long streams per proxy live for the whole run (channels watched for long), so a restart
  of central has sessions to rebuild; churn claims ask for another proxy's long channel now and
  then (--p-long), which central must answer with a relay, never a second engine;
- a snapshot (``PUT /v1/proxies/{id}/streams``) every --snapshot-interval s, every 1 s while
  central fails, and at once when events flow again after an outage.

Phases (central CPU from /proc, RSS from /proc/<pid>/status):
[1] memory: RSS with 0, then edges registered in steps (one heartbeat each) -> KiB per edge;
    10,000 synthetic streams (each with its claim) snapshotted and ended -> KiB per stream.
[2] heartbeat ingest: --burst back-to-back 20-engine heartbeats (CPU per heartbeat), then the
    fleet heartbeating and snapshotting without claims (CPU per edge per second).
[3] claims at --rate/s for --phase s.
[4] the same with --operators live WebSocket clients (each loads /dashboard, then the feed,
    as the dashboard page does, offering permessage-deflate as browsers do; --deflate: central
    accepts it; deltas as patches as the page asks for them, --whole: whole items as the CLI
    takes them): claim latency beside [3], and once every operator had its snapshot; feed
    messages and fan-out spread.
[5] SIGKILL central, start it again on the same port and database under the load: time until
    claims are granted again, hosts/engines/streams known again, and no content on two engines
    at once nor an engine over its cap, judged from the claim answers of the whole run and
    from central's own /v1/claims and /v1/streams after the restart.

    .venv/bin/python bench/central_fleet_bench.py [--edges 500] [--engines 20] [--proxies 200]
        [--rate 2000] [--phase 20] [--operators 50] [--deflate] [--workers 3] [--no-restart]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import multiprocessing as mp
import os
import random
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import contextlib

from bench.central_bench import summary_ms
from tests.support import procs

OPERATOR = "ops"
KEY_SUFFIX = "-bench-fleet-key-0123456789abcdef"
STARTED_AT = "2026-01-01T00:00:00+00:00"
INF = float("inf")


def service_key(worker: int) -> str:
    return f"edges{worker}{KEY_SUFFIX}"


def operator_key(n: int) -> str:
    return f"op{n}{KEY_SUFFIX}"


def host_name(i: int) -> str:
    return f"edge{i:03}"


def engine_id(host: str, n: int) -> str:
    return f"{host}-eng{n:02}"


def heartbeat_body(i: int, engines: int, seq: int, streams: dict[str, int]) -> bytes:
    """An agent's heartbeat as the wire model renders it (``acefleet.wire.Heartbeat``)."""
    host = host_name(i)
    reports = [
        {
            "id": (eid := engine_id(host, n)),
            "host": host,
            "endpoint": f"127.0.0.1:{19000 + n}",
            "http_port": 19000 + n,
            "profile": "sim",
            "health": "healthy",
            "stream_cap": 1,
            "streams": streams.get(eid, 0),
            "created_at": STARTED_AT,
        }
        for n in range(engines)
    ]
    body = {
        "host": host,
        "agent_url": f"http://{host}:8100",
        "seq": seq,
        "engines": reports,
        "max_engines": engines,
    }
    return json.dumps(body).encode()


FAILURES: collections.Counter[str] = collections.Counter()  # this process's failed requests


class Conn:
    """One keep-alive HTTP/1.1 connection with a service or operator key."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Status and body; status 0 when central is not there. A kept-alive connection the
        server closed meanwhile (idle timeout, restart) is reopened and the request sent once
        more, as HTTP clients do."""
        reused = self.writer is not None
        status, data = await self._request(method, path, body)
        if status == 0 and reused:
            status, data = await self._request(method, path, body)
        return status, data

    async def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: central\r\nX-API-Key: {self.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            self.writer.write(head.encode() + body)
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
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
        except (
            OSError,
            ConnectionError,
            asyncio.IncompleteReadError,
            ValueError,
            IndexError,
        ) as exc:
            FAILURES[type(exc).__name__] += 1
            self.close()
            return 0, b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Pool:
    def __init__(self, port: int, key: str, size: int) -> None:
        self.free: asyncio.Queue[Conn] = asyncio.Queue()
        for _ in range(size):
            self.free.put_nowait(Conn(port, key))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = await self.free.get()
        try:
            return await conn.request(method, path, body)
        finally:
            self.free.put_nowait(conn)


# --- the simulated proxies and agents (one worker process) --------------------------------------


_clock: list[Any] = [0, ""]


def now_iso() -> str:
    """The current UTC second as ISO 8601, formatted once per second (the load must be cheap)."""
    second = int(time.time())
    if _clock[0] != second:
        _clock[0], _clock[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(second))
    return str(_clock[1])


@dataclass
class Live:
    stream_id: str
    content: str
    claim_id: str
    engine: str


@dataclass
class SimProxy:
    """What a proxy keeps that central is told about: its live streams and its event queue."""

    host: str
    pid: str
    url: str
    live: dict[str, Live] = field(default_factory=dict)  # content key -> stream
    events: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    snap_now: asyncio.Event = field(default_factory=asyncio.Event)
    relaying: set[str] = field(default_factory=set)

    def event(self, kind: str, s: Live, **extra: Any) -> None:
        self.events.append(
            {
                "event_id": uuid.uuid4().hex,
                "type": kind,
                "stream_id": s.stream_id,
                "at": now_iso(),
                **extra,
            }
        )
        self.wake.set()

    def snapshot(self) -> bytes:
        streams = [
            {
                "stream_id": s.stream_id,
                "content_key": s.content,
                "claim_id": s.claim_id,
                "engine_id": s.engine,
                "source": "central",
                "viewers": 1,
                "started_at": STARTED_AT,
            }
            for s in self.live.values()
        ]
        # stamped like the events' "at", as a real proxy does: central then tells a snapshot
        # that is older than an event it already has (equal seconds count as newer: safe)
        body = {"host": self.host, "url": self.url, "streams": streams, "taken_at": now_iso()}
        return json.dumps(body).encode()


def worker_process(w: int, cfg: dict[str, Any], out: Any) -> None:
    try:
        out.put(asyncio.run(Worker(w, cfg).run()))
    except BaseException as exc:
        out.put({"error": repr(exc)})
        raise


class Worker:
    def __init__(self, w: int, cfg: dict[str, Any]) -> None:
        self.w = w
        self.cfg = cfg
        self.pool = Pool(cfg["port"], service_key(w), cfg["conns"])
        self.edges = [i for i in range(cfg["edges"]) if i % cfg["workers"] == w]
        self.proxies = {
            i: SimProxy(host_name(i), f"proxy-{host_name(i)}", f"http://{host_name(i)}:6880")
            for i in self.edges
            if i < cfg["proxies"]
        }
        self.rng = random.Random(w)
        self.claims: list[tuple[float, float, int, str]] = []  # sched, latency, status, kind
        self.grants: list[list[Any]] = []  # content, engine, claim id, sent, answered, released
        self.deletes: collections.Counter[int] = collections.Counter()
        self.event_posts: collections.Counter[int] = collections.Counter()
        self.snapshots: collections.Counter[int] = collections.Counter()
        self.heartbeats: collections.Counter[int] = collections.Counter()
        self.joined = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def streams_on(self, i: int) -> dict[str, int]:
        proxy = self.proxies.get(i)
        counts: dict[str, int] = {}
        if proxy is not None:
            for s in proxy.live.values():
                counts[s.engine] = counts.get(s.engine, 0) + 1
        return counts

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        await asyncio.sleep(max(0.0, cfg["t_start"] - time.monotonic()))
        for i in self.edges:
            self.spawn(self.agent(i))
        for proxy in self.proxies.values():
            self.spawn(self.event_loop(proxy))
            self.spawn(self.snapshot_loop(proxy))
        await self.long_streams()
        await self.claim_loop()
        await asyncio.sleep(max(0.0, cfg["t_end"] - time.monotonic()))
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        long = [
            (p.pid, s.content, s.engine, s.claim_id, s.stream_id)
            for p in self.proxies.values()
            for s in p.live.values()
            if s.content.startswith("id:long-")
        ]
        return {
            "claims": self.claims,
            "grants": self.grants,
            "deletes": dict(self.deletes),
            "events": dict(self.event_posts),
            "snapshots": dict(self.snapshots),
            "heartbeats": dict(self.heartbeats),
            "joined": self.joined,
            "long": long,
            "failures": dict(FAILURES),
        }

    async def agent(self, i: int) -> None:
        interval = self.cfg["interval"]
        start = self.cfg["t_start"] + interval * (i / self.cfg["edges"])
        seq = 1
        while True:
            await asyncio.sleep(max(0.0, start + (seq - 1) * interval - time.monotonic()))
            body = heartbeat_body(i, self.cfg["engines"], seq, self.streams_on(i))
            status, _ = await self.pool.request("POST", f"/v1/hosts/{host_name(i)}/heartbeat", body)
            self.heartbeats[status] += 1
            seq += 1

    async def event_loop(self, proxy: SimProxy) -> None:
        backoff, connected = 0.2, True
        while True:
            if not proxy.events:
                proxy.wake.clear()
                await proxy.wake.wait()
            await asyncio.sleep(0.2)  # the proxy's event_flush_s
            while proxy.events:
                batch = proxy.events[:200]
                body = json.dumps({"proxy_id": proxy.pid, "events": batch}).encode()
                status, _ = await self.pool.request("POST", "/v1/events", body)
                self.event_posts[status] += 1
                if status == 200:
                    del proxy.events[: len(batch)]
                    backoff = 0.2
                    if not connected:
                        proxy.snap_now.set()  # as the proxy's on_reconnect
                    connected = True
                else:
                    connected = False
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    async def snapshot_loop(self, proxy: SimProxy) -> None:
        interval = self.cfg["snapshot_interval"]
        await asyncio.sleep(self.rng.random() * interval)
        while True:
            status, _ = await self.pool.request(
                "PUT", f"/v1/proxies/{proxy.pid}/streams", proxy.snapshot()
            )
            self.snapshots[status] += 1
            wait = interval if status == 200 else min(interval, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proxy.snap_now.wait(), wait)
            proxy.snap_now.clear()

    async def long_streams(self) -> None:
        # every edge heartbeated once more (they went stale while the bench measured memory)
        await asyncio.sleep(
            max(0.0, self.cfg["t_start"] + self.cfg["interval"] + 0.5 - time.monotonic())
        )
        jobs = [
            self.claim(p, f"id:long-{p.host}-{k}", time.monotonic(), INF)
            for p in self.proxies.values()
            for k in range(self.cfg["long"])
        ]
        await asyncio.gather(*jobs)
        self.claims.clear()

    async def claim_loop(self) -> None:
        cfg = self.cfg
        proxies = list(self.proxies.values())
        if not proxies:
            return
        rate = cfg["rate"] * len(proxies) / cfg["proxies"]
        await asyncio.sleep(max(0.0, cfg["t_claims"] - time.monotonic()))
        t0 = time.monotonic()
        n = 0
        while t0 + n / rate < cfg["t_claims_end"]:
            scheduled = t0 + n / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            proxy = proxies[self.rng.randrange(len(proxies))]
            if self.rng.random() < cfg["p_long"]:
                other = self.rng.randrange(cfg["proxies"])
                content = f"id:long-{host_name(other)}-{self.rng.randrange(max(1, cfg['long']))}"
            else:
                content = f"id:ch{self.rng.randrange(cfg['channels'])}"
            if content in proxy.live or content in proxy.relaying:
                self.joined += 1  # a viewer joins the channel this proxy already serves
            else:
                self.spawn(self.claim(proxy, content, scheduled, cfg["hold"]))
            n += 1

    async def claim(self, proxy: SimProxy, content: str, scheduled: float, hold: float) -> None:
        body = json.dumps(
            {"content_key": content, "proxy_id": proxy.pid, "host": proxy.host}
        ).encode()
        proxy.relaying.add(content)  # joined meanwhile, as the proxy's channel table does
        sent = time.monotonic()
        status, data = await self.pool.request("POST", "/v1/claims", body)
        answered = time.monotonic()
        latency = answered - scheduled
        if status != 200:
            proxy.relaying.discard(content)
            self.claims.append((scheduled, latency, status, ""))
            return
        grant = json.loads(data)
        self.claims.append((scheduled, latency, status, grant["kind"]))
        claim_id = grant["claim_id"]
        if grant["kind"] == "engine":
            proxy.relaying.discard(content)
            eng = grant["engine"]["id"]
            record = [content, eng, claim_id, sent, answered, INF]
            self.grants.append(record)
            s = Live(uuid.uuid4().hex, content, claim_id, eng)
            proxy.live[content] = s
            proxy.event(
                "stream_started",
                s,
                content_key=content,
                claim_id=claim_id,
                engine_id=eng,
                host=proxy.host,
                viewers=1,
            )
            if hold == INF:
                return
            await asyncio.sleep(hold)
            proxy.live.pop(content, None)
            record[5] = time.monotonic()
            proxy.event("stream_ended", s, content_key=content, reason="idle")
        else:
            # The asking proxy relays from the serving edge's proxy, which claims the content
            # there (redeeming the reservation central made on its engine).
            redeemed = None
            source = grant["relay"]["host"]
            # A proxy asked to relay a channel it already serves just serves it: no claim (and
            # its DELETE would end that proxy's own session's claim). The long channels' owner
            # is in their name; a churn channel served there by chance is not known here.
            serves = content.startswith(f"id:long-{source}-")
            if hold != INF and source != proxy.host and not serves:
                redeemed = await self.redeem(source, content)
            await asyncio.sleep(hold)
            proxy.relaying.discard(content)
            if redeemed is not None:
                redeemed[5] = time.monotonic()
                status, _ = await self.pool.request("DELETE", f"/v1/claims/{redeemed[2]}")
                self.deletes[status] += 1
        status, _ = await self.pool.request("DELETE", f"/v1/claims/{claim_id}")
        self.deletes[status] += 1

    async def redeem(self, host: str, content: str) -> list[Any] | None:
        """The serving edge's claim of a relayed content (sent from here on its behalf; counted
        with the claims); the engine grant it gets, if any."""
        body = json.dumps(
            {"content_key": content, "proxy_id": f"proxy-{host}", "host": host}
        ).encode()
        scheduled = sent = time.monotonic()
        status, data = await self.pool.request("POST", "/v1/claims", body)
        answered = time.monotonic()
        if status != 200:
            self.claims.append((scheduled, answered - scheduled, status, "redeem"))
            return None
        grant = json.loads(data)
        self.claims.append((scheduled, answered - scheduled, status, "redeem-" + grant["kind"]))
        if grant["kind"] != "engine":
            return None
        record = [content, grant["engine"]["id"], grant["claim_id"], sent, answered, INF]
        self.grants.append(record)
        return record


# --- operators on the live feed ------------------------------------------------------------------

_VERSION = re.compile(rb'"version": (\d+)')


def operators_process(
    port: int, n: int, t_from: float, t_to: float, patches: bool, out: Any
) -> None:
    out.put(asyncio.run(operators(port, n, t_from, t_to, patches)))


async def operators(port: int, n: int, t_from: float, t_to: float, patches: bool) -> dict[str, Any]:
    import websockets

    first: dict[int, float] = {}
    last: dict[int, float] = {}
    got = collections.Counter[str]()
    size = collections.Counter[str]()
    gaps: list[float] = []
    closes: list[str] = []
    snapshot_at: list[float] = []  # when each operator had its snapshot (CLOCK_MONOTONIC)

    async def one(k: int) -> None:
        conn = Conn(port, operator_key(k))
        status, _page = await conn.request("GET", "/dashboard")
        conn.close()
        got[f"dashboard {status}"] += 1
        try:
            # permessage-deflate offered, as every browser does (central declines it unless
            # its live_ws_deflate is on); counted when central took it. Patches as the
            # dashboard page asks for them, unless --whole.
            query = "?patches=1" if patches else ""
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/v1/live/ws{query}", max_size=None, compression="deflate"
            ) as ws:
                if ws.response is not None and ws.response.headers.get("Sec-WebSocket-Extensions"):
                    got["compressed"] += 1
                await ws.send(json.dumps({"type": "auth", "api_key": operator_key(k)}))
                prev = None
                while time.monotonic() < t_to:
                    try:
                        msg = await asyncio.wait_for(ws.recv(), t_to - time.monotonic())
                    except TimeoutError:
                        break
                    now = time.monotonic()
                    raw = msg.encode() if isinstance(msg, str) else msg
                    kind = "snapshot" if raw.startswith(b'{"type": "snapshot"') else "delta"
                    if raw.startswith(b'{"type": "ping"'):
                        kind = "ping"
                    got[kind] += 1
                    size[kind] += len(raw)
                    if kind == "snapshot":
                        snapshot_at.append(now)
                    m = _VERSION.search(raw[:200])
                    if m and kind == "delta":
                        v = int(m.group(1))
                        first.setdefault(v, now)
                        last[v] = now
                        if prev is not None and k == 0:
                            gaps.append(now - prev)
                        prev = now
        except Exception as exc:  # a close by central is a figure, not a crash of the bench
            closes.append(repr(exc)[:120])

    await asyncio.sleep(max(0.0, t_from - time.monotonic()))
    await asyncio.gather(*(one(k) for k in range(n)))
    spread = [last[v] - first[v] for v in first]
    return {
        "messages": dict(got),
        "bytes": dict(size),
        "spread": spread,
        "gaps": gaps,
        "closes": closes,
        "versions": len(first),
        "snapshots_done": max(snapshot_at, default=None),
    }


# --- main -----------------------------------------------------------------------------------------


def central_env(port: int, tmp: str, args: argparse.Namespace) -> dict[str, str]:
    return {
        "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
        "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/central.db",
        "ACEFLEET_CENTRAL_SERVICE_KEYS": ",".join(
            f"edges{w}:{service_key(w)}" for w in range(args.workers + 1)
        ),
        "ACEFLEET_CENTRAL_OPERATOR_KEYS": ",".join(
            f"op{n}:{operator_key(n)}" for n in range(max(1, args.operators))
        ),
        "ACEFLEET_CENTRAL_HEARTBEAT_INTERVAL_S": str(args.interval),
        "ACEFLEET_CENTRAL_WARM_BUFFER_PER_EDGE": "0",
        "ACEFLEET_CENTRAL_LOG_LEVEL": "warning",
        "ACEFLEET_CENTRAL_LIVE_WS_DEFLATE": "true" if args.deflate else "false",
    }


def rss_mib(pid: int) -> float:
    return procs.memory_kib(pid) / 1024


async def register(port: int, edges: range, engines: int, proxies: int, workers: int) -> None:
    """One heartbeat per edge and an empty snapshot per proxy, each with the key of the worker
    that will run it (the first key to speak for a proxy id keeps it)."""
    pools = [Pool(port, service_key(w), 4) for w in range(workers)]

    async def one(i: int) -> None:
        pool = pools[i % workers]
        status, _ = await pool.request(
            "POST", f"/v1/hosts/{host_name(i)}/heartbeat", heartbeat_body(i, engines, 0, {})
        )
        assert status == 200, status
        if i < proxies:
            proxy = SimProxy(host_name(i), f"proxy-{host_name(i)}", f"http://{host_name(i)}:6880")
            status, _ = await pool.request(
                "PUT", f"/v1/proxies/{proxy.pid}/streams", proxy.snapshot()
            )
            assert status == 200, status

    await asyncio.gather(*(one(i) for i in edges))


async def stream_probe(port: int, key: str, count: int, pid: int) -> float:
    """KiB of central's RSS per stream (each with its adopted claim): one snapshot of a probe
    proxy listing ``count`` streams, RSS before and after, then an empty snapshot ends them."""
    conn = Conn(port, key)
    probe = SimProxy("probe-host", "proxy-probe", "http://probe-host:6880")
    for n in range(count):
        s = Live(f"probe-s{n}", f"id:probe{n}", uuid.uuid4().hex, f"probe-eng{n}")
        probe.live[s.content] = s
    body = probe.snapshot()
    await asyncio.sleep(1.0)
    before = procs.memory_kib(pid)
    status, _ = await conn.request("PUT", "/v1/proxies/proxy-probe/streams", body)
    assert status == 200, status
    await asyncio.sleep(1.0)
    after = procs.memory_kib(pid)
    probe.live.clear()
    status, _ = await conn.request("PUT", "/v1/proxies/proxy-probe/streams", probe.snapshot())
    conn.close()
    return (after - before) / count


def settle(pid: int, idle: float, limit_s: float = 60.0) -> None:
    """Wait until central is about as idle as before (its history writer caught up)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        c0 = procs.cpu_seconds(pid)
        time.sleep(1.0)
        if procs.cpu_seconds(pid) - c0 <= idle + 0.05:
            return


async def heartbeat_burst(port: int, key: str, engines: int, count: int) -> list[float]:
    conn = Conn(port, key)
    body = heartbeat_body(999, engines, 0, {})
    lat = []
    for _ in range(count):
        t = time.perf_counter()
        status, _ = await conn.request("POST", f"/v1/hosts/{host_name(999)}/heartbeat", body)
        lat.append(time.perf_counter() - t)
        assert status == 200, status
    conn.close()
    return lat


def fetch(port: int, path: str) -> Any:
    import httpx

    r = httpx.get(
        f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": operator_key(0)}, timeout=30
    )
    r.raise_for_status()
    return r.json()


def central_view(port: int) -> dict[str, Any]:
    """Central's own word after the restart: hosts, engines, streams, claims."""
    return {
        "hosts": fetch(port, "/v1/hosts")["items"],
        "claims": fetch(port, "/v1/claims")["items"],
        "streams": fetch(port, "/v1/streams")["items"],
    }


def judge_view(view: dict[str, Any], long: list[tuple[str, ...]], engines: int) -> list[str]:
    """Violations in central's state: a content on two engines, an engine over its cap (1),
    a long-lived stream missing, duplicated or on another engine than its proxy says."""
    bad: list[str] = []
    by_content: dict[str, set[str]] = collections.defaultdict(set)
    per_engine: collections.Counter[str] = collections.Counter()
    for c in view["claims"]:
        if c["kind"] == "engine" and not c["standby"]:
            by_content[c["content_key"]].add(c["engine_id"])
        if c["kind"] == "engine":
            per_engine[c["engine_id"]] += 1
    bad += [f"{k} on engines {sorted(e)}" for k, e in by_content.items() if len(e) > 1]
    bad += [f"engine {e} holds {n} claims (cap 1)" for e, n in per_engine.items() if n > 1]
    streams: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in view["streams"]:
        streams[s["content_key"]].append(s)
    for _pid, content, eng, _claim, sid in long:
        found = streams.get(content, [])
        if len(found) != 1 or found[0]["stream_id"] != sid or found[0]["engine_id"] != eng:
            brief = [(s["stream_id"][:8], s["engine_id"]) for s in found]
            bad.append(f"long stream {content} on {eng}: central has {brief}")
    return bad


def released_early(grants: list[list[Any]]) -> dict[str, float]:
    """Claim ids answered more than once, to when the first holder's release came first.

    A redemption (``Worker.redeem``) of a churn channel the serving edge's proxy happens to
    serve already is answered with that proxy's own claim (central: "the edge that holds the
    session asks again: same claim"), and the bench DELETEs it when its relay ends, releasing
    the other proxy's live claim under it. A real proxy serving the channel would not claim it
    again (a worker cannot see another worker's proxies, so the bench does). Central then
    rightly sees that engine free before its holder lets it go."""
    by_claim: dict[str, list[list[Any]]] = collections.defaultdict(list)
    for g in grants:
        by_claim[g[2]].append(g)
    return {cid: min(g[5] for g in gs) for cid, gs in by_claim.items() if len(gs) > 1}


def judge_grants(grants: list[list[Any]], t_kill: float) -> tuple[list[str], list[str]]:
    """From the claim answers: two engine grants (different claims) held at once for one
    content, or on one engine. ``held at once``: the second claim was sent after the first was
    granted and granted before the first was released, so central decided it while the first
    was live. Returned apart: the pairs central made, and those made after the bench itself
    released the first claim early (``released_early``)."""
    early = released_early(grants)
    bad: list[str] = []
    bench_made: list[str] = []
    for index in (0, 1):  # content, then engine
        groups: dict[str, list[list[Any]]] = collections.defaultdict(list)
        for g in grants:
            groups[g[index]].append(g)
        for name, gs in groups.items():
            gs.sort(key=lambda g: g[4])
            for a_i, a in enumerate(gs):
                for b in gs[a_i + 1 :]:
                    if b[3] >= a[5]:
                        continue
                    if b[2] != a[2] and b[3] > a[4] and b[4] < a[5]:
                        what = "content" if index == 0 else "engine"
                        line = (
                            f"{what} {name}: {a[1]}/{a[2][:8]} at {a[4] - t_kill:+.2f} s and "
                            f"{b[1]}/{b[2][:8]} at {b[4] - t_kill:+.2f} s (from the kill)"
                        )
                        freed = early.get(a[2], INF)
                        (bench_made if b[4] >= freed else bad).append(line)
    return bad, bench_made


Histo = tuple[float, float, list[tuple[float, float]]]  # count, sum, cumulative buckets
CLAIM_SECONDS = "acefleet_central_claim_duration_seconds"
LOOP_LAG = "acefleet_central_loop_lag_seconds"


def histograms(port: int) -> dict[str, Histo]:
    """Central's claim-time and loop-lag histograms from one /metrics scrape (a scrape holds
    central's loop ~25 ms at 500 edges: one per reading)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    out: dict[str, Histo] = {}
    for name in (CLAIM_SECONDS, LOOP_LAG):
        count = total = 0.0
        buckets: list[tuple[float, float]] = []
        for line in text.splitlines():
            if line.startswith(name + "_bucket"):
                le = line.split('le="')[1].split('"')[0]
                buckets.append((INF if le == "+Inf" else float(le), float(line.split()[-1])))
            elif line.startswith(name + "_count"):
                count = float(line.split()[-1])
            elif line.startswith(name + "_sum"):
                total = float(line.split()[-1])
        out[name] = (count, total, buckets)
    return out


def _bucket_at(a: Histo, b: Histo, share: float) -> float:
    """The upper bound of the bucket holding ``share`` of the observations between readings."""
    count, before = b[0] - a[0], dict(a[2])
    return next((le for le, c in b[2] if c - before.get(le, 0.0) >= share * count), INF)


def inside(a: dict[str, Histo], b: dict[str, Histo]) -> str:
    """Time inside central per claim, and how late its loop woke, between two readings."""
    ca, cb = a[CLAIM_SECONDS], b[CLAIM_SECONDS]
    count, total = cb[0] - ca[0], cb[1] - ca[1]
    if count <= 0:
        return "no claims inside central"
    claims = (
        f"inside central: mean {total / count * 1e6:.0f} us, "
        f"p99 <= {_bucket_at(ca, cb, 0.99) * 1e3:g} ms (bucket)"
    )
    la, lb = a[LOOP_LAG], b[LOOP_LAG]
    wakes = lb[0] - la[0]
    if wakes <= 0:
        return claims
    over = {le: c - dict(la[2]).get(le, 0.0) for le, c in lb[2]}
    late = wakes - over.get(0.01, wakes)
    return (
        f"{claims}; loop woken late (20 ms timer, {wakes:.0f} wake-ups): mean "
        f"{(lb[1] - la[1]) / wakes * 1e3:.2f} ms, p99 <= {_bucket_at(la, lb, 0.99) * 1e3:g} ms, "
        f"max <= {_bucket_at(la, lb, 1.0) * 1e3:g} ms, {late:.0f} over 10 ms"
    )


def end_reasons(tmp: str) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(f"{tmp}/central.db") as db:
        rows = db.execute("SELECT end_reason, count(*) FROM stream_sessions GROUP BY end_reason")
        return {str(reason): n for reason, n in rows}


def window(claims: list[tuple[float, float, int, str]], t0: float, t1: float) -> str:
    lat = [c[1] for c in claims if t0 <= c[0] < t1]
    if not lat:
        return "no claims"
    statuses = collections.Counter(c[2] for c in claims if t0 <= c[0] < t1)
    kinds = collections.Counter(c[3] for c in claims if t0 <= c[0] < t1 and c[2] == 200)
    rate = len(lat) / (t1 - t0)
    return (
        f"{len(lat)} claims = {rate:.0f}/s; {summary_ms(lat)}\n"
        f"        statuses {dict(statuses)}, grants {dict(kinds)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--edges", type=int, default=500)
    ap.add_argument("--engines", type=int, default=20)
    ap.add_argument("--proxies", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--phase", type=float, default=20.0, help="seconds of [3], [4] and [5] each")
    ap.add_argument("--hb-window", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=2.0, help="agents' heartbeat interval")
    ap.add_argument("--snapshot-interval", type=float, default=10.0)
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--long", type=int, default=3, help="long-lived streams per proxy")
    ap.add_argument("--p-long", type=float, default=0.05)
    ap.add_argument("--channels", type=int, default=50000)
    ap.add_argument("--operators", type=int, default=50)
    ap.add_argument(
        "--deflate", action="store_true", help="central accepts the operators' permessage-deflate"
    )
    ap.add_argument(
        "--whole",
        action="store_true",
        help="operators take deltas of whole items (as the CLI), not patches (as the dashboard)",
    )
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--conns", type=int, default=24, help="connections per worker")
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--no-restart", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="central-fleet-bench-") as tmp:
        port = procs.free_port()
        env = central_env(port, tmp, args)
        key = service_key(args.workers)  # the bench's own service key, not a worker's

        def start() -> procs.Service:
            return procs.start(
                "acefleet-central", [], port=port, ready_path="/readyz", log_dir=Path(tmp), env=env
            )

        svc = start()
        try:
            pid = svc.proc.pid
            print(
                f"central pid {pid} on {svc.url}; {os.cpu_count()} cpus, load "
                f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.workers} load processes"
            )
            # [1] memory
            time.sleep(1.0)
            rss = [(0, procs.memory_kib(pid))]
            steps = sorted({max(1, args.edges // 5), args.edges // 2, args.edges} - {0})
            done = 0
            for n in steps:
                asyncio.run(
                    register(port, range(done, n), args.engines, args.proxies, args.workers)
                )
                done = n
                time.sleep(1.0)
                rss.append((n, procs.memory_kib(pid)))
            per_edge = (rss[-1][1] - rss[0][1]) / max(1, args.edges)
            print(
                f"\n[1] memory, RSS at fleet sizes (edges x {args.engines} engines, one heartbeat"
            )
            print(f"    each, proxy snapshot for the first {args.proxies}):")
            print("    " + ", ".join(f"{n} edges {kib / 1024:.1f} MiB" for n, kib in rss))
            slope = (rss[-1][1] - rss[1][1]) / max(1, rss[-1][0] - rss[1][0])
            print(
                f"    => {per_edge:.1f} KiB per edge from 0 (incl. first-use growth), "
                f"{slope:.1f} KiB per edge between {rss[1][0]} and {rss[-1][0]} edges"
            )
            c0 = procs.cpu_seconds(pid)
            time.sleep(3.0)
            idle = (procs.cpu_seconds(pid) - c0) / 3.0  # the registered fleet, silent
            per_stream = asyncio.run(stream_probe(port, key, 10000, pid))
            settle(pid, idle)  # the probe's 20,000 history rows are written behind
            print(
                f"    streams: {per_stream:.2f} KiB per stream (10,000 streams, each with its "
                f"claim, in one snapshot; RSS delta)"
            )

            # [2] heartbeat ingest
            c0 = procs.cpu_seconds(pid)
            lat = asyncio.run(heartbeat_burst(port, key, args.engines, args.burst))
            per_hb = (procs.cpu_seconds(pid) - c0) / args.burst
            print(f"\n[2] heartbeat ingest ({args.engines}-engine heartbeats)")
            print(
                f"    {args.burst} back to back: {per_hb * 1e3:.2f} ms CPU per heartbeat "
                f"=> {per_hb / args.interval * 1e3:.3f} ms CPU per edge per second at "
                f"{args.interval:g} s; {args.edges} edges: "
                f"{per_hb * args.edges / args.interval * 100:.1f} % of a core; "
                f"latency {summary_ms(lat)}"
            )

            now = time.monotonic()
            t_start = now + 2.0
            t_claims = t_start + args.hb_window
            t_ops = t_claims + args.phase
            t_kill = t_ops + args.phase
            t_claims_end = t_kill + (0.0 if args.no_restart else args.phase)
            t_end = t_claims_end + 1.0 + args.hold
            cfg = {
                "port": port,
                "edges": args.edges,
                "engines": args.engines,
                "proxies": args.proxies,
                "workers": args.workers,
                "conns": args.conns,
                "interval": args.interval,
                "snapshot_interval": args.snapshot_interval,
                "rate": args.rate,
                "hold": args.hold,
                "long": args.long,
                "p_long": args.p_long,
                "channels": args.channels,
                "t_start": t_start,
                "t_claims": t_claims,
                "t_claims_end": t_claims_end,
                "t_end": t_end,
            }
            ctx = mp.get_context("spawn")
            out: Any = ctx.Queue()
            workers = [
                ctx.Process(target=worker_process, args=(w, cfg, out)) for w in range(args.workers)
            ]
            for p in workers:
                p.start()
            ops_out: Any = ctx.Queue()
            ops_proc = None
            if args.operators:
                ops_proc = ctx.Process(
                    target=operators_process,
                    # joining from the start of [4]: 50 snapshots of the whole fleet (2.3 MB
                    # each) are part of "with operators"; joining 3 s early put them in [3]
                    args=(port, args.operators, t_ops, t_kill, not args.whole, ops_out),
                )
                ops_proc.start()
            gc.collect()

            def at(t: float) -> None:
                time.sleep(max(0.0, t - time.monotonic()))

            at(t_start + args.interval + 1.5)  # long-lived streams claimed, heartbeats flowing
            c0, w0 = procs.cpu_seconds(pid), time.monotonic()
            at(t_claims)
            hb_cpu = (procs.cpu_seconds(pid) - c0) / (time.monotonic() - w0)
            cpu: dict[str, float] = {}

            def load_cpu() -> float:
                return sum(procs.cpu_seconds(p.pid) for p in workers if p.pid is not None)

            def ops_cpu() -> float:  # the operators' process shares the 2 cores too
                if ops_proc is None or ops_proc.pid is None or not ops_proc.is_alive():
                    return 0.0
                return procs.cpu_seconds(ops_proc.pid)

            h0, l0 = histograms(port), load_cpu()
            c0 = procs.cpu_seconds(pid)
            at(t_ops)
            cpu["claims"] = (procs.cpu_seconds(pid) - c0) / args.phase
            h1, l1 = histograms(port), load_cpu()
            o1 = ops_cpu()
            rss_claims = rss_mib(pid)
            c0 = procs.cpu_seconds(pid)
            at(t_kill)
            cpu["operators"] = (procs.cpu_seconds(pid) - c0) / args.phase
            h2, l2 = histograms(port), load_cpu()
            o2 = ops_cpu()
            rss_ops = rss_mib(pid)
            restarted = t_ready = 0.0
            view: dict[str, Any] | None = None
            if not args.no_restart:
                svc.kill()
                restarted = time.monotonic()
                svc = start()
                t_ready = time.monotonic()
                pid = svc.proc.pid
                at(t_claims_end - 3.0)
                view = central_view(port)
            results = [out.get(timeout=120) for _ in workers]
            for p in workers:
                p.join(timeout=10)
            ops = ops_out.get(timeout=60) if ops_proc is not None else None
            if ops_proc is not None:
                ops_proc.join(timeout=10)

            claims = [c for r in results for c in r["claims"]]
            grants = [g for r in results for g in r["grants"]]
            long = [tuple(x) for r in results for x in r["long"]]

            def total(name: str) -> dict[int, int]:
                agg: collections.Counter[int] = collections.Counter()
                for r in results:
                    agg.update({int(k): v for k, v in r[name].items()})
                return dict(agg)

            hb_rate = args.edges / args.interval
            print(
                f"    fleet running, no claims ({args.edges} edges every {args.interval:g} s = "
                f"{hb_rate:.0f} heartbeats/s, {args.proxies} proxies snapshotting every "
                f"{args.snapshot_interval:g} s with {args.long} streams each): central "
                f"{hb_cpu * 100:.1f} % of a core ({idle * 100:.1f} % idle) => "
                f"{(hb_cpu - idle) / hb_rate * 1e3:.2f} ms per heartbeat incl. the snapshots' "
                "share, "
                f"{(hb_cpu - idle) / args.edges * 1e3:.3f} ms CPU per edge per second"
            )
            print(
                f"\n[3] claims, {args.rate:g}/s open loop from {args.proxies} proxies, held "
                f"{args.hold:g} s (then stream_ended + DELETE), for {args.phase:g} s:"
            )
            print(f"    {window(claims, t_claims, t_ops)}")
            n3 = sum(1 for c in claims if t_claims <= c[0] < t_ops)
            print(
                f"    central CPU {cpu['claims'] * 100:.0f} % of a core "
                f"({cpu['claims'] * args.phase / max(1, n3) * 1e3:.2f} ms per claim sent, incl. "
                "its stream's events, DELETE and the fleet's heartbeats), "
                f"RSS {rss_claims:.0f} MiB; load processes "
                f"{(l1 - l0) / args.phase * 100:.0f} % of a core"
            )
            print(f"    {inside(h0, h1)}")
            print(f"\n[4] the same with {args.operators} operators on /v1/live/ws:")
            print(f"    {window(claims, t_ops, t_kill)}")
            print(
                f"    central CPU {cpu['operators'] * 100:.0f} % of a core, RSS {rss_ops:.0f} MiB; "
                f"load processes {(l2 - l1) / args.phase * 100:.0f} % of a core, the operators' "
                f"{(o2 - o1) / args.phase * 100:.0f} %"
            )
            print(f"    {inside(h1, h2)}")
            if ops is not None:
                secs = t_kill - t_ops + 3.0
                mib = sum(ops["bytes"].values()) / 2**20
                print(
                    f"    feed: messages {ops['messages']}, {mib / secs:.1f} MiB/s to all "
                    f"operators; {ops['versions']} delta versions"
                )
                if ops["spread"]:
                    print(
                        "    fan-out spread (first to last operator per delta): "
                        f"{summary_ms(ops['spread'])}"
                    )
                if ops["gaps"]:
                    print(f"    gap between deltas at one operator: {summary_ms(ops['gaps'])}")
                if ops["closes"]:
                    print(f"    closed: {collections.Counter(ops['closes']).most_common(3)}")
                done = ops["snapshots_done"]
                if done is not None and done < t_kill:
                    # Their snapshots (the whole fleet, ~2-3 MB each) are a one-off burst.
                    print(
                        f"    claims once every operator had its snapshot "
                        f"(+{done - t_ops:.1f} s): {window(claims, done, t_kill)}"
                    )
            if not args.no_restart:
                print("\n[5] SIGKILL + restart under load:")
                print(
                    f"    central ready again {t_ready - restarted:.2f} s after the kill "
                    f"(interpreter start, imports, history DB)"
                )
                back = [c[0] + c[1] for c in claims if c[2] == 200 and c[0] + c[1] > restarted]
                failed = collections.Counter(
                    c[2] for c in claims if c[2] != 200 and c[0] + c[1] > restarted
                )
                if back:
                    print(
                        f"    first claim granted {min(back) - restarted:.2f} s after the kill; "
                        f"claims not granted after the kill by status: {dict(failed)}"
                    )
                print(f"    {window(claims, t_kill, t_claims_end)}")
                print(
                    f"    last {max(1.0, t_claims_end - t_ready - 5):.0f} s: "
                    f"{window(claims, t_ready + 5, t_claims_end)}"
                )
                assert view is not None
                hosts = {h["name"] for h in view["hosts"]}
                print(
                    f"    central's view {t_claims_end - 3 - restarted:.0f} s after the kill: "
                    f"{len(hosts & {host_name(i) for i in range(args.edges)})}/{args.edges} edges, "
                    f"{len(view['claims'])} claims, {len(view['streams'])} streams; "
                    f"{len(long)} long-lived streams held by the proxies"
                )
                bad = judge_view(view, long, args.engines)
                print(f"    violations in central's state: {len(bad)} {bad[:5]}")
            bad, bench_made = judge_grants(grants, t_kill)
            kinds = collections.Counter(
                (b.split()[0], "long" if "id:long-" in b else "churn", b.count("+") > 0)
                for b in bad
            )
            print(
                f"\nclaim answers of the whole run: {len(grants)} engine grants; pairs held at "
                f"once (content on two engines, or engine over cap): {len(bad)}"
            )
            for (what, channel, after_kill), n in sorted(kinds.items()):
                when = "second granted after the kill" if after_kill else "before the kill"
                print(f"    {what}, {channel} channel, {when}: {n}")
            for line in bad[:5]:
                print(f"    e.g. {line}")
            print(
                f"    redemptions answered with a claim already granted: "
                f"{len(released_early(grants))}; pairs after the bench released such a claim "
                f"under its holder (not counted above): {len(bench_made)}"
            )
            for line in bench_made[:3]:
                print(f"    e.g. {line}")
            print(
                f"requests by status: heartbeats {total('heartbeats')}, events {total('events')}, "
                f"snapshots {total('snapshots')}, deletes {total('deletes')}; "
                f"joined (no claim) {sum(r['joined'] for r in results)}"
            )
            failures: collections.Counter[str] = collections.Counter()
            for r in results:
                failures.update(r["failures"])
            print(f"failed requests (no HTTP answer) by cause: {dict(failures)}")
            print(f"sessions in central's history by end reason: {end_reasons(tmp)}")
            print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            svc.stop()


if __name__ == "__main__":
    main()
