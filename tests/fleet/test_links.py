"""The proxy's control-plane links on their own, against real processes on loopback: the event
queue (bounded, oldest dropped and counted, retried until central takes it, in batches) and the
placement chain falling through unreachable central and agent to the static list."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from proxy.control.event_queue import BatchedEventSink
from proxy.control.peer import ControlPeer
from proxy.engine_api import EngineClient
from proxy.metrics import Metrics
from proxy.placement import Placement, StreamRecord, Unavailable
from proxy.placement.agent import AgentPlacer
from proxy.placement.central import CentralPlacer
from proxy.placement.chain import PlacementChain, PlainStep, Step
from proxy.placement.circuit import Breaker
from proxy.placement.static import StaticPlacer
from tests.fleet.harness import CENTRAL_ENV, OPERATOR_KEY, SERVICE_KEY
from tests.support import procs


@pytest.fixture
def central(tmp_path: Path, log_dir: Path) -> Iterator[procs.Service]:
    port = procs.free_port()
    env = {
        **CENTRAL_ENV,
        "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
        "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
    }
    svc = procs.start(
        "acefleet-central", [], port=port, ready_path="/readyz", log_dir=log_dir, env=env
    )
    yield svc
    svc.stop()


def record(n: int) -> StreamRecord:
    return StreamRecord(
        stream_id=f"s{n:03d}-{uuid.uuid4().hex[:8]}",
        content_key=f"id:queue{n}",
        placement=Placement(source="static", engine="127.0.0.1:1"),
        started_at=datetime.now(UTC),
    )


async def test_event_queue_bounded_retried_batched(central: procs.Service) -> None:
    registry = CollectorRegistry()
    async with httpx.AsyncClient() as http:
        peer = ControlPeer(
            "central",
            http,
            f"http://127.0.0.1:{procs.free_port()}",  # nobody listens: central is "down"
            SERVICE_KEY,
            proxy_id="queue-proxy",
            host="queue-edge",
            timeout_s=1,
        )
        sink = BatchedEventSink(peer, queue_max=10, batch_max=4, flush_s=0.05, registry=registry)
        sink.start()
        records = [record(n) for n in range(13)]
        for r in records:
            sink.stream_started(r)
        await asyncio.sleep(0.5)
        assert len(sink.queue) == 10  # the 3 oldest were dropped ...
        assert registry.get_sample_value("acefleet_proxy_events_dropped_total") == 3  # ... counted
        assert (registry.get_sample_value("acefleet_proxy_event_batch_failures_total") or 0) >= 1
        sink.url = central.url + "/v1/events"  # central is back
        for _ in range(100):
            if not sink.queue:
                break
            await asyncio.sleep(0.1)
        assert not sink.queue
        await sink.aclose(1)
        accepted = registry.get_sample_value(
            "acefleet_proxy_events_sent_total", {"status": "accepted"}
        )
        assert accepted == 10
        resp = await http.get(central.url + "/v1/streams", headers={"X-API-Key": OPERATOR_KEY})
        streams = resp.json()["items"]
        assert {s["stream_id"] for s in streams} == {r.stream_id for r in records[3:]}


def chain_to_static(
    sim: procs.Service, metrics: Metrics, steps: list[tuple[str, Step]]
) -> tuple[PlacementChain, EngineClient]:
    """A placement chain of ``steps`` ending in the static list of the one simulator ``sim``,
    and the engine client its static step uses (the caller closes it)."""
    engine = EngineClient(call_timeout=2, stop_timeout=2, metrics=metrics)
    static = StaticPlacer(
        [f"127.0.0.1:{sim.port}"],
        default_cap=1,
        engine=engine,
        probe_interval_s=5,
        probe_timeout_s=1,
        probe_failures=2,
    )
    chain = PlacementChain([*steps, ("static", PlainStep(static))], metrics.registry, avoid_s=30)
    return chain, engine


async def test_chain_falls_through_to_the_static_list(sim: procs.Service) -> None:
    metrics = Metrics()
    dead = f"http://127.0.0.1:{procs.free_port()}"
    async with httpx.AsyncClient() as http:
        central = CentralPlacer(
            ControlPeer("central", http, dead, "k", proxy_id="p", host="h", timeout_s=1),
            Breaker(1, 60),
            relay_avoid_s=10,
        )
        agent = AgentPlacer(
            ControlPeer("agent", http, dead, "k", proxy_id="p", host="h", timeout_s=1),
            Breaker(1, 60),
        )
        chain, engine = chain_to_static(sim, metrics, [("central", central), ("agent", agent)])
        placement = await chain.place("id:chain1")
        assert placement.source == "static"
        assert placement.engine == f"127.0.0.1:{sim.port}"
        sample = metrics.registry.get_sample_value
        assert sample("acefleet_proxy_placements_total", {"source": "static"}) == 1
        assert sample("acefleet_proxy_placement_fallbacks_total", {"step": "central"}) == 1
        assert sample("acefleet_proxy_placement_fallbacks_total", {"step": "agent"}) == 1
        # both breakers are open now: the next placement does not even try them
        with pytest.raises(Unavailable):
            await central.place("id:chain2")
        await chain.release(placement, "idle")
        await engine.aclose()


async def test_a_standby_central_lets_the_chain_ask_the_next_step(
    sim: procs.Service, tmp_path: Path, log_dir: Path
) -> None:
    # while the control VIP moves, the address can still reach the old holder, now a standby
    # (503 standby_central): that is "cannot decide now", not "the fleet is full"
    state = tmp_path / "vrrp-state"
    state.write_text("BACKUP\n", encoding="utf-8")
    port = procs.free_port()
    env = {
        **CENTRAL_ENV,
        "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
        "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
        "ACEFLEET_CENTRAL_STANDBY_STATE_FILE": str(state),
    }
    standby = procs.start(
        "acefleet-central", [], port=port, ready_path="/livez", log_dir=log_dir, env=env
    )
    metrics = Metrics()
    try:
        async with httpx.AsyncClient() as http:
            central = CentralPlacer(
                ControlPeer(
                    "central", http, standby.url, SERVICE_KEY, proxy_id="p", host="h", timeout_s=2
                ),
                Breaker(3, 60),
                relay_avoid_s=10,
            )
            chain, engine = chain_to_static(sim, metrics, [("central", central)])
            placement = await chain.place("id:standby1")
            assert placement.source == "static"
            sample = metrics.registry.get_sample_value
            assert sample("acefleet_proxy_placement_fallbacks_total", {"step": "central"}) == 1
            await chain.release(placement, "idle")
            await engine.aclose()
    finally:
        standby.stop()
