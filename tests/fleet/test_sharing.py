"""Many viewers on a few channels, arriving at both proxies: one engine session per channel in
the whole fleet (relays between edges), counted on every engine's ``/_sim/sessions``."""

from __future__ import annotations

import asyncio

import pytest

from tests.fleet.harness import Fleet, stream_url, until, watch

pytestmark = pytest.mark.docker

# channel → viewers at proxy 0 and proxy 1
PLAN = {"share1": (6, 4), "share2": (0, 5), "share3": (3, 3)}


async def test_one_engine_session_per_channel_fleet_wide(healthy: Fleet) -> None:
    fleet = healthy
    relays_before = fleet.proxy_metric(1, "acefleet_proxy_placements_total", 'source="relay"')
    relays_before += fleet.proxy_metric(0, "acefleet_proxy_placements_total", 'source="relay"')
    urls = [
        stream_url(fleet.proxy_url(i), channel)
        for channel, counts in PLAN.items()
        for i, n in enumerate(counts)
        for _ in range(n)
    ]
    viewers = await watch(urls)
    try:
        await until("every viewer receives", lambda: all(v.received > 64_000 for v in viewers))
        by_content = await asyncio.to_thread(fleet.sessions_by_content)
        ours = {c: by_content.get(c, []) for c in PLAN}
        assert all(len(engines) == 1 for engines in ours.values()), ours
        # viewers of one channel at both edges: one edge relays from the other
        relays = fleet.proxy_metric(1, "acefleet_proxy_placements_total", 'source="relay"')
        relays += fleet.proxy_metric(0, "acefleet_proxy_placements_total", 'source="relay"')
        assert relays - relays_before >= 2  # share1 and share3 are watched at both edges
        sources = {
            (i, c["key"]): c["source"] for i in (0, 1) for c in fleet.proxy_status(i)["channels"]
        }
        for channel in ("share1", "share3"):
            pair = {sources[(0, f"id:{channel}")], sources[(1, f"id:{channel}")]}
            assert pair == {"central", "relay"}, (channel, pair)
        # each relay names central's relay claim to the proxy it pulls from
        relay_claims = {c["claim_id"] for c in fleet.central_claims() if c["kind"] == "relay"}
        assert len(relay_claims) >= 2
        logged = "".join(e.proxy.log() for e in fleet.edges.values() if e.proxy is not None)
        assert all(f'"relay_claim": "{claim}"' in logged for claim in relay_claims)
        assert all(v.misaligned == 0 and not v.closed for v in viewers)
    finally:
        for v in viewers:
            await v.stop()
    # upstreams end after the grace period; claims and engine sessions go with them
    await until("claims released", lambda: not fleet.central_claims(), within=20)
    await until(
        "engine sessions ended",
        lambda: not any(fleet.sessions_by_content().get(c) for c in PLAN),
        within=20,
    )
