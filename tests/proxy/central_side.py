"""Central's side of the proxy tests that run a real central: an agent's heartbeat played by the
test (simulator engines reported as one host's, as acefleet-agent would report them), and
waiting for what central or the proxy comes to show."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from acefleet.wire import EngineHealth, EngineReport, Heartbeat
from tests.central.fleetsim import SERVICE_KEY
from tests.proxy.conftest import endpoint
from tests.support import procs


def sim_engine(host: str, n: int, sim: procs.Service) -> EngineReport:
    """Engine ``n`` of ``host``: the simulator ``sim``, healthy, room for two streams."""
    return EngineReport(
        id=f"{host}-eng{n}",
        host=host,
        endpoint=endpoint(sim),
        http_port=sim.port,
        profile="sim",
        health=EngineHealth.healthy,
        stream_cap=2,
        streams=0,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def heartbeat_forever(
    central_url: str,
    host: str,
    engines: list[EngineReport],
    *,
    max_engines: int = 2,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Heartbeat like ``host``'s agent (over HTTPS verified by ``verify`` for an https
    ``central_url``), until cancelled."""
    async with httpx.AsyncClient(
        base_url=central_url, headers={"X-API-Key": SERVICE_KEY}, verify=verify
    ) as client:
        seq = 0
        while True:
            body = Heartbeat(
                host=host,
                agent_url="http://127.0.0.1:9/",  # nobody there: central does not call it here
                seq=seq,
                engines=engines,
                max_engines=max_engines,
            )
            r = await client.post(f"/v1/hosts/{host}/heartbeat", json=body.model_dump(mode="json"))
            assert r.status_code == 200, r.text
            seq += 1
            await asyncio.sleep(0.3)


async def until(what: str, fn: Callable[[], Awaitable[Any] | Any], within: float = 20) -> Any:
    """The first true value of ``fn()`` (awaited when it is a coroutine), polled every 0.1 s."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = fn()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
