"""Turn one MPEG-TS clip into an endless live stream: the same packets, loop after loop, with
PCR/PTS/DTS moved forward by one loop period per loop and continuity counters renumbered per PID.

A clip is parsed once (``LoopPlan.from_bytes``) into the packets kept for looping plus small
patch lists; rendering a chunk of loop ``n`` copies its bytes and rewrites only the fields that
change (a few hundred continuity counters and a handful of timestamps per 100 ms), so many
sessions can share one plan cheaply.

Rules that make the loop seamless:
- The loop period is the video's: (last PTS - first PTS) + one frame. Other elementary streams
  (audio) lose the PES units that start at or after their first PTS + the period, which drops an
  encoder's extra priming frame instead of overlapping the next loop.
- The stream starts at the first video keyframe (random_access_indicator set), preceded by the
  PAT and PMT the muxer wrote in front of it; every GOP starts that way, and a GOP that lacks
  them gets copies, so a joiner can decode from any chunk marked ``keyframe``.
- Media time of a packet is interpolated between PCRs, cyclically over the loop, so chunk
  durations add up to exactly one loop period and the pacer follows the clip's own bitrate.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from acefleet.mpegts import NULL_PID, PACKET_SIZE, pcr_of, pid_of, random_access
from enginesim.psi import pcr_field
from enginesim.tsmux_fields import (
    PCR_PER_PTS,
    PTS_WRAP,
    ClipError,
    Program,
    check_packets,
    parse_pat,
    parse_pmt,
    pes_times,
    read_timestamp,
    write_timestamp,
)

PCR_HZ = 27_000_000
DEFAULT_CHUNK_S = 0.1  # the pacer's step: ~100 ms of media, about 40 KB at 3 Mbit/s


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk of the loop: ``data[start:end]`` plus the fields to patch per loop."""

    start: int
    end: int
    duration_s: float
    keyframe: bool
    cc: tuple[tuple[int, int, int], ...]  # (offset in chunk, index within loop, packets per loop)
    pcr: tuple[tuple[int, int], ...]  # (offset in chunk, PCR of loop 0)
    ts: tuple[tuple[int, int], ...]  # (offset in chunk, PTS or DTS of loop 0)


@dataclass(frozen=True)
class _Packet:
    pos: int  # offset in the source clip
    pid: int


class LoopPlan:
    """A clip prepared for looping; ``render(i, n)`` is chunk ``i`` of loop ``n``."""

    def __init__(
        self, data: bytes, chunks: tuple[ChunkPlan, ...], period: int, program: Program
    ) -> None:
        self.data = data
        self.chunks = chunks
        self.period = period  # 90 kHz ticks per loop
        self.program = program

    @property
    def loop_s(self) -> float:
        return self.period / 90_000

    @property
    def bitrate(self) -> float:
        """Bits per second of media time, the rate a live reader receives."""
        return len(self.data) * 8 / self.loop_s

    @classmethod
    def from_bytes(cls, clip: bytes, chunk_s: float = DEFAULT_CHUNK_S) -> LoopPlan:
        if chunk_s <= 0:
            raise ValueError("chunk_s must be positive")
        count = check_packets(clip)
        program = _find_program(clip, count)
        packets = [
            _Packet(i * PACKET_SIZE, pid_of(clip[i * PACKET_SIZE : i * PACKET_SIZE + 4]))
            for i in range(count)
        ]
        period = _video_period(clip, packets, program.video_pid)
        kept = _trim_overhang(clip, packets, program, period)
        kept = _start_gops_with_tables(clip, kept, program)
        return _plan(clip, kept, program, period, chunk_s)

    def render(self, index: int, loop: int) -> bytes:
        """Chunk ``index`` of loop ``loop`` with timestamps and continuity counters rewritten."""
        c = self.chunks[index]
        buf = bytearray(self.data[c.start : c.end])
        for off, idx, per_loop in c.cc:
            buf[off] = (buf[off] & 0xF0) | ((idx + loop * per_loop) & 0x0F)
        shift = loop * self.period
        if c.pcr:
            pcr_shift = shift * PCR_PER_PTS
            for off, pcr in c.pcr:
                buf[off : off + 6] = pcr_field(pcr + pcr_shift)  # wraps at 2**33 * 300
        for off, ts in c.ts:
            write_timestamp(buf, off, ts + shift)  # wraps at 2**33
        return bytes(buf)


def _find_program(clip: bytes, count: int) -> Program:
    pmt_pid = -1
    for i in range(count):
        pos = i * PACKET_SIZE
        pid = pid_of(clip[pos : pos + 4])
        if pid == 0 and pmt_pid < 0:
            pmt_pid = parse_pat(clip, pos)
        elif pmt_pid >= 0 and pid == pmt_pid:
            return parse_pmt(clip, pos, pmt_pid)
    raise ClipError("no PAT followed by its PMT in the clip")


def _pts_of(clip: bytes, pkt: _Packet) -> int | None:
    if not clip[pkt.pos + 1] & 0x40:
        return None
    times = pes_times(clip, pkt.pos)
    return None if times is None else read_timestamp(clip, times.pts_off)


def _video_period(clip: bytes, packets: list[_Packet], video_pid: int) -> int:
    pts = sorted(t for p in packets if p.pid == video_pid and (t := _pts_of(clip, p)) is not None)
    if len(pts) < 2:
        raise ClipError(f"video PID 0x{video_pid:x} has {len(pts)} timestamped frames, need 2+")
    if pts[-1] - pts[0] > PTS_WRAP // 2:
        raise ClipError("video PTS wraps inside the clip; re-encode it with a small start time")
    frame, _ = Counter(b - a for a, b in itertools.pairwise(pts)).most_common(1)[0]
    if frame <= 0:
        raise ClipError("video frames share a PTS; cannot tell the frame duration")
    return pts[-1] - pts[0] + frame


