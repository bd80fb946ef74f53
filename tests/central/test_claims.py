"""Claims over real HTTP: atomic reservation, relay, remote placement, 503, TTL, policy."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from acefleet.wire import EngineHealth
from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import (
    SERVICE_KEY,
    Agent,
    claim_body,
    engine,
    event,
    proxy_url,
    send_events,
    snapshot,
)


def _fleet(service: httpx.Client, hosts: int, engines: int, cap: int = 1) -> list[Agent]:
    agents = [Agent(f"edge{i}", engines, cap=cap) for i in range(hosts)]
    for agent in agents:
        agent.beat(service)
        snapshot(service, agent.host)
    return agents


def _engine_claims(client: httpx.Client, content: str | None = None) -> list[dict[str, object]]:
    items = client.get("/v1/claims").json()["items"]
    return [
        c
        for c in items
        if c["kind"] == "engine" and (content is None or c["content_key"] == content)
    ]


async def _heartbeat_loop(url: str, agents: list[Agent], stop: asyncio.Event) -> int:
    beats = 0
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": SERVICE_KEY}) as client:
        for _ in range(200):  # bounded: the test sets stop long before
            await asyncio.gather(*(a.abeat(client) for a in agents))
            beats += len(agents)
            if stop.is_set():
                break
            await asyncio.sleep(0.1)
    return beats


async def test_concurrent_claims_for_different_content_never_share_a_slot(
    central: Running, service: httpx.Client
) -> None:
    agents = _fleet(service, hosts=10, engines=5)  # 50 slots of cap 1
    stop = asyncio.Event()
    beating = asyncio.create_task(_heartbeat_loop(central.url, agents, stop))
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(
        base_url=central.url, headers={"X-API-Key": SERVICE_KEY}, limits=limits, timeout=20
    ) as client:
        replies = await asyncio.gather(
            *(
                client.post("/v1/claims", json=claim_body(f"id:chan{i}", f"edge{i % 10}"))
                for i in range(70)
            )
        )
        engines = (await client.get("/v1/engines")).json()["items"]
    stop.set()
    assert await beating > 0
    statuses = Counter(r.status_code for r in replies)
    assert statuses == {200: 50, 503: 20}
    for r in replies:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "no_capacity"
            assert int(r.headers["retry-after"]) >= 1
    engine_claims = _engine_claims(service)
    assert len(engine_claims) == 50
    assert len({c["engine_id"] for c in engine_claims}) == 50  # one claim per slot, none shared
    assert all(e["load"] <= 1 for e in engines)


async def test_concurrent_claims_for_one_content_book_one_engine(
    central: Running, service: httpx.Client
) -> None:
    _fleet(service, hosts=6, engines=3)
    async with httpx.AsyncClient(
        base_url=central.url, headers={"X-API-Key": SERVICE_KEY}, timeout=20
    ) as client:
        replies = await asyncio.gather(
            *(
                client.post("/v1/claims", json=claim_body("id:same", f"edge{i % 6}"))
                for i in range(30)
            )
        )
    grants = [r.json() for r in replies]
    assert all(r.status_code == 200 for r in replies)
    engine_claims = _engine_claims(service, "id:same")
    assert len(engine_claims) == 1
    owner = engine_claims[0]["host"]
    for g in grants:
        if g["kind"] == "engine":
            assert g["claim_id"] == engine_claims[0]["claim_id"]
            assert g["engine"]["host"] == owner
        else:
            assert g["relay"] == {"host": owner, "proxy_url": proxy_url(str(owner))}
    assert sum(g["kind"] == "relay" for g in grants) == 25  # five edges other than the owner


def test_relay_when_content_is_live_on_another_edge(service: httpx.Client) -> None:
    _fleet(service, hosts=2, engines=2)
    first = service.post("/v1/claims", json=claim_body("infohash:abc", "edge0")).json()
    assert first["kind"] == "engine"
    assert first["engine"]["host"] == "edge0"
    results = send_events(
        service,
        "edge0",
        event(
            "stream_started",
            "s-1",
            content_key="infohash:abc",
            claim_id=first["claim_id"],
            engine_id=first["engine"]["id"],
        ),
    )
    assert results[0]["status"] == "accepted"
    second = service.post("/v1/claims", json=claim_body("infohash:abc", "edge1")).json()
    assert second["kind"] == "relay"
    assert second["relay"] == {"host": "edge0", "proxy_url": proxy_url("edge0")}
    assert second["claim_id"] != first["claim_id"]
    # The relaying edge letting go of its relay never releases the origin's engine.
    assert service.delete(f"/v1/claims/{second['claim_id']}").status_code == 204
    assert [c["claim_id"] for c in _engine_claims(service)] == [first["claim_id"]]


def test_placement_on_another_edge_is_a_relay_that_edge_redeems(service: httpx.Client) -> None:
    full, free = Agent("edge-full", 1), Agent("edge-free", 2)
    for a in (full, free):
        a.beat(service)
        snapshot(service, a.host)
    busy = service.post("/v1/claims", json=claim_body("id:busy", "edge-full")).json()
    assert busy["kind"] == "engine"  # the full edge's only engine is now taken
    grant = service.post("/v1/claims", json=claim_body("id:new", "edge-full")).json()
    assert grant["kind"] == "relay"
    assert grant["relay"]["host"] == "edge-free"
    reserved = _engine_claims(service, "id:new")
    assert len(reserved) == 1
    assert reserved[0]["host"] == "edge-free"
    # The relay target's proxy claims the same content and finds the engine reserved for it.
    redeemed = service.post("/v1/claims", json=claim_body("id:new", "edge-free")).json()
    assert redeemed["kind"] == "engine"
    assert redeemed["claim_id"] == reserved[0]["claim_id"]
    assert redeemed["engine"]["id"] == reserved[0]["engine_id"]
    assert len(_engine_claims(service, "id:new")) == 1


def test_no_fit_is_503_with_retry_after_and_reason(service: httpx.Client) -> None:
    r = service.post("/v1/claims", json=claim_body("id:x", "edge0"))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_hosts"
    agent = Agent("edge0", 1)
    agent.engines = [engine("edge0", 0, health=EngineHealth.unhealthy)]
    agent.beat(service)
    r = service.post("/v1/claims", json=claim_body("id:x", "edge0"))
    assert r.status_code == 503
    body = r.json()
    assert body["error"]["code"] == "no_capacity"
    assert body["error"]["retry_after_s"] == 2.0
    assert r.headers["retry-after"] == "2"


def test_placement_policy(service: httpx.Client) -> None:
    own = Agent("own", 0)
    own.engines = [engine("own", 0, cap=2, streams=1), engine("own", 1, cap=2, vpn_forwarded=True)]
    other = Agent("other", 3, cap=2)  # emptier, but not the asking host
    for a in (own, other):
        a.beat(service)
        snapshot(service, a.host)
    picks = [
        service.post("/v1/claims", json=claim_body(f"id:p{i}", "own")).json() for i in range(3)
    ]
    # Own host first; least loaded (eng1, then eng1 and eng0 tie on load, forwarded wins).
    assert picks[0]["kind"] == "engine"
    assert picks[0]["engine"]["id"] == "own-eng1"
    assert picks[1]["engine"]["id"] == "own-eng1"
    assert picks[2]["engine"]["id"] == "own-eng0"
    # Own host now full: the least-loaded engines elsewhere, spread rather than herded.
    more = [service.post("/v1/claims", json=claim_body(f"id:q{i}", "own")).json() for i in range(3)]
    assert all(g["kind"] == "relay" and g["relay"]["host"] == "other" for g in more)
    loads = sorted(e["load"] for e in service.get("/v1/engines?host=other").json()["items"])
    assert loads == [1, 1, 1]


def test_unconfirmed_claim_expires_and_confirmed_one_stays(start_central: StartCentral) -> None:
    svc = start_central(claim_ttl_s="1")
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        Agent("edge0", 2).beat(service)
        lost = service.post("/v1/claims", json=claim_body("id:lost", "edge0")).json()
        kept = service.post("/v1/claims", json=claim_body("id:kept", "edge0")).json()
        send_events(
            service,
            "edge0",
            event("stream_started", "s-kept", content_key="id:kept", claim_id=kept["claim_id"]),
        )
        assert service.post("/v1/claims", json=claim_body("id:third", "edge0")).status_code == 503
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ids = {c["claim_id"] for c in service.get("/v1/claims").json()["items"]}
            if lost["claim_id"] not in ids:
                break
            time.sleep(0.2)
        assert ids == {kept["claim_id"]}
        again = service.post("/v1/claims", json=claim_body("id:third", "edge0")).json()
        assert again["engine"]["id"] == lost["engine"]["id"]


def test_delete_releases_the_slot(service: httpx.Client) -> None:
    Agent("edge0", 1).beat(service)
    grant = service.post("/v1/claims", json=claim_body("id:a", "edge0")).json()
    assert service.post("/v1/claims", json=claim_body("id:b", "edge0")).status_code == 503
    assert service.delete(f"/v1/claims/{grant['claim_id']}").status_code == 204
    r = service.delete(f"/v1/claims/{grant['claim_id']}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_claim"
    assert service.post("/v1/claims", json=claim_body("id:b", "edge0")).json()["kind"] == "engine"


def test_failover_avoids_the_engine_that_failed(service: httpx.Client) -> None:
    Agent("edge0", 2).beat(service)
    first = service.post("/v1/claims", json=claim_body("id:f", "edge0")).json()
    failed = first["engine"]["id"]
    body = {**claim_body("id:f", "edge0"), "avoid": [failed]}
    again = service.post("/v1/claims", json=body).json()
    assert again["kind"] == "engine"
    assert again["engine"]["id"] != failed
    assert again["claim_id"] != first["claim_id"]
    # The failed claim is gone, so its engine is not counted as busy with this content.
    assert [c["claim_id"] for c in _engine_claims(service)] == [again["claim_id"]]


def test_claim_on_a_vanished_engine_is_placed_afresh(service: httpx.Client) -> None:
    agent = Agent("edge0", 2)
    agent.beat(service)
    first = service.post("/v1/claims", json=claim_body("id:v", "edge0")).json()
    started = event("stream_started", "s-v", content_key="id:v", claim_id=first["claim_id"])
    send_events(service, "edge0", started)
    agent.engines = [e for e in agent.engines if e.id != first["engine"]["id"]]
    agent.beat(service)  # its engine is gone; the confirmed claim stays until asked about
    assert len(_engine_claims(service)) == 1
    again = service.post("/v1/claims", json=claim_body("id:v", "edge0")).json()
    assert again["engine"]["id"] == agent.engines[0].id
    assert [c["claim_id"] for c in _engine_claims(service)] == [again["claim_id"]]
