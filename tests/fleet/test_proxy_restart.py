"""A proxy SIGKILLed and restarted: its viewers reconnect and resume, viewers relaying through
the other edge stay connected (that edge takes the channel over), central forgets the dead
incarnation's stream, and no claim or engine session leaks."""

from __future__ import annotations

import asyncio

import pytest

from tests.fleet.harness import Fleet, stream_url, until, watch

pytestmark = pytest.mark.docker


def engine_claims(fleet: Fleet, key: str) -> list[dict[str, object]]:
    return [c for c in fleet.central_claims() if c["content_key"] == key and c["kind"] == "engine"]


async def test_proxy_restart_viewers_resume_nothing_leaks(healthy: Fleet) -> None:
    fleet = healthy
    edge = fleet.edge(1)
    assert edge.proxy is not None
    url = stream_url(fleet.proxy_url(1), "pr1")
    viewers = await watch([url] * 4)
    relayed = []
    again = []
    try:
        await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers))
        # viewers at the other edge relay from this proxy
        relayed = await watch([stream_url(fleet.proxy_url(0), "pr1")] * 2)
        await until("relayed viewers receive", lambda: all(v.received > 64_000 for v in relayed))
        channel = {c["key"]: c for c in fleet.proxy_status(0)["channels"]}["id:pr1"]
        assert channel["source"] == "relay"
        old = await until(
            "central knows the stream",
            lambda: {
                s["stream_id"]
                for s in fleet.central_streams()
                if s["proxy_id"] == "proxy-" + edge.name
            },
        )
        await asyncio.to_thread(edge.proxy.kill)
        await until("viewers see the proxy go", lambda: all(v.closed for v in viewers), within=10)
        # the relaying edge takes the channel over on its own engine; its viewers stay
        before = [v.received for v in relayed]
        await until(
            "relayed viewers get bytes again",
            lambda: all(v.received > b + 64_000 for v, b in zip(relayed, before, strict=True)),
            within=15,
        )
        assert not any(v.closed for v in relayed), [v.error for v in relayed]
        assert all(v.misaligned == 0 for v in relayed)
        await asyncio.to_thread(fleet.start_proxy, edge)
        again = await watch([url] * 4)  # the players reconnect
        await until("viewers resume", lambda: all(v.received > 64_000 for v in again))
        await until(
            "central forgot the dead proxy's stream",
            lambda: not old & {s["stream_id"] for s in fleet.central_streams()},
            within=10,
        )
        assert len(engine_claims(fleet, "id:pr1")) == 1
        await until(
            "one engine session for the channel",
            lambda: len(fleet.sessions_by_content().get("pr1", [])) == 1,
            within=10,
        )
    finally:
        for v in [*viewers, *relayed, *again]:
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
