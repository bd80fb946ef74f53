"""A restart of central loses live state; heartbeats and proxy snapshots rebuild it."""

from __future__ import annotations

import time

import httpx

from acefleet.wire import LiveStream
from tests.central.conftest import StartCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    Agent,
    claim_body,
    event,
    send_events,
    snapshot,
)
from tests.support import procs


def test_restart_rebuilds_live_state(start_central: StartCentral) -> None:
    first = start_central(subprocess=True, warmup_s="4")
    assert isinstance(first, procs.Service)
    e0, e1 = Agent("edge0", 2), Agent("edge1", 2)
    with httpx.Client(base_url=first.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        for a in (e0, e1):
            a.beat(service)
        grant = service.post("/v1/claims", json=claim_body("id:x", "edge0")).json()
        assert grant["kind"] == "engine"
        started = event(
            "stream_started",
            "s-x",
            content_key="id:x",
            claim_id=grant["claim_id"],
            engine_id=grant["engine"]["id"],
        )
        send_events(service, "edge0", started)
    first.kill()  # SIGKILL: nothing is flushed or handed over

    second = start_central(port=first.port, subprocess=True, warmup_s="4")
    with httpx.Client(base_url=second.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        fleet = service.get("/v1/fleet").json()
        assert fleet["warming_up"]
        assert fleet["hosts"] == {"live": 0, "stale": 0, "lost": 0}
        early = service.post("/v1/claims", json=claim_body("id:x", "edge1"))
        assert early.status_code == 503
        assert early.json()["error"]["code"] == "warming_up"
        # The engine carrying s-x reports its session; the proxy lists its stream.
        e0.engines[[e.id for e in e0.engines].index(grant["engine"]["id"])].streams = 1
        for a in (e0, e1):
            a.beat(service)
        listed = LiveStream(
            stream_id="s-x",
            content_key="id:x",
            claim_id=grant["claim_id"],
            engine_id=grant["engine"]["id"],
            source="central",
            viewers=3,
            started_at=started.at,
        )
        assert snapshot(service, "edge0", [listed])["added"] == 1
        snapshot(service, "edge1")
        relay = service.post("/v1/claims", json=claim_body("id:x", "edge1")).json()
        assert relay["kind"] == "relay"
        assert relay["relay"]["host"] == "edge0"
        claims = service.get("/v1/claims").json()["items"]
        origin = [c for c in claims if c["kind"] == "engine"]
        assert [(c["claim_id"], c["confirmed"]) for c in origin] == [(grant["claim_id"], True)]
        # The busy engine is not handed out again; the other engine of edge0 is.
        other = service.post("/v1/claims", json=claim_body("id:y", "edge0")).json()
        assert other["kind"] == "engine"
        assert other["engine"]["id"] != grant["engine"]["id"]
        deadline = time.monotonic() + 10
        while service.get("/v1/fleet").json()["warming_up"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not service.get("/v1/fleet").json()["warming_up"]
        assert service.get("/readyz").json()["warming_up"] is False
        history = service.get("/v1/streams/history").json()["items"]
        assert [r["stream_id"] for r in history] == ["s-x"]


def test_engine_drain_survives_a_restart(start_central: StartCentral, database_url: str) -> None:
    first = start_central(database_url=database_url)
    with (
        httpx.Client(base_url=first.url, headers={"X-API-Key": SERVICE_KEY}) as service,
        httpx.Client(base_url=first.url, headers={"X-API-Key": OPERATOR_KEY}) as operator,
    ):
        Agent("edge0", 2).beat(service)
        assert operator.post("/v1/engines/edge0-eng1/drain").status_code == 200
        assert operator.post("/v1/engines/edge0-eng0/drain").status_code == 200
        assert operator.post("/v1/engines/edge0-eng0/undrain").status_code == 200
    first.stop()
    second = start_central(port=first.port, database_url=database_url)
    with (
        httpx.Client(base_url=second.url, headers={"X-API-Key": SERVICE_KEY}) as service,
        httpx.Client(base_url=second.url, headers={"X-API-Key": OPERATOR_KEY}) as operator,
    ):
        Agent("edge0", 2).beat(service)
        engines = {
            e["id"]: e["operator_drain"] for e in operator.get("/v1/engines").json()["items"]
        }
        assert engines == {"edge0-eng0": False, "edge0-eng1": True}
