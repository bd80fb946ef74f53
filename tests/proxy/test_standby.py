"""Warm standby with real processes: three simulators playing real clips, a proxy keeping a
standby for a channel with two viewers, the primary engine killed (SIGKILL) under them.

What viewers must see: the same connection throughout, the new source joined at a keyframe
(PAT and PMT first, discontinuity marked, continuity counters consistent), ffmpeg decoding across
the join with nothing to say beyond the old source's cut-off last frame; and the proxy preparing
a new standby on the third engine. In-process (the control plane's move-off signal set by the
test): a degraded primary moved make-before-break, a stalled one replaced by its standby."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from acefleet.mpegts import PACKET_SIZE
from proxy.cli import Running, start
from proxy.placement import StreamRecord
from proxy.settings import ProxySettings
from tests.proxy.client import fault, get_json, metric, request, sim_sessions, wait_for
from tests.proxy.conftest import StartProxy, StartSim, endpoint
from tests.proxy.test_splice import VIDEO_PID, decode_problems, frames, ts_report
from tests.support import procs

CONTENT = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"


def _channel(proxy_url: str) -> dict[str, Any]:
    channels: list[dict[str, Any]] = get_json(f"{proxy_url}/ace/status")["channels"]
    return channels[0] if channels else {}


def _standby_live(proxy_url: str) -> bool:
    standby = _channel(proxy_url).get("standby")
    return bool(standby and standby["state"] == "live" and standby["bytes_in"] > 0)


def _last_frame_start(data: bytes) -> int:
    at = len(data) - len(data) % PACKET_SIZE - PACKET_SIZE
    while not (data[at + 1] & 0x40 and ((data[at + 1] & 0x1F) << 8 | data[at + 2]) == VIDEO_PID):
        at -= PACKET_SIZE
    return at


async def test_primary_killed_standby_takes_over_at_a_keyframe(
    clip_dir: Path, log_dir: Path, start_proxy: StartProxy, tmp_path: Path
) -> None:
    sims = [procs.start_clip_sim(clip_dir, log_dir, "--idle-timeout", "30") for _ in range(3)]
    try:
        by_endpoint = {endpoint(s): s for s in sims}
        proxy = start_proxy(*by_endpoint, STANDBY_MIN_VIEWERS="2")
        url = f"/ace/getstream?infohash={CONTENT}"
        first, second = await request(proxy.url, url), await request(proxy.url, url)
        assert first.status == second.status == 200
        await first.read_until(200_000)
        await wait_for(lambda: _standby_live(proxy.url), within=15)
        channel = _channel(proxy.url)
        primary, standby = channel["upstream"], channel["standby"]["upstream"]
        assert primary != standby
        assert metric(proxy.url, "acefleet_proxy_standby_sessions") == 1

        await first.read_for(0.5)
        before = len(first.body)
        by_endpoint[primary].kill()
        await wait_for(
            lambda: metric(proxy.url, "acefleet_proxy_standby_promotions_total", 'reason="died"'),
            within=10,
        )
        assert await first.read_for(2.0) > 100_000  # the same connection carries on
        assert await second.read_for(0.5) > 0
        assert _channel(proxy.url)["upstream"] == standby
        # a new standby, on the third engine (the dead one refuses)
        await wait_for(lambda: _standby_live(proxy.url), within=30)
        third = _channel(proxy.url)["standby"]["upstream"]
        assert third not in (primary, standby)
        assert metric(proxy.url, "acefleet_proxy_failover_gap_seconds_count") == 1

        data = bytes(first.body)
        data = data[: _last_frame_start(data)]  # the capture ends wherever: end on a whole frame
        report = ts_report(data)
        assert report.misaligned == 0
        assert report.cc_errors == 0
        assert report.marks, "the join is marked as a discontinuity"
        join = report.marks[0]  # the first packet after the splice's run of marks
        while join in report.marks:
            join += 1
        assert join * PACKET_SIZE > before - 2_000_000
        after = data[join * PACKET_SIZE :]
        assert after[1:3] == b"\x40\x00", "the PAT comes first"
        video = next(
            at
            for at in range(0, len(after), PACKET_SIZE)
            if ((after[at + 1] & 0x1F) << 8 | after[at + 2]) == VIDEO_PID
        )
        assert after[video + 3] & 0x20, "the video starts at a keyframe"
        assert after[video + 5] & 0x40, "the video starts at a keyframe"
        # The killed engine's last frames are cut off wherever it died (at most one per stream:
        # what a dying source costs). The new part, marks and all, decodes without a word, and
        # ffmpeg decodes across the join: every frame of both parts.
        old, new = data[: report.marks[0] * PACKET_SIZE], data[report.marks[0] * PACKET_SIZE :]
        assert decode_problems(new, tmp_path) == []
        joined = decode_problems(data, tmp_path)
        assert sum("Packet corrupt" in line for line in joined) <= 2, joined
        assert frames(data, tmp_path) >= frames(old, tmp_path) + frames(new, tmp_path) - 1
        first.close()
        second.close()
    finally:
        for sim in sims:
            sim.stop()


# --- in-process: the moves the channel decides on its own ---------------------------------------


class Events:
    """An event sink that notes what central would hear: (kind, stream id, standby?, reason)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool, str | None]] = []

    def stream_started(self, stream: StreamRecord) -> None:
        self.seen.append(("started", stream.stream_id, stream.standby, None))

    def stream_ended(self, stream: StreamRecord, reason: str) -> None:
        self.seen.append(("ended", stream.stream_id, stream.standby, reason))

    def viewers_changed(self, stream: StreamRecord) -> None:
        return None


