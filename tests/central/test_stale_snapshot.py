"""Snapshots that arrive after newer events (issue 17): ``taken_at`` orders them.

A proxy builds its snapshot, then sends it; its events travel in separate batches. Each test
plays the race on a real central: the snapshot is built (stamped) first, an event stamped later
reaches central first, then the older snapshot arrives.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from acefleet.wire import LiveStream, ProxySnapshot
from tests.central.fleetsim import (
    Agent,
    claim_body,
    ended_history,
    event,
    proxy_url,
    send_events,
)

_MS = timedelta(milliseconds=1)


def _put_snapshot(
    client: httpx.Client,
    host: str,
    streams: list[LiveStream],
    taken_at: datetime | None,
) -> dict[str, Any]:
    """Sent as the proxy sends it (no defaults), so without ``taken_at`` the key is absent, as
    from a proxy that predates it."""
    snap = ProxySnapshot(host=host, url=proxy_url(host), streams=streams, taken_at=taken_at)
    r = client.put(
        f"/v1/proxies/proxy-{host}/streams",
        json=snap.model_dump(mode="json", exclude_defaults=True),
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _live(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {s["stream_id"]: s for s in client.get("/v1/streams").json()["items"]}


def _claims(client: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/v1/claims").json()["items"]
    return items


def _listed(stream_id: str, grant: dict[str, Any], at: datetime) -> LiveStream:
    return LiveStream(
        stream_id=stream_id,
        content_key="id:chan",
        claim_id=grant["claim_id"],
        engine_id=grant["engine"]["id"],
        source="central",
        viewers=1,
        started_at=at,
    )


def _start_on_the_only_engine(service: httpx.Client) -> tuple[dict[str, Any], datetime]:
    """edge0 has one engine of cap 1; its claim for id:chan is confirmed by a stream_started
    stamped 'now'. Returns the grant and the event's time."""
    Agent("edge0", 1).beat(service)
    Agent("edge1", 1).beat(service)
    grant = service.post("/v1/claims", json=claim_body("id:chan", "edge0")).json()
    assert grant["kind"] == "engine"
    started = event(
        "stream_started",
        "s-1",
        content_key="id:chan",
        claim_id=grant["claim_id"],
        engine_id=grant["engine"]["id"],
    )
    assert send_events(service, "edge0", started)[0]["status"] == "accepted"
    return grant, started.at


def test_a_snapshot_older_than_a_start_does_not_end_it(service: httpx.Client) -> None:
    grant, started_at = _start_on_the_only_engine(service)
    # Built just before the stream started, delivered after its stream_started event.
    out = _put_snapshot(service, "edge0", [], taken_at=started_at - _MS)
    assert (out["added"], out["ended"]) == (0, 0)
    assert "s-1" in _live(service)
    claims = _claims(service)
    assert [(c["claim_id"], c["stream_id"]) for c in claims] == [(grant["claim_id"], "s-1")]
    # The engine and the channel stay taken: another edge relays, edge0 gets no second engine.
    relay = service.post("/v1/claims", json=claim_body("id:chan", "edge1")).json()
    assert relay["kind"] == "relay"
    assert relay["relay"]["host"] == "edge0"
    other = service.post("/v1/claims", json=claim_body("id:other", "edge0"))
    assert (other.status_code, other.json()["error"]["code"]) == (503, "no_capacity")
    # A snapshot taken at the start (same stamp) cannot know of it either.
    assert _put_snapshot(service, "edge0", [], taken_at=started_at)["ended"] == 0
    assert "s-1" in _live(service)
    # One taken after the start that does not list it is believed.
    assert _put_snapshot(service, "edge0", [], taken_at=started_at + _MS)["ended"] == 1
    assert "s-1" not in _live(service)
    assert grant["claim_id"] not in {c["claim_id"] for c in _claims(service)}
    assert ended_history(service, content_key="id:chan")[0]["end_reason"] == (
        "absent_from_snapshot"
    )


def test_a_snapshot_older_than_an_end_does_not_bring_it_back(service: httpx.Client) -> None:
    grant, started_at = _start_on_the_only_engine(service)
    taken = started_at + _MS
    stale = [_listed("s-1", grant, started_at)]
    ended = event("stream_ended", "s-1", reason="idle").model_copy(update={"at": taken + _MS})
    assert send_events(service, "edge0", ended)[0]["status"] == "accepted"
    out = _put_snapshot(service, "edge0", stale, taken_at=taken)
    assert (out["added"], out["ended"]) == (0, 0)
    assert "s-1" not in _live(service)
    assert grant["claim_id"] not in {c["claim_id"] for c in _claims(service)}
    # The engine is free: the next channel gets it.
    again = service.post("/v1/claims", json=claim_body("id:next", "edge0")).json()
    assert again["kind"] == "engine"
    assert again["engine"]["id"] == grant["engine"]["id"]


def test_an_end_decided_by_a_newer_snapshot_holds_against_an_older_one(
    service: httpx.Client,
) -> None:
    grant, started_at = _start_on_the_only_engine(service)
    newer = started_at + 2 * _MS
    assert _put_snapshot(service, "edge0", [], taken_at=newer)["ended"] == 1
    older = [_listed("s-1", grant, started_at)]
    assert _put_snapshot(service, "edge0", older, taken_at=newer - _MS)["added"] == 0
    assert "s-1" not in _live(service)


def test_a_snapshot_without_taken_at_is_taken_as_current(service: httpx.Client) -> None:
    grant, started_at = _start_on_the_only_engine(service)
    # From a proxy that predates the field: absent streams end, whatever raced.
    out = _put_snapshot(service, "edge0", [], taken_at=None)
    assert (out["added"], out["ended"]) == (0, 1)
    assert grant["claim_id"] not in {c["claim_id"] for c in _claims(service)}
    # ... and listed ones are adopted, even one whose end central has seen.
    assert _put_snapshot(service, "edge0", [_listed("s-1", grant, started_at)], None)["added"] == 1
    assert "s-1" in _live(service)
