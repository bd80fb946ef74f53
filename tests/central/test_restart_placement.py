"""A restarted central must not place a channel a second time before its proxy reported it.

Killed, central loses its claim book; the proxies' snapshots rebuild it, but not all at once.
Before this fix, a claim from another edge for a channel still live on an edge whose proxy had
not snapshotted yet was placed on a fresh engine: the channel then ran on two engines (the
big-fleet benchmark, bench/central_fleet_bench.py, saw it under load). Central now reads the
sessions its history still has open and refuses to place those channels (503 ``rebuilding``,
which the proxies do not hand to their agent) until the proxy that served them snapshots.
"""

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


def _history_has(url: str, stream_id: str) -> bool:
    r = httpx.get(
        f"{url}/v1/streams/history", headers={"X-API-Key": OPERATOR_KEY}, timeout=10
    ).json()
    return any(row["stream_id"] == stream_id for row in r["items"])


def test_a_live_channel_is_not_placed_again_before_its_proxy_reports(
    start_central: StartCentral,
) -> None:
    first = start_central(subprocess=True, warmup_s="0")
    assert isinstance(first, procs.Service)
    e0, e1 = Agent("edge0", 2), Agent("edge1", 2)
    with httpx.Client(base_url=first.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        for a in (e0, e1):
            a.beat(service)
        snapshot(service, "edge1")
        grant = service.post("/v1/claims", json=claim_body("id:x", "edge0")).json()
        assert grant["kind"] == "engine"
        started = event(
            "stream_started",
            "s-x",
            content_key="id:x",
            claim_id=grant["claim_id"],
            engine_id=grant["engine"]["id"],
            host="edge0",
        )
        send_events(service, "edge0", started)
        # The session row is written behind; the kill must come after it reached the database.
        deadline = time.monotonic() + 10
        while not _history_has(first.url, "s-x") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _history_has(first.url, "s-x")
    first.kill()

    second = start_central(port=first.port, subprocess=True, warmup_s="0")
    with httpx.Client(base_url=second.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        busy = [e.id for e in e0.engines].index(grant["engine"]["id"])
        e0.engines[busy].streams = 1
        for a in (e0, e1):
            a.beat(service)
        snapshot(service, "edge1")
        # edge0's proxy has not snapshotted yet: id:x still runs there, unknown to central.
        early = service.post("/v1/claims", json=claim_body("id:x", "edge1"))
        assert early.status_code == 503, early.text
        assert early.json()["error"]["code"] == "rebuilding"
        assert int(early.headers["Retry-After"]) >= 1
        # Other channels are placed as usual meanwhile.
        other = service.post("/v1/claims", json=claim_body("id:y", "edge1")).json()
        assert other["kind"] == "engine"
        listed = LiveStream(
            stream_id="s-x",
            content_key="id:x",
            claim_id=grant["claim_id"],
            engine_id=grant["engine"]["id"],
            source="central",
            viewers=1,
            started_at=started.at,
        )
        snapshot(service, "edge0", [listed])
        relay = service.post("/v1/claims", json=claim_body("id:x", "edge1")).json()
        assert relay["kind"] == "relay"
        assert relay["relay"]["host"] == "edge0"
        engines = [
            c["engine_id"]
            for c in service.get("/v1/claims").json()["items"]
            if c["kind"] == "engine" and c["content_key"] == "id:x"
        ]
        assert engines == [grant["engine"]["id"]]


def test_a_channel_whose_proxy_ended_it_while_central_was_away_is_placed(
    start_central: StartCentral,
) -> None:
    first = start_central(subprocess=True, warmup_s="0")
    assert isinstance(first, procs.Service)
    e0, e1 = Agent("edge0", 2), Agent("edge1", 2)
    with httpx.Client(base_url=first.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        for a in (e0, e1):
            a.beat(service)
        grant = service.post("/v1/claims", json=claim_body("id:z", "edge0")).json()
        send_events(
            service,
            "edge0",
            event(
                "stream_started",
                "s-z",
                content_key="id:z",
                claim_id=grant["claim_id"],
                engine_id=grant["engine"]["id"],
                host="edge0",
            ),
        )
        deadline = time.monotonic() + 10
        while not _history_has(first.url, "s-z") and time.monotonic() < deadline:
            time.sleep(0.05)
    first.kill()

    second = start_central(port=first.port, subprocess=True, warmup_s="0")
    with httpx.Client(base_url=second.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        for a in (e0, e1):
            a.beat(service)
        snapshot(service, "edge0")  # its proxy no longer serves id:z
        snapshot(service, "edge1")
        again = service.post("/v1/claims", json=claim_body("id:z", "edge1")).json()
        assert again["kind"] == "engine"
        assert again["engine"]["host"] == "edge1"