@pytest.fixture
async def in_process() -> AsyncIterator[Callable[..., Awaitable[tuple[Running, Events, str]]]]:
    running: list[Running] = []

    async def go(engines: list[str], **overrides: object) -> tuple[Running, Events, str]:
        port = procs.free_port()
        settings = ProxySettings.model_validate(
            {"host": "127.0.0.1", "port": port, "engines": engines, "client_burst": 1000}
            | overrides
        )
        events = Events()
        r = await start(settings, events)
        running.append(r)
        return r, events, f"http://127.0.0.1:{port}"

    yield go
    for r in running:
        await r.stop(0)


async def test_degraded_primary_moves_make_before_break(
    start_sim: StartSim, in_process: Callable[..., Awaitable[tuple[Running, Events, str]]]
) -> None:
    sims = {endpoint(s): s for s in (start_sim(), start_sim())}
    running, events, url = await in_process(list(sims))
    moving: set[str] = set()  # what central's move_off would name
    edge = running.app.edge
    edge.channel_context = replace(edge.channel_context, degraded=lambda p: p.engine in moving)
    viewer = await request(url, f"/ace/getstream?infohash={CONTENT}")
    await viewer.read_until(100_000)
    channel = next(iter(edge.channels.values()))
    old = channel.placement
    assert old is not None
    assert channel.standby is None  # one viewer, no flag: no standby until the engine degrades
    moving.add(str(old.engine))
    await wait_for(lambda: metric(url, "acefleet_proxy_standby_promotions_total", 'reason="moved"'))
    before = len(viewer.body)
    assert await viewer.read_for(1.0) > 50_000
    assert channel.placement is not None
    assert channel.placement.engine != old.engine
    # the old session ended (engine stop call, placement released as moved), not failed
    await wait_for(lambda: not sim_sessions(sims[str(old.engine)].url)["sessions"], within=10)
    started = [e for e in events.seen if e[0] == "started"]
    assert [e[2] for e in started] == [False, True, False]  # primary, standby, promoted standby
    assert started[1][1] == started[2][1]  # the same stream id: central updates it
    assert ("ended", started[0][1], False, "moved") in events.seen
    assert await asyncio.to_thread(metric, url, "acefleet_proxy_failovers_total") == 0
    report = ts_report(bytes(viewer.body[before - before % PACKET_SIZE :]))
    assert report.cc_errors == 0
    assert report.misaligned == 0
    viewer.close()


