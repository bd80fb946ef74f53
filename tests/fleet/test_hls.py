"""HLS through the whole fleet (central, agents, engine containers, two proxies): a channel's TS
and HLS viewers share one engine session, an HLS player plays on across a ``docker kill`` of
its engine after an EXT-X-DISCONTINUITY, and an edge relaying a channel from the other edge
serves it over HLS.

Players judge real video, so this module runs its own fleet whose engines play the image's
H.264/AAC clips (the directory's shared fleet plays cheap synthetic TS that no decoder accepts);
its proxies let an HLS session idle out after 5 s so a test's players are gone by the next test.
Playlists are read with the ``m3u8`` package from PyPI, a parser nobody here wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import m3u8
import pytest

from acefleet import mpegts
from tests.fleet.harness import (
    SIM_IMAGE,
    Fleet,
    docker,
    engine_container,
    stream_url,
    until,
    watch,
)
from tests.support import tools
from tests.video import player

pytestmark = [pytest.mark.docker, pytest.mark.ffmpeg]

# engines play the image's clips (the harness's last --engine-extra-args wins)
CLIP_ENGINES = "--engine-extra-args=--timing,fast,--media,clips"
CLIP_DIR = "/usr/share/acefleet/clips"


@pytest.fixture(scope="module")
def fleet(docker_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """This module's own fleet (overrides the directory's: ``healthy`` restarts this one)."""
    tools.require("ffmpeg", "ffmpeg")
    clips = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "ls", SIM_IMAGE, CLIP_DIR],
        capture_output=True,
        text=True,
        check=False,
    )
    if ".ts" not in clips.stdout:
        pytest.fail(f"{SIM_IMAGE} has no clips in {CLIP_DIR}: run scripts/build-images.sh")
    with pytest.MonkeyPatch.context() as env:
        # every proxy of this module (started again by ``healthy`` too) idles HLS players out
        # after 5 s, so a test's players are gone soon after it
        env.setenv("ACEFLEET_PROXY_HLS_SESSION_IDLE_S", "5")
        fleet = Fleet.up(
            tmp_path_factory.mktemp("hls-fleet"), base_port=23400, agent_extra=[CLIP_ENGINES]
        )
        try:
            yield fleet
        finally:
            fleet.close()


def manifest_url(proxy_url: str, channel: str) -> str:
    return f"{proxy_url}/ace/manifest.m3u8?id={channel}"


async def open_player(c: httpx.AsyncClient, manifest: str) -> str:
    """What a player does first: the master playlist; returns its media playlist's URL."""
    master = await c.get(manifest)
    assert master.status_code == 200, master.text
    parsed = m3u8.loads(master.text)
    assert parsed.is_variant
    assert len(parsed.playlists) == 1
    return urljoin(str(master.url), str(parsed.playlists[0].uri))


def segment_name(uri: str) -> str:
    """``<tag>_<seq>.ts``: the channel's name of a segment, the same in every player's URLs."""
    return uri.split("?", 1)[0].rsplit("/", 1)[-1]


class Poller:
    """A player reloading its media playlist and fetching every new segment once, recording
    what a player must never see: the media sequence going back, a sequence number naming
    another segment, a segment URL answering other bytes."""

    def __init__(self, c: httpx.AsyncClient, url: str) -> None:
        self.c = c
        self.url = url
        self.sequences: list[int] = []
        self.disc_sequences: list[int] = []
        self.names: dict[int, str] = {}  # media sequence number -> segment name
        self.digests: dict[str, str] = {}
        self.heads: dict[str, bytes] = {}  # the first 3 packets of each segment
        self.order: list[str] = []  # segment names in the order they were listed
        self.tagged: list[str] = []  # listed with EXT-X-DISCONTINUITY
        self.last: m3u8.M3U8 | None = None

    async def poll(self) -> m3u8.M3U8:
        r = await self.c.get(self.url)
        assert r.status_code == 200, r.text
        media = m3u8.loads(r.text)
        self.sequences.append(media.media_sequence)
        self.disc_sequences.append(media.discontinuity_sequence or 0)
        for i, segment in enumerate(media.segments):
            name = segment_name(segment.uri)
            seq = media.media_sequence + i
            assert self.names.setdefault(seq, name) == name, f"{seq} renamed to {name}"
            if segment.discontinuity and name not in self.tagged:
                self.tagged.append(name)
            if name not in self.digests:
                got = await self.c.get(urljoin(self.url, segment.uri))
                assert got.status_code == 200, (name, got.text)
                self.digests[name] = hashlib.sha256(got.content).hexdigest()
                self.heads[name] = got.content[: 3 * mpegts.PACKET_SIZE]
                self.order.append(name)
        self.last = media
        return media

    async def recheck(self) -> None:
        """Every segment still listed answers the very bytes it answered the first time."""
        assert self.last is not None
        for segment in self.last.segments:
            got = await self.c.get(urljoin(self.url, segment.uri))
            if got.status_code == 200:
                name = segment_name(segment.uri)
                assert hashlib.sha256(got.content).hexdigest() == self.digests[name], name


