"""Claims over real HTTP: atomic reservation, relay, remote placement, 503, TTL, policy."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from acefleet.wire import EngineHealth, EventBatch, LiveStream, ProxySnapshot, StreamEvent
from orchestrator.central.settings import CentralSettings
from tests.central.conftest import Running, StartCentral, ThreadCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    VIEWER_KEY,
    Agent,
    claim_body,
    engine,
    event,
    proxy_url,
    send_events,
    snapshot,
)
from tests.support import procs


def _fleet(service: httpx.Client, hosts: int, engines: int, cap: int = 1) -> list[Agent]:
    agents = [Agent(f"edge{i}", engines, cap=cap) for i in range(hosts)]
    for agent in agents:
        agent.beat(service)
        snapshot(service, agent.host)
    return agents


def _engine_claims(operator: httpx.Client, content: str | None = None) -> list[dict[str, object]]:
    """Engine claims as an operator sees them (a service sees only the ones handed to it)."""
    items = operator.get("/v1/claims").json()["items"]
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
    central: Running, service: httpx.Client, operator: httpx.Client
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
    engine_claims = _engine_claims(operator)
    assert len(engine_claims) == 50
    assert len({c["engine_id"] for c in engine_claims}) == 50  # one claim per slot, none shared
    assert all(e["load"] <= 1 for e in engines)


async def test_concurrent_claims_for_one_content_book_one_engine(
    central: Running, service: httpx.Client, operator: httpx.Client
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
    engine_claims = _engine_claims(operator, "id:same")
    assert len(engine_claims) == 1
    owner = engine_claims[0]["host"]
    for g in grants:
        if g["kind"] == "engine":
            assert g["claim_id"] == engine_claims[0]["claim_id"]
            assert g["engine"]["host"] == owner
        else:
            assert g["relay"] == {"host": owner, "proxy_url": proxy_url(str(owner))}
    assert sum(g["kind"] == "relay" for g in grants) == 25  # five edges other than the owner


def test_relay_when_content_is_live_on_another_edge(
    service: httpx.Client, operator: httpx.Client
) -> None:
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
    assert [c["claim_id"] for c in _engine_claims(operator)] == [first["claim_id"]]


def test_placement_on_another_edge_is_a_relay_that_edge_redeems(
    service: httpx.Client, operator: httpx.Client
) -> None:
    full, free = Agent("edge-full", 1), Agent("edge-free", 2)
    for a in (full, free):
        a.beat(service)
        snapshot(service, a.host)
    busy = service.post("/v1/claims", json=claim_body("id:busy", "edge-full")).json()
    assert busy["kind"] == "engine"  # the full edge's only engine is now taken
    grant = service.post("/v1/claims", json=claim_body("id:new", "edge-full")).json()
    assert grant["kind"] == "relay"
    assert grant["relay"]["host"] == "edge-free"
    reserved = _engine_claims(operator, "id:new")
    assert len(reserved) == 1
    assert reserved[0]["host"] == "edge-free"
    # The relay target's proxy claims the same content and finds the engine reserved for it.
    redeemed = service.post("/v1/claims", json=claim_body("id:new", "edge-free")).json()
    assert redeemed["kind"] == "engine"
    assert redeemed["claim_id"] == reserved[0]["claim_id"]
    assert redeemed["engine"]["id"] == reserved[0]["engine_id"]
    assert len(_engine_claims(operator, "id:new")) == 1


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


def test_failover_avoids_the_engine_that_failed(
    service: httpx.Client, operator: httpx.Client
) -> None:
    Agent("edge0", 2).beat(service)
    first = service.post("/v1/claims", json=claim_body("id:f", "edge0")).json()
    failed = first["engine"]["id"]
    body = {**claim_body("id:f", "edge0"), "avoid": [failed]}
    again = service.post("/v1/claims", json=body).json()
    assert again["kind"] == "engine"
    assert again["engine"]["id"] != failed
    assert again["claim_id"] != first["claim_id"]
    # The failed claim is gone, so its engine is not counted as busy with this content.
    assert [c["claim_id"] for c in _engine_claims(operator)] == [again["claim_id"]]


def test_claim_on_a_vanished_engine_is_placed_afresh(
    service: httpx.Client, operator: httpx.Client
) -> None:
    agent = Agent("edge0", 2)
    agent.beat(service)
    first = service.post("/v1/claims", json=claim_body("id:v", "edge0")).json()
    started = event("stream_started", "s-v", content_key="id:v", claim_id=first["claim_id"])
    send_events(service, "edge0", started)
    agent.engines = [e for e in agent.engines if e.id != first["engine"]["id"]]
    agent.beat(service)  # its engine is gone; the confirmed claim stays until asked about
    assert len(_engine_claims(operator)) == 1
    again = service.post("/v1/claims", json=claim_body("id:v", "edge0")).json()
    assert again["engine"]["id"] == agent.engines[0].id
    assert [c["claim_id"] for c in _engine_claims(operator)] == [again["claim_id"]]


# --- owners: a claim belongs to the service key it was handed to ------------------------------

EDGE_A_KEY = "edge-a-service-key-000000001"
EDGE_B_KEY = "edge-b-service-key-000000001"


@pytest.fixture
def two_services(tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Client, httpx.Client]]:
    """Central with one key per proxy instance (edge-a, edge-b) and clients for both and for
    an operator."""
    settings = CentralSettings(
        listen_port=procs.free_port(),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        service_keys=[f"edge-a:{EDGE_A_KEY}", f"edge-b:{EDGE_B_KEY}"],
        operator_keys=[f"alice:{OPERATOR_KEY}"],
        viewer_keys=[VIEWER_KEY],
        warmup_s=0,
        warm_buffer_per_edge=0,
    )
    svc = ThreadCentral(settings)
    clients = [
        httpx.Client(base_url=svc.url, headers={"X-API-Key": key}, timeout=10)
        for key in (EDGE_A_KEY, EDGE_B_KEY, OPERATOR_KEY)
    ]
    try:
        yield clients[0], clients[1], clients[2]
    finally:
        for client in clients:
            client.close()
        svc.stop()


# Through the fast path, and through the FastAPI route (a query string hands the request on).
@pytest.mark.parametrize("query", ["", "?via=route"])
def test_only_the_owner_or_an_operator_releases_a_claim(
    two_services: tuple[httpx.Client, httpx.Client, httpx.Client], query: str
) -> None:
    edge_a, edge_b, operator = two_services
    Agent("edge0", 2).beat(edge_a)
    mine = edge_a.post("/v1/claims", json=claim_body("id:a", "edge0")).json()
    other = edge_a.post("/v1/claims", json=claim_body("id:b", "edge0")).json()
    r = edge_b.delete(f"/v1/claims/{mine['claim_id']}{query}")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "not_claim_owner"
    ids = {c["claim_id"] for c in operator.get("/v1/claims").json()["items"]}
    assert mine["claim_id"] in ids  # still held
    assert edge_a.delete(f"/v1/claims/{mine['claim_id']}{query}").status_code == 204
    # An operator may release anyone's claim, and that is in the audit log.
    assert operator.delete(f"/v1/claims/{other['claim_id']}{query}").status_code == 204
    assert operator.get("/v1/claims").json()["items"] == []
    entries = _wait_audit(operator, "claim.release")
    assert entries[0]["actor"] == "alice"
    assert entries[0]["target"] == other["claim_id"]
    assert entries[0]["detail"]["owner"] == "edge-a"


def _wait_audit(operator: httpx.Client, action: str) -> list[dict[str, Any]]:
    """Audit rows are written behind the request: poll briefly."""
    for _ in range(50):
        items: list[dict[str, Any]] = operator.get("/v1/audit", params={"action": action}).json()[
            "items"
        ]
        if items:
            return items
        time.sleep(0.1)
    raise AssertionError(f"no {action} row in the audit log")


def test_claim_ids_are_shown_only_to_their_owner_and_operators(
    two_services: tuple[httpx.Client, httpx.Client, httpx.Client],
) -> None:
    edge_a, edge_b, operator = two_services
    Agent("edge0", 1).beat(edge_a)
    snapshot(edge_a, "edge0")
    grant = edge_a.post("/v1/claims", json=claim_body("id:a", "edge0")).json()
    send_events(
        edge_a,
        "edge0",
        event("stream_started", "s-a", content_key="id:a", claim_id=grant["claim_id"]),
    )
    for _ in range(50):  # history is written behind the live state
        if operator.get("/v1/streams/history").json()["items"]:
            break
        time.sleep(0.1)
    history = operator.get("/v1/streams/history").json()["items"]
    assert [s["claim_id"] for s in history] == [grant["claim_id"]]
    with httpx.Client(base_url=str(operator.base_url), headers={"X-API-Key": VIEWER_KEY}) as viewer:
        assert viewer.get("/v1/claims").json()["items"] == []
        assert [s["claim_id"] for s in viewer.get("/v1/streams").json()["items"]] == [None]
        history = viewer.get("/v1/streams/history").json()["items"]
        assert [s["claim_id"] for s in history] == [None]
    assert edge_b.get("/v1/claims").json()["items"] == []
    assert [s["claim_id"] for s in edge_b.get("/v1/streams").json()["items"]] == [None]
    assert [c["claim_id"] for c in edge_a.get("/v1/claims").json()["items"]] == [grant["claim_id"]]
    assert [s["claim_id"] for s in edge_a.get("/v1/streams").json()["items"]] == [grant["claim_id"]]
    assert [c["claim_id"] for c in operator.get("/v1/claims").json()["items"]] == [
        grant["claim_id"]
    ]


def test_a_claim_body_over_16_kib_is_413(service: httpx.Client) -> None:
    Agent("edge0", 1).beat(service)
    body = claim_body("id:big", "edge0")
    body["avoid"] = ["e" * 190] * 100  # ~19 KiB of otherwise valid JSON
    r = service.post("/v1/claims", json=body)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert service.post("/v1/claims", json=claim_body("id:big", "edge0")).status_code == 200


def _post_events(client: httpx.Client, proxy_id: str, *events: StreamEvent) -> httpx.Response:
    batch = EventBatch(proxy_id=proxy_id, events=list(events))
    headers = {"content-type": "application/json"}
    return client.post("/v1/events", content=batch.model_dump_json(), headers=headers)


def test_another_instance_cannot_end_a_proxys_streams_or_claims(
    two_services: tuple[httpx.Client, httpx.Client, httpx.Client],
) -> None:
    """Events and snapshots end streams and release their claims: the owner rule holds there
    too, or a DELETE refused with not_claim_owner would be one forged event away."""
    edge_a, edge_b, operator = two_services
    Agent("edge0", 2).beat(edge_a)
    snapshot(edge_a, "edge0")  # edge-a speaks for proxy-edge0
    grant = edge_a.post("/v1/claims", json=claim_body("id:a", "edge0")).json()
    spare = edge_a.post("/v1/claims", json=claim_body("id:b", "edge0")).json()
    started = event("stream_started", "s-a", content_key="id:a", claim_id=grant["claim_id"])
    send_events(edge_a, "edge0", started)

    empty = ProxySnapshot(host="edge0", url=proxy_url("edge0"), streams=[])
    r = edge_b.put(
        "/v1/proxies/proxy-edge0/streams",
        content=empty.model_dump_json(),
        headers={"content-type": "application/json"},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_proxy_owner")
    r = _post_events(edge_b, "proxy-edge0", event("stream_ended", "s-a", reason="x"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_proxy_owner")
    # Its own proxy id, but another proxy's stream, another key's claim: those events are
    # refused, the rest of the batch applies (a proxy's queue never stalls on one).
    ended = event("stream_ended", "s-a", reason="x")
    stolen = event("stream_started", "s-b", content_key="id:b", claim_id=spare["claim_id"])
    own = event("stream_started", "s-own", content_key="id:own")
    r = _post_events(edge_b, "proxy-b", ended, stolen, own)
    assert r.status_code == 200, r.text
    results = [(x["status"], (x.get("error") or {}).get("code")) for x in r.json()["results"]]
    assert results == [
        ("error", "not_stream_owner"),
        ("error", "not_claim_owner"),
        ("accepted", None),
    ]

    streams = {s["stream_id"] for s in operator.get("/v1/streams").json()["items"]}
    assert streams == {"s-a", "s-own"}
    claims = {c["claim_id"]: c for c in operator.get("/v1/claims").json()["items"]}
    assert set(claims) == {grant["claim_id"], spare["claim_id"]}
    assert not claims[spare["claim_id"]]["confirmed"]
    # The owner's own batch still goes through.
    send_events(edge_a, "edge0", event("stream_ended", "s-a", reason="done"))
    assert [s["stream_id"] for s in operator.get("/v1/streams").json()["items"]] == ["s-own"]


def test_claims_rebuilt_from_a_proxys_reports_belong_to_its_key(
    two_services: tuple[httpx.Client, httpx.Client, httpx.Client],
) -> None:
    """After a restart central learns claims again from the proxies' events and snapshots:
    each belongs to the key that reported it, so that key (and only it) may release it."""
    edge_a, edge_b, _operator = two_services
    Agent("edge0", 3).beat(edge_a)
    from_snapshot = LiveStream(
        stream_id="s-snap",
        content_key="id:snap",
        engine_id="edge0-eng1",
        claim_id="c-snap",
        source="agent",
        viewers=1,
        started_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )
    snapshot(edge_a, "edge0", [from_snapshot])
    from_event = event(
        "stream_started", "s-ev", content_key="id:ev", engine_id="edge0-eng0", claim_id="c-ev"
    )
    send_events(edge_a, "edge0", from_event)
    for claim_id in ("c-ev", "c-snap"):
        r = edge_b.delete(f"/v1/claims/{claim_id}")
        assert (r.status_code, r.json()["error"]["code"]) == (403, "not_claim_owner"), claim_id
        assert edge_a.delete(f"/v1/claims/{claim_id}").status_code == 204, claim_id
