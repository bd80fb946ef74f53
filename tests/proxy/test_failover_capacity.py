"""A failover the fleet cannot place at once (503) waits for capacity instead of ending the
channel: real central (in a thread, real HTTP), two simulator engines with room for one stream
each heartbeated into it as one host's, the proxy in-process. Two channels fill both engines;
the first channel's engine cuts its session. Its failover avoids that engine for
``failed_engine_avoid_s`` (3 s here) and the other is full, so central answers 503
no_capacity: the proxy asks again every second (``failover_wait_s``) while its viewer gets gap
fills, and the channel comes back on the first engine once the avoidance ends. The viewer's
connection is never closed."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from proxy.cli import start as start_proxy
from proxy.settings import ProxySettings
from tests.central import conftest as central_fixtures
from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY
from tests.proxy.central_side import heartbeat_forever, sim_engine, until
from tests.proxy.client import fault, metric, request
from tests.proxy.conftest import StartSim
from tests.support import procs

start_central = central_fixtures.start_central


async def _streams(ops: httpx.AsyncClient) -> list[dict[str, object]]:
    items: list[dict[str, object]] = (await ops.get("/v1/streams")).json()["items"]
    return items


async def test_failover_refused_for_capacity_waits_and_keeps_the_viewer(
    start_central: StartCentral, start_sim: StartSim
) -> None:
    central = start_central()
    sims = [start_sim(), start_sim()]
    engines = [
        sim_engine("edge0", n, s).model_copy(update={"stream_cap": 1}) for n, s in enumerate(sims)
    ]
    beating = asyncio.create_task(heartbeat_forever(central.url, "edge0", engines))
    port = procs.free_port()
    settings = ProxySettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "central_url": central.url,
            "central_api_key": SERVICE_KEY,
            "edge_host": "edge0",
            "proxy_id": "proxy-edge0",
            "snapshot_interval_s": 0.3,
            "event_flush_s": 0.05,
            "failed_engine_avoid_s": 3,
            "failover_wait_s": 30,
        }
    )
    running = await start_proxy(settings)
    url = f"http://127.0.0.1:{port}"
    ops = httpx.AsyncClient(base_url=central.url, headers={"X-API-Key": OPERATOR_KEY})
    try:
        await until("the edge in central", lambda: _hosts(ops))
        first = await request(url, "/ace/getstream?id=waits-for-room")
        await first.read_until(100_000)
        second = await request(url, "/ace/getstream?id=fills-the-other")
        await second.read_until(100_000)
        # the other channel keeps its viewer reading: idle, it would end and free its engine
        keep = asyncio.create_task(second.read_for(120))
        await until("both streams in central", lambda: _count(ops, 2))
        channel = next(
            c for c in running.app.edge.live_channels() if c.key.endswith("waits-for-room")
        )
        placement = channel.placement
        assert placement is not None
        on = next(s for s in sims if placement.engine and placement.engine.endswith(f":{s.port}"))
        await asyncio.to_thread(fault, on.url, action="cut")
        await until(
            "a failover refused for capacity",
            lambda: asyncio.to_thread(
                metric, url, "acefleet_proxy_failover_capacity_waits_total", 'code="no_capacity"'
            ),
        )
        await until("the channel live again", lambda: channel.playback is not None, within=30)
        await first.read_for(1.0)  # what the socket held from before
        assert await first.read_for(1.5) > 50_000  # the same connection, fed again
        assert channel.placement is not None
        assert channel.placement.engine == placement.engine
        assert await asyncio.to_thread(metric, url, "acefleet_proxy_gap_fill_packets_total") > 0
        first.close()
        keep.cancel()
        second.close()
    finally:
        await ops.aclose()
        await running.stop(1)
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def _count(ops: httpx.AsyncClient, n: int) -> bool:
    return len(await _streams(ops)) == n


async def _hosts(ops: httpx.AsyncClient) -> list[dict[str, object]]:
    items: list[dict[str, object]] = (await ops.get("/v1/hosts")).json()["items"]
    return items
