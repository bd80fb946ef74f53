"""An engine container killed under 10 viewers: the proxy claims another engine for the content
and the same connections carry on, packet-aligned, within a few seconds."""

from __future__ import annotations

import asyncio

import pytest

from tests.fleet.harness import (
    Fleet,
    engine_container,
    kill_under_viewers,
    stream_url,
    until,
    watch,
)

pytestmark = pytest.mark.docker


async def test_engine_killed_under_viewers_fails_over(healthy: Fleet) -> None:
    fleet = healthy
    bystanders = await watch([stream_url(fleet.proxy_url(0), "calm1")] * 2)
    viewers = await watch([stream_url(fleet.proxy_url(0), "fail1")] * 10)
    try:
        await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers))
        await until("bystanders receive", lambda: all(v.received > 64_000 for v in bystanders))
        channels = {c["key"]: c for c in fleet.proxy_status(0)["channels"]}
        engine = channels["id:fail1"]["upstream"]
        other = channels["id:calm1"]["upstream"]
        container = engine_container(engine)
        assert container, engine
        failovers = fleet.proxy_metric(0, "acefleet_proxy_failovers_total")
        calm = [v.received for v in bystanders]
        gap = await kill_under_viewers(container, viewers, within=20)
        print(f"\nfailover gap after engine kill: {gap:.2f} s (max over 10 viewers)")
        assert not any(v.closed for v in viewers), [v.error for v in viewers]
        assert all(v.misaligned == 0 for v in viewers)
        assert fleet.proxy_metric(0, "acefleet_proxy_failovers_total") > failovers
        now = {c["key"]: c for c in fleet.proxy_status(0)["channels"]}
        assert now["id:fail1"]["upstream"] != engine
        # one session for the content, fleet-wide, on the new engine
        sessions = await asyncio.to_thread(fleet.sessions_by_content)
        assert len(sessions["fail1"]) == 1, sessions
        # viewers of other channels were untouched (unless they shared the killed engine)
        if other != engine:
            await until(
                "bystanders keep receiving",
                lambda: all(v.received > b + 64_000 for v, b in zip(bystanders, calm, strict=True)),
            )
            assert not any(v.closed for v in bystanders)
    finally:
        for v in [*viewers, *bystanders]:
            await v.stop()
    await until("claims released", lambda: not fleet.central_claims(), within=20)
    # the agent replaces the dead engine; the next tests want a full pool again
    await until(
        "pool refilled",
        lambda: all(len(fleet.healthy_engines(e)) >= 2 for e in fleet.edges.values()),
        within=60,
    )
