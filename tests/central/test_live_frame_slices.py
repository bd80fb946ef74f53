"""The dashboard frame is built in slices (orchestrator.central.slices): the loop serves other
work between them, changes made at the pauses reach the next frame, a dashboard joining while a
frame is built gets it whole and once, and the plain stream items say what the stream views do.

In process, on central's live state with a hand-driven clock (test_live_frame_parts)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from acefleet.wire import ClaimGrant, ClaimRequest, LiveStream, ProxySnapshot
from orchestrator.central import slices, views
from orchestrator.central.api.live import fleet_frame, fleet_frame_sliced
from orchestrator.central.live_feed import KINDS, LiveFeed, Subscriber, Turns
from orchestrator.central.state import Central
from tests.central.test_live_frame_parts import Clock, beat, c, clock, from_scratch

__all__ = ["c", "clock"]  # fixtures


def grow(c: Central, clock: Clock, hosts: int, engines: int) -> None:
    """``hosts`` more hosts of ``engines`` engines, placeable."""
    for i in range(hosts):
        beat(c, f"big{i:03}", engines, 1)
    clock.now += 2


def claim(c: Central, n: int, host: str) -> ClaimGrant:
    grant = c.claim(ClaimRequest(content_key=f"id:c{n}", proxy_id=f"proxy-{host}", host=host))
    assert isinstance(grant, ClaimGrant), grant
    return grant


def stats(at: datetime, peers: int, downloaded: int) -> dict[str, Any]:
    return {"stats": {"peers": peers, "downloaded_bytes": downloaded, "at": at.isoformat()}}


def test_stream_items_are_the_stream_views_without_claim_ids(c: Central, clock: Clock) -> None:
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for i in range(3):  # one engine per host: the claim lands on an engine 0, whose stats beat sets
        beat(c, f"edge{i}", 1, 2)
    grant = claim(c, 1, "edge0")
    assert grant.engine is not None
    host = grant.engine.host
    live = [
        LiveStream(
            stream_id="s-engine",
            content_key="id:c1",
            claim_id=grant.claim_id,
            engine_id=grant.engine.id,
            source="central",
            viewers=3,
            started_at=t0,
        ),
        LiveStream(  # a relay: no engine, so no stats
            stream_id="s-relay",
            content_key="id:c2",
            source="relay",
            viewers=1,
            # not UTC, with microseconds: written as pydantic writes it
            started_at=t0.astimezone(timezone(timedelta(hours=1)))
            + timedelta(seconds=1, microseconds=250),
        ),
    ]
    c.snapshot("proxy-edge0", ProxySnapshot(host="edge0", url="http://edge0:8080", streams=live))
    assert {s.stream_id for s in c.registry.streams.values()} == {"s-engine", "s-relay"}
    # The engine stays at 0 peers for longer than degraded_after_s: the stream is degraded.
    for k in range(int(c.settings.degraded_after_s) + 2):
        clock.now += 1
        beat(c, host, 1, 3 + k, **stats(t0 + timedelta(seconds=k + 1), peers=0, downloaded=100))

    items = fleet_frame(c)["streams"]
    expected = [v.model_dump(mode="json", exclude={"claim_id"}) for v in views.streams(c)]
    assert items == expected
    by_id = {s["stream_id"]: s for s in items}
    assert by_id["s-engine"]["degraded_reason"] == "no_peers"
    assert by_id["s-engine"]["peers"] == 0
    assert by_id["s-relay"]["peers"] is None
    assert not by_id["s-relay"]["degraded"]
    assert all("claim_id" not in s for s in items)
    json.dumps(items)  # JSON as it is, nothing left for a model to convert


async def test_the_loop_serves_other_work_between_slices(c: Central, clock: Clock) -> None:
    grow(c, clock, 80, 5)
    turns = 0
    done = asyncio.Event()

    async def other_work() -> None:  # a claim, a heartbeat: anything ready on the loop
        nonlocal turns
        while not done.is_set():
            turns += 1
            await asyncio.sleep(0)

    worker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    turns = 0
    frame = await slices.paced(fleet_frame_sliced(c))
    done.set()
    await worker
    # 83 hosts built from scratch: several slices, and the other task ran at each pause.
    assert turns >= 6
    assert frame == from_scratch(c)


def test_changes_at_the_pauses_reach_the_next_frame(c: Central, clock: Clock) -> None:
    grow(c, clock, 60, 4)
    held = [claim(c, n, f"big{n:03}") for n in range(10)]
    fleet_frame(c)
    job = fleet_frame_sliced(c)
    pauses = 0
    n = 100
    while True:
        try:
            next(job)
        except StopIteration:
            break
        pauses += 1
        # Between two slices: claims on hosts the build has not reached yet and on hosts it
        # has, a release, heartbeats, an operator's drain.
        claim(c, n, f"big{(n * 7) % 60:03}")
        n += 1
        c.release(held.pop().claim_id)
        beat(c, f"big{pauses:03}", 4, 2 + pauses, draining=pauses % 2 == 0)
        c.drain_engine(f"big{(pauses * 3) % 60:03}-eng1", True)
    assert pauses >= 3
    assert fleet_frame(c) == from_scratch(c)


def messages(sub: Subscriber) -> list[dict[str, Any]]:
    out = []
    while not sub.queue.empty():
        out.append(json.loads(sub.queue.get_nowait()))
    return out


def view_of(msgs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a dashboard holds after these messages (snapshot, then deltas in order)."""
    assert msgs[0]["type"] == "snapshot"
    view = {kind: {i[key]: i for i in msgs[0]["fleet"][kind]} for kind, key in KINDS}
    version = msgs[0]["version"]
    for delta in msgs[1:]:
        assert delta["type"] == "delta"
        assert delta["version"] == version + 1
        version = delta["version"]
        for kind, key in KINDS:
            for item in delta["upsert"][kind]:
                view[kind][item[key]] = item
            for gone in delta["remove"][kind]:
                del view[kind][gone]
    return view


