"""The fleet view over real HTTP: many agents, stale and lost hosts, drain, the warm buffer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from acefleet.wire import ProvisioningState, VpnState
from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    VIEWER_KEY,
    Agent,
    claim_body,
    snapshot,
)


def _wait(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _status(client: httpx.Client) -> dict[str, str]:
    return {h["name"]: h["status"] for h in client.get("/v1/hosts").json()["items"]}


async def test_many_agents_heartbeating(central: Running) -> None:
    agents = [Agent(f"edge{i:03}", 10) for i in range(60)]
    async with httpx.AsyncClient(base_url=central.url, headers={"X-API-Key": SERVICE_KEY}) as c:
        for _ in range(3):
            replies = await asyncio.gather(*(a.abeat(c) for a in agents))
            assert all(r.interval_s == 0.5 for r in replies)
    async with httpx.AsyncClient(base_url=central.url, headers={"X-API-Key": VIEWER_KEY}) as v:
        fleet = (await v.get("/v1/fleet")).json()
        hosts = (await v.get("/v1/hosts")).json()["items"]
        metrics = (await v.get("/metrics")).text
    assert fleet["hosts"] == {"live": 60, "stale": 0, "lost": 0}
    assert fleet["engines"] == 600
    assert fleet["slots_free"] == 600
    assert {h["seq"] for h in hosts} == {2}
    assert 'acefleet_central_hosts{status="live"} 60.0' in metrics
    assert "acefleet_central_heartbeat_lag_seconds_count 120.0" in metrics


def test_silent_host_goes_stale_then_lost_and_gets_no_work(
    service: httpx.Client, viewer: httpx.Client
) -> None:
    quiet, busy = Agent("quiet", 2), Agent("busy", 2)
    for a in (quiet, busy):
        a.beat(service)
        snapshot(service, a.host)
    deadline = time.monotonic() + 10
    while _status(viewer)["quiet"] != "stale" and time.monotonic() < deadline:
        busy.beat(service)
        time.sleep(0.2)
    assert _status(viewer) == {"quiet": "stale", "busy": "live"}
    # The stale host's proxy still gets an answer: placed on the live edge, relayed from there.
    grant = service.post("/v1/claims", json=claim_body("id:one", "quiet")).json()
    assert grant["kind"] == "relay"
    assert grant["relay"]["host"] == "busy"
    while _status(viewer)["quiet"] != "lost" and time.monotonic() < deadline:
        busy.beat(service)
        time.sleep(0.2)
    assert _status(viewer)["quiet"] == "lost"
    # Nothing is stopped on a guess: its engines stay listed, no stop directive is ever sent.
    engines = viewer.get("/v1/engines?host=quiet").json()["items"]
    assert len(engines) == 2
    assert not any(e["placeable"] for e in engines)
    assert not any(
        d.kind == "stop_engine" for a in (quiet, busy) for r in a.replies for d in r.directives
    )
    quiet.beat(service)
    assert _status(viewer)["quiet"] == "live"


def test_drain_host_and_engine(
    service: httpx.Client, operator: httpx.Client, viewer: httpx.Client
) -> None:
    a, b = Agent("a", 2), Agent("b", 2)
    for agent in (a, b):
        agent.beat(service)
        snapshot(service, agent.host)
    r = operator.post("/v1/hosts/a/drain")
    assert r.json() == {"target": "a", "draining": True}
    assert [d.kind for d in a.beat(service).directives] == ["drain"]
    assert a.draining
    assert a.beat(service).directives == []  # told once; its own flag now carries the drain
    grant = service.post("/v1/claims", json=claim_body("id:d1", "a")).json()
    assert grant["kind"] == "relay"
    assert grant["relay"]["host"] == "b"
    host_a = viewer.get("/v1/hosts/a").json()
    assert host_a["draining"]
    assert host_a["operator_drain"]
    operator.post("/v1/hosts/a/undrain")
    assert [d.kind for d in a.beat(service).directives] == ["undrain"]
    a.beat(service)  # the agent reports itself undrained
    d2 = service.post("/v1/claims", json=claim_body("id:d2", "a")).json()
    assert d2["kind"] == "engine"
    other = "a-eng1" if d2["engine"]["id"] == "a-eng0" else "a-eng0"
    # Engine drain: central-side, that engine gets no new work.
    assert operator.post(f"/v1/engines/{other}/drain").status_code == 200
    assert operator.post("/v1/engines/nope/drain").json()["error"]["code"] == "unknown_engine"
    grant = service.post("/v1/claims", json=claim_body("id:d3", "a")).json()
    assert grant["kind"] == "relay"  # one engine holds id:d2, the other is drained
    engine = viewer.get(f"/v1/engines/{other}").json()
    assert engine["operator_drain"]
    assert not engine["placeable"]
    assert operator.post("/v1/hosts/ghost/drain").status_code == 404


def test_warm_buffer_provisions_and_reports_blocked(start_central: StartCentral) -> None:
    svc = start_central(warm_buffer_per_edge="2", fleet_max_engines="5")
    with (
        httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service,
        httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator,
    ):
        edge = Agent("edge", 1, max_engines=3)
        reply = edge.beat(service)  # 1 free of 2 wanted
        assert [(d.kind, d.count) for d in reply.directives] == [("provision", 1)]
        assert reply.free_engines == 2  # so the agent's idle reaper keeps what it provisions
        snapshot(service, edge.host)
        assert service.post("/v1/claims", json=claim_body("id:x", "edge")).status_code == 200
        reply = edge.beat(service)  # 0 free, 1 already asked for: one more
        assert [(d.kind, d.count) for d in reply.directives] == [("provision", 1)]
        assert edge.beat(service).directives == []  # not repeated before the agent catches up
        edge.provisioning = ProvisioningState(state="breaker_open", reason="3 failures")
        edge.beat(service)
        status = operator.get("/v1/provisioning").json()
        row = status["hosts"][0]
        assert row["blocked_reason"] == "agent_breaker_open: 3 failures"
        edge.provisioning = ProvisioningState()
        edge.vpn = VpnState(enabled=True, connected=False)
        edge.beat(service)
        assert operator.get("/v1/provisioning").json()["hosts"][0]["blocked_reason"] == "vpn_down"
        # A second edge: the fleet-wide maximum (5) caps what it may get.
        edge.vpn = VpnState()
        other = Agent("other", 0, max_engines=10)
        other.engines = []
        r = operator.put("/v1/provisioning/buffer", json={"warm_buffer_per_edge": 4})
        assert r.status_code == 200
        assert r.json()["warm_buffer_per_edge"] == 4
        time.sleep(1.1)  # past the window in which the first directive counts as outstanding
        reply = other.beat(service)
        assert [(d.kind, d.count) for d in reply.directives] == [("provision", 4)]
        reply = edge.beat(service)
        # edge: 1 engine + other: 0 engines + 4 outstanding = 5 = fleet max.
        assert reply.directives == []
        hosts = {h["host"]: h for h in operator.get("/v1/provisioning").json()["hosts"]}
        assert hosts["edge"]["blocked_reason"] == "fleet_max_engines_reached"
        r = operator.put(
            "/v1/provisioning/buffer", json={"host": "edge", "warm_buffer_per_edge": 0}
        )
        assert r.status_code == 200
        assert {h["host"]: h["target"] for h in r.json()["hosts"]} == {"edge": 0, "other": 4}
        assert edge.beat(service).free_engines == 0  # the per-edge override travels too
        _wait(
            lambda: any(
                e["action"] == "provision" for e in operator.get("/v1/provisioning").json()["log"]
            )
        )


def test_no_provisioning_while_warming_up(start_central: StartCentral) -> None:
    svc = start_central(warmup_s="60", warm_buffer_per_edge="2")
    with (
        httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service,
        httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator,
    ):
        edge = Agent("edge", 0)
        assert edge.beat(service).directives == []
        status = operator.get("/v1/provisioning").json()
        assert status["warming_up"]
        assert status["hosts"][0]["blocked_reason"] == "central_warming_up"


def test_heartbeat_reply_lists_claims_per_engine(service: httpx.Client) -> None:
    edge, other = Agent("edge0", 3), Agent("edge1", 1)
    for a in (edge, other):
        a.beat(service)
        snapshot(service, a.host)
    assert edge.beat(service).claimed == {}
    grants = [
        service.post("/v1/claims", json=claim_body(f"id:c{i}", "edge0")).json() for i in range(2)
    ]
    reply = edge.beat(service)
    assert reply.claimed == {g["engine"]["id"]: 1 for g in grants}
    assert other.beat(service).claimed == {}  # only this host's engines
    service.delete(f"/v1/claims/{grants[0]['claim_id']}")
    assert edge.beat(service).claimed == {grants[1]["engine"]["id"]: 1}
