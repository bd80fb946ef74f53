"""The clip feed as a live stream: parse its own output across loop points (no pacing, fast)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import cast

import pytest

from enginesim.clip_feed import ClipFeed, make_feed
from enginesim.clips_library import channel_index, list_clips, load_plan
from enginesim.feed import Chunk
from enginesim.tsmux_fields import PTS_WRAP, ClipError
from tests.video import tsparse

VIDEO, AUDIO, PMT = 0x100, 0x101, 0x1000  # ffmpeg's default PIDs in make-clips.sh clips
FRAME, AAC_FRAME = 3600, 1920  # 25 fps and 1024 samples at 48 kHz, in 90 kHz ticks

pytestmark = pytest.mark.ffmpeg


def read_loops(feed: ClipFeed, loops: float) -> list[Chunk]:
    count = round(len(feed.plan.chunks) * loops)
    return [feed.read() for _ in range(count)]


def assert_live(data: bytes) -> tsparse.Capture:
    """Continuous CC on every PID, increasing PCR, and evenly spaced timestamps per stream."""
    cap = tsparse.parse(data)
    for pid, s in cap.streams.items():
        assert not s.cc_errors, f"PID 0x{pid:x}: continuity breaks at packets {s.cc_errors[:5]}"
    pcr = tsparse.unwrap([v for _, v in cap.streams[VIDEO].pcrs], PTS_WRAP * 300)
    steps = [b - a for a, b in itertools.pairwise(pcr)]
    assert min(steps) > 0, "PCR went backwards"
    assert max(steps) <= 0.1 * 27_000_000, "PCR gap above 100 ms"
    # Video has B-frames: DTS steps by exactly one frame; PTS sorted does too (no gap, no repeat).
    dts = tsparse.unwrap(cap.streams[VIDEO].dts, PTS_WRAP)
    assert {b - a for a, b in itertools.pairwise(dts)} == {FRAME}
    pts = sorted(tsparse.unwrap(cap.streams[VIDEO].pts, PTS_WRAP))
    assert {b - a for a, b in itertools.pairwise(pts)} == {FRAME}
    audio = tsparse.unwrap(cap.streams[AUDIO].pts, PTS_WRAP)
    assert {b - a for a, b in itertools.pairwise(audio)} == {AAC_FRAME}
    return cap


@pytest.fixture(scope="module")
def feed_dir(clip_dir: Path) -> Path:
    return clip_dir


def test_timestamps_and_counters_continue_across_loops(feed_dir: Path) -> None:
    feed = make_feed(feed_dir, "a" * 40, 4_000_000)
    assert isinstance(feed, ClipFeed)
    chunks = read_loops(feed, 3)
    cap = assert_live(b"".join(c.data for c in chunks))
    # 3 loops of 10.24 s: 768 video frames and 1440 audio frames, none lost at the seams.
    assert len(cap.streams[VIDEO].pts) == 768
    assert len(cap.streams[AUDIO].pts) == 1440
    assert feed.loop == 3


def test_timestamps_continue_across_the_33_bit_wrap(feed_dir: Path) -> None:
    plan = load_plan(list_clips(feed_dir)[0])
    feed = ClipFeed(plan)
    feed.loop = PTS_WRAP // plan.period  # the loop during which the 90 kHz clock wraps
    data = b"".join(c.data for c in read_loops(feed, 2))
    cap = assert_live(data)
    raw = cap.streams[VIDEO].dts
    assert any(b < a for a, b in itertools.pairwise(raw)), "no wrap happened"


def test_chunks_start_gops_with_tables_and_follow_pcr(feed_dir: Path) -> None:
    feed = make_feed(feed_dir, "b" * 40, 4_000_000)
    assert isinstance(feed, ClipFeed)
    chunks = read_loops(feed, 2)
    elapsed = 0.0
    first_pcr: int | None = None
    keyframes = 0
    for c in chunks:
        assert c.data
        assert len(c.data) % 188 == 0
        cap = tsparse.parse(c.data)
        if c.keyframe:
            keyframes += 1
            # PAT, PMT, then the keyframe's first packet (PES start with random_access set).
            assert cap.pids[:3] == [0, PMT, VIDEO]
            assert cap.streams[VIDEO].rai_at[:1] == [2]
            assert c.data[2 * 188 + 1] & 0x40
        else:
            assert 2 not in cap.streams.get(VIDEO, tsparse.Stream()).rai_at
        pcrs = cap.streams[VIDEO].pcrs if VIDEO in cap.streams else []
        if pcrs:
            first_pcr = pcrs[0][1] if first_pcr is None else first_pcr
            # The pacer's clock (sum of durations) tracks the stream's own PCR.
            assert abs((pcrs[0][1] - first_pcr) / 27e6 - elapsed) < 0.1
        elapsed += c.duration_s
    assert keyframes == 16  # 8 GOPs of 1.28 s per 10.24 s loop
    assert elapsed == pytest.approx(2 * 10.24, abs=1e-6)
    assert all(0 < c.duration_s <= 0.11 for c in chunks)


def test_bitrate_follows_the_clip(feed_dir: Path) -> None:
    clip = list_clips(feed_dir)[0]
    plan = load_plan(clip)
    feed = ClipFeed(plan)
    assert feed.bitrate == round(len(plan.data) * 8 / 10.24)
    assert 2_500_000 < feed.bitrate < 4_500_000
    # The loop drops the clip's leading SDT and the audio priming overhang, nothing else big.
    assert 0.98 * clip.stat().st_size < len(plan.data) <= clip.stat().st_size


def test_channel_is_chosen_by_infohash(feed_dir: Path) -> None:
    names = [p.stem for p in list_clips(feed_dir)]
    hashes = [f"{i:040x}" for i in range(60)]
    picked = [cast(ClipFeed, make_feed(feed_dir, h, 0)).name for h in hashes]
    again = [cast(ClipFeed, make_feed(feed_dir, h.upper(), 0)).name for h in hashes]
    assert picked == again
    assert set(picked) == set(names)
    assert channel_index("c" * 40, 6) == channel_index("C" * 40, 6)


def test_bad_clip_dirs_get_precise_errors(tmp_path: Path) -> None:
    with pytest.raises(ClipError, match="does not exist"):
        make_feed(tmp_path / "nope", "a" * 40, 0)
    with pytest.raises(ClipError, match=r"no \*\.ts clips"):
        make_feed(tmp_path, "a" * 40, 0)
    (tmp_path / "broken.ts").write_bytes(b"\x47" + b"\x00" * 200)
    with pytest.raises(ClipError, match=r"broken\.ts: 201 bytes is not a whole number"):
        make_feed(tmp_path, "a" * 40, 0)
    (tmp_path / "broken.ts").write_bytes(b"\x00" * 188 * 4)
    with pytest.raises(ClipError, match="packet 0: sync byte"):
        make_feed(tmp_path, "a" * 40, 0)


def test_clip_without_keyframe_flags_is_refused(feed_dir: Path, tmp_path: Path) -> None:
    data = bytearray(list_clips(feed_dir)[0].read_bytes())
    for pos in range(0, len(data), 188):  # clear random_access_indicator everywhere
        if data[pos + 3] & 0x20 and data[pos + 4]:
            data[pos + 5] &= ~0x40 & 0xFF
    (tmp_path / "nokey.ts").write_bytes(bytes(data))
    with pytest.raises(ClipError, match="before its first video keyframe"):
        make_feed(tmp_path, "a" * 40, 0)


def test_plans_are_shared_until_the_clip_is_rebuilt(feed_dir: Path, tmp_path: Path) -> None:
    clip = tmp_path / "ch01.ts"
    clip.write_bytes((feed_dir / "ch01.ts").read_bytes())
    first = load_plan(clip)
    assert load_plan(clip) is first  # parsed once, however many sessions play it
    clip.write_bytes((feed_dir / "ch02.ts").read_bytes())
    rebuilt = load_plan(clip)
    assert rebuilt is not first
    assert rebuilt.data != first.data
