"""Central and each edge's VPN tunnels, over real HTTP into a real central: heartbeats carry
them to /v1/hosts, the metrics and the dashboard; placement puts engines on a sick tunnel last
and a standby on another tunnel than its primary; an operator's rotation is forwarded to the
edge's agent (a small real HTTP server standing in for the agent's rotate route: the agent side
is tested in tests/agent)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from acefleet.wire import TunnelState
from tests.central.agent_stub import (
    AGENT_KEY,
    AgentStandIn,
    RotateStub,
    TunnelAgent,
    tunnel,
    tunnel_engine,
)
from tests.central.conftest import ARGS, Running, StartCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    VIEWER_KEY,
    claim_body,
    snapshot,
)
from tests.support import procs


def _client(svc: Running, key: str) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers={"X-API-Key": key}, timeout=15)


@pytest.fixture
def stand_in() -> Iterator[AgentStandIn]:
    server = AgentStandIn(RotateStub())
    yield server
    server.stop()


def _tunnels_metric(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "acefleet_central_tunnels":
            for sample in family.samples:
                out[(sample.labels["host"], sample.labels["state"])] = sample.value
    return out


def test_hosts_metrics_and_a_host_that_stopped_sending_tunnels(
    central: Running, service: httpx.Client, viewer: httpx.Client
) -> None:
    edge0 = TunnelAgent("edge0")
    edge0.engines = [tunnel_engine("edge0", 0, "t1"), tunnel_engine("edge0", 1, "t2")]
    edge0.tunnels = [
        tunnel("t1", port=41001),
        tunnel("t2", TunnelState.no_port, port=None, reason="no port forwarded"),
    ]
    plain = TunnelAgent("edge1", 1)  # an agent without tunnels
    edge0.beat(service)
    plain.beat(service)

    hosts = {h["name"]: h for h in viewer.get("/v1/hosts").json()["items"]}
    assert hosts["edge0"]["tunnels"] == [t.model_dump(mode="json") for t in edge0.tunnels]
    assert hosts["edge1"]["tunnels"] == []
    one = viewer.get("/v1/hosts/edge0").json()
    assert [(t["name"], t["state"], t["forwarded_port"]) for t in one["tunnels"]] == [
        ("t1", "healthy", 41001),
        ("t2", "no_port", None),
    ]
    engines = {e["id"]: e for e in viewer.get("/v1/engines").json()["items"]}
    assert engines["edge0-eng1"]["report"]["tunnel"] == "t2"

    # Every state of an edge with tunnels is a series, 0 included; none for an edge without.
    counts = _tunnels_metric(viewer.get("/metrics").text)
    assert counts == {
        ("edge0", "starting"): 0,
        ("edge0", "healthy"): 1,
        ("edge0", "no_port"): 1,
        ("edge0", "down"): 0,
        ("edge0", "retiring"): 0,
    }

    # The agent stops running tunnels: the host has none, and its series leave.
    edge0.tunnels = []
    edge0.engines = [e.model_copy(update={"tunnel": None}) for e in edge0.engines]
    edge0.beat(service)
    assert viewer.get("/v1/hosts/edge0").json()["tunnels"] == []
    assert _tunnels_metric(viewer.get("/metrics").text) == {}


def test_an_engine_on_a_sick_tunnel_is_placed_last(
    central: Running, service: httpx.Client, operator: httpx.Client
) -> None:
    # edge0: eng0 is emptier (least loaded first) but its tunnel t1 is down; eng1 on the healthy
    # t2 already carries a session. edge1: one engine outside any tunnel.
    edge0 = TunnelAgent("edge0")
    edge0.engines = [
        tunnel_engine("edge0", 0, "t1", cap=2),
        tunnel_engine("edge0", 1, "t2", cap=2, streams=1),
    ]
    edge0.tunnels = [tunnel("t1", TunnelState.down, port=None, ip=None), tunnel("t2")]
    edge1 = TunnelAgent("edge1", 1)
    for agent in (edge0, edge1):
        agent.beat(service)
        snapshot(service, agent.host)

    def claim(content: str) -> dict[str, Any]:
        r = service.post("/v1/claims", json=claim_body(content, "edge0"))
        assert r.status_code == 200, r.text
        grant: dict[str, Any] = r.json()
        return grant

    # The healthy tunnel's engine, though more loaded.
    assert claim("id:a")["engine"]["id"] == "edge0-eng1"
    # edge0's healthy engine is full: another edge (a relay) before the sick tunnel's engine.
    second = claim("id:b")
    assert (second["kind"], second["relay"]["host"]) == ("relay", "edge1")
    # Nothing else fits anywhere: the sick tunnel's engine after all (rather than a 503).
    assert claim("id:c")["engine"]["id"] == "edge0-eng0"

    # t1 healthy again, t2 starting: now t2's engine is the one placed last.
    edge0.tunnels = [tunnel("t1"), tunnel("t2", TunnelState.starting, port=None)]
    edge0.engines = [
        tunnel_engine("edge0", 0, "t1", cap=3),
        tunnel_engine("edge0", 1, "t2", cap=3),
    ]
    edge0.beat(service)
    loads = {e["id"]: e["load"] for e in operator.get("/v1/engines?host=edge0").json()["items"]}
    assert loads == {"edge0-eng0": 1, "edge0-eng1": 1}
    assert claim("id:d")["engine"]["id"] == "edge0-eng0"
    assert claim("id:e")["engine"]["id"] == "edge0-eng0"  # eng0 2/3 against eng1 1/3
    # A tunnel the latest heartbeat no longer lists counts as not healthy: t2's engine, the
    # least loaded (1/10 against 3/10), is placed last.
    edge0.tunnels = [tunnel("t1")]
    edge0.engines = [
        tunnel_engine("edge0", 0, "t1", cap=10),
        tunnel_engine("edge0", 1, "t2", cap=10),
    ]
    edge0.beat(service)
    assert claim("id:f")["engine"]["id"] == "edge0-eng0"
    # A rotation of t2: the heartbeat lists the retiring g0 and the healthy g1 under one name,
    # and an engine names only its tunnel. t2 is healthy: its engine (1/10 against 4/10) is
    # placed first again, not last for the whole rotation.
    edge0.tunnels = [
        tunnel("t1"),
        tunnel("t2", TunnelState.retiring),
        tunnel("t2", generation=1),
    ]
    edge0.beat(service)
    assert claim("id:g")["engine"]["id"] == "edge0-eng1"


def test_a_standby_goes_to_another_tunnel_than_its_primary(
    central: Running, service: httpx.Client
) -> None:
    # t1's engines are VPN-forwarded (preferred otherwise); t2's engine is not.
    edge0 = TunnelAgent("edge0")
    edge0.engines = [
        tunnel_engine("edge0", 0, "t1", vpn_forwarded=True),
        tunnel_engine("edge0", 1, "t1", vpn_forwarded=True),
        tunnel_engine("edge0", 2, "t2"),
    ]
    edge0.tunnels = [tunnel("t1", engines=2), tunnel("t2")]
    edge0.beat(service)
    primary = service.post("/v1/claims", json=claim_body("id:x", "edge0")).json()
    assert primary["engine"]["id"] in ("edge0-eng0", "edge0-eng1")
    body = {**claim_body("id:x", "edge0"), "standby": True, "avoid": [primary["engine"]["id"]]}
    standby = service.post("/v1/claims", json=body)
    assert standby.status_code == 200, standby.text
    assert standby.json()["engine"]["id"] == "edge0-eng2"
    # Only the primary's tunnel has room left: a second standby goes there rather than nowhere.
    again = service.post("/v1/claims", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["engine"]["id"] in ("edge0-eng0", "edge0-eng1")
    assert again.json()["engine"]["id"] != primary["engine"]["id"]


def _audit_rows(operator: httpx.Client, count: int) -> list[dict[str, Any]]:
    """The tunnel.rotate audit rows once there are ``count`` (written behind the request)."""
    items: list[dict[str, Any]] = []
    for _ in range(100):
        items = operator.get("/v1/audit", params={"action": "tunnel."}).json()["items"]
        if len(items) >= count:
            return items
        time.sleep(0.05)
    raise AssertionError(f"{len(items)} tunnel audit rows, expected {count}: {items}")


def test_rotate_is_forwarded_to_the_hosts_agent(
    start_central: StartCentral, stand_in: AgentStandIn
) -> None:
    svc = start_central(agent_api_key=AGENT_KEY)
    dead_port = procs.free_port()  # nothing listens there
    with (
        _client(svc, SERVICE_KEY) as service,
        _client(svc, OPERATOR_KEY) as operator,
        _client(svc, VIEWER_KEY) as viewer,
    ):
        edge0 = TunnelAgent("edge0", agent_url=stand_in.url)
        edge0.tunnels = [tunnel("t1"), tunnel("t2")]
        edge0.beat(service)
        TunnelAgent("edge1", agent_url=f"http://127.0.0.1:{dead_port}").beat(service)

        r = operator.post("/v1/hosts/edge0/tunnels/t1/rotate")
        assert r.status_code == 202, r.text
        assert r.json() == tunnel("t1", TunnelState.starting, generation=1, port=None).model_dump(
            mode="json"
        )
        # The agent was called at its agent_url, with the agents' key.
        assert [(c.path, c.authorization) for c in stand_in.stub.calls] == [
            ("/v1/tunnels/t1/rotate", f"Bearer {AGENT_KEY}")
        ]
        # The agent's refusals come back as it gave them.
        busy = operator.post("/v1/hosts/edge0/tunnels/t1/rotate")
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "rotation_in_progress"
        unknown = operator.post("/v1/hosts/edge0/tunnels/t9/rotate")
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_tunnel")
        # Central's own: no such host, the agent unreachable, the agent refusing central's key.
        nohost = operator.post("/v1/hosts/edge9/tunnels/t1/rotate")
        assert (nohost.status_code, nohost.json()["error"]["code"]) == (404, "unknown_host")
        dead = operator.post("/v1/hosts/edge1/tunnels/t1/rotate")
        assert (dead.status_code, dead.json()["error"]["code"]) == (502, "agent_unreachable")
        stand_in.stub.key = "another-agent-key-000001"
        refused = operator.post("/v1/hosts/edge0/tunnels/t2/rotate")
        assert refused.status_code == 502
        assert refused.json()["error"]["code"] == "agent_refused_key"
        assert AGENT_KEY not in refused.text
        calls = len(stand_in.stub.calls)
        # Operators only; a tunnel name the agents would never accept is not forwarded.
        assert viewer.post("/v1/hosts/edge0/tunnels/t2/rotate").status_code == 403
        assert service.post("/v1/hosts/edge0/tunnels/t2/rotate").status_code == 403
        assert operator.post("/v1/hosts/edge0/tunnels/Bad..Name/rotate").status_code == 422
        assert len(stand_in.stub.calls) == calls

        rows = _audit_rows(operator, 5)
        outcomes = sorted((row["target"], str(row["detail"]["outcome"])) for row in rows)
        assert outcomes == [
            ("edge0/t1", "202"),
            ("edge0/t1", "409"),
            ("edge0/t2", "agent_refused_key"),
            ("edge0/t9", "404"),
            ("edge1/t1", "agent_unreachable"),
        ]
        assert {row["actor"] for row in rows} == {operator.get("/v1/whoami").json()["name"]}


def test_rotate_without_an_agent_key_says_so(central: Running, operator: httpx.Client) -> None:
    with _client(central, SERVICE_KEY) as service:
        TunnelAgent("edge0").beat(service)
    r = operator.post("/v1/hosts/edge0/tunnels/t1/rotate")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "agent_key_missing")
    assert "ACEFLEET_CENTRAL_AGENT_API_KEY" in r.json()["error"]["message"]


@pytest.mark.browser
def test_dashboard_shows_tunnels_and_rotates_one(
    chromium: Path, start_central: StartCentral, stand_in: AgentStandIn
) -> None:
    from playwright.sync_api import sync_playwright

    svc = start_central(agent_api_key=AGENT_KEY)
    with _client(svc, SERVICE_KEY) as service:
        edge0 = TunnelAgent("edge0", agent_url=stand_in.url)
        edge0.tunnels = [
            tunnel("t1", port=41001, engines=2),
            tunnel("t2", TunnelState.down, port=None, ip=None, reason="control server unreachable"),
        ]
        edge0.beat(service)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(f"{svc.url}/dashboard")
                page.fill("#key", OPERATOR_KEY)
                page.click("#connect")
                row = page.locator('#tunnels tr[data-tunnel="edge0/t1"]')
                row.wait_for(timeout=15000)
                cells = row.locator("td").all_inner_texts()
                assert cells[:7] == ["edge0", "t1", "0", "healthy", "203.0.113.7", "41001", "2 / 4"]
                down = page.locator('#tunnels tr[data-tunnel="edge0/t2"] td').all_inner_texts()
                assert down[3:6] == ["down (control server unreachable)", "\u2013", "\u2013"]
                # Live: the next heartbeat's change shows without a reload.
                edge0.tunnels[1] = tunnel("t2", port=42002)
                edge0.beat(service)
                page.wait_for_function(
                    "document.querySelector("
                    "'#tunnels tr[data-tunnel=\"edge0/t2\"] td:nth-child(6)').textContent"
                    " === '42002'",
                    timeout=15000,
                )
                # The Rotate button reaches the edge's agent through central.
                row.locator("button").click()
                deadline = time.monotonic() + 10
                while not stand_in.stub.calls:
                    assert time.monotonic() < deadline, "the rotate click did not reach the agent"
                    time.sleep(0.1)
                assert stand_in.stub.calls[0].path == "/v1/tunnels/t1/rotate"
            finally:
                browser.close()
