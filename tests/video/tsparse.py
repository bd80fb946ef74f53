"""An independent MPEG-TS reader for the video tests: it parses what a player would receive and
reports every continuity, PCR and PTS/DTS fact the tests judge (it shares no code with the feed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

TS = 188
PTS_WRAP = 1 << 33


@dataclass
class Stream:
    """What one PID carried, in arrival order."""

    cc_errors: list[int] = field(default_factory=list)  # packet indexes where CC broke
    pcrs: list[tuple[int, int]] = field(default_factory=list)  # (packet index, 27 MHz)
    pts: list[int] = field(default_factory=list)
    dts: list[int] = field(default_factory=list)  # DTS, or PTS when the PES carries no DTS
    rai_at: list[int] = field(default_factory=list)  # packet indexes with random_access set


@dataclass
class Capture:
    packets: int
    pids: list[int]  # PID of each packet, in order
    streams: dict[int, Stream]


def _ts(b: bytes) -> int:
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def parse(data: bytes) -> Capture:
    assert len(data) % TS == 0, f"{len(data)} bytes is not whole packets"
    streams: dict[int, Stream] = defaultdict(Stream)
    last_cc: dict[int, int] = {}
    pids: list[int] = []
    for i in range(len(data) // TS):
        p = data[i * TS : (i + 1) * TS]
        assert p[0] == 0x47, f"packet {i}: lost sync"
        pid = ((p[1] & 0x1F) << 8) | p[2]
        pids.append(pid)
        if pid == 0x1FFF:
            continue
        s = streams[pid]
        cc, payload, adapt = p[3] & 0x0F, bool(p[3] & 0x10), bool(p[3] & 0x20)
        want = last_cc.get(pid)
        if want is not None:
            want = (want + 1) % 16 if payload else want
            if cc != want:
                s.cc_errors.append(i)
        last_cc[pid] = cc
        start = 4
        if adapt and p[4] > 0:
            if p[5] & 0x40:
                s.rai_at.append(i)
            if p[5] & 0x10 and p[4] >= 7:
                b = p[6:12]
                base = b[0] << 25 | b[1] << 17 | b[2] << 9 | b[3] << 1 | b[4] >> 7
                s.pcrs.append((i, base * 300 + ((b[4] & 1) << 8 | b[5])))
        if adapt:
            start += 1 + p[4]
        if p[1] & 0x40 and payload and p[start : start + 3] == b"\x00\x00\x01":
            flags = p[start + 7] >> 6
            if flags & 2:
                pts = _ts(p[start + 9 : start + 14])
                s.pts.append(pts)
                s.dts.append(_ts(p[start + 14 : start + 19]) if flags == 3 else pts)
    return Capture(len(data) // TS, pids, dict(streams))


def unwrap(values: list[int], wrap: int) -> list[int]:
    """Undo wrap-around: each value becomes the candidate (v + k * wrap) nearest the previous one,
    so a continuous clock reads as plain integers even when B-frames reorder PTS near the wrap."""
    out: list[int] = []
    for v in values:
        k = (out[-1] - v + wrap // 2) // wrap if out else 0
        out.append(v + k * wrap)
    return out
