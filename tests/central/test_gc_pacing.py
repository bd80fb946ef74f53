"""Central collects garbage on its own schedule (gc_pacing.py), so that a big fleet's churn of
engine reports does not pause claims for tens of milliseconds: while it runs, Python's
automatic collection is off, scheduled passes free young cycles within moments and cycles in
the oldest generation at the full pass, each pause is a metric by generation, and Python's own
schedule is back once central stops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import time
import weakref

import httpx
from prometheus_client import CollectorRegistry, Histogram

from orchestrator.central import gc_pacing
from tests.central.conftest import StartCentral


class Node:
    link: Node | None = None


def _cycle(oldest: bool) -> weakref.ref[Node]:
    """A reference cycle that is garbage as soon as this returns; with ``oldest``, a young
    collection first moved it to the oldest generation, which only a full pass looks at."""
    node = Node()
    node.link = node
    if oldest:
        gc.collect(1)  # survivors of the two young generations move to the oldest one
    return weakref.ref(node)


def _freed(ref: weakref.ref[Node], within: float) -> None:
    deadline = time.monotonic() + within
    while ref() is not None:
        assert time.monotonic() < deadline, "a garbage cycle was not collected"
        time.sleep(0.02)


def _pauses(url: str, generation: int) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    pattern = rf'^acefleet_central_gc_pause_seconds_count{{generation="{generation}"}} (\S+)$'
    found = re.search(pattern, text, re.M)
    assert found, f"no gc pause of generation {generation} in /metrics"
    return float(found.group(1))


def test_central_collects_on_its_own_schedule(start_central: StartCentral) -> None:
    assert gc.isenabled()
    central = start_central(gc_full_interval_s="1")
    assert not gc.isenabled()  # no automatic pass lands on a claim

    _freed(_cycle(oldest=False), within=0.9)  # young passes: every 20 ms, before the full one
    _freed(_cycle(oldest=True), within=10)  # the full pass, every second here
    assert _pauses(central.url, 0) > _pauses(central.url, 1) >= 1
    assert _pauses(central.url, 2) >= 1

    central.stop()
    assert gc.isenabled()


def test_interval_zero_keeps_pythons_schedule(start_central: StartCentral) -> None:
    central = start_central(gc_full_interval_s="0")
    assert gc.isenabled()
    time.sleep(0.3)
    text = httpx.get(central.url + "/metrics", timeout=5).text
    assert "acefleet_central_gc_pause_seconds_count" not in text


def test_the_loops_lateness_is_measured() -> None:
    """The pacer's timer tells how long other work held the loop (a claim waits as long)."""
    registry = CollectorRegistry()
    pause = Histogram("pause_seconds", "", ["generation"], registry=registry)
    lag = Histogram("lag_seconds", "", buckets=(0.005, 0.05, 1.0), registry=registry)

    async def held_once() -> None:
        pacer = asyncio.create_task(gc_pacing.collect_forever(60, pause, lag))
        await asyncio.sleep(0.1)  # a few quiet wake-ups
        asyncio.get_running_loop().call_soon(time.sleep, 0.08)  # holds the loop for 80 ms
        await asyncio.sleep(0.2)
        pacer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pacer

    asyncio.run(held_once())

    def count(le: str) -> float:
        value = registry.get_sample_value("lag_seconds_bucket", {"le": le})
        assert value is not None
        return value

    assert count("+Inf") >= 5  # one observation per wake-up
    assert count("+Inf") - count("0.05") == 1  # the held one: 60-80 ms late, once
