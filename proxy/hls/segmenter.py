"""Cut a channel's live MPEG-TS into HLS segments, without I/O: bytes in, ``Segment``s out.

Rules, in the order they apply:
1. Nothing is kept before an upstream has shown a PAT, the PMT it points at (whose first video
   stream is the one we cut on) and a video keyframe: a PES start with random_access_indicator
   set, or, for a stream that has never set it, one whose first bytes hold an H.264 IDR/SPS,
   HEVC IRAP/VPS or MPEG-2 sequence header.
2. A segment is cut before the keyframe nearest ``target_s`` of media: before a keyframe once
   the segment plus half a GOP (the last keyframe interval seen) reaches ``target_s``, or when
   waiting a GOP more would pass ``max_s``. If no keyframe comes, it is cut before the video
   PES that would take it past ``max_s`` (``keyframe=False``).
   Media time is the video PES's DTS (its PTS when it has none): decode order is monotonic even
   with B-frames, and between two keyframes the DTS and PTS differences agree. Without
   timestamps the wall clock between packets stands in.
3. Every segment begins with copies of the latest PAT and PMT; the stream's own tables right
   before the cut keyframe are dropped as duplicates. Every PAT/PMT packet written gets its
   continuity counter from our own per-PID counter, so the tables count 0..15 without gaps
   across segments; all other bytes pass through untouched.
4. A segment's duration (known when the next one starts) is the media time between their first
   video PES, capped at ``max_s`` so an EXTINF never exceeds EXT-X-TARGETDURATION.
5. ``discontinuity()`` (upstream replaced) keeps the partial segment if it starts at a keyframe
   and holds >= 0.5 s before its last video PES, drops it otherwise, and waits for rule 1
   again; the next segment is flagged ``discontinuity``. A kept partial ends before its last
   video PES: an upstream that died mid-frame left that frame cut off (ffmpeg reported
   "error while decoding MB" at such splices).
6. Retained: the newest ``window`` segments plus up to 3 older ones, oldest evicted first while
   over ``max_bytes``, never fewer than one. A partial segment that outgrows ``max_bytes`` (at
   least ``PARTIAL_LIMIT_MIN``: the video stopped while other streams flow) is dropped like one at
   a discontinuity.

Only PAT, PMT and video PES-start packets are looked at in Python (``ts_scan.interesting`` finds
them with C-level slicing); the bytes between them are kept as zero-copy slices of the chunk and
joined once per segment.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from acefleet.mpegts import PACKET_SIZE, SYNC_BYTE, find_sync, packet_floor
from proxy.hls import ts_scan
from proxy.hls.ts_scan import PAT_PID, PTS_HZ, PTS_WRAP

MAX_GOP_TICKS = 60 * PTS_HZ  # a longer gap between keyframes is a jump, not a GOP
KEEP_OLDER = 3  # segments kept past the window, for players a little behind the playlist
MIN_KEPT_PARTIAL_S = 0.5  # a partial segment shorter than this is dropped at a discontinuity
DEFAULT_FRAME_S = 0.04
PROGRAM_TIME_SLACK_S = 1.0  # re-anchor the program clock when media time drifts this far
PARTIAL_LIMIT_MIN = 32 << 20  # a segment in progress may grow to max(this, max_bytes)


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int  # channel-wide media sequence number
    data: bytes  # PAT, PMT, then the segment's packets
    duration_s: float  # media time to the next segment's start (<= max_s)
    program_time: datetime  # UTC wall clock of its start, for EXT-X-PROGRAM-DATE-TIME
    discontinuity: bool  # the first segment after discontinuity() (upstream replaced)
    keyframe: bool  # False only for a forced cut (no keyframe within max_s)
    entered_at: float  # time.monotonic() when its first packet was fed
    listed_at: float  # time.monotonic() when it was completed (became listable)


class _Partial:
    """The segment being filled: its parts (joined once at the end) and its start."""

    __slots__ = (
        "disc",
        "entered_at",
        "keyframe",
        "last_frame",
        "parts",
        "program_time",
        "size",
        "t0",
    )

    def __init__(
        self, t0: int | None, entered_at: float, program_time: datetime, keyframe: bool, disc: bool
    ) -> None:
        self.parts: list[bytes | memoryview] = []
        self.size = 0
        self.t0 = t0
        self.entered_at = entered_at
        self.program_time = program_time
        self.keyframe = keyframe
        self.disc = disc
        # (bytes held, media time) where the latest video PES began: an upstream that dies
        # mid-frame leaves that frame cut off, so a kept partial segment ends before it
        self.last_frame: tuple[int, int | None] | None = None


class Segmenter:
    """One channel's segmenter; see the module docstring for the rules."""

    def __init__(
        self, *, target_s: float, max_s: float, window: int, max_bytes: int, first_seq: int
    ) -> None:
        if not 0 < target_s <= max_s:
            raise ValueError("need 0 < target_s <= max_s")
        if window < 1 or max_bytes < 1:
            raise ValueError("window and max_bytes must be positive")
        self.target_s = target_s
        self.max_s = max_s
        self.window_size = window
        self.max_bytes = max_bytes
        self.target_duration = math.ceil(max_s)
        self._partial_limit = max(max_bytes, PARTIAL_LIMIT_MIN)
        self.next_seq = first_seq
        self.bytes_held = 0
        self.bandwidth = 0
        self._kept: deque[Segment] = deque()
        self._disc_seqs: list[int] = []  # seq of every discontinuity segment, ever (ascending)
        self._cc: dict[int, int] = {}  # our continuity counter per table PID
        self._rest = b""  # a partial packet left by a chunk not cut on a boundary
        self._disc_pending = False
        self._anchor: tuple[datetime, int] | None = None  # (program time, media time) pair
        self._reset_upstream()
        # The clock of the packets being fed: fixed per live chunk, estimated while seeding.
        self._now = 0.0
        self._wall = datetime.now(UTC)
        self._seed: tuple[float, datetime, float, int] | None = None
        self._seed_len = 1

    def _reset_upstream(self) -> None:
        self._pat: bytes | None = None
        self._pmt: bytes | None = None
        self._pmt_pid = -1
        self._video_pid = -1
        self._video_type = 0
        self._interest = ts_scan.interest(-1, -1)
        self._rai_seen = False
        self._pending: list[bytes] = []  # stream tables not yet placed (maybe before a cut)
        self._cur: _Partial | None = None
        self._last_t: int | None = None
        self._frame_s = DEFAULT_FRAME_S
        self._key_t: int | None = None  # media time of the latest keyframe
        self._gop_s = 0.0  # media time between the latest two keyframes (0: not seen yet)
        self._anchor = None

    # --- public -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[Segment]:
        """Take the next bytes of the stream; returns the segments they completed."""
        self._now = time.monotonic()
        self._wall = datetime.now(UTC)
        return self._scan(chunk)

    def seed(self, data: bytes, age_s: float) -> list[Segment]:
        """Feed past stream bytes that arrived over the last ``age_s`` seconds.

        Their times are estimated as "now - age_s + media offset" (by byte offset when the
        stream has no timestamps), so segments completed here look as if fed live.
        """
        start = find_sync(data)
        if start < 0:
            return []
        data = data[start : start + packet_floor(len(data) - start)]
        now, wall = time.monotonic(), datetime.now(UTC)
        self._seed = (now - age_s, wall - timedelta(seconds=age_s), max(age_s, 0.0), -1)
        self._seed_len = max(len(data), 1)
        self._now, self._wall = now - age_s, wall - timedelta(seconds=age_s)
        try:
            return self._scan(data)
        finally:
            self._seed = None
            self._now, self._wall = now, wall

    def discontinuity(self) -> list[Segment]:
        """The upstream was replaced: close or drop the partial segment, wait for a new start.

        Returns the partial segment when it was kept (a list, like ``feed``).
        """
        done: list[Segment] = []
        cur = self._cur
        if cur is not None and cur.keyframe and cur.last_frame is not None:
            size, t = cur.last_frame  # drop the last frame: it may be cut off
            media_s = self._media_s(cur, t, 0.0)
            if media_s >= MIN_KEPT_PARTIAL_S:
                self._complete(cur, media_s, done, size)
        self._reset_upstream()
        self._disc_pending = True
        self._rest = b""
        return done

    def window(self) -> list[Segment]:
        """The newest ``window`` retained segments, oldest first."""
        kept = list(self._kept)
        return kept[-self.window_size :]

    def get(self, seq: int) -> Segment | None:
        if not self._kept:
            return None
        i = seq - self._kept[0].seq
        return self._kept[i] if 0 <= i < len(self._kept) else None

    def discontinuity_sequence(self, seq: int) -> int:
        """EXT-X-DISCONTINUITY-SEQUENCE for a playlist starting at ``seq`` (RFC 8216 4.3.3.3):
        the discontinuity tags on segments before it, over the life of the channel."""
        return bisect.bisect_left(self._disc_seqs, seq)

    # --- scanning -----------------------------------------------------------------------

    def _scan(self, chunk: bytes | bytearray | memoryview) -> list[Segment]:
        if self._rest:
            chunk = self._rest + chunk
            self._rest = b""
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)
        if chunk and chunk[0] != SYNC_BYTE:  # lost packet alignment: skip to the next packet
            start = find_sync(chunk)
            chunk = chunk[start:] if start >= 0 else b""
        n = packet_floor(len(chunk))
        if n != len(chunk):
            self._rest = chunk[n:]
        view = memoryview(chunk)
        done: list[Segment] = []
        count = n // PACKET_SIZE
        pos = 0  # bytes before this are placed
        first = 0  # packets before this are scanned
        while first < count:
            masks = self._interest
            hits = ts_scan.interesting(chunk, first, count, masks)
            base, first = first, count
            while hits:
                bit = (hits & -hits).bit_length() - 1
                hits >>= (bit | 7) + 1  # drop this packet's byte and the ones below it
                index = base + (bit >> 3)
                base = index + 1
                p = index * PACKET_SIZE
                if p > pos:
                    self._place(view[pos:p])
                pid = ts_scan.pid_at(chunk, p)
                if pid == PAT_PID:
                    self._on_pat(chunk, p)
                    pos = p + PACKET_SIZE
                elif pid == self._pmt_pid:
                    self._on_pmt(chunk, p)
                    pos = p + PACKET_SIZE
                else:
                    self._on_video(chunk, p, done)
                    pos = p  # the PES packet itself goes with the bytes after it
                if self._interest is not masks:  # new PIDs: rescan the rest with them
                    first = index + 1
                    break
        if n > pos:
            self._place(view[pos:n])
        return done

    def _place(self, data: memoryview) -> None:
        cur = self._cur
        if cur is None:
            return  # waiting for an upstream's first keyframe: nothing is kept
        if self._pending:
            for table in self._pending:
                cur.parts.append(self._table_copy(table))
            cur.size += PACKET_SIZE * len(self._pending)
            self._pending.clear()
        cur.parts.append(data)
        cur.size += len(data)
        if cur.size > self._partial_limit:  # no video PES to cut at for this long: start over
            self._cur = None
            self._disc_pending = True

    def _table_copy(self, packet: bytes) -> bytes:
        pid = ts_scan.pid_at(packet, 0)
        cc = self._cc.get(pid, 0)
        self._cc[pid] = (cc + 1) & 0x0F
        return ts_scan.set_continuity(packet, cc)

    def _on_pat(self, buf: bytes, p: int) -> None:
        packet = buf[p : p + PACKET_SIZE]
        # A repeat of the table we hold (only the counter differs) needs no parsing.
        if packet[1] & 0x40 and (self._pat is None or packet[4:] != self._pat[4:]):
            pmt_pid = ts_scan.pmt_pid_of_pat(buf, p)
            if pmt_pid is None:
                return
            self._pat = packet
            if pmt_pid != self._pmt_pid:
                self._pmt_pid, self._pmt, self._video_pid = pmt_pid, None, -1
                self._interest = ts_scan.interest(pmt_pid, -1)
        if self._cur is not None:
            self._pending.append(packet)

    def _on_pmt(self, buf: bytes, p: int) -> None:
        packet = buf[p : p + PACKET_SIZE]
        if packet[1] & 0x40 and (self._pmt is None or packet[4:] != self._pmt[4:]):
            video = ts_scan.video_of_pmt(buf, p)
            if video is None:
                return
            self._pmt = packet
            if video[0] != self._video_pid:
                self._video_pid, self._video_type = video
                self._interest = ts_scan.interest(self._pmt_pid, self._video_pid)
        if self._cur is not None:
            self._pending.append(packet)

    def _on_video(self, buf: bytes, p: int, done: list[Segment]) -> None:
        pts, dts, es = ts_scan.pes_header(buf, p)
        t = dts if dts is not None else pts
        if ts_scan.random_access_at(buf, p):
            key = self._rai_seen = True
        else:
            key = (
                not self._rai_seen
                and es >= 0
                and ts_scan.starts_random_access(buf, es, p + PACKET_SIZE, self._video_type)
            )
        if t is not None and self._last_t is not None:
            step = (t - self._last_t) % PTS_WRAP
            if 0 < step < PTS_HZ:  # a sane frame step (not a jump): remember it
                self._frame_s = step / PTS_HZ
        if self._seed is not None:
            self._seed_clock(t, p)
        if key and t is not None:
            if self._key_t is not None:
                gap = (t - self._key_t) % PTS_WRAP
                if 0 < gap < MAX_GOP_TICKS:
                    self._gop_s = gap / PTS_HZ
            self._key_t = t
        cur = self._cur
        if cur is None:
            if key and self._pat is not None and self._pmt is not None:
                self._start(t, key=True)
        else:
            elapsed = self._media_s(cur, t, 0.0)
            # the keyframe nearest the target: here, unless the next one (a GOP later) is nearer
            # and still within max_s
            gop = self._gop_s
            if (
                key
                and elapsed > 0
                and (elapsed + gop / 2 >= self.target_s - 1e-6 or elapsed + gop > self.max_s)
            ) or (elapsed > 0 and elapsed + self._frame_s > self.max_s + 1e-6):
                self._complete(cur, elapsed, done)
                self._start(t, key=key)
            else:
                cur.last_frame = (cur.size + PACKET_SIZE * len(self._pending), t)
        self._last_t = t

    def _seed_clock(self, t: int | None, p: int) -> None:
        """While seeding: this packet's estimated arrival, by media time (or byte offset)."""
        assert self._seed is not None
        base_mono, base_wall, age_s, t_first = self._seed
        if t is None:  # without timestamps, spread the age over the bytes
            offset = age_s * p / self._seed_len
        else:
            if t_first < 0:
                self._seed = (base_mono, base_wall, age_s, t)
                t_first = t
            offset = ((t - t_first) % PTS_WRAP) / PTS_HZ
        offset = min(offset, age_s)
        self._now = base_mono + offset
        self._wall = base_wall + timedelta(seconds=offset)

    def _media_s(self, cur: _Partial, t: int | None, extra_s: float) -> float:
        """Media seconds from the segment's start to ``t`` (+ ``extra_s``), or by wall clock."""
        if t is not None and cur.t0 is not None:
            ticks = (t - cur.t0) % PTS_WRAP
            if ticks < PTS_WRAP // 2:  # else it went backwards: not a duration
                return ticks / PTS_HZ + extra_s
        return max(self._now - cur.entered_at, 0.0)

    # --- segments -----------------------------------------------------------------------

    def _start(self, t: int | None, *, key: bool) -> None:
        self._pending.clear()  # the stream's own tables right here: the copies replace them
        assert self._pat is not None
        assert self._pmt is not None
        cur = _Partial(t, self._now, self._program_time(t), key, self._disc_pending)
        self._disc_pending = False
        cur.parts.append(self._table_copy(self._pat))
        cur.parts.append(self._table_copy(self._pmt))
        cur.size = 2 * PACKET_SIZE
        self._cur = cur

    def _program_time(self, t: int | None) -> datetime:
        """Wall clock of a segment start, advanced by media time so it does not jitter with
        chunk arrival; re-anchored when it drifts from the wall clock."""
        anchor = self._anchor
        if t is not None and anchor is not None:
            est = anchor[0] + timedelta(seconds=((t - anchor[1]) % PTS_WRAP) / PTS_HZ)
            if abs((est - self._wall).total_seconds()) <= PROGRAM_TIME_SLACK_S:
                return est
        self._anchor = None if t is None else (self._wall, t)
        return self._wall

    def _complete(
        self, cur: _Partial, media_s: float, done: list[Segment], size: int | None = None
    ) -> None:
        data = b"".join(cur.parts)
        if size is not None:
            data = data[:size]
        cur.parts.clear()
        duration = min(max(media_s, 0.001), self.max_s)
        seg = Segment(
            seq=self.next_seq,
            data=data,
            duration_s=duration,
            program_time=cur.program_time,
            discontinuity=cur.disc,
            keyframe=cur.keyframe,
            entered_at=cur.entered_at,
            listed_at=self._now,
        )
        self.next_seq += 1
        if seg.discontinuity:
            self._disc_seqs.append(seg.seq)
        self._kept.append(seg)
        self.bytes_held += len(data)
        self._evict()
        self.bandwidth = max(int(len(s.data) * 8 / s.duration_s) for s in self._kept)
        self._cur = None
        done.append(seg)

    def _evict(self) -> None:
        kept = self._kept
        while len(kept) > 1 and (
            len(kept) > self.window_size + KEEP_OLDER or self.bytes_held > self.max_bytes
        ):
            self.bytes_held -= len(kept.popleft().data)
