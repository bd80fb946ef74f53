"""The proxy's side of standby placement and the move-off signal, against real servers: central
(in a thread, real HTTP), two simulator engines that a simulated agent heartbeats into central,
and the proxy built in-process (``proxy.cli.start``) so its ``ControlLinks`` can be asked
directly. A live channel's engine is drained by an operator: the snapshot answer names it and
``ControlLinks.degraded`` says so; ``place_standby`` lands on the other engine, never the
primary's; the static list places a standby on another listed engine or refuses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from acefleet.wire import EngineReport
from proxy.cli import Running
from proxy.cli import start as start_proxy
from proxy.engine_api import EngineClient
from proxy.metrics import Metrics
from proxy.placement import PlacementError
from proxy.placement.static import StaticPlacer
from proxy.settings import ProxySettings
from tests.central import conftest as central_fixtures
from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY
from tests.proxy.central_side import heartbeat_forever, sim_engine, until
from tests.proxy.conftest import StartSim, endpoint
from tests.support import procs

start_central = central_fixtures.start_central


@dataclass
class Edge0:
    """Central, two simulator engines heartbeated as host edge0, its proxy (in-process)."""

    sims: list[procs.Service]
    engines: list[EngineReport]
    running: Running
    settings: ProxySettings
    ops: httpx.AsyncClient  # central, as an operator
    viewer: httpx.AsyncClient

    def stream_url(self, content_id: str) -> str:
        return f"http://127.0.0.1:{self.settings.port}/ace/getstream?id={content_id}"


@pytest.fixture
async def edge0(
    start_central: StartCentral, start_sim: StartSim
) -> AsyncIterator[Callable[..., Awaitable[Edge0]]]:
    made: list[tuple[Edge0, asyncio.Task[None]]] = []

    async def go(**overrides: Any) -> Edge0:
        central = start_central()
        sims = [start_sim(), start_sim()]
        engines = [sim_engine("edge0", n, s) for n, s in enumerate(sims)]
        beating = asyncio.create_task(heartbeat_forever(central.url, "edge0", engines))
        settings = ProxySettings.model_validate(
            {
                "host": "127.0.0.1",
                "port": procs.free_port(),
                "central_url": central.url,
                "central_api_key": SERVICE_KEY,
                "edge_host": "edge0",
                "proxy_id": "proxy-edge0",
                "snapshot_interval_s": 0.3,
                "event_flush_s": 0.05,
            }
            | overrides
        )
        running = await start_proxy(settings)
        ops = httpx.AsyncClient(base_url=central.url, headers={"X-API-Key": OPERATOR_KEY})
        edge = Edge0(sims, engines, running, settings, ops, httpx.AsyncClient(timeout=30))
        made.append((edge, beating))
        await until("the edge in central", lambda: _hosts(ops))
        return edge

    yield go
    for edge, beating in made:
        await edge.viewer.aclose()
        await edge.ops.aclose()
        await edge.running.stop(1)
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def test_move_off_signal_and_standby_from_central(
    edge0: Callable[..., Awaitable[Edge0]],
) -> None:
    edge = await edge0()
    links, ops, viewer = edge.running.links, edge.ops, edge.viewer
    assert links is not None
    async with viewer.stream("GET", edge.stream_url("movemeoff")) as resp:
        assert resp.status_code == 200
        chunks = resp.aiter_bytes()
        await anext(chunks)  # live
        channel = edge.running.app.edge.live_channels()[0]
        primary = channel.placement
        assert primary is not None
        assert primary.source == "central"
        on = primary.engine_id
        assert on is not None
        await until("central sees the stream", lambda: _streams(ops))
        assert not links.degraded(primary)

        # A standby goes on the other engine, never the primary's.
        spare = await links.placer.place_standby(channel.key, frozenset({on}))
        assert spare.source == "central"
        assert spare.engine_id not in (None, on)
        assert spare.engine == next(e.endpoint for e in edge.engines if e.id != on)
        claims = (await ops.get("/v1/claims")).json()["items"]
        assert {(c["engine_id"], c["standby"]) for c in claims} == {
            (on, False),
            (spare.engine_id, True),
        }
        # Both engines carry the content now: no third engine for another standby.
        with pytest.raises(PlacementError) as refused:
            await links.placer.place_standby(channel.key, frozenset({on}))
        assert refused.value.code == "no_standby_capacity"
        await links.placer.release(spare, "standby_retired")
        claims = (await ops.get("/v1/claims")).json()["items"]
        assert [c["engine_id"] for c in claims] == [on]

        # An operator drains the primary's engine: the next snapshot answer names it, and
        # the channel moves make-before-break (a standby on the other engine, promoted),
        # on the same viewer connection.
        assert (await ops.post(f"/v1/engines/{on}/drain")).status_code == 200
        await until("the move-off signal", lambda: links.degraded(primary))
        await until(
            "the channel on the other engine",
            lambda: channel.placement is not None and channel.placement.engine_id != on,
        )
        moved = 'acefleet_proxy_standby_promotions_total{reason="moved"} 1.0'
        metrics = (await viewer.get(f"http://127.0.0.1:{edge.settings.port}/metrics")).text
        assert moved in metrics
        got = 0
        async for chunk in chunks:  # the same connection goes on
            got += len(chunk)
            if got > 200_000:
                break
        # central hears the move: the promoted stream is the channel's, on the other engine
        await until(
            "central's stream on the other engine",
            lambda: _on_engine(ops, channel.placement.engine_id if channel.placement else ""),
        )
        assert (await ops.post(f"/v1/engines/{on}/undrain")).status_code == 200
        await until("the signal withdrawn", lambda: not links.degraded(primary))


async def _hosts(ops: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await ops.get("/v1/hosts")).json()["items"]
    return items


async def _on_engine(ops: httpx.AsyncClient, engine_id: str | None) -> bool:
    streams = await _streams(ops)
    return [(s["engine_id"], s["standby"]) for s in streams] == [(engine_id, False)]


async def _streams(ops: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await ops.get("/v1/streams")).json()["items"]
    return items


async def test_static_standby_goes_on_another_listed_engine() -> None:
    engine = EngineClient(call_timeout=1, stop_timeout=1, metrics=Metrics())
    static = StaticPlacer(
        ["127.0.0.1:1", "127.0.0.1:2"],
        default_cap=1,
        engine=engine,
        probe_interval_s=60,
        probe_timeout_s=1,
        probe_failures=3,
    )
    primary = await static.place("id:s")
    spare = await static.place_standby("id:s", frozenset({primary.engine_id or ""}))
    assert spare.engine != primary.engine
    await static.release(spare, "standby_retired")
    # The other engine is full, the primary's is avoided: no standby, whatever room it has.
    other = await static.place("id:t")
    assert other.engine == spare.engine
    with pytest.raises(PlacementError) as refused:
        await static.place_standby("id:s", frozenset({primary.engine_id or ""}))
    assert refused.value.code == "no_standby_capacity"
    await engine.aclose()


async def test_a_standby_is_listed_then_promoted_in_central(
    edge0: Callable[..., Awaitable[Edge0]],
) -> None:
    """A watched channel's warm standby (standby_min_viewers=1) is a standby claim and stream in
    central, kept by every snapshot; when the primary's engine dies and the standby is promoted,
    central's stream and claim become the channel's."""
    edge = await edge0(standby_min_viewers=1)
    ops, viewer = edge.ops, edge.viewer
    async with viewer.stream("GET", edge.stream_url("keepwarm")) as resp:
        assert resp.status_code == 200
        body = resp.aiter_bytes()
        await anext(body)
        primary = edge.running.app.edge.live_channels()[0].placement
        assert primary is not None

        async def both() -> dict[bool, dict[str, Any]] | None:
            streams = {s["standby"]: s for s in await _streams(ops)}
            return streams if len(streams) == 2 else None

        streams = await until("the standby stream in central", both)
        assert streams[False]["engine_id"] == primary.engine_id
        spare_engine = streams[True]["engine_id"]
        assert spare_engine not in (None, primary.engine_id)
        summary = (await ops.get("/v1/fleet")).json()
        assert (summary["streams"], summary["standby_streams"]) == (1, 1)
        # Snapshots keep listing it: several periods later it is still there.
        await asyncio.sleep(1.5)
        assert await both() == streams

        # The primary's engine dies: the standby takes over, and central follows.
        dead = next(s for s in edge.sims if endpoint(s) == primary.engine)
        dead.stop()

        async def promoted() -> bool:
            now = await _streams(ops)
            return [(s["stream_id"], s["standby"]) for s in now] == [
                (streams[True]["stream_id"], False)
            ]

        await until("the standby promoted in central", promoted)
        claims = (await ops.get("/v1/claims")).json()["items"]
        assert [(c["engine_id"], c["standby"]) for c in claims] == [(spare_engine, False)]
        await anext(body)  # the same connection goes on


async def test_a_catalog_flag_gives_a_single_viewer_a_standby(
    edge0: Callable[..., Awaitable[Edge0]],
) -> None:
    """An operator flags a channel for a standby in central's catalog: the edge's catalog copy
    says so, and the channel keeps a standby with one viewer (standby_min_viewers is off)."""
    edge = await edge0(catalog_refresh_s=0.3)
    ops, viewer = edge.ops, edge.viewer
    flagged = {"name": "Flagged", "content_kind": "id", "content_value": "flagged", "standby": True}
    assert (await ops.post("/v1/channels", json=flagged)).status_code == 201
    await until("the flag on the edge", lambda: edge.running.catalog.standby_wanted("id:flagged"))
    assert not edge.running.catalog.standby_wanted("id:unflagged")
    async with viewer.stream("GET", edge.stream_url("flagged")) as resp:
        assert resp.status_code == 200
        chunks = resp.aiter_bytes()
        await anext(chunks)
        channel = edge.running.app.edge.live_channels()[0]
        await until("a live standby", lambda: channel.standby is not None and channel.standby.live)
        claims = (await ops.get("/v1/claims")).json()["items"]
        assert sorted(c["standby"] for c in claims) == [False, True]
