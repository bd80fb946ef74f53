"""What central forgets: proxies that never snapshot, and hosts lost for long.

A stream central knows only from a proxy's events (it restarted, and the proxy died before its
next snapshot) used to stay live forever, its confirmed claim pinning the engine. A host that
stopped heartbeating stayed in the fleet view and the metrics as ``lost`` forever, engines and
all, however long ago it went.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.central.conftest import StartCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    Agent,
    claim_body,
    ended_history,
    event,
    send_events,
)


def _until(what: str, fn: Any, keep_alive: list[Agent], client: httpx.Client) -> Any:
    """Wait for ``fn()`` to be truthy while the ``keep_alive`` agents go on heartbeating."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for agent in keep_alive:
            agent.beat(client)
        if value := fn():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_streams_of_a_proxy_known_only_from_events_end(start_central: StartCentral) -> None:
    svc = start_central(proxy_lost_after_s="1")
    service = httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}, timeout=10)
    operator = httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}, timeout=10)
    with service, operator:
        edge = Agent("edge0", 1)  # one engine, one slot
        edge.beat(service)
        grant = service.post("/v1/claims", json=claim_body("id:orphan", "edge0")).json()
        started = event(
            "stream_started",
            "s-orphan",
            content_key="id:orphan",
            claim_id=grant["claim_id"],
            engine_id=grant["engine"]["id"],
            host="edge0",
            viewers=1,
        )
        assert send_events(service, "edge0", started)[0]["status"] == "accepted"
        claims = operator.get("/v1/claims").json()["items"]
        assert [c["confirmed"] for c in claims] == [True]
        # The proxy never snapshots: its stream ends, its claim goes, the engine is free.
        _until(
            "stream ended",
            lambda: not operator.get("/v1/streams").json()["items"],
            [edge],
            service,
        )
        assert operator.get("/v1/claims").json()["items"] == []
        again = service.post("/v1/claims", json=claim_body("id:next", "edge0", "proxy-new"))
        assert again.status_code == 200, again.text
        assert again.json()["engine"]["id"] == grant["engine"]["id"]
        rows = ended_history(operator, content_key="id:orphan")
        assert [(r["stream_id"], r["end_reason"]) for r in rows] == [("s-orphan", "proxy_lost")]


def _metric(client: httpx.Client, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no series {series}")


def test_a_host_lost_for_long_is_forgotten_until_it_heartbeats(
    start_central: StartCentral,
) -> None:
    svc = start_central(forget_after_s="8")  # lost after 3 s (FAST), forgotten 5 s later
    service = httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}, timeout=10)
    operator = httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}, timeout=10)
    with service, operator:
        gone, stays = Agent("edge0", 2), Agent("edge1", 1)
        gone.beat(service)
        stays.beat(service)
        pending = service.post("/v1/claims", json=claim_body("id:left", "edge0")).json()
        assert pending["kind"] == "engine"

        def hosts() -> dict[str, str]:
            return {h["name"]: h["status"] for h in operator.get("/v1/hosts").json()["items"]}

        _until("edge0 lost", lambda: hosts().get("edge0") == "lost", [stays], service)
        assert _metric(operator, 'acefleet_central_hosts{status="lost"}') == 1
        _until("edge0 forgotten", lambda: "edge0" not in hosts(), [stays], service)
        assert hosts() == {"edge1": "live"}
        engines = [e["id"] for e in operator.get("/v1/engines").json()["items"]]
        assert engines == ["edge1-eng0"]
        assert _metric(operator, 'acefleet_central_hosts{status="lost"}') == 0
        assert _metric(operator, 'acefleet_central_engines{health="healthy"}') == 1
        # What was reserved on its engines but never started went with them.
        assert operator.get("/v1/claims").json()["items"] == []
        assert operator.get("/v1/engines/edge0-eng0").status_code == 404

        gone.beat(service)  # back: a new heartbeat is a host joining
        assert hosts() == {"edge0": "live", "edge1": "live"}
        engines = [e["id"] for e in operator.get("/v1/engines").json()["items"]]
        assert engines == ["edge0-eng0", "edge0-eng1", "edge1-eng0"]