async def test_a_dashboard_joining_during_a_build_gets_the_frame_whole_and_once(
    c: Central, clock: Clock
) -> None:
    grow(c, clock, 40, 4)
    building = asyncio.Event()

    def build() -> slices.Sliced[dict[str, Any]]:
        job = fleet_frame_sliced(c)
        while True:
            try:
                next(job)
            except StopIteration as done:
                frame: dict[str, Any] = done.value
                return frame
            building.set()
            yield

    feed = LiveFeed(build, lambda: c.version, 0.01, 64, 8, 60)
    first = feed.join("a", None)  # no publisher yet: built at once
    for n in range(5):
        claim(c, n, f"big{n:03}")
    building.clear()
    await building.wait()  # the publisher is inside a build now
    second = feed.join("b", None)
    assert messages(second) == []  # nothing yet: it waits for the frame being built
    for _ in range(200):
        if second.queue.qsize():
            break
        await asyncio.sleep(0.01)
    claim(c, 99, "big030")
    await asyncio.sleep(0.2)  # a few more frames for both
    feed.leave(first)
    feed.leave(second)
    final = fleet_frame(c)
    want = {kind: {i[key]: i for i in final[kind]} for kind, key in KINDS}
    for sub in (first, second):
        assert view_of(messages(sub)) == want


async def test_senders_take_turns_one_loop_iteration_apart() -> None:
    """After a frame every connection's sender is ready at once; with turns (live_feed.Turns)
    each starts its send in a loop iteration of its own, so claims are read in between."""
    turns = Turns()
    iteration = 0
    started: list[int] = []
    done = asyncio.Event()

    async def ticker() -> None:  # counts loop iterations
        nonlocal iteration
        while not done.is_set():
            iteration += 1
            await asyncio.sleep(0)

    async def sender() -> None:
        await turns.take()
        started.append(iteration)  # where its send would run

    tick = asyncio.create_task(ticker())
    await asyncio.gather(*(sender() for _ in range(10)))
    done.set()
    await tick
    assert len(set(started)) == 10
