"""A viewer leaving while its channel is still opening leaks nothing (issue 16).

The channel's upstream task is cancelled when its last viewer leaves (``grace_s`` 0 here) during
the claim call or the engine's start call; what those reserve still arrives, and must be given
back at once: central's claim released (not left to its TTL, 30 s here), the engine session
stopped (not left until the engine's idle timeout, 60 s here). Real central (in a thread), a
real proxy process and the simulator; central or the engine answers slowly through a delaying
TCP relay (the engine has started the session when its slow answer is still on the way, as a
real engine's start call does: the simulator's own --json-delay starts nothing for a caller
that hung up).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from acefleet.wire import EngineHealth, EngineReport, Heartbeat
from tests.central import conftest as central_fixtures
from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY
from tests.proxy.client import sim_sessions
from tests.proxy.conftest import StartProxy, StartSim
from tests.support import procs
from tests.support.viewers import request_line

start_central = central_fixtures.start_central


class SlowAnswers:
    """A TCP relay on loopback whose answers (server → client) arrive ``delay_s`` late; requests
    pass at once, so the server acts on them before the client hears back."""

    def __init__(self, port: int, delay_s: float) -> None:
        self.port = port
        self.delay_s = delay_s
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (pipe(reader, up_writer, 0), pipe(up_reader, writer, self.delay_s)):
            t = asyncio.create_task(task)
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def beat(central_url: str, engine: str) -> None:
    """Heartbeat one engine (``host:port``) as host edge0, like its agent, until cancelled."""
    report = EngineReport(
        id="edge0-eng0",
        host="edge0",
        endpoint=engine,
        http_port=int(engine.rsplit(":", 1)[1]),
        profile="sim",
        health=EngineHealth.healthy,
        stream_cap=4,
        streams=0,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    async with httpx.AsyncClient(base_url=central_url, headers={"X-API-Key": SERVICE_KEY}) as c:
        seq = 0
        while True:
            body = Heartbeat(
                host="edge0",
                agent_url="http://127.0.0.1:9/",
                seq=seq,
                engines=[report],
                max_engines=1,
            )
            r = await c.post("/v1/hosts/edge0/heartbeat", json=body.model_dump(mode="json"))
            assert r.status_code == 200, r.text
            seq += 1
            await asyncio.sleep(0.3)


async def until(what: str, fn: Callable[[], Awaitable[Any]], within: float) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what} (last: {last!r})")


Fleet = Callable[..., Awaitable[tuple[procs.Service, procs.Service, httpx.AsyncClient]]]


@pytest.fixture
async def fleet(
    start_central: StartCentral, start_sim: StartSim, start_proxy: StartProxy
) -> AsyncIterator[Fleet]:
    """``fleet(central_delay_s, engine_delay_s)`` → (proxy, sim, operator client of central):
    central's and the engine's answers arrive that late."""
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def go(
        central_delay_s: float, engine_delay_s: float
    ) -> tuple[procs.Service, procs.Service, httpx.AsyncClient]:
        central = start_central()
        sim = start_sim("--idle-timeout", "60")
        slow = SlowAnswers(central.port, central_delay_s)
        slow_engine = SlowAnswers(sim.port, engine_delay_s)
        engine = (await slow_engine.start()).removeprefix("http://")
        beating = asyncio.create_task(beat(central.url, engine))
        ops = httpx.AsyncClient(base_url=central.url, headers={"X-API-Key": OPERATOR_KEY})

        async def stop() -> None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            await slow.aclose()
            await slow_engine.aclose()
            await ops.aclose()

        cleanup.append(stop)
        relay_url = await slow.start()
        # started in a thread: waiting for it must not stall this loop (the heartbeat runs here)
        proxy = await asyncio.to_thread(
            start_proxy,
            central_url=relay_url,
            central_api_key=SERVICE_KEY,
            central_timeout_s="5",
            edge_host="edge0",
            grace_s="0",
        )

        async def listed() -> list[dict[str, Any]]:
            if beating.done():
                beating.result()  # a failed heartbeat says why
            return await hosts(ops)

        await until("edge0 in central", listed, within=20)
        return proxy, sim, ops

    yield go
    for stop in cleanup:
        await stop()


async def hosts(ops: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await ops.get("/v1/hosts")).json()["items"]
    return items


async def claims(ops: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await ops.get("/v1/claims")).json()["items"]
    return items


async def leave_after(proxy: procs.Service, content: str, seconds: float) -> None:
    """A viewer asks for ``content`` and hangs up after ``seconds``, before any answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(request_line(f"/ace/getstream?id={content}", f"127.0.0.1:{proxy.port}"))
    await asyncio.sleep(seconds)
    assert not reader.at_eof()  # no answer yet: the channel is still opening
    writer.close()


async def test_leaving_during_the_claim_call_releases_the_claim(fleet: Fleet) -> None:
    proxy, sim, ops = await fleet(2.0, 0.0)  # central's answers take 2 s
    await leave_after(proxy, "cancelled-while-placing", 0.5)
    made = await until("central's claim", lambda: claims(ops), within=5)
    assert [c["content_key"] for c in made] == ["id:cancelled-while-placing"]
    # the grant arrives after the viewer left: released at once (its TTL is 30 s)
    await until("the claim released", lambda: none(claims(ops)), within=8)
    assert sim_sessions(sim.url)["sessions_started_total"] == 0  # no engine session opened


async def test_leaving_during_the_engine_start_stops_the_session(fleet: Fleet) -> None:
    proxy, sim, ops = await fleet(0.0, 2.0)  # the engine's answers take 2 s
    await leave_after(proxy, "cancelled-while-starting", 0.8)

    async def started() -> bool:
        return bool(sim_sessions(sim.url)["sessions_started_total"])

    await until("the engine's session", started, within=5)
    # the session the engine started after the viewer left is stopped (its idle timeout: 60 s)
    await until("the session stopped", lambda: none(engine_sessions(sim)), within=5)
    await until("no claim left", lambda: none(claims(ops)), within=5)


async def engine_sessions(sim: procs.Service) -> list[Any]:
    sessions: list[Any] = sim_sessions(sim.url)["sessions"]
    return sessions


async def none(items: Awaitable[list[Any]]) -> bool:
    return not await items
