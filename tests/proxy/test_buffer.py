"""The shared buffer's TS awareness, on hand-built packets (no network needed here)."""

from __future__ import annotations

from acefleet.mpegts import PACKET_SIZE, pid_of, random_access
from proxy.stream_buffer import StreamBuffer, pmt_pid_of, video_pid_of

PMT_PID = 0x100
VIDEO_PID = 0x101
AUDIO_PID = 0x102


def packet(pid: int, *, pusi: bool = False, rai: bool = False, payload: bytes = b"") -> bytes:
    head = bytes([0x47, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF])
    if rai:
        adaptation = bytes([1, 0x40])
        body = head + bytes([0x30]) + adaptation + payload
    else:
        body = head + bytes([0x10]) + payload
    return body.ljust(PACKET_SIZE, b"\xff")


def pat() -> bytes:
    section = bytes([0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xE0 | (PMT_PID >> 8), PMT_PID & 0xFF])
    return packet(0, pusi=True, payload=b"\x00" + section + b"\0\0\0\0")


def pmt() -> bytes:
    streams = bytes([0x0F, 0xE0 | (AUDIO_PID >> 8), AUDIO_PID & 0xFF, 0xF0, 0])
    streams += bytes([0x1B, 0xE0 | (VIDEO_PID >> 8), VIDEO_PID & 0xFF, 0xF0, 0])
    length = 9 + len(streams) + 4
    section = bytes([0x02, 0xB0, length, 0, 1, 0xC1, 0, 0, 0xE0 | (VIDEO_PID >> 8)])
    section += bytes([VIDEO_PID & 0xFF, 0xF0, 0]) + streams
    return packet(PMT_PID, pusi=True, payload=b"\x00" + section + b"\0\0\0\0")


def gop(frames: int = 20) -> bytes:
    """PAT, PMT, a keyframe start, more video, and audio with RAI set (not a video keyframe)."""
    out = pat() + pmt() + packet(VIDEO_PID, pusi=True, rai=True)
    for i in range(frames):
        out += packet(AUDIO_PID, pusi=True, rai=True) if i % 4 == 0 else packet(VIDEO_PID)
    return out


def test_psi_parsing_finds_the_video_pid() -> None:
    assert pmt_pid_of(pat()) == PMT_PID
    assert video_pid_of(pmt()) == VIDEO_PID


def test_join_point_is_the_latest_video_keyframe_with_pat_pmt() -> None:
    buf = StreamBuffer(1 << 20)
    first = gop()
    buf.append(first)
    buf.append(gop())
    offset = buf.join_point(1 << 20)
    assert offset == len(first) + 2 * PACKET_SIZE  # the second GOP's keyframe, not audio RAI
    data = b"".join(buf.since(offset))
    assert pid_of(data[:PACKET_SIZE]) == VIDEO_PID
    assert random_access(data[:PACKET_SIZE])
    assert buf.start_prefix(offset) == pat() + pmt()


def test_join_without_keyframe_falls_back_to_recent_packet_boundary() -> None:
    buf = StreamBuffer(1 << 20)
    buf.append(packet(VIDEO_PID) * 100)
    offset = buf.join_point(10 * PACKET_SIZE + 50)
    assert offset == buf.head - 10 * PACKET_SIZE
    assert buf.start_prefix(offset) == b""


def test_keyframe_too_far_back_is_not_used() -> None:
    buf = StreamBuffer(1 << 20)
    buf.append(gop())
    buf.append(packet(VIDEO_PID) * 200)
    assert buf.join_point(50 * PACKET_SIZE) == buf.head - 50 * PACKET_SIZE


def test_eviction_bounds_memory_and_forgets_old_keyframes() -> None:
    buf = StreamBuffer(64 * PACKET_SIZE)
    for _ in range(20):
        buf.append(gop())
    assert buf.size <= 64 * PACKET_SIZE + len(gop())
    assert all(k >= buf.tail for k in buf.keyframes)
    assert buf.since(buf.tail)[0] is buf.chunks[0]  # shared objects, not copies


def test_since_mid_chunk_is_exact() -> None:
    buf = StreamBuffer(1 << 20)
    a, b = gop(), gop(5)
    buf.append(a)
    buf.append(b)
    assert b"".join(buf.since(3 * PACKET_SIZE)) == (a + b)[3 * PACKET_SIZE :]
    assert buf.since(buf.head) == []
