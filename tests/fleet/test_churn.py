"""Churn: 1,000 viewer joins/leaves across 30 channels over a minute, through both proxies.
Afterwards nothing may be left: no claims (central, agents), no engine sessions, no channels,
the proxies' file descriptors back near where they started, and their memory within a bound."""

from __future__ import annotations

import pytest

from tests.fleet.harness import Fleet, churn, process_usage, tcp_peers, until

pytestmark = pytest.mark.docker

JOINS = 1000
CHANNELS = [f"churn{i:02d}" for i in range(30)]
SPAN_S = 60.0
# Descriptors: the proxy's keep-alive pools may stay full after the churn (control links to
# central and the agent: 16; engine API calls: 32, see proxy/control/links.py and
# proxy/engine_api.py). A leak per join or per channel would be hundreds (1,000 joins, about 600
# channel openings), far above this.
FD_SLACK = 16 + 32
# Memory: the allocator may keep its high-water mark (30 channel buffers of 2 MiB, socket
# backlogs); leaking closed channels (2 MiB buffers, ~600 openings here) goes far beyond it.
RSS_BOUND_KIB = 64 * 1024  # measured: +28 MiB; with the channel-cycle leak: +110 MiB


async def test_churn_leaves_nothing_behind(healthy: Fleet) -> None:
    fleet = healthy
    proxies = [fleet.edge(i).proxy for i in (0, 1)]
    start = {p.port: process_usage(p) for p in proxies if p is not None}
    done = await churn(
        [fleet.proxy_url(0), fleet.proxy_url(1)], joins=JOINS, channels=CHANNELS, span_s=SPAN_S
    )
    served = sum(1 for v in done if v.received > 0)
    refused = sum(1 for v in done if v.status not in (None, 200))
    print(f"\nchurn: {JOINS} joins in {SPAN_S:g} s, {served} got bytes, {refused} refused")
    assert sum(v.misaligned for v in done) == 0
    assert served >= 0.9 * JOINS

    await until(
        "every channel closed",
        lambda: all(not fleet.proxy_status(i)["channels"] for i in (0, 1)),
        within=20,
    )
    await until("central claims released", lambda: not fleet.central_claims(), within=20)
    await until("central streams ended", lambda: not fleet.central_streams(), within=20)
    await until(
        "agent claims released",
        lambda: not any(fleet.agent_claims(e) for e in fleet.edges.values()),
        within=20,
    )
    await until(
        "engine sessions ended",
        lambda: not set(CHANNELS) & set(fleet.sessions_by_content()),
        within=30,
    )
    for p in proxies:
        assert p is not None
        fds0, rss0 = start[p.port]
        fds, rss = process_usage(p)
        print(f"proxy {p.port}: fds {fds0} -> {fds}, rss {rss0} -> {rss} KiB, {tcp_peers(p)}")
        assert fds <= fds0 + FD_SLACK, f"proxy {p.port} holds connections to {tcp_peers(p)}"
        assert rss - rss0 <= RSS_BOUND_KIB, f"proxy {p.port} grew {(rss - rss0) // 1024} MiB"
