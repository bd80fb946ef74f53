"""SIGKILL central during streams: nobody is disconnected, new channels start from the local
agent, the events queued meanwhile reach central's history once it is back, and central's
stream list is rebuilt from the proxies' snapshots within a few heartbeats."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from tests.fleet.harness import Fleet, stream_url, until, watch

pytestmark = pytest.mark.docker


def live_stream_ids(fleet: Fleet) -> set[str]:
    return {
        c["stream_id"] for i in (0, 1) for c in fleet.proxy_status(i)["channels"] if c["stream_id"]
    }


def recorded_events(fleet: Fleet, stream_ids: set[str]) -> set[tuple[str, str]]:
    with sqlite3.connect(fleet.db) as db:
        rows = db.execute("SELECT stream_id, type FROM stream_events").fetchall()
    return {(s, t) for s, t in rows if s in stream_ids}


async def test_central_killed_during_streams(healthy: Fleet) -> None:
    fleet = healthy
    assert fleet.central is not None
    urls = [stream_url(fleet.proxy_url(0), "cd1")] * 3 + [stream_url(fleet.proxy_url(1), "cd1")] * 2
    viewers = await watch(urls + [stream_url(fleet.proxy_url(1), "cd2")] * 2)
    fresh = []
    try:
        await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers))
        agent_placed = [
            fleet.proxy_metric(i, "acefleet_proxy_placements_total", 'source="agent"')
            for i in (0, 1)
        ]
        await asyncio.to_thread(fleet.central.kill)
        before = [v.received for v in viewers]
        # new channels while central is gone: the local agent places them
        fresh = await watch(
            [stream_url(fleet.proxy_url(0), "cdnew0")] * 2
            + [stream_url(fleet.proxy_url(1), "cdnew1")]
        )
        await until(
            "new channels play without central", lambda: all(v.received > 64_000 for v in fresh)
        )
        for i in (0, 1):
            now = fleet.proxy_metric(i, "acefleet_proxy_placements_total", 'source="agent"')
            assert now > agent_placed[i]
        await until(
            "the first viewers keep receiving",
            lambda: all(v.received > b + 64_000 for v, b in zip(viewers, before, strict=True)),
        )
        assert not any(v.closed for v in viewers), [v.error for v in viewers]

        fallback_ids = {
            c["stream_id"]
            for i in (0, 1)
            for c in fleet.proxy_status(i)["channels"]
            if c["key"] in ("id:cdnew0", "id:cdnew1")
        }
        assert len(fallback_ids) == 2
        await asyncio.to_thread(fleet.start_central)
        back = time.monotonic()
        expected = live_stream_ids(fleet)
        await until(
            "central's stream list matches the proxies",
            lambda: {s["stream_id"] for s in fleet.central_streams()} == live_stream_ids(fleet),
            within=15,
        )
        rebuilt = time.monotonic() - back
        print(f"\ncentral's stream list rebuilt {rebuilt:.2f} s after its restart")
        assert expected
        # the stream_started events queued while central was down are in its history now
        await until(
            "queued events recorded",
            lambda: (
                {(s, "stream_started") for s in fallback_ids}
                <= recorded_events(fleet, fallback_ids)
            ),
            within=10,
        )
        # central adopted the agents' claims for the fallback streams (no double placement later)
        claims = {c["stream_id"] for c in fleet.central_claims() if c["confirmed"]}
        assert fallback_ids <= claims
        assert not any(v.closed for v in [*viewers, *fresh])
    finally:
        for v in [*viewers, *fresh]:
            await v.stop()
    await until("central claims released", lambda: not fleet.central_claims(), within=20)
    await until(
        "agent claims released",
        lambda: not any(fleet.agent_claims(e) for e in fleet.edges.values()),
        within=20,
    )
