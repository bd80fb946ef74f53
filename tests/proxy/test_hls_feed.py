"""A channel's HLS feed and its players' numbering, on the simulator's real clips: a player that
moves to another channel (a merge) keeps its media and discontinuity sequences going forward,
after a discontinuity; a player that had been listed nothing just starts on the new numbers."""

from __future__ import annotations

from pathlib import Path

import m3u8
import pytest

from enginesim.tsmux_loop import LoopPlan
from proxy.hls.feed import HlsFeed, first_sequence
from proxy.hls.sessions import HlsSession, new_sid, valid_sid
from proxy.metrics import Metrics
from proxy.settings import ProxySettings


@pytest.fixture(scope="module")
def stream(clip_dir: Path) -> bytes:
    """Six loops (61 s) of channel 1 as an engine sends it."""
    plan = LoopPlan.from_bytes((clip_dir / "ch01.ts").read_bytes())
    return b"".join(plan.render(i, n) for n in range(LOOPS) for i in range(len(plan.chunks)))


LOOPS = 6
CHUNK = 188 * 200


def offset(stream: bytes, seconds: float) -> int:
    at = int(len(stream) * seconds / (LOOPS * 10.24))
    return at - at % 188


def publish(feed: HlsFeed, stream: bytes, start_s: float, end_s: float) -> None:
    start, end = offset(stream, start_s), offset(stream, end_s)
    for at in range(start, end, CHUNK):
        feed.publish(stream[at : min(at + CHUNK, end)])


def feed_with(stream: bytes, seconds: float) -> HlsFeed:
    feed = HlsFeed(ProxySettings(hls_window=3), Metrics())
    publish(feed, stream, 0, seconds)
    return feed


def player(key: str = "id:x") -> HlsSession:
    return HlsSession(new_sid(), key, "id=x", "127.0.0.1")


def test_a_moved_player_continues_its_numbers_after_a_discontinuity(stream: bytes) -> None:
    a = feed_with(stream, 30)
    b = feed_with(stream, 40)  # started later (a higher base), and further along
    p = player()
    a.adopt(p)
    before = m3u8.loads(a.playlist(p).decode())
    last_seq = before.media_sequence + len(before.segments) - 1
    last_disc = before.discontinuity_sequence or 0  # the tag is left out while it is 0
    b.adopt(p)  # a merge: the player now watches b
    after = m3u8.loads(b.playlist(p).decode())
    assert after.media_sequence == last_seq + 1  # no jump back, no gap
    assert after.segments[0].discontinuity
    assert (after.discontinuity_sequence or 0) == last_disc
    # later playlists go on from there; once the tagged segment leaves, the count moves up
    publish(b, stream, 40, 61)
    later = m3u8.loads(b.playlist(p).decode())
    assert later.media_sequence > after.media_sequence
    assert not any(s.discontinuity for s in later.segments)
    assert later.discontinuity_sequence == last_disc + 1
    # a player that moves but had been listed nothing simply takes b's own numbers
    fresh = player()
    a.adopt(fresh)
    b.adopt(fresh)
    own = m3u8.loads(b.playlist(fresh).decode())
    assert own.media_sequence == b.segmenter.window()[0].seq
    assert not own.segments[0].discontinuity


def test_segment_names_belong_to_one_feed(stream: bytes) -> None:
    a, b = feed_with(stream, 20), feed_with(stream, 20)
    seq = a.segmenter.window()[-1].seq
    assert a.segment(f"{a.tag}_{seq}") is not None
    assert b.segment(f"{a.tag}_{seq}") is None  # another channel's URL never names b's bytes
    for bad in ("", "_1", f"{a.tag}_", f"{a.tag}_x", f"{a.tag}_{'9' * 30}"):
        assert a.segment(bad) is None


def test_numbers_start_above_any_earlier_channel() -> None:
    firsts = [first_sequence() for _ in range(3)]
    assert firsts == sorted(set(firsts))
    assert valid_sid(new_sid())
    assert not valid_sid("short")
    assert not valid_sid("../../etc/passwd-xxxxxxxx")
