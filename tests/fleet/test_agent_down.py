"""SIGKILL an edge's agent: its streams go on, central marks the host stale and serves new
channels from the other edge (relayed), and the restarted agent adopts the running engines."""

from __future__ import annotations

import asyncio

import pytest

from tests.fleet.harness import Fleet, stream_url, until, watch

pytestmark = pytest.mark.docker


async def test_agent_killed(healthy: Fleet) -> None:
    fleet = healthy
    edge0, edge1 = fleet.edge(0), fleet.edge(1)
    assert edge0.agent is not None
    viewers = await watch([stream_url(fleet.proxy_url(0), "ad1")] * 3)
    fresh = []
    try:
        await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers))
        engines_before = {e["id"] for e in fleet.agent_engines(edge0)}
        await asyncio.to_thread(edge0.agent.kill)
        await until("central marks the host stale", lambda: fleet.host_status(edge0) != "live")
        before = [v.received for v in viewers]
        # a new channel asked at the orphaned edge is placed on the other edge and relayed
        fresh = await watch([stream_url(fleet.proxy_url(0), "adnew")] * 2)
        await until("new channel plays", lambda: all(v.received > 64_000 for v in fresh))
        channels = {c["key"]: c for c in fleet.proxy_status(0)["channels"]}
        assert channels["id:adnew"]["source"] == "relay"
        sessions = await asyncio.to_thread(fleet.sessions_by_content)
        assert len(sessions["adnew"]) == 1
        port = int(sessions["adnew"][0].rsplit(":", 1)[1])
        assert port in edge1.ports
        await until(
            "the first viewers keep receiving",
            lambda: all(v.received > b + 32_000 for v, b in zip(viewers, before, strict=True)),
        )
        assert not any(v.closed for v in [*viewers, *fresh])
        # the restarted agent adopts what runs, and the host is live again
        await asyncio.to_thread(fleet.start_agent, edge0)
        assert edge0.agent is not None
        adopted = {e["id"] for e in fleet.agent_engines(edge0)}
        assert engines_before <= adopted
        assert "engine_adopted" in edge0.agent.log()
        await until("host live again", lambda: fleet.host_status(edge0) == "live")
        assert not any(v.closed for v in [*viewers, *fresh])
    finally:
        for v in [*viewers, *fresh]:
            await v.stop()
    await until("central claims released", lambda: not fleet.central_claims(), within=20)
