"""HLS playlists as a parser we did not write (the m3u8 package) reads them, for segments cut by
the real segmenter from a simulator clip and for hand-made segments that pin each tag."""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import m3u8
import pytest

from enginesim.tsmux_loop import LoopPlan
from proxy.hls.playlist import DEFAULT_BANDWIDTH, master_playlist, media_playlist
from proxy.hls.segmenter import Segment, Segmenter

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def segment(seq: int, duration_s: float, *, disc: bool = False) -> Segment:
    start = T0 + timedelta(seconds=4 * (seq - 10))
    return Segment(
        seq=seq,
        data=b"",
        duration_s=duration_s,
        program_time=start,
        discontinuity=disc,
        keyframe=True,
        entered_at=0.0,
        listed_at=0.0,
    )


def uri(seg: Segment) -> str:
    return f"{seg.seq}.ts?id=abc"


def parse(body: bytes) -> m3u8.M3U8:
    text = body.decode()
    assert text.startswith("#EXTM3U\n")
    assert text.endswith("\n")
    return m3u8.loads(text)


def test_master_playlist_names_one_variant() -> None:
    body = master_playlist("hls/SID/index.m3u8?id=abc", 3_456_789)
    pl = parse(body)
    assert pl.is_variant
    assert pl.version == 3
    assert pl.is_independent_segments
    assert [p.uri for p in pl.playlists] == ["hls/SID/index.m3u8?id=abc"]
    assert pl.playlists[0].stream_info.bandwidth == 3_456_789
    unmeasured = parse(master_playlist("x.m3u8", 0))
    assert unmeasured.playlists[0].stream_info.bandwidth == DEFAULT_BANDWIDTH


def test_media_playlist_tags() -> None:
    segs = [segment(10, 5.12), segment(11, 3.84), segment(12, 5.12, disc=True), segment(13, 4)]
    body = media_playlist(
        segs, target_duration=6, media_sequence=1010, discontinuity_sequence=3, uri=uri
    )
    pl = parse(body)
    assert not pl.is_variant
    assert pl.version == 3
    assert pl.target_duration == 6
    assert pl.media_sequence == 1010
    assert pl.discontinuity_sequence == 3
    assert not pl.is_endlist  # live
    assert [s.uri for s in pl.segments] == [
        "10.ts?id=abc",
        "11.ts?id=abc",
        "12.ts?id=abc",
        "13.ts?id=abc",
    ]
    assert [s.duration for s in pl.segments] == [5.12, 3.84, 5.12, 4.0]
    assert [s.discontinuity for s in pl.segments] == [False, False, True, False]
    # Milliseconds survive; the parser reads back each segment's time.
    assert [s.current_program_date_time for s in pl.segments] == [
        s.program_time.replace(microsecond=123000) for s in segs
    ]
    text = body.decode()
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-03-01T12:00:00.123Z\n" in text
    assert "#EXTINF:3.840,\n" in text


def test_forced_discontinuity_and_zero_sequence() -> None:
    segs = [segment(20, 4.0), segment(21, 4.0), segment(22, 4.0)]
    body = media_playlist(
        segs,
        target_duration=6,
        media_sequence=20,
        discontinuity_sequence=0,
        uri=uri,
        forced_discontinuity_seq=21,
    )
    pl = parse(body)
    assert [s.discontinuity for s in pl.segments] == [False, True, False]
    assert "#EXT-X-DISCONTINUITY-SEQUENCE" not in body.decode()  # 0 is the default


def test_empty_playlist_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="at least one segment"):
        media_playlist([], target_duration=6, media_sequence=0, discontinuity_sequence=0, uri=uri)


def test_playlist_of_real_segments_keeps_extinf_within_target(clip_dir: Path) -> None:
    plan = LoopPlan.from_bytes((clip_dir / "ch03.ts").read_bytes())
    # Target 0.8 s, max 1.0 s with 1.28 s GOPs: no GOP fits, so some cuts are forced.
    seg = Segmenter(target_s=0.8, max_s=1.0, window=5, max_bytes=64 << 20, first_seq=7)
    # Seeded as if received over the last 20.48 s, so program times follow the media clock.
    stream = b"".join(plan.render(i, n) for n in range(2) for i in range(len(plan.chunks)))
    seg.seed(stream, age_s=2 * plan.loop_s)
    window = seg.window()
    assert len(window) == 5
    body = media_playlist(
        window,
        target_duration=seg.target_duration,
        media_sequence=window[0].seq,
        discontinuity_sequence=seg.discontinuity_sequence(window[0].seq),
        uri=uri,
    )
    pl = parse(body)
    assert pl.target_duration == seg.target_duration == math.ceil(1.0)
    assert pl.media_sequence == window[0].seq
    assert [s.uri for s in pl.segments] == [f"{s.seq}.ts?id=abc" for s in window]
    assert any(not s.keyframe for s in window)
    # RFC 8216 4.3.3.1: every EXTINF, rounded to an integer, is <= EXT-X-TARGETDURATION.
    extinf = [float(v) for v in re.findall(r"^#EXTINF:([0-9.]+),$", body.decode(), re.M)]
    assert len(extinf) == 5
    assert all(round(d) <= pl.target_duration for d in extinf)
    times = [s.current_program_date_time for s in pl.segments]
    assert times == sorted(times)
    for (a, b), d in zip(itertools.pairwise(times), extinf[:-1], strict=True):
        assert (b - a).total_seconds() == pytest.approx(d, abs=0.01)
