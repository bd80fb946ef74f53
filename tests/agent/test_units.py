"""Pure pieces of the agent: profiles, breaker, port allocation, agent-check lines."""

from __future__ import annotations

import socket

import pytest

from orchestrator.agent.agentcheck import answer
from orchestrator.agent.app import announced_url
from orchestrator.agent.ports import PortAllocator, PortsExhausted
from orchestrator.agent.profiles import resolve
from orchestrator.agent.provision_breaker import Breaker
from orchestrator.agent.settings import AgentSettings
from tests.agent.helpers import port_range


def test_profiles_pass_ports_the_way_each_image_takes_them() -> None:
    sim = resolve("auto", "acefleet/engine-sim:latest")
    assert sim.name == "engine-sim"
    spec = sim.spec(19000, 19500, ["--chaos"])
    assert spec.command == ["--http-port", "19000", "--port", "19500", "--bind-all", "--chaos"]
    assert spec.flags_only

    proxy = resolve("auto", "ghcr.io/martinbjeldbak/acestream-http-proxy:2.1")
    assert proxy.name == "acestream-http-proxy"
    spec = proxy.spec(19001, 19501, ["--cache-limit", "2"])
    assert spec.command is None
    assert spec.env["ALLOW_REMOTE_ACCESS"] == "yes"
    assert spec.env["EXTRA_FLAGS"] == "--http-port 19001 --port 19501 --cache-limit 2"

    env_style = resolve("http-port-env", "example/engine")
    spec = env_style.spec(19002, 19502, [])
    assert spec.env == {
        "HTTP_PORT": "19002",
        "HTTPS_PORT": "19003",
        "BIND_ALL": "true",
        "P2P_PORT": "19502",
    }
    with pytest.raises(ValueError, match="unknown engine profile 'nope'"):
        resolve("nope", "x")


def test_breaker_opens_waits_and_closes_after_a_good_trial() -> None:
    b = Breaker(threshold=2, backoff_s=10, backoff_max_s=25)
    assert b.allow(0)
    b.failure("image_missing", "no image", now=0)
    assert b.current(0) == "closed"
    b.failure("image_missing", "no image", now=1)
    assert b.current(1) == "open"
    assert not b.allow(5)
    assert b.retry_in(5) == 6
    assert b.allow(11)  # half-open: exactly one trial
    assert b.current(11) == "half_open"
    assert not b.allow(11)
    b.failure("image_missing", "still none", now=12)
    assert b.current(12) == "open"
    assert b.retry_in(12) == 20  # backoff doubled
    assert b.allow(40)
    b.success()
    assert b.current(40) == "closed"
    assert b.reason is None
    assert b.failures_total == 3


def test_port_allocator_skips_held_reserved_and_taken_ports() -> None:
    held, _ = port_range(6)
    with socket.socket() as s:
        s.bind(("127.0.0.1", held))
        alloc = PortAllocator(
            range(held, held + 4), range(held + 4, held + 6), "127.0.0.1", probe=True
        )
        http, p2p = alloc.allocate(taken={held + 1})
        assert http == held + 2  # held by us (bound), held + 1 taken by a label
        assert p2p == held + 4
        http2, p2p2 = alloc.allocate(taken=set())
        assert (http2, p2p2) == (held + 1, held + 5)  # reserved ones skipped
        with pytest.raises(PortsExhausted, match="P2P"):
            alloc.allocate(taken=set())
        assert held + 3 not in alloc.reserved  # the HTTP half was given back
        alloc.release(http, p2p)
        assert alloc.allocate(taken=set(), p2p_port=40000) == (held + 2, 40000)


def test_agent_check_lines() -> None:
    assert answer(True, 50) == b"drain\n"
    assert answer(False, 50) == b"ready 50%\n"
    assert answer(False, 0) == b"ready 1%\n"
    assert answer(False, 250) == b"ready 100%\n"


def test_the_url_announced_to_central_is_one_it_can_call() -> None:
    key = "unit-agent-key-0123456789"
    wildcard = AgentSettings(api_key=key, listen_host="0.0.0.0", listen_port=8100)
    assert announced_url(wildcard) == f"http://{socket.getfqdn()}:8100"  # never 0.0.0.0
    v6 = AgentSettings(api_key=key, listen_host="fd00::5", listen_port=8100)
    assert announced_url(v6) == "http://[fd00::5]:8100"
    set_by_role = AgentSettings(
        api_key=key, listen_host="0.0.0.0", agent_url="http://edge1.example:8100"
    )
    assert announced_url(set_by_role) == "http://edge1.example:8100"
