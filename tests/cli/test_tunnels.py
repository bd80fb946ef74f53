"""``acefleet tunnels`` and ``acefleet tunnel-rotate`` against a real central, whose rotation is
forwarded to a small real HTTP server standing in for the edge agent's rotate route (the agent
side is tested in tests/agent)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from acefleet.wire import TunnelState
from tests.central.agent_stub import AGENT_KEY, AgentStandIn, RotateStub, TunnelAgent, tunnel
from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import OPERATOR_KEY, VIEWER_KEY
from tests.cli.conftest import Cli, service_client
from tests.support import procs


@pytest.fixture
def stand_in() -> Iterator[AgentStandIn]:
    server = AgentStandIn(RotateStub())
    yield server
    server.stop()


@pytest.fixture
def tunnelled(start_central: StartCentral, stand_in: AgentStandIn) -> Running:
    """edge0 with two tunnels (t2 down), its agent the stand-in; edge1 without tunnels."""
    svc = start_central(stale_after_s="60", lost_after_s="120", agent_api_key=AGENT_KEY)
    with service_client(svc) as service:
        edge0 = TunnelAgent("edge0", agent_url=stand_in.url)
        edge0.tunnels = [
            tunnel("t1", port=41001, engines=2),
            tunnel("t2", TunnelState.down, port=None, ip=None, engines=0, reason="vpn stopped"),
        ]
        edge0.beat(service)
        TunnelAgent("edge1", 1, agent_url=f"http://127.0.0.1:{procs.free_port()}").beat(service)
    return svc


def _as(svc: Running, key: str) -> list[str]:
    return ["--url", svc.url, "--api-key", key]


def test_tunnels_table_and_json(cli: Cli, tunnelled: Running) -> None:
    r = cli(*_as(tunnelled, VIEWER_KEY), "tunnels")
    assert (r.code, r.err) == (0, "")
    lines = r.out.splitlines()
    assert lines[0].split()[:4] == ["HOST", "TUNNEL", "STATE", "PUBLIC"]
    rows = [line.split() for line in lines[1:]]
    assert [row[:7] for row in rows] == [
        ["edge0", "t1", "healthy", "203.0.113.7", "41001", "2/4", "0"],
        ["edge0", "t2", "down", "-", "-", "0/4", "0"],
    ]
    assert rows[1][-2:] == ["vpn", "stopped"]  # the reason, last
    as_json = cli(*_as(tunnelled, VIEWER_KEY), "--json", "tunnels")
    hosts = {h["name"]: h for h in json.loads(as_json.out)["items"]}
    assert [t["name"] for t in hosts["edge0"]["tunnels"]] == ["t1", "t2"]
    only = cli(*_as(tunnelled, VIEWER_KEY), "tunnels", "--host", "edge1")
    assert only.out.endswith("(no edge reports VPN tunnels)\n")
    host = cli(*_as(tunnelled, VIEWER_KEY), "hosts", "edge0")
    assert "tunnels       t1 healthy, t2 down" in host.out
    missing = cli(*_as(tunnelled, VIEWER_KEY), "tunnels", "--host", "edge9")
    assert missing.code == 1
    assert "central refused (404 unknown_host)" in missing.err


def test_tunnel_rotate(cli: Cli, tunnelled: Running, stand_in: AgentStandIn) -> None:
    r = cli(*_as(tunnelled, OPERATOR_KEY), "tunnel-rotate", "edge0", "t1")
    assert (r.code, r.err) == (0, "")
    assert r.out.startswith(
        "tunnel edge0/t1: rotating to generation 1 (acefleet-vpn-edge0-t1-g1, starting)"
    )
    assert [c.path for c in stand_in.stub.calls] == ["/v1/tunnels/t1/rotate"]
    as_json = cli(*_as(tunnelled, OPERATOR_KEY), "--json", "tunnel-rotate", "edge0", "t2")
    assert json.loads(as_json.out)["generation"] == 1
    # The agent's refusal, central's own, and a viewer's key: exit codes as for every command.
    busy = cli(*_as(tunnelled, OPERATOR_KEY), "tunnel-rotate", "edge0", "t1")
    assert busy.code == 1
    assert busy.err.startswith("acefleet: central refused (409 rotation_in_progress)")
    nohost = cli(*_as(tunnelled, OPERATOR_KEY), "tunnel-rotate", "edge9", "t1")
    assert (nohost.code, "404 unknown_host" in nohost.err) == (1, True)
    viewer = cli(*_as(tunnelled, VIEWER_KEY), "tunnel-rotate", "edge0", "t1")
    assert viewer.code == 4
    assert "403 forbidden" in viewer.err
    assert len(stand_in.stub.calls) == 3


def test_tunnel_rotate_agent_unreachable(cli: Cli, tunnelled: Running) -> None:
    # edge1's agent_url is a port where nothing listens.
    r = cli(*_as(tunnelled, OPERATOR_KEY), "tunnel-rotate", "edge1", "t1")
    assert r.code == 1
    assert r.err.startswith("acefleet: central refused (502 agent_unreachable)")


def test_tunnel_rotate_central_unreachable(cli: Cli) -> None:
    url = f"http://127.0.0.1:{procs.free_port()}"  # nothing listens there
    r = cli("--url", url, "--api-key", OPERATOR_KEY, "tunnel-rotate", "edge0", "t1")
    assert r.code == 3
    assert "central unreachable" in r.err
