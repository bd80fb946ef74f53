"""HLS through the proxy against the simulator's real video: the playlists (checked with the
``m3u8`` parser from PyPI, which nobody here wrote), the segments, one engine session shared
with TS viewers, players counted as viewers while they fetch, failover, errors.

The 60-second ffmpeg run and the decode/timestamp judgement use tests/video's player helpers.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin

import httpx
import m3u8
import pytest

from acefleet import mpegts
from tests.proxy.client import fault, get_json, metric, request, sim_sessions, wait_for
from tests.proxy.conftest import StartProxy, endpoint
from tests.support import procs
from tests.video import player

pytestmark = [pytest.mark.ffmpeg]

CONTENT = "feedface00000000000000000000000000000001"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


def client(proxy: procs.Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=proxy.url, timeout=90, trust_env=False)


async def open_player(c: httpx.AsyncClient, query: str) -> tuple[str, m3u8.M3U8]:
    """What a player does first: the master playlist, then its media playlist (URL, parsed)."""
    master = await c.get(f"/ace/manifest.m3u8?{query}")
    assert master.status_code == 200, master.text
    assert master.headers["content-type"] == PLAYLIST_TYPE
    assert master.headers["access-control-allow-origin"] == "*"
    parsed = m3u8.loads(master.text)
    assert parsed.is_variant
    assert len(parsed.playlists) == 1
    variant = parsed.playlists[0]
    assert variant.stream_info.bandwidth > 0
    assert not variant.uri.startswith(("/", "http")), "the media playlist URL must be relative"
    url = urljoin(str(master.url), variant.uri)
    media = await c.get(url)
    assert media.status_code == 200, media.text
    return url, m3u8.loads(media.text)


async def test_playlists_and_segments_are_valid_hls(
    clip_sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(clip_sim), hls_window="3")
    async with client(proxy) as c:
        # a cold channel: the first playlist waits for a segment instead of listing none
        url, media = await open_player(c, f"id={CONTENT}")
        assert media.segments, "a first playlist must list a segment"
        assert media.target_duration == 6  # hls_max_segment_s rounded up, for the channel's life
        assert not media.is_endlist
        first_sequence = media.media_sequence
        seen: dict[str, bytes] = {}
        deadline = time.monotonic() + 30
        while (len(seen) < 4 or media.media_sequence == first_sequence) and (
            time.monotonic() < deadline
        ):
            for segment in media.segments:
                assert not segment.uri.startswith(("/", "http")), segment.uri
                assert f"id={CONTENT}" in segment.uri  # HAProxy hashes every URL to one edge
                assert segment.program_date_time is not None
                assert round(segment.duration) <= media.target_duration
                if segment.uri in seen:
                    continue
                r = await c.get(urljoin(url, segment.uri))
                assert r.status_code == 200
                assert r.headers["content-type"] == "video/mp2t"
                data = r.content
                # PAT, PMT, then a keyframe: every segment can be decoded on its own
                assert mpegts.pid_of(data[0:188]) == 0
                assert mpegts.pid_of(data[188:376]) != 0
                assert mpegts.random_access(data[376:564])
                seen[segment.uri] = data
            await asyncio.sleep(1)
            again = m3u8.loads((await c.get(url)).text)
            assert again.media_sequence >= media.media_sequence
            media = again
        assert len(seen) >= 4
        assert len(media.segments) == 3  # the window
        assert media.media_sequence > first_sequence
        # a listed segment never changes content
        for uri, data in list(seen.items())[-2:]:
            r = await c.get(urljoin(url, uri))
            if r.status_code == 200:
                assert r.content == data
        # segments cut at the keyframe nearest the 4 s target (the clip has one every 1.28 s)
        full = [s.duration for s in media.segments[1:]]
        assert full
        assert all(abs(d - 3.84) < 0.01 for d in full), full
    assert metric(proxy.url, "acefleet_proxy_hls_segments_total") >= 4
    assert metric(proxy.url, "acefleet_proxy_hls_live_edge_seconds_count") >= 4


@pytest.mark.slow
def test_ffmpeg_plays_a_minute_of_hls_through_the_proxy(
    clip_sim: procs.Service, start_proxy: StartProxy
) -> None:
    """ffmpeg's own HLS client decodes 60 s with no error and monotonic timestamps; a capture of
    the same kind, judged packet by packet, shows every segment starting at a keyframe."""
    proxy = start_proxy(f"{endpoint(clip_sim)}@4")
    manifest = f"{proxy.url}/ace/manifest.m3u8?id={CONTENT}"
    with ThreadPoolExecutor(max_workers=2) as pool:  # both at once: a minute of CI, not 80 s
        watching = pool.submit(player.ffmpeg_view, manifest, 60, "proxy-hls")
        capturing = pool.submit(player.capture_hls, f"{manifest}-capture", 20, "capture")
        live, capture = watching.result(), capturing.result()
    print(live.summary())
    assert live.clean, live.summary()
    assert live.media_s >= 59, live.summary()
    captured = player.judge(capture)
    print(captured.summary())
    assert captured.clean, captured.summary()
    assert captured.media_s >= 19
    assert not captured.segments_not_at_keyframes
    assert not captured.cc_breaks
    assert not captured.media_cc_breaks


async def test_ts_and_hls_viewers_share_one_engine_session(
    clip_sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(clip_sim))
    ts = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await ts.read_until(100_000)
    async with client(proxy) as c:
        _, media = await open_player(c, f"content_id={CONTENT}")  # another spelling, one key
        assert media.segments
        status = get_json(f"{proxy.url}/ace/status")
        assert status["upstreams"] == 1
        assert status["viewers"] == 2
        assert status["hls_viewers"] == 1
        sessions = sim_sessions(clip_sim.url)
        assert sessions["sessions_started_total"] == 1
        assert metric(proxy.url, "acefleet_proxy_hls_sessions") == 1
        assert metric(proxy.url, "acefleet_proxy_viewers") == 2
    ts.close()


async def test_an_hls_player_is_a_viewer_while_it_fetches(
    clip_sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(clip_sim), hls_session_idle_s="5", grace_s="1")
    async with client(proxy) as c:
        url, _ = await open_player(c, f"id={CONTENT}")
        # it keeps fetching for longer than idle + grace: the channel stays up
        for _ in range(5):
            await asyncio.sleep(2)
            assert (await c.get(url)).status_code == 200
            assert get_json(f"{proxy.url}/ace/status")["hls_viewers"] == 1
        # then it stops: after the idle window and the grace, the channel and session end
        await wait_for(lambda: get_json(f"{proxy.url}/ace/status")["upstreams"] == 0, within=15)
        await wait_for(lambda: sim_sessions(clip_sim.url)["sessions"] == [], within=5)
        assert metric(proxy.url, "acefleet_proxy_hls_sessions") == 0
        # the same player URL later starts the channel again (a new session under its id)
        back = await c.get(url)
        assert back.status_code == 200
        assert m3u8.loads(back.text).segments
        assert get_json(f"{proxy.url}/ace/status")["hls_viewers"] == 1


async def test_failover_continues_the_playlist_after_a_discontinuity(
    clip_sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(clip_sim))
    async with client(proxy) as c:
        url, media = await open_player(c, f"id={CONTENT}")
        sequences = [media.media_sequence]
        fault(clip_sim.url, action="cut")  # the engine drops the stream: the proxy reopens it
        deadline = time.monotonic() + 30
        tagged = None
        while tagged is None and time.monotonic() < deadline:
            await asyncio.sleep(1)
            media = m3u8.loads((await c.get(url)).text)
            sequences.append(media.media_sequence)
            tagged = next((s for s in media.segments if s.discontinuity), None)
        assert tagged is not None, "no EXT-X-DISCONTINUITY after the upstream was replaced"
        assert sequences == sorted(sequences), "the media sequence went back"
        r = await c.get(urljoin(url, tagged.uri))
        assert r.status_code == 200
        assert mpegts.random_access(r.content[376:564])
    assert metric(proxy.url, "acefleet_proxy_failovers_total") == 1
    assert sim_sessions(clip_sim.url)["sessions_started_total"] == 2


async def test_hls_errors_are_the_proxys_json_errors(
    clip_sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(clip_sim))
    dead = start_proxy(f"127.0.0.1:{procs.free_port()}")  # its only engine does not listen
    async with client(proxy) as c:
        url, media = await open_player(c, f"id={CONTENT}")
        unknown = await c.get(urljoin(url, f"nope_{media.media_sequence}.ts?id={CONTENT}"))
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "segment_not_found"
        assert unknown.headers["access-control-allow-origin"] == "*"
        expired = await c.get(urljoin(url, media.segments[0].uri.replace("_", "_9", 1)))
        assert expired.status_code == 404
        bad_sid = await c.get(f"/ace/hls/x/index.m3u8?id={CONTENT}")
        assert bad_sid.status_code == 404
        assert bad_sid.json()["error"]["code"] == "hls_session_unknown"
        no_selector = await c.get("/ace/manifest.m3u8")
        assert no_selector.status_code == 400
        assert no_selector.json()["error"]["code"] == "selector"
        refused = await c.get(f"/ace/manifest.m3u8?id={CONTENT}&format=hls")
        assert refused.status_code == 400
        head = await c.head(f"/ace/manifest.m3u8?id={CONTENT}")
        assert head.status_code == 200
        assert head.headers["x-acefleet-live"] == "1"
    async with httpx.AsyncClient(base_url=dead.url, timeout=90, trust_env=False) as c:
        ts = await c.get(f"/ace/getstream?id={CONTENT}")
        hls = await c.get(f"/ace/manifest.m3u8?id={CONTENT}")
        assert ts.status_code >= 500
        assert (hls.status_code, hls.json()["error"]["code"]) == (
            ts.status_code,
            ts.json()["error"]["code"],
        )
        assert hls.headers["access-control-allow-origin"] == "*"
        # a HEAD never starts a channel
        head = await c.head(f"/ace/manifest.m3u8?id={CONTENT}0")
        assert head.headers["x-acefleet-live"] == "0"