def _trim_overhang(
    clip: bytes, packets: list[_Packet], program: Program, period: int
) -> list[_Packet]:
    """Drop PES units of non-video streams that would overlap the next loop's first ones."""
    first: dict[int, int] = {}
    dropping: dict[int, bool] = {}
    kept: list[_Packet] = []
    for p in packets:
        if p.pid in program.other_es_pids:
            pts = _pts_of(clip, p)
            if pts is not None:
                first.setdefault(p.pid, pts)
                dropping[p.pid] = pts - first[p.pid] >= period
            if dropping.get(p.pid, False):
                continue
        kept.append(p)
    return kept


def _start_gops_with_tables(clip: bytes, kept: list[_Packet], program: Program) -> list[_Packet]:
    """Begin the loop at the first keyframe and make every keyframe follow a PAT and a PMT."""
    tables = (0, program.pmt_pid)
    pat = next(p for p in kept if p.pid == 0)
    pmt = next(p for p in kept if p.pid == program.pmt_pid)
    out: list[_Packet] = []
    started = False
    for p in kept:
        if _is_key(clip, p, program):
            tail = [q.pid for q in out[-2:]]
            if tail != list(tables):
                out.extend((pat, pmt))
            started = True
        elif not started:
            if p.pid in program.other_es_pids or p.pid == program.video_pid:
                raise ClipError("the clip has media before its first video keyframe")
            continue  # tables before the first GOP: the GOP brings its own
        out.append(p)
    if not started:
        raise ClipError(f"no keyframe (random_access_indicator) on video PID {program.video_pid}")
    return out


def _packet_times(clip: bytes, kept: list[_Packet], period: int) -> list[int]:
    """Media time (27 MHz, relative to the first PCR) of each kept packet plus one past the end.

    Linear between consecutive PCRs; the stretch from the last PCR wraps to the first one of the
    next loop (its PCR + one period), so the whole loop lasts exactly ``period``.
    """
    marks = [(i, pcr) for i, p in enumerate(kept) if (pcr := _pcr(clip, p)) is not None]
    if len(marks) < 2:
        raise ClipError(f"{len(marks)} PCRs in the clip; need at least 2 to pace it")
    n = len(kept)
    loop_pcr = period * PCR_PER_PTS
    first_i, first_pcr = marks[0]
    marks.append((first_i + n, first_pcr + loop_pcr))
    times = [0] * (n + 1)
    for (i0, c0), (i1, c1) in itertools.pairwise(marks):
        if c1 <= c0:
            raise ClipError(f"PCR does not increase between packets {i0} and {i1 % n}")
        for i in range(i0, i1):
            times[i % n] = (
                c0 - first_pcr + (c1 - c0) * (i - i0) // (i1 - i0) - (loop_pcr if i >= n else 0)
            )
    times[n] = times[0] + loop_pcr
    return times


def _plan(
    clip: bytes, kept: list[_Packet], program: Program, period: int, chunk_s: float
) -> LoopPlan:
    times = _packet_times(clip, kept, period)
    step = int(chunk_s * PCR_HZ)
    per_loop = Counter(p.pid for p in kept if clip[p.pos + 3] & 0x10)
    seen: Counter[int] = Counter()
    data = bytearray()
    chunks: list[ChunkPlan] = []
    start = 0
    cc: list[tuple[int, int, int]] = []
    pcrs: list[tuple[int, int]] = []
    tss: list[tuple[int, int]] = []
    keyframe = True
    es = (program.video_pid, *program.other_es_pids)

    def close(end: int, next_key: bool) -> None:
        nonlocal start, cc, pcrs, tss, keyframe
        base = start * PACKET_SIZE
        duration = (times[end] - times[start]) / PCR_HZ
        chunks.append(
            ChunkPlan(
                base, end * PACKET_SIZE, duration, keyframe, tuple(cc), tuple(pcrs), tuple(tss)
            )
        )
        start, cc, pcrs, tss, keyframe = end, [], [], [], next_key

    for i, p in enumerate(kept):
        gop = p.pid == 0 and i + 2 < len(kept) and _is_key(clip, kept[i + 2], program)
        if i > start and (gop or times[i] - times[start] >= step):
            close(i, gop)
        rel = i * PACKET_SIZE - start * PACKET_SIZE
        data += clip[p.pos : p.pos + PACKET_SIZE]
        if p.pid != NULL_PID:
            has_payload = bool(clip[p.pos + 3] & 0x10)
            seen[p.pid] += has_payload
            # A packet without payload repeats the counter of the payload packet before it.
            cc.append((rel + 3, seen[p.pid] - 1, per_loop[p.pid]))
        if (pcr := _pcr(clip, p)) is not None:
            pcrs.append((rel + 6, pcr))  # the PCR field starts 6 bytes into the packet
        if p.pid in es and clip[p.pos + 1] & 0x40 and (t := pes_times(clip, p.pos)) is not None:
            for off in (t.pts_off, t.dts_off):
                if off >= 0:
                    tss.append((rel + off - p.pos, read_timestamp(clip, off)))
    close(len(kept), True)
    plan = LoopPlan(bytes(data), tuple(chunks), period, program)
    # Bake loop 0's counters into the stored bytes, so a reader of ``data`` sees a valid TS too.
    plan.data = b"".join(plan.render(i, 0) for i in range(len(plan.chunks)))
    return plan


def _pcr(clip: bytes, p: _Packet) -> int | None:
    return pcr_of(clip[p.pos : p.pos + 12])


def _is_key(clip: bytes, p: _Packet, program: Program) -> bool:
    return p.pid == program.video_pid and random_access(clip[p.pos : p.pos + 6])
