"""A proxy SIGKILLed and restarted: its viewers reconnect and resume, central forgets the dead
incarnation's streams (its first snapshot lists none of them), and no claim or session leaks."""

from __future__ import annotations

import asyncio

import pytest

from tests.fleet.harness import Fleet, stream_url, until, watch

pytestmark = pytest.mark.docker


async def test_proxy_restart_viewers_resume_nothing_leaks(healthy: Fleet) -> None:
    fleet = healthy
    edge = fleet.edge(1)
    assert edge.proxy is not None
    url = stream_url(fleet.proxy_url(1), "pr1")
    viewers = await watch([url] * 4)
    again = []
    try:
        await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers))
        old = await until(
            "central knows the stream",
            lambda: {
                s["stream_id"] for s in fleet.central_streams() if s["content_key"] == "id:pr1"
            },
        )
        assert len(old) == 1
        await asyncio.to_thread(edge.proxy.kill)
        await until("viewers see the proxy go", lambda: all(v.closed for v in viewers), within=10)
        await asyncio.to_thread(fleet.start_proxy, edge)
        again = await watch([url] * 4)  # the players reconnect
        await until("viewers resume", lambda: all(v.received > 64_000 for v in again))
        await until(
            "central forgot the dead proxy's stream",
            lambda: not old & {s["stream_id"] for s in fleet.central_streams()},
            within=10,
        )
        claims = [c for c in fleet.central_claims() if c["content_key"] == "id:pr1"]
        assert len(claims) == 1, claims
        await until(
            "one engine session for the channel",
            lambda: len(fleet.sessions_by_content().get("pr1", [])) == 1,
            within=10,
        )
    finally:
        for v in [*viewers, *again]:
            await v.stop()
    await until("central claims released", lambda: not fleet.central_claims(), within=20)
    await until(
        "agent claims released",
        lambda: not any(fleet.agent_claims(e) for e in fleet.edges.values()),
        within=20,
    )
    await until(
        "engine sessions ended", lambda: "pr1" not in fleet.sessions_by_content(), within=20
    )
