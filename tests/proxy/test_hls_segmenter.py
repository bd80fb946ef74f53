"""The HLS segmenter on the simulator's real streams: a clip from scripts/make-clips.sh looped by
enginesim's LoopPlan (25 fps, a keyframe with PAT+PMT every 1.28 s), fed in the uneven chunk
sizes a proxy reads, and the segments judged by an independent TS reader and by ffprobe."""

from __future__ import annotations

import random
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acefleet.mpegts import PACKET_SIZE, payload_unit_start, pid_of, random_access
from enginesim.tsmux_loop import LoopPlan
from proxy.hls.segmenter import PARTIAL_LIMIT_MIN, Segment, Segmenter
from tests.support import tools
from tests.video import tsparse

GOP_S = 1.28
FRAME_S = 0.04
LOOP_S = 10.24


@pytest.fixture(scope="module")
def plan(clip_dir: Path) -> LoopPlan:
    return LoopPlan.from_bytes((clip_dir / "ch01.ts").read_bytes())


@pytest.fixture(scope="module")
def other_plan(clip_dir: Path) -> LoopPlan:
    return LoopPlan.from_bytes((clip_dir / "ch02.ts").read_bytes())


def live(plan: LoopPlan, loops: range) -> bytes:
    """The stream an engine sends for these loops of the clip."""
    return b"".join(plan.render(i, n) for n in loops for i in range(len(plan.chunks)))