class FfmpegPlayer:
    """ffmpeg's own HLS client decoding to nowhere, in the background: its progress (frames
    decoded, by wall time), the segment URLs it opened (its verbose log) and its errors."""

    def __init__(self, manifest: str, seconds: float) -> None:
        argv = [
            tools.require("ffmpeg", "ffmpeg"), "-hide_banner", "-nostdin",
            "-loglevel", "level+verbose", "-live_start_index", "-1", "-i", manifest,
            "-t", str(seconds), "-f", "null", "-progress", "pipe:1", "-stats_period", "0.5", "-",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.progress: list[tuple[float, int]] = []  # (monotonic time, frames decoded)
        self.log: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_progress, daemon=True),
            threading.Thread(target=self._read_log, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_progress(self) -> None:
        assert self.proc.stdout is not None
        frames = 0
        for line in self.proc.stdout:
            key, _, value = line.strip().partition("=")
            if key == "frame":
                frames = int(value)
            elif key == "progress":
                self.progress.append((time.monotonic(), frames))

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        self.log.extend(self.proc.stderr)

    @property
    def frames(self) -> int:
        return self.progress[-1][1] if self.progress else 0

    def frames_at(self, when: float) -> int:
        return max((f for t, f in self.progress if t <= when), default=0)

    def opened(self) -> list[str]:
        """Names of the segments ffmpeg requested, in order."""
        found = (re.search(r"HLS request for url '([^']+)'", line) for line in self.log)
        return [segment_name(m.group(1)) for m in found if m]

    def errors(self) -> list[str]:
        return [line.strip() for line in self.log if re.search(r"\[(error|fatal|panic)\]", line)]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self._threads:
                t.join(timeout=5)


async def test_ts_and_hls_viewers_share_one_engine_session(healthy: Fleet) -> None:
    fleet = healthy
    ts = await watch([stream_url(fleet.proxy_url(0), "hlsmix1")])
    try:
        await until("the TS viewer receives", lambda: ts[0].received > 64_000)
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            poller = Poller(c, await open_player(c, manifest_url(fleet.proxy_url(0), "hlsmix1")))
            assert (await poller.poll()).segments
            status = fleet.proxy_status(0)
            channels = {ch["key"]: ch for ch in status["channels"]}
            assert (status["viewers"], status["hls_viewers"]) == (2, 1), status
            mix = channels["id:hlsmix1"]
            assert (mix["viewers"], mix["hls_viewers"]) == (2, 1), mix
            assert status["upstreams"] == 1
            # one engine session for the content in the whole fleet
            sessions = await asyncio.to_thread(fleet.sessions_by_content)
            assert len(sessions["hlsmix1"]) == 1, sessions
            assert not fleet.proxy_status(1)["channels"]  # nothing relayed to the other edge
            assert ts[0].misaligned == 0
            assert not ts[0].closed
    finally:
        await ts[0].stop()
    await until("claims released", lambda: not fleet.central_claims(), within=20)


async def test_hls_players_play_on_after_the_engine_is_killed(healthy: Fleet) -> None:
    fleet = healthy
    manifest = manifest_url(fleet.proxy_url(0), "hlsfail1")
    async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
        poller = Poller(c, await open_player(c, manifest))
        await poller.poll()
        # ffmpeg starts at the newest segment and wants 24 s of video: at most ~14 s of it can
        # come from before the kill (that segment, one more, the kept partial one), so it ends
        # only after decoding segments cut from the new engine's stream
        ffmpeg = FfmpegPlayer(manifest, 24)
        try:
            await until("ffmpeg decodes", lambda: ffmpeg.frames > 0, within=30)
            channel = {ch["key"]: ch for ch in fleet.proxy_status(0)["channels"]}["id:hlsfail1"]
            engine = channel["upstream"]
            container = await asyncio.to_thread(engine_container, engine)
            assert container, channel
            before = set(poller.order)
            killed_at = time.monotonic()
            await asyncio.to_thread(docker, "kill", container)

            def played_on() -> bool:
                fresh = [n for n in poller.tagged if n not in before]
                return bool(fresh) and len(poller.order) - poller.order.index(fresh[0]) >= 2

            deadline = time.monotonic() + 40
            while not played_on() and time.monotonic() < deadline:
                await asyncio.sleep(1)
                await poller.poll()
            assert played_on(), f"no new segments after a discontinuity: {poller.order}"
            tagged = next(n for n in poller.tagged if n not in before)
            assert mpegts.random_access(poller.heads[tagged][2 * mpegts.PACKET_SIZE :])
            assert poller.sequences == sorted(poller.sequences), "the media sequence went back"
            assert poller.disc_sequences == sorted(poller.disc_sequences)
            await poller.recheck()
            now = {ch["key"]: ch for ch in fleet.proxy_status(0)["channels"]}["id:hlsfail1"]
            assert now["upstream"] != engine
            sessions = await asyncio.to_thread(fleet.sessions_by_content)
            assert len(sessions["hlsfail1"]) == 1, sessions

            code = await asyncio.to_thread(ffmpeg.wait, 90)
        finally:
            if ffmpeg.proc.poll() is None:
                await asyncio.to_thread(ffmpeg.wait, 0)
        opened = ffmpeg.opened()
        print(
            f"\nffmpeg: exit {code}, {ffmpeg.frames} frames, {ffmpeg.frames_at(killed_at)} by the "
            f"kill; segments {opened}; discontinuity at {tagged}; errors {ffmpeg.errors()}"
        )
        assert code == 0, "".join(ffmpeg.log[-30:])
        # every frame decodes, the one cut off by the kill too (the kept partial segment ends
        # before it); ffmpeg's muxer complaining about DTS at the splice is ffmpeg's own
        # timestamp fix-up (its HLS reader ignores EXT-X-DISCONTINUITY), not a broken stream
        broken = [e for e in ffmpeg.errors() if not e.startswith("[null @")]
        assert not broken, broken
        # it read the segment after the discontinuity and went on past it
        assert tagged in opened, (tagged, opened)
        assert opened.index(tagged) < len(opened) - 1, (tagged, opened)
        assert ffmpeg.frames > ffmpeg.frames_at(killed_at)
    await until("claims released", lambda: not fleet.central_claims(), within=20)
    await until(
        "pool refilled",
        lambda: all(len(fleet.healthy_engines(e)) >= 2 for e in fleet.edges.values()),
        within=60,
    )


async def test_hls_player_on_a_relaying_edge(healthy: Fleet) -> None:
    fleet = healthy
    ts = await watch([stream_url(fleet.proxy_url(0), "hlsrelay1")])
    try:
        await until("the channel is live on the first edge", lambda: ts[0].received > 64_000)
        # the second edge is asked for it: central sends it to the first edge's proxy
        capture = asyncio.create_task(
            asyncio.to_thread(
                player.capture_hls, manifest_url(fleet.proxy_url(1), "hlsrelay1"), 8, "relay"
            )
        )

        def relayed() -> dict[str, object] | None:
            channels = {ch["key"]: ch for ch in fleet.proxy_status(1)["channels"]}
            channel = channels.get("id:hlsrelay1")
            # placed, not only attached: a "starting" channel has no source yet (CI lost
            # that race once)
            placed = channel and channel["hls_viewers"] == 1 and channel["source"]
            return channel if placed else None

        channel = await until("the relaying edge counts its HLS player", relayed, within=30)
        assert channel["source"] == "relay", channel
        sessions = await asyncio.to_thread(fleet.sessions_by_content)
        assert len(sessions["hlsrelay1"]) == 1, sessions
        verdict = await asyncio.to_thread(player.judge, await capture)
        print(f"\n{verdict.summary()}")
        assert verdict.clean, verdict.summary()
        assert verdict.media_s >= 7, verdict.summary()
        assert not verdict.segments_not_at_keyframes
        assert not ts[0].closed
    finally:
        await ts[0].stop()
    await until("claims released", lambda: not fleet.central_claims(), within=20)