async def test_stalled_primary_is_replaced_before_the_stall_timeout(
    start_sim: StartSim, in_process: Callable[..., Awaitable[tuple[Running, Events, str]]]
) -> None:
    sims = {endpoint(s): s for s in (start_sim(), start_sim())}
    _, events, url = await in_process(list(sims), standby_min_viewers=1, stall_timeout_s=30)
    viewer = await request(url, f"/ace/getstream?infohash={CONTENT}")
    await viewer.read_until(100_000)
    await wait_for(lambda: metric(url, "acefleet_proxy_standby_sessions") == 1, within=10)
    status = await asyncio.to_thread(get_json, f"{url}/ace/status")
    primary = status["channels"][0]["upstream"]
    await asyncio.to_thread(fault, sims[primary].url, action="stall", seconds=60)
    await wait_for(
        lambda: metric(url, "acefleet_proxy_standby_promotions_total", 'reason="stalled"'),
        within=10,
    )
    assert await viewer.read_for(1.0) > 50_000
    status = await asyncio.to_thread(get_json, f"{url}/ace/status")
    assert status["channels"][0]["upstream"] != primary
    assert [e[3] for e in events.seen if e[0] == "ended"] == ["stall"]
    viewer.close()


async def test_standby_on_a_degraded_engine_is_retired_not_promoted(
    start_sim: StartSim, in_process: Callable[..., Awaitable[tuple[Running, Events, str]]]
) -> None:
    # A standby sitting on an engine the control plane is emptying (drain, recycling) would keep
    # that engine busy for ever: it is ended, and the primary keeps playing.
    sims = {endpoint(s): s for s in (start_sim(), start_sim())}
    running, _, url = await in_process(list(sims), standby_min_viewers=1)
    moving: set[str] = set()
    edge = running.app.edge
    edge.channel_context = replace(edge.channel_context, degraded=lambda p: p.engine in moving)
    viewer = await request(url, f"/ace/getstream?infohash={CONTENT}")
    await viewer.read_until(100_000)
    channel = next(iter(edge.channels.values()))
    await wait_for(lambda: metric(url, "acefleet_proxy_standby_sessions") == 1, within=10)
    primary, standby = channel.placement, channel.standby
    assert primary is not None
    assert standby is not None
    assert standby.placement is not None
    standby_engine = str(standby.placement.engine)
    moving.add(standby_engine)
    await wait_for(lambda: metric(url, "acefleet_proxy_standby_sessions") == 0, within=10)
    await wait_for(lambda: not sim_sessions(sims[standby_engine].url)["sessions"], within=10)
    assert channel.placement == primary
    assert await asyncio.to_thread(metric, url, "acefleet_proxy_standby_promotions_total") == 0
    assert await viewer.read_for(1.0) > 50_000
    viewer.close()


async def test_primary_dying_while_its_move_starts_waits_for_the_standby(
    start_sim: StartSim, in_process: Callable[..., Awaitable[tuple[Running, Events, str]]]
) -> None:
    # Engines with a real prebuffer (4 s): the primary's engine is being emptied (a tunnel went
    # down) and dies while its standby still prebuffers. Placing again would claim the
    # standby's engine a second time (or be refused: the move took the last free one) and cost
    # another prebuffer; the channel waits for its standby and promotes it instead.
    sims = {endpoint(s): s for s in (start_sim("--prebuffer", "4"), start_sim("--prebuffer", "4"))}
    running, events, url = await in_process(list(sims), first_byte_timeout_s=30)
    moving: set[str] = set()
    edge = running.app.edge
    edge.channel_context = replace(edge.channel_context, degraded=lambda p: p.engine in moving)
    viewer = await request(url, f"/ace/getstream?infohash={CONTENT}")
    await viewer.read_until(100_000)
    channel = next(iter(edge.channels.values()))
    old = channel.placement
    assert old is not None
    moving.add(str(old.engine))
    await wait_for(lambda: channel.standby is not None and channel.standby.state == "starting")
    await asyncio.to_thread(fault, sims[str(old.engine)].url, action="cut")
    await wait_for(lambda: metric(url, "acefleet_proxy_failover_awaits_standby_total") == 1)
    await wait_for(
        lambda: metric(url, "acefleet_proxy_standby_promotions_total", 'reason="died"'),
        within=20,
    )
    assert await viewer.read_for(1.0) > 50_000  # the same connection, flowing again
    assert channel.placement is not None
    assert channel.placement.engine != old.engine
    started = [e for e in events.seen if e[0] == "started"]
    assert [e[2] for e in started] == [False, True, False]  # no second claim meanwhile
    assert await asyncio.to_thread(metric, url, "acefleet_proxy_failovers_total") == 1
    viewer.close()
