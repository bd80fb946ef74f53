"""The zapping storm (issue 17): clients switching channels fast through one proxy, a probe
timing joins of an already-live channel meanwhile, and what the fleet holds afterwards.

Used by tests/fleet/test_zapping.py (a short storm, then the no-leak invariants) and
bench/zapping_bench.py (the full storm, with figures). A zapping client changes channel on a
fixed beat: it closes its connection and opens another to a random channel of the set. A channel
already live answers at once and the client watches it until its next change; one still
prebuffering (realistic engines: 8 s) answers nothing, and the client gives up after
``patience`` seconds: an abandoned start, whose engine session the proxy must stop and whose
claim it must give back once the channel's grace is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import httpx

from tests.fleet.harness import Fleet, docker, stream_url, until
from tests.support import procs
from tests.support.viewers import Viewer, parse_head, request_line, split_url

# realistic engine timing (8-s prebuffer, 30-s idle timeout) without the 10-s boot; the first
# burst is cut from 20 MB to 1 MB: a hundred channels going live at 20 MB each would measure the
# 2-core machine's copying, not the proxy's bookkeeping
REALISTIC = (
    "--engine-extra-args=--timing,realistic,--startup-delay,0,--media,synthetic,"
    "--bitrate,1000000,--burst-bytes,1000000,--burst-seconds,4"
)
STEADY = "zapsteady"
STEADY_KEY = "id:zapsteady"


async def steady_viewer(proxy: str, within: float = 60.0) -> Viewer:
    """A viewer of the steady channel once it gets stream bytes. Right after the fleet came
    up, central may not count every engine yet and answer 503: asked again, as players do."""
    deadline = time.monotonic() + within
    viewer = Viewer(stream_url(proxy, STEADY)).start()
    await viewer.settled.wait()
    while viewer.first_byte_at is None:
        await viewer.stop()
        if time.monotonic() > deadline:
            raise AssertionError(f"the steady channel never started: {viewer.status}")
        await asyncio.sleep(1.0)
        viewer = Viewer(stream_url(proxy, STEADY)).start()
        await viewer.settled.wait()
    live = viewer
    await until("the steady channel flows", lambda: live.received > 100_000, within)
    return live


# --- the storm ---------------------------------------------------------------------------------
@dataclass
class StormStats:
    """What the zapping clients saw: outcomes by kind, and the first-byte times of the 200s."""

    outcomes: Counter[str] = field(default_factory=Counter)
    ttfb: list[float] = field(default_factory=list)
    bytes_in: int = 0

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())


async def _visit(url: str, change_at: float, patience: float, stats: StormStats) -> None:
    """One channel of a zapping client: watch it until ``change_at`` if it answers, give up
    after ``patience`` if it does not (``abandoned``)."""
    host, port, target = split_url(url)
    began = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    outcome = "abandoned"
    try:
        async with asyncio.timeout(patience):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request_line(target, f"{host}:{port}"))
            head = await reader.readuntil(b"\r\n\r\n")
        status, _ = parse_head(head)
        if status != 200:
            body = await asyncio.wait_for(reader.read(4096), 2)
            code = body.split(b'"code":"', 1)[-1].split(b'"', 1)[0].decode(errors="replace")
            outcome = f"{status} {code}" if b'"code":"' in body else str(status)
            return
        outcome = "200"
        stats.ttfb.append(time.monotonic() - began)
        while (left := change_at - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not data:
                outcome = "200 cut"
                break
            stats.bytes_in += len(data)
    except TimeoutError:
        pass  # nothing within patience: the channel is still prebuffering
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        outcome = f"error {type(exc).__name__}"
    finally:
        stats.outcomes[outcome] += 1
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _zapper(
    proxy: str,
    channels: list[str],
    rng: random.Random,
    first: float,
    period: float,
    end: float,
    patience: float,
    stats: StormStats,
) -> None:
    at = first
    while at < end:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        change_at = min(at + period, end)
        url = stream_url(proxy, rng.choice(channels))
        await _visit(url, change_at, min(patience, change_at - at), stats)
        at += period


async def storm(
    proxy: str,
    channels: list[str],
    *,
    clients: int,
    rate: float,
    seconds: float,
    patience: float,
    seed: int = 17,
) -> StormStats:
    """``clients`` zapping clients, ``rate`` channel changes per second in all (each client
    every ``clients / rate`` s, their beats spread evenly), for ``seconds``."""
    period = clients / rate
    stats = StormStats()
    start = time.monotonic()
    end = start + seconds
    rng = random.Random(seed)
    await asyncio.gather(
        *(
            _zapper(
                proxy,
                channels,
                random.Random(rng.random()),
                start + i * period / clients,
                period,
                end,
                patience,
                stats,
            )
            for i in range(clients)
        )
    )
    return stats


# --- the probe: joins of an already-live channel, timed in a process of its own ----------------
async def _first_byte(url: str, limit: float, *, body: int) -> float | None:
    """Seconds from connecting to the first response byte (then ``body`` bytes are read);
    None when nothing came within ``limit``."""
    host, port, target = split_url(url)
    began = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request_line(target, f"{host}:{port}"))
            first = await reader.read(1)
            if not first:
                return None
            ttfb = time.monotonic() - began
            got = len(first)
            while got < body:
                data = await reader.read(body)
                if not data:
                    break
                got += len(data)
            return ttfb
    except (TimeoutError, OSError):
        return None
    finally:
        if writer is not None:
            writer.close()


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread has waited for a CPU so far (/proc/<pid>/schedstat):
    latency that is the machine's, not the code's."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


@dataclass
class ProbeSample:
    at: float  # seconds since the probe began
    stream: float | None  # first byte of a new viewer of the live channel (None: none in 10 s)
    livez: float | None  # first byte of /livez right after: the proxy's plain responsiveness


async def _probe(url: str, seconds: float, every: float) -> list[ProbeSample]:
    livez = url.split("/ace/", 1)[0] + "/livez"
    samples: list[ProbeSample] = []
    start = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        stream = await _first_byte(url, 10.0, body=4096)
        samples.append(ProbeSample(now - start, stream, await _first_byte(livez, 10.0, body=0)))
        await asyncio.sleep(max(0.0, every - (time.monotonic() - now)))
    return samples


def _probe_main(url: str, seconds: float, every: float, out: Queue[Any]) -> None:
    waited = runqueue_wait(os.getpid())
    samples = asyncio.run(_probe(url, seconds, every))
    out.put((samples, runqueue_wait(os.getpid()) - waited))


class Probe:
    """Opens a new connection to ``url`` (a channel kept live) every ``every`` seconds for
    ``seconds``, in a separate process so the storm's own event loop does not delay the
    measurement. :meth:`result` (blocking: call it in a thread) gives the samples and how long
    the probe itself waited for a CPU meanwhile."""

    def __init__(self, url: str, seconds: float, every: float = 0.5) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.queue: Queue[Any] = ctx.Queue()
        self.proc = ctx.Process(target=_probe_main, args=(url, seconds, every, self.queue))
        self.proc.start()

    def result(self, timeout: float) -> tuple[list[ProbeSample], float]:
        got: tuple[list[ProbeSample], float] = self.queue.get(timeout=timeout)
        self.proc.join(10)
        return got


# --- what the fleet holds --------------------------------------------------------------------
@dataclass
class Engines:
    """The simulators' counters, summed over every engine (``/_sim/sessions``)."""

    started: int = 0
    replaced: int = 0
    stop_calls: int = 0
    ended: Counter[str] = field(default_factory=Counter)
    live: Counter[str] = field(default_factory=Counter)  # content id → live sessions
    unreadable: list[str] = field(default_factory=list)


