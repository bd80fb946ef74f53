"""Warm standbys and the move-off signal over real HTTP: standby claims (a second engine on the
asking host, never the primary's, never a relay, 503 when none), standby streams and their
promotion, and ``move_off`` in the answer to a proxy's snapshot (operator drain, the agent's
recycling, degraded stats)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from acefleet.wire import EngineStats, LiveStream
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


def _standby(content: str, host: str, avoid: list[str]) -> dict[str, Any]:
    return {**claim_body(content, host), "standby": True, "avoid": avoid}


def _streams(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {s["stream_id"]: s for s in client.get("/v1/streams").json()["items"]}


@pytest.fixture
def steady(start_central: StartCentral) -> Iterator[httpx.Client]:
    """Central whose hosts stay fresh for the whole test: the claims below must not depend on
    how fast a loaded machine runs it (the fast default calls a host stale after 1.5 s)."""
    central = start_central(stale_after_s="60", lost_after_s="120")
    with httpx.Client(base_url=central.url, headers={"X-API-Key": SERVICE_KEY}, timeout=10) as c:
        yield c


def test_standby_claims_streams_and_promotion(steady: httpx.Client) -> None:
    service = steady
    edge0, edge1 = Agent("edge0", 3), Agent("edge1", 2)
    for agent in (edge0, edge1):
        agent.beat(service)
        snapshot(service, agent.host)
    primary = service.post("/v1/claims", json=claim_body("id:x", "edge0")).json()
    a = primary["engine"]["id"]
    send_events(
        service,
        "edge0",
        event("stream_started", "s-p", content_key="id:x", claim_id=primary["claim_id"]),
    )

    # A standby is another engine of the asking host: not the primary's, even unnamed in avoid.
    first = service.post("/v1/claims", json=_standby("id:x", "edge0", []))
    assert first.status_code == 200, first.text
    spare = first.json()
    assert spare["kind"] == "engine"
    assert spare["engine"]["host"] == "edge0"
    b = spare["engine"]["id"]
    assert b != a
    # A second one avoids both engines carrying the content; then edge0 is full: no relay, no
    # engine on edge1 (engines listen only on their host), but 503 no_standby_capacity.
    second = service.post("/v1/claims", json=_standby("id:x", "edge0", [a])).json()
    assert second["engine"]["id"] not in (a, b)
    full = service.post("/v1/claims", json=_standby("id:x", "edge0", [a]))
    assert full.status_code == 503
    assert full.json()["error"]["code"] == "no_standby_capacity"
    assert service.delete(f"/v1/claims/{second['claim_id']}").status_code == 204

    # The standby claims are not the content's claim: the primary is still what edges get.
    again = service.post("/v1/claims", json=claim_body("id:x", "edge0")).json()
    assert again["claim_id"] == primary["claim_id"]
    relay = service.post("/v1/claims", json=claim_body("id:x", "edge1")).json()
    assert relay["kind"] == "relay"
    assert relay["relay"]["host"] == "edge0"
    claims = {c["claim_id"]: c for c in service.get("/v1/claims").json()["items"]}
    assert claims[spare["claim_id"]]["standby"] is True
    assert claims[primary["claim_id"]]["standby"] is False

    # The standby session is announced as such: listed, not counted as a second session.
    send_events(
        service,
        "edge0",
        event(
            "stream_started",
            "s-sb",
            content_key="id:x",
            claim_id=spare["claim_id"],
            engine_id=b,
            standby=True,
        ),
    )
    streams = _streams(service)
    assert streams["s-sb"]["standby"] is True
    assert streams["s-p"]["standby"] is False
    summary = service.get("/v1/fleet").json()
    assert (summary["streams"], summary["standby_streams"]) == (1, 1)
    claims = {c["claim_id"]: c for c in service.get("/v1/claims").json()["items"]}
    assert claims[spare["claim_id"]]["confirmed"] is True

    # Promotion: the standby is announced again as the primary, the old primary ends.
    send_events(
        service,
        "edge0",
        event("stream_started", "s-sb", content_key="id:x", claim_id=spare["claim_id"]),
        event("stream_ended", "s-p", reason="engine_failed"),
    )
    streams = _streams(service)
    assert list(streams) == ["s-sb"]
    assert streams["s-sb"]["standby"] is False
    # The promoted claim is the content's claim now: a relay from edge1 and edge0's own claim
    # both land on it.
    mine = service.post("/v1/claims", json=claim_body("id:x", "edge0")).json()
    assert mine["claim_id"] == spare["claim_id"]
    assert mine["engine"]["id"] == b
    summary = service.get("/v1/fleet").json()
    assert (summary["streams"], summary["standby_streams"]) == (1, 0)


def test_a_snapshot_carries_standby_streams_and_a_missed_promotion(
    steady: httpx.Client,
) -> None:
    service = steady
    edge0 = Agent("edge0", 2)
    edge0.beat(service)
    now = datetime.now(UTC)
    a, b = (e.id for e in edge0.engines)
    primary = LiveStream(
        stream_id="p", content_key="id:y", engine_id=a, source="central", viewers=3, started_at=now
    )
    spare = LiveStream(
        stream_id="sb",
        content_key="id:y",
        engine_id=b,
        source="central",
        viewers=0,
        started_at=now,
        standby=True,
    )
    snapshot(service, "edge0", [spare, primary])  # standby first: it must not become the claim
    claims = {c["engine_id"]: c for c in service.get("/v1/claims").json()["items"]}
    assert claims[b]["standby"] is True
    assert claims[a]["standby"] is False
    assert service.post("/v1/claims", json=claim_body("id:y", "edge0")).json()["engine"]["id"] == a
    # The promotion's event was lost: the next snapshot lists the standby as the primary.
    snapshot(service, "edge0", [spare.model_copy(update={"standby": False, "viewers": 3})])
    assert _streams(service)["sb"]["standby"] is False
    assert service.post("/v1/claims", json=claim_body("id:y", "edge0")).json()["engine"]["id"] == b


def _stats(peers: int, downloaded: int) -> EngineStats:
    return EngineStats(status="dl", peers=peers, downloaded_bytes=downloaded, at=datetime.now(UTC))


def test_snapshot_answer_names_engines_to_move_off(start_central: StartCentral) -> None:
    central = start_central(degraded_after_s="1")
    svc = httpx.Client(base_url=central.url, headers={"X-API-Key": SERVICE_KEY}, timeout=10)
    ops = httpx.Client(base_url=central.url, headers={"X-API-Key": OPERATOR_KEY}, timeout=10)
    edge0 = Agent("edge0", 3)
    eng_a, _, eng_c = edge0.engines
    edge0.beat(svc)
    now = datetime.now(UTC)
    streams = [
        LiveStream(
            stream_id="p",
            content_key="id:z",
            engine_id=eng_a.id,
            source="central",
            viewers=1,
            started_at=now,
        ),
        # a standby on the third engine
        LiveStream(
            stream_id="sb",
            content_key="id:z",
            engine_id=eng_c.id,
            source="central",
            viewers=0,
            started_at=now,
            standby=True,
        ),
    ]
    assert snapshot(svc, "edge0", streams)["move_off"] == []

    # An operator drains the primary's engine: the proxy is told to move off it.
    assert ops.post(f"/v1/engines/{eng_a.id}/drain").status_code == 200
    assert snapshot(svc, "edge0", streams)["move_off"] == [eng_a.id]
    assert ops.post(f"/v1/engines/{eng_a.id}/undrain").status_code == 200
    assert snapshot(svc, "edge0", streams)["move_off"] == []
    # A standby's engine too (a standby would keep a recycling engine from emptying).
    assert ops.post(f"/v1/engines/{eng_c.id}/drain").status_code == 200
    assert snapshot(svc, "edge0", streams)["move_off"] == [eng_c.id]
    assert ops.post(f"/v1/engines/{eng_c.id}/undrain").status_code == 200

    # The agent recycles it (its own drain, with the reason on the engine's report).
    eng_a.draining, eng_a.drain_reason = True, "recycle"
    edge0.beat(svc)
    assert snapshot(svc, "edge0", streams)["move_off"] == [eng_a.id]
    engines = {e["id"]: e for e in svc.get("/v1/engines").json()["items"]}
    assert engines[eng_a.id]["report"]["drain_reason"] == "recycle"
    assert engines[eng_a.id]["placeable"] is False
    eng_a.draining, eng_a.drain_reason = False, None

    # Its stats say the swarm is gone (0 peers for degraded_after_s): move off too.
    downloaded = 0
    deadline = time.monotonic() + 15
    moved: list[str] = []
    while time.monotonic() < deadline and not moved:
        downloaded += 1000
        eng_a.stats = _stats(0, downloaded)
        edge0.beat(svc)
        moved = snapshot(svc, "edge0", streams)["move_off"]
        time.sleep(0.25)
    assert moved == [eng_a.id]
    assert svc.get("/v1/streams").json()["items"][0]["degraded_reason"] == "no_peers"
    eng_a.stats = _stats(4, downloaded + 1000)
    edge0.beat(svc)
    assert snapshot(svc, "edge0", streams)["move_off"] == []
