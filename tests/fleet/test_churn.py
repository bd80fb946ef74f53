"""Churn: 1,000 viewer joins/leaves across 30 channels over a minute, through both proxies.
Afterwards nothing may be left: no claims (central, agents), no engine sessions, no channels,
and the proxies' file descriptors and memory back near where they started."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.fleet.harness import Fleet, Viewer, process_usage, stream_url, until

pytestmark = pytest.mark.docker

JOINS = 1000
CHANNELS = [f"churn{i:02d}" for i in range(30)]
SPAN_S = 60.0
FD_SLACK = 16  # descriptors: keep-alive client pools may hold a few more than at the start
RSS_SLACK_KIB = 64 * 1024  # memory: allocator high-water after ~30 x 2 MiB channel buffers


async def test_churn_leaves_nothing_behind(healthy: Fleet) -> None:
    fleet = healthy
    proxies = [fleet.edge(i).proxy for i in (0, 1)]
    assert all(p is not None for p in proxies)
    start_usage = [process_usage(p) for p in proxies if p is not None]
    rng = random.Random(6)
    live: list[tuple[float, Viewer]] = []
    done: list[Viewer] = []
    began = time.monotonic()
    for n in range(JOINS):
        # joins evenly over the span; each viewer stays 0.3-4 s
        due = began + n * SPAN_S / JOINS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        url = stream_url(fleet.proxy_url(rng.randrange(2)), rng.choice(CHANNELS))
        live.append((time.monotonic() + rng.uniform(0.3, 4.0), Viewer(url).start()))
        now = time.monotonic()
        leaving = [v for t, v in live if t <= now]
        live = [(t, v) for t, v in live if t > now]
        for v in leaving:
            await v.stop()
        done += leaving
    for _, v in live:
        await v.stop()
    done += [v for _, v in live]
    took = time.monotonic() - began
    served = sum(1 for v in done if v.received > 0)
    refused = sum(1 for v in done if v.status not in (None, 200))
    misaligned = sum(v.misaligned for v in done)
    print(f"\nchurn: {JOINS} joins in {took:.1f} s, {served} got bytes, {refused} refused")
    assert misaligned == 0
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
    for p, (fds0, rss0) in zip(proxies, start_usage, strict=True):
        assert p is not None
        fds, rss = process_usage(p)
        print(f"proxy {p.port}: fds {fds0} -> {fds}, rss {rss0} -> {rss} KiB")
        assert fds <= fds0 + FD_SLACK
        assert rss <= rss0 + RSS_SLACK_KIB