def engine_counters(fleet: Fleet) -> Engines:
    seen = Engines()
    for endpoint in fleet.engine_endpoints():
        try:
            snap = httpx.get(f"http://{endpoint}/_sim/sessions", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            seen.unreadable.append(endpoint)
            continue
        if "sessions_ended_by_reason" not in snap:
            raise RuntimeError(
                f"engine {endpoint} runs a simulator without sessions_ended_by_reason: "
                "rebuild the image (scripts/build-images.sh)"
            )
        seen.started += snap["sessions_started_total"]
        seen.replaced += snap["sessions_replaced_total"]
        seen.stop_calls += snap["stop_calls_total"]
        seen.ended.update(snap["sessions_ended_by_reason"])
        seen.live.update(str(s["content_id"]) for s in snap["sessions"])
    return seen


@dataclass
class Leftovers:
    """What is still held besides the steady channel."""

    channels: list[str]
    upstreams: int
    central_claims: list[str]
    central_streams: list[str]
    agent_claims: list[str]
    agent_sessions: int
    engine_sessions: dict[str, int]
    fds: int
    rss_kib: int

    @property
    def clean(self) -> bool:
        return not (
            self.channels
            or self.central_claims
            or self.central_streams
            or self.agent_claims
            or self.agent_sessions
            or self.engine_sessions
        )


def leftovers(fleet: Fleet) -> Leftovers:
    edge = fleet.edge(0)
    assert edge.proxy is not None
    status = fleet.proxy_status(0)
    channels = [c["key"] for c in status["channels"] if STEADY_KEY not in c["keys"]]
    agent = f"http://127.0.0.1:{edge.agent_port}"
    sessions = httpx.get(agent + "/v1/sessions", timeout=5).json()
    live = engine_counters(fleet).live
    fds = len(list(Path(f"/proc/{edge.proxy.proc.pid}/fd").iterdir()))
    return Leftovers(
        channels=channels,
        upstreams=int(status["upstreams"]) - (len(status["channels"]) - len(channels)),
        central_claims=[
            c["content_key"] for c in fleet.central_claims() if c["content_key"] != STEADY_KEY
        ],
        central_streams=[
            s["content_key"] for s in fleet.central_streams() if s["content_key"] != STEADY_KEY
        ],
        agent_claims=[
            c["content_key"] for c in fleet.agent_claims(edge) if c["content_key"] != STEADY_KEY
        ],
        # the steady channel's session is reported to the agent too
        agent_sessions=max(0, len(sessions) - 1),
        engine_sessions={k: n for k, n in live.items() if k != STEADY},
        fds=fds,
        rss_kib=procs.memory_kib(edge.proxy.proc.pid),
    )


def engine_pids(fleet: Fleet) -> list[int]:
    """Host pids of the engine containers (for their CPU time)."""
    pids: list[int] = []
    for edge in fleet.edges.values():
        ids = docker("ps", "-q", "--filter", f"label=acefleet.host={edge.name}").split()
        for cid in ids:
            pid = docker("inspect", "-f", "{{.State.Pid}}", cid)
            if pid.isdigit() and pid != "0":
                pids.append(int(pid))
    return pids