def feed_split(seg: Segmenter, stream: bytes, seed: int = 7) -> list[Segment]:
    """Feed ``stream`` in random whole-packet chunks of 1316 B .. 64 KiB, like upstream reads."""
    rng = random.Random(seed)
    out: list[Segment] = []
    pos = 0
    while pos < len(stream):
        n = rng.randint(7, 65536 // PACKET_SIZE) * PACKET_SIZE
        out += seg.feed(stream[pos : pos + n])
        pos += n
    return out


def packets(data: bytes) -> list[bytes]:
    return [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]


def keyframe_offsets(plan: LoopPlan, stream: bytes) -> list[int]:
    vid = plan.program.video_pid
    return [
        i
        for i in range(0, len(stream), PACKET_SIZE)
        if pid_of(stream[i : i + 4]) == vid and random_access(stream[i : i + 6])
    ]


def without_tables(data: bytes, plan: LoopPlan) -> bytes:
    tables = (0, plan.program.pmt_pid)
    return b"".join(p for p in packets(data) if pid_of(p) not in tables)


def segmenter(**kw: float) -> Segmenter:
    # 4.5 s: the keyframe nearest it is the 4th of the clip's 1.28 s GOPs (5.12 s segments)
    args: dict[str, float] = {"target_s": 4.5, "max_s": 6.0, "window": 6}
    args.update(kw)
    return Segmenter(
        target_s=args["target_s"],
        max_s=args["max_s"],
        window=int(args["window"]),
        max_bytes=int(kw.get("max_bytes", 64 << 20)),
        first_seq=int(kw.get("first_seq", 1)),
    )


def assert_starts_with_tables_then_key(seg: Segment, plan: LoopPlan, *, rai: bool = True) -> None:
    first = packets(seg.data[: 3 * PACKET_SIZE])
    assert [pid_of(p) for p in first] == [0, plan.program.pmt_pid, plan.program.video_pid]
    assert payload_unit_start(first[2])
    assert random_access(first[2]) is rai


def test_segments_start_at_keyframes_and_last_target_rounded_up_to_gops(plan: LoopPlan) -> None:
    stream = live(plan, range(4))
    mid_gop = (keyframe_offsets(plan, stream)[0] // PACKET_SIZE + 40) * PACKET_SIZE
    seg = segmenter(first_seq=100)
    out = feed_split(seg, stream[mid_gop:])
    # The joiner's partial GOP is dropped: 4 loops minus that GOP, cut every 4 GOPs (5.12 s).
    assert len(out) == int((4 * LOOP_S - GOP_S) // 5.12)
    assert [s.seq for s in out] == list(range(100, 100 + len(out)))
    assert seg.next_seq == 100 + len(out)
    assert seg.target_duration == 6
    for s in out:
        assert_starts_with_tables_then_key(s, plan)
        assert s.keyframe
        assert not s.discontinuity
        assert s.duration_s == pytest.approx(4 * GOP_S, abs=1e-6)
        assert s.listed_at >= s.entered_at
    times = [s.program_time for s in out]
    assert all(t.tzinfo is not None for t in times)
    assert times == sorted(times)
    assert seg.window() == out[-6:]
    assert seg.get(out[-1].seq) is out[-1]
    assert seg.bandwidth == max(int(len(s.data) * 8 / s.duration_s) for s in out[-9:])
    assert 2_500_000 < seg.bandwidth < 5_000_000  # a ~3.3 Mbit/s stream


def test_concatenated_segments_are_the_stream_from_its_first_keyframe(plan: LoopPlan) -> None:
    stream = live(plan, range(3))
    first_key = keyframe_offsets(plan, stream)[1]  # start the feed inside the first GOP
    out = feed_split(segmenter(), stream[first_key - 20 * PACKET_SIZE :], seed=3)
    joined = b"".join(s.data for s in out)
    expected = without_tables(stream[first_key:], plan)
    got = without_tables(joined, plan)
    assert len(got) < len(expected)  # the last GOPs are still a partial segment
    assert got == expected[: len(got)]
    # Every table packet written is one the stream carried (only the counter is ours).
    tables = {p[:3] + p[4:] for p in packets(stream) if pid_of(p) in (0, plan.program.pmt_pid)}
    written = {p[:3] + p[4:] for p in packets(joined) if pid_of(p) in (0, plan.program.pmt_pid)}
    assert written <= tables


def test_table_counters_run_gapless_across_segments(plan: LoopPlan) -> None:
    out = feed_split(segmenter(), live(plan, range(3)), seed=11)
    joined = b"".join(s.data for s in out)
    capture = tsparse.parse(joined)
    assert {pid: s.cc_errors for pid, s in capture.streams.items() if s.cc_errors} == {}
    pat_ccs = [p[3] & 0x0F for p in packets(joined) if pid_of(p) == 0]
    assert pat_ccs[:3] == [0, 1, 2]
    assert len(pat_ccs) > 16  # the counter wrapped at least once, still without a gap


def test_ffprobe_reads_concatenated_segments_without_errors(plan: LoopPlan, tmp_path: Path) -> None:
    ffprobe = tools.require("ffprobe", "ffmpeg")
    out = feed_split(segmenter(), live(plan, range(3)), seed=5)
    path = tmp_path / "segments.ts"
    path.write_bytes(b"".join(s.data for s in out))
    probe = [ffprobe, "-show_entries", "format=duration", "-of", "csv=p=0", str(path)]
    quiet = subprocess.run([*probe[:1], "-v", "error", *probe[1:]], capture_output=True, text=True)
    assert quiet.returncode == 0
    assert quiet.stderr == ""
    assert float(quiet.stdout) == pytest.approx(sum(s.duration_s for s in out), abs=0.1)
    # The mpegts demuxer reports counter gaps only at debug level.
    loud = subprocess.run([*probe[:1], "-v", "debug", *probe[1:]], capture_output=True, text=True)
    assert "Continuity check failed" not in loud.stderr


def test_each_segment_alone_is_a_playable_ts(plan: LoopPlan, tmp_path: Path) -> None:
    ffprobe = tools.require("ffprobe", "ffmpeg")
    out = feed_split(segmenter(), live(plan, range(2)))
    path = tmp_path / "one.ts"
    path.write_bytes(out[1].data)
    entries = ["-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0"]
    done = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v", "-count_frames", *entries, str(path)],
        capture_output=True,
        text=True,
    )
    assert done.stderr == ""
    # (the program's copy of the stream prints the same line again)
    assert set(done.stdout.split()) == {"h264,128"}  # 5.12 s at 25 fps, all decodable


def test_pts_wrap_does_not_break_durations(plan: LoopPlan) -> None:
    wrap_loop = (1 << 33) // plan.period  # the loop during which the 33-bit PTS wraps
    out = feed_split(segmenter(), live(plan, range(wrap_loop - 1, wrap_loop + 2)))
    assert len(out) == 5
    assert [s.duration_s for s in out] == pytest.approx([4 * GOP_S] * 5, abs=1e-6)


def test_no_keyframe_within_max_forces_cuts_at_frames(plan: LoopPlan) -> None:
    seg = segmenter(target_s=0.5, max_s=1.0)
    out = feed_split(seg, live(plan, range(2)))
    assert seg.target_duration == 1
    assert all(s.duration_s <= 1.0 for s in out)
    forced = [s for s in out if not s.keyframe]
    assert forced, "GOPs of 1.28 s must need forced cuts at max_s 1.0"
    for s in forced:
        assert_starts_with_tables_then_key(s, plan, rai=False)
    # A forced cut keeps the most media that fits: 25 frames = 1.0 s.
    assert max(s.duration_s for s in out) == pytest.approx(1.0, abs=1e-6)
    assert any(s.keyframe for s in out[1:])  # cuts snap back to keyframes when they come


def test_streams_without_random_access_flags_cut_on_idr_pictures(plan: LoopPlan) -> None:
    stream = live(plan, range(3))
    flagless = bytearray(stream)
    for off in keyframe_offsets(plan, stream):
        flagless[off + 5] &= ~0x40
    assert keyframe_offsets(plan, bytes(flagless)) == []
    flagged = feed_split(segmenter(), stream)
    out = feed_split(segmenter(), bytes(flagless))
    assert [len(s.data) for s in out] == [len(s.data) for s in flagged]
    assert [s.duration_s for s in out] == [s.duration_s for s in flagged]
    assert all(s.keyframe for s in out)
    for s in out:
        assert_starts_with_tables_then_key(s, plan, rai=False)


def test_a_partial_kept_at_a_discontinuity_ends_before_its_cut_off_frame(plan: LoopPlan) -> None:
    """An upstream that dies mid-frame: the kept partial segment stops where that frame's PES
    began, so no player decodes half a picture at the splice."""
    stream = live(plan, range(2))
    keys = keyframe_offsets(plan, stream)
    video = plan.program.video_pid
    frames = [
        i
        for i in range(0, len(stream), PACKET_SIZE)
        if pid_of(stream[i : i + 4]) == video and payload_unit_start(stream[i : i + 4])
    ]
    cut = keys[7] - 5 * PACKET_SIZE  # five packets before the next GOP: inside its last frame
    seg = segmenter()
    out = feed_split(seg, stream[:cut])
    assert len(out) == 1
    kept = seg.discontinuity()
    assert len(kept) == 1
    last_frame = max(f for f in frames if f < cut)
    assert without_tables(kept[0].data, plan) == without_tables(stream[keys[4] : last_frame], plan)
    assert kept[0].duration_s == pytest.approx(3 * GOP_S - FRAME_S, abs=1e-6)


def test_discontinuity_flags_the_next_segment_and_counts(
    plan: LoopPlan, other_plan: LoopPlan
) -> None:
    first = live(plan, range(2))
    keys = keyframe_offsets(plan, first)
    seg = segmenter()
    out = feed_split(seg, first[: keys[7]])  # one segment, then 3 GOPs (3.84 s) in progress
    assert len(out) == 1
    kept = seg.discontinuity()
    assert [s.seq for s in kept] == [out[0].seq + 1]
    # its last frame is dropped: the upstream may have died inside it
    assert kept[0].duration_s == pytest.approx(3 * GOP_S - FRAME_S, abs=1e-6)
    assert not kept[0].discontinuity

    # The replacement upstream: another clip at another point of its loop.
    after = feed_split(seg, live(other_plan, range(50, 53)))
    assert after[0].discontinuity
    assert not any(s.discontinuity for s in after[1:])
    assert [s.seq for s in after] == list(range(kept[0].seq + 1, kept[0].seq + 1 + len(after)))
    for s in after:
        assert_starts_with_tables_then_key(s, other_plan)
        assert s.duration_s == pytest.approx(4 * GOP_S, abs=1e-6)
    flagged = after[0].seq
    assert seg.discontinuity_sequence(out[0].seq) == 0
    assert seg.discontinuity_sequence(flagged) == 0  # its tag is still in that playlist
    assert seg.discontinuity_sequence(flagged + 1) == 1

    # A second replacement right after a keyframe: the 0.2 s partial is dropped, not listed.
    stream = live(other_plan, range(53, 54))
    keys = keyframe_offsets(other_plan, stream)
    ended = seg.feed(stream[: keys[0] + 60 * PACKET_SIZE])  # ends the segment in progress
    assert [s.seq for s in ended] == [after[-1].seq + 1]
    before = seg.next_seq
    assert seg.discontinuity() == []
    again = feed_split(seg, live(plan, range(10, 12)))
    assert again[0].seq == before
    assert again[0].discontinuity
    assert seg.discontinuity_sequence(again[0].seq + 1) == 2


def test_retention_is_window_plus_three_then_bounded_by_bytes(plan: LoopPlan) -> None:
    stream = live(plan, range(7))
    seg = segmenter(window=3)
    out = feed_split(seg, stream)
    assert len(out) == 13
    assert seg.window() == out[-3:]
    assert [seg.get(s.seq) for s in out] == [None] * 7 + out[-6:]  # 3 listed + 3 older
    assert seg.bytes_held == sum(len(s.data) for s in out[-6:])

    size = len(out[0].data)
    small = segmenter(window=3, max_bytes=int(2.5 * size))
    out = feed_split(small, stream)
    assert [small.get(s.seq) for s in out] == [None] * 11 + out[-2:]
    assert small.window() == out[-2:]
    assert small.bytes_held <= 2.5 * size

    tiny = segmenter(max_bytes=1)
    out = feed_split(tiny, stream)
    assert tiny.window() == out[-1:]  # never below one listed segment
    assert tiny.bytes_held == len(out[-1].data)


def test_seed_lists_the_buffered_past_at_estimated_times(plan: LoopPlan) -> None:
    stream = live(plan, range(3))
    keys = keyframe_offsets(plan, stream)
    past, rest = stream[: keys[17]], stream[keys[17] :]  # 17 GOPs = 21.76 s already received
    seg = segmenter()
    before_mono, before_wall = time.monotonic(), datetime.now(UTC)
    seeded = seg.seed(past, age_s=21.76)
    assert [s.duration_s for s in seeded] == pytest.approx([5.12] * 4, abs=1e-6)
    for i, s in enumerate(seeded):
        assert s.entered_at == pytest.approx(before_mono - 21.76 + i * 5.12, abs=0.5)
        age = (before_wall - s.program_time).total_seconds()
        assert age == pytest.approx(21.76 - i * 5.12, abs=0.5)
        assert s.entered_at < s.listed_at <= time.monotonic()
    # Live bytes continue the same timeline: the segment in progress joins up seamlessly.
    live_out = feed_split(seg, rest)
    assert [s.seq for s in seeded + live_out] == list(range(1, 1 + len(seeded) + len(live_out)))
    assert live_out[0].duration_s == pytest.approx(5.12, abs=1e-6)
    assert live_out[0].entered_at == pytest.approx(before_mono - 21.76 + 4 * 5.12, abs=0.5)
    joined = b"".join(s.data for s in seeded + live_out)
    got = without_tables(joined, plan)
    assert got == without_tables(stream, plan)[: len(got)]
    assert tsparse.parse(joined).streams[0].cc_errors == []


def test_a_partial_segment_without_video_is_dropped_past_its_limit(plan: LoopPlan) -> None:
    stream = live(plan, range(1))
    keys = keyframe_offsets(plan, stream)
    vid = plan.program.video_pid
    # The video PID goes silent (its packets move to an unlisted PID) for 9 loops, 37 MB: more
    # than a segment in progress may hold, so it is dropped instead of growing without bound.
    gap = b"".join(
        p[:1] + bytes([p[1] & 0xE0 | 0x1F, 0xFE]) + p[3:]  # PID 0x1FFE, not in the PMT
        if pid_of(p) == vid
        else p
        for p in packets(live(plan, range(1, 10)))
    )
    assert len(gap) > PARTIAL_LIMIT_MIN
    seg = segmenter(max_bytes=8 << 20)
    out = feed_split(seg, stream[: keys[4]])
    out += feed_split(seg, gap)
    assert out == []  # the first segment never ended: no video PES to cut at
    out += feed_split(seg, live(plan, range(10, 12)))
    assert out[0].discontinuity  # what came back is not continuous with what was dropped
    assert all(len(s.data) < 2_200_000 for s in out)
    assert_starts_with_tables_then_key(out[0], plan)


def test_chunks_off_packet_boundaries_are_realigned(plan: LoopPlan) -> None:
    stream = live(plan, range(2))
    aligned = feed_split(segmenter(), stream)
    seg = segmenter()
    out: list[Segment] = []
    for i in range(0, len(stream), 10_000):  # reads that split packets
        out += seg.feed(stream[i : i + 10_000])
    assert [s.data for s in out] == [s.data for s in aligned]
    # A join in the middle of a packet: the first packet is lost, the rest lines up.
    out = segmenter().feed(stream[100:])
    got = without_tables(b"".join(s.data for s in out), plan)
    assert got == without_tables(stream[keyframe_offsets(plan, stream)[1] :], plan)[: len(got)]
    assert_starts_with_tables_then_key(out[0], plan)


@pytest.mark.parametrize(
    ("target_s", "gops"), [(4.0, 3), (4.4, 3), (4.6, 4), (2.0, 2), (1.0, 1), (6.0, 4)]
)
def test_cuts_at_the_keyframe_nearest_the_target(
    plan: LoopPlan, target_s: float, gops: int
) -> None:
    """With a keyframe every 1.28 s: 4.0 and 4.4 s → 3.84 s (nearer than 5.12), 4.6 → 5.12,
    2.0 → 2.56, 1.0 → 1.28; 6.0 would be 6.4 s, past max_s, so 5.12."""
    seg = segmenter(target_s=target_s)
    out = feed_split(seg, live(plan, range(3)))
    assert len(out) >= 3
    for s in out[1:]:  # the first is cut before the GOP length is known
        assert s.duration_s == pytest.approx(gops * GOP_S, abs=1e-6)
        assert s.keyframe
