"""Stream events and proxy snapshots: idempotency, unknown streams, confirm/release, history."""

from __future__ import annotations

import time

import httpx

from acefleet.wire import LiveStream
from tests.central.conftest import StartCentral
from tests.central.fleetsim import (
    SERVICE_KEY,
    Agent,
    claim_body,
    ended_history,
    event,
    send_events,
    snapshot,
)


def _live(client: httpx.Client) -> dict[str, dict[str, object]]:
    return {s["stream_id"]: s for s in client.get("/v1/streams").json()["items"]}


def test_events_are_idempotent_and_confirm_then_release(service: httpx.Client) -> None:
    Agent("edge0", 1).beat(service)
    grant = service.post("/v1/claims", json=claim_body("id:chan", "edge0")).json()
    started = event(
        "stream_started",
        "s-1",
        content_key="id:chan",
        claim_id=grant["claim_id"],
        engine_id=grant["engine"]["id"],
        infohash="ABCDEF",
    )
    viewers = event("viewers", "s-1", viewers=7)
    first = send_events(service, "edge0", started, viewers)
    assert [r["status"] for r in first] == ["accepted", "accepted"]
    again = send_events(service, "edge0", started, viewers)
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    live = _live(service)
    assert live["s-1"]["viewers"] == 7
    assert live["s-1"]["source"] == "central"
    claims = service.get("/v1/claims").json()["items"]
    assert claims[0]["confirmed"]
    assert claims[0]["stream_id"] == "s-1"
    # The infohash the engine reported names the same stream: another edge is told to relay.
    Agent("edge1", 1).beat(service)
    listed = LiveStream(
        stream_id="s-1",
        content_key="id:chan",
        claim_id=grant["claim_id"],
        engine_id=grant["engine"]["id"],
        source="central",
        viewers=7,
        started_at=started.at,
    )
    assert snapshot(service, "edge0", [listed]) == {
        "streams": 1,
        "added": 0,
        "ended": 0,
        "move_off": [],
    }
    relay = service.post("/v1/claims", json=claim_body("infohash:abcdef", "edge1")).json()
    assert relay["kind"] == "relay"
    assert relay["relay"]["host"] == "edge0"
    ended = event("stream_ended", "s-1", reason="idle")
    assert send_events(service, "edge0", ended)[0]["status"] == "accepted"
    assert [c["kind"] for c in service.get("/v1/claims").json()["items"]] == ["relay"]
    assert "s-1" not in _live(service)
    # The engine is free again.
    assert (
        service.post("/v1/claims", json=claim_body("id:next", "edge0")).json()["kind"] == "engine"
    )
    rows = ended_history(service, content_key="id:chan")
    assert len(rows) == 1
    assert rows[0]["end_reason"] == "idle"
    assert rows[0]["peak_viewers"] == 7


def test_unknown_stream_is_an_error_for_that_event_only(service: httpx.Client) -> None:
    Agent("edge0", 2).beat(service)
    send_events(service, "edge0", event("stream_started", "s-a", content_key="id:a"))
    results = send_events(
        service,
        "edge0",
        event("stream_ended", "s-nope", reason="eof"),
        event("viewers", "s-unknown", viewers=3),
        event("stream_started", "s-b"),  # no content key: cannot be registered
        event("viewers", "s-a", viewers=2),
    )
    assert [r["status"] for r in results] == ["error", "error", "error", "accepted"]
    assert results[0]["error"]["code"] == "unknown_stream"
    assert results[2]["error"]["code"] == "missing_content_key"
    live = _live(service)
    assert set(live) == {"s-a"}
    assert live["s-a"]["viewers"] == 2
    # An errored event may be retried later (its id is not burnt).
    retry = send_events(service, "edge0", event("stream_started", "s-b", content_key="id:b"))
    assert retry[0]["status"] == "accepted"


def test_snapshot_ends_missing_streams_and_adopts_unknown_ones(service: httpx.Client) -> None:
    Agent("edge0", 3).beat(service)
    Agent("edge1", 1).beat(service)
    grant = service.post("/v1/claims", json=claim_body("id:gone", "edge0")).json()
    send_events(
        service,
        "edge0",
        event("stream_started", "s-gone", content_key="id:gone", claim_id=grant["claim_id"]),
    )
    adopted = LiveStream(
        stream_id="s-fallback",
        content_key="id:fallback",
        engine_id="edge0-eng2",
        source="agent",
        viewers=4,
        started_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )
    out = snapshot(service, "edge0", [adopted])
    assert out == {"streams": 1, "added": 1, "ended": 1, "move_off": []}
    live = _live(service)
    assert set(live) == {"s-fallback"}
    assert live["s-fallback"]["engine_id"] == "edge0-eng2"
    claims = service.get("/v1/claims").json()["items"]
    assert [(c["engine_id"], c["confirmed"]) for c in claims] == [("edge0-eng2", True)]
    relay = service.post("/v1/claims", json=claim_body("id:fallback", "edge1")).json()
    assert relay["kind"] == "relay"
    rows = ended_history(service, content_key="id:gone")
    assert rows[0]["end_reason"] == "absent_from_snapshot"


def test_history_survives_in_sqlite(start_central: StartCentral) -> None:
    svc = start_central()
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        send_events(service, "edge0", event("stream_started", "s-h", content_key="id:h"))
        send_events(service, "edge0", event("stream_ended", "s-h", reason="eof"))
        assert ended_history(service)[0]["stream_id"] == "s-h"
    svc.stop()
    again = start_central()
    with httpx.Client(base_url=again.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        rows = service.get("/v1/streams/history").json()["items"]
        assert [(r["stream_id"], r["end_reason"]) for r in rows] == [("s-h", "eof")]


def test_a_proxy_that_stops_snapshotting_is_forgotten(start_central: StartCentral) -> None:
    svc = start_central(proxy_lost_after_s="1")
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        e0, e1 = Agent("edge0", 1), Agent("edge1", 1)
        for a in (e0, e1):
            a.beat(service)
        live = LiveStream(
            stream_id="s-dead",
            content_key="id:dead",
            engine_id="edge0-eng0",
            source="central",
            viewers=1,
            started_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
        )
        snapshot(service, "edge0", [live])
        relay = service.post("/v1/claims", json=claim_body("id:dead", "edge1")).json()
        assert relay["kind"] == "relay"
        deadline = time.monotonic() + 10
        while _live(service) and time.monotonic() < deadline:
            e1.beat(service)
            time.sleep(0.2)
        assert _live(service) == {}
        e1.beat(service)
        # No relay to the vanished proxy: the content is placed afresh on the asking edge.
        again = service.post("/v1/claims", json=claim_body("id:dead", "edge1")).json()
        assert again["kind"] == "engine"
        assert again["engine"]["host"] == "edge1"
        rows = ended_history(service, content_key="id:dead")
        assert rows[0]["end_reason"] == "proxy_lost"
