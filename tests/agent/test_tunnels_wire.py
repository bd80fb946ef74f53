"""The tunnel compatibility rule on the wire: an agent without tunnels sends the heartbeat and
engine reports with exactly the keys it sent before tunnels existed; one with tunnels sends
``tunnels`` and each engine's ``tunnel``. Pure Python: the real pool and heartbeat builder, no
Docker call is made."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acefleet.wire import EngineHealth, Heartbeat
from orchestrator.agent.api import EngineDetail, EngineList
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.heartbeat import HeartbeatLoop
from orchestrator.agent.metrics import AgentMetrics
from orchestrator.agent.pool import Pool
from orchestrator.agent.settings import AgentSettings
from orchestrator.agent.tunnel_compat import engine_body, with_engines
from orchestrator.agent.tunnel_record import TunnelGen

KEY = "agent-test-key-0123456789"
# The keys of a heartbeat and of an engine report before tunnels (acefleet 0.x, issue 17)
HEARTBEAT_KEYS = {
    "host",
    "agent_url",
    "seq",
    "engines",
    "max_engines",
    "vpn",
    "provisioning",
    "draining",
}
ENGINE_KEYS = {
    "id",
    "host",
    "endpoint",
    "http_port",
    "p2p_port",
    "profile",
    "health",
    "draining",
    "drain_reason",
    "stream_cap",
    "streams",
    "vpn_forwarded",
    "created_at",
    "generation",
    "stats",
}

PoolFactory = Callable[..., Pool]


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    pools: list[Pool] = []

    def make(**values: object) -> Pool:
        pool = Pool(AgentSettings(api_key=KEY, host="edge1", **values), AgentMetrics())  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.http.aclose()
        pool.docker.close()


def engine(port: int, tunnel: str | None = None) -> Engine:
    return Engine(
        id=f"acefleet-edge1-{port}",
        host="edge1",
        address="172.17.0.9" if tunnel else "127.0.0.1",
        http_port=port,
        p2p_port=port + 500,
        profile="engine-sim",
        created_at=datetime.now(UTC),
        health=EngineHealth.healthy,
        tunnel=tunnel,
        tunnel_container=f"acefleet-vpn-edge1-{tunnel}-g0" if tunnel else None,
    )


async def test_no_tunnels_no_tunnel_keys(make_pool: PoolFactory) -> None:
    pool = make_pool()
    e = engine(19000)
    pool.engines[e.id] = e
    body = HeartbeatLoop(pool, "http://127.0.0.1:8100").body()
    assert set(body) == HEARTBEAT_KEYS
    assert [set(item) for item in body["engines"]] == [ENGINE_KEYS]
    # it is valid for a central that knows tunnels, too
    assert Heartbeat.model_validate(body).tunnels == []
    report = pool.report(e)
    assert set(engine_body(report, tunnels=False)) == ENGINE_KEYS
    # what the engine list and detail serve (GET /v1/engines and /v1/engines/{id})
    listing = with_engines(EngineList(host="edge1", engines=[report]), "engines", tunnels=False)
    assert set(listing["engines"][0]) == ENGINE_KEYS
    detail = EngineDetail(engine=report, stats_history=[], claims=[])
    assert set(with_engines(detail, "engine", tunnels=False)["engine"]) == ENGINE_KEYS


async def test_with_tunnels_the_keys_are_always_there(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    path = tmp_path / "tunnels.json"
    path.write_text(
        json.dumps([{"name": "t1", "provider": "p", "credentials": {"WIREGUARD_PRIVATE_KEY": "k"}}])
    )
    path.chmod(0o600)
    pool = make_pool(vpn_tunnels_file=str(path), vpn_api_key="vpn-control-key-0123")
    assert pool.tunnels is not None
    gen = TunnelGen("t1", 0, "acefleet-vpn-edge1-t1-g0", [19000, 19001], datetime.now(UTC))
    pool.tunnels.gens[gen.container] = gen
    inside, plain = engine(19000, "t1"), engine(19001)
    pool.engines.update({inside.id: inside, plain.id: plain})
    body = HeartbeatLoop(pool, "http://127.0.0.1:8100").body()
    assert set(body) == HEARTBEAT_KEYS | {"tunnels"}
    assert [e["tunnel"] for e in body["engines"]] == ["t1", None]
    (tunnel,) = body["tunnels"]
    assert (tunnel["name"], tunnel["container"], tunnel["engines"], tunnel["engine_cap"]) == (
        "t1",
        "acefleet-vpn-edge1-t1-g0",
        1,
        4,
    )
    assert tunnel["state"] == "starting"
    assert Heartbeat.model_validate(body).tunnels[0].name == "t1"
