"""The shared stream buffer of one channel: recent packet-aligned chunks plus where a decoder can
start (the latest keyframe, PAT and PMT).

Every chunk is one ``bytes`` object handed unchanged to every viewer's transport, so fan-out
never copies per viewer. Offsets are absolute stream positions (they keep growing across an
upstream replacement), so a viewer's cursor stays meaningful whatever the buffer evicts.

The scan for keyframes and PSI runs once per chunk, on strided slices (one byte per packet)
translated by lookup tables and combined as big integers: C speed, no per-packet Python loop.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from functools import lru_cache

from acefleet.mpegts import PACKET_SIZE, SYNC_BYTE, packet_floor

_VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xEA})


def _table(pred: object) -> bytes:
    return bytes(1 if pred(b) else 0 for b in range(256))  # type: ignore[operator]


_ADAPTATION = _table(lambda b: b & 0x20)
_NONZERO = _table(lambda b: b)
_RAI = _table(lambda b: b & 0x40)
_PUSI = _table(lambda b: b & 0x40)


def _flags(column: bytes, table: bytes) -> int:
    return int.from_bytes(column.translate(table), "big")


@lru_cache(maxsize=64)
def _pid_tables(pid: int) -> tuple[bytes, bytes]:
    return _table(lambda b: (b & 0x1F) == (pid >> 8)), _table(lambda b: b == (pid & 0xFF))


def _pid_mask(chunk: bytes, pid: int) -> int:
    hi, lo = _pid_tables(pid)
    return _flags(chunk[1::PACKET_SIZE], hi) & _flags(chunk[2::PACKET_SIZE], lo)


def _last_set(mask: int, packets: int) -> int:
    """Index of the last packet whose flag byte is set in ``mask`` (big-endian, one byte each)."""
    lowest_bit = (mask & -mask).bit_length() - 1
    return packets - 1 - lowest_bit // 8


def _section(packet: bytes) -> bytes | None:
    """The PSI section starting in ``packet`` (pointer field honoured), or None."""
    start = 4
    if packet[3] & 0x20:
        start += 1 + packet[4]
    if start >= PACKET_SIZE:
        return None
    start += 1 + packet[start]
    return packet[start:] if start < PACKET_SIZE else None


def pmt_pid_of(pat: bytes) -> int | None:
    sec = _section(pat)
    if sec is None or len(sec) < 12 or sec[0] != 0x00:
        return None
    end = min(len(sec), 3 + (((sec[1] & 0x0F) << 8) | sec[2]) - 4)
    for i in range(8, end - 3, 4):
        if (sec[i] << 8) | sec[i + 1]:
            return ((sec[i + 2] & 0x1F) << 8) | sec[i + 3]
    return None


def video_pid_of(pmt: bytes) -> int | None:
    sec = _section(pmt)
    if sec is None or len(sec) < 16 or sec[0] != 0x02:
        return None
    end = min(len(sec), 3 + (((sec[1] & 0x0F) << 8) | sec[2]) - 4)
    i = 12 + (((sec[10] & 0x0F) << 8) | sec[11])
    while i + 5 <= end:
        if sec[i] in _VIDEO_STREAM_TYPES:
            return ((sec[i + 1] & 0x1F) << 8) | sec[i + 2]
        i += 5 + (((sec[i + 3] & 0x0F) << 8) | sec[i + 4])
    return None


class StreamBuffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.chunks: deque[bytes] = deque()
        self.starts: deque[int] = deque()
        self.head = 0  # absolute offset just past the newest byte
        self.tail = 0  # absolute offset of the oldest byte still held
        self.keyframes: deque[int] = deque()
        # PAT+PMT as they stood just before each keyframe: a joiner gets exactly these copies, so
        # the next in-stream PAT/PMT continues their continuity counters (TR 101 290 1.4).
        self.tables: dict[int, bytes] = {}
        self.pat: bytes | None = None
        self.pmt: bytes | None = None
        self.pmt_pid: int | None = None
        self.video_pid: int | None = None

    @property
    def size(self) -> int:
        return self.head - self.tail

    def append(self, chunk: bytes) -> None:
        """Add a packet-aligned chunk (len a multiple of 188, starting with a sync byte)."""
        self._scan(chunk)
        self.chunks.append(chunk)
        self.starts.append(self.head)
        self.head += len(chunk)
        while len(self.chunks) > 1 and self.head - self.starts[1] >= self.capacity:
            self.chunks.popleft()
            self.starts.popleft()
            self.tail = self.starts[0]
        while self.keyframes and self.keyframes[0] < self.tail:
            self.tables.pop(self.keyframes.popleft(), None)

    def release(self) -> None:
        """Drop every chunk now (the channel ended), whoever still refers to this buffer."""
        self.chunks.clear()
        self.starts.clear()
        self.keyframes.clear()
        self.tables.clear()
        self.tail = self.head

    def since(self, offset: int) -> list[bytes]:
        """The bytes from ``offset`` (>= tail) to the head, as the shared chunks where possible."""
        if offset >= self.head:
            return []
        i = max(bisect_right(self.starts, offset) - 1, 0)
        out = list(self.chunks)[i:] if i else list(self.chunks)
        skip = offset - self.starts[i]
        if skip:
            out[0] = out[0][skip:]
        return out

    def join_point(self, max_bytes: int) -> int:
        """Where a new or skipped viewer starts: the latest keyframe within ``max_bytes`` of the
        head, else the packet boundary ``max_bytes`` back (or the tail)."""
        if self.keyframes and self.head - self.keyframes[-1] <= max_bytes:
            return self.keyframes[-1]
        # chunks are packet-aligned from offset 0, so multiples of 188 are packet boundaries
        return self.head - packet_floor(min(max_bytes, self.size))

    def start_prefix(self, offset: int) -> bytes:
        """PAT and PMT to send before data starting at ``offset`` at a keyframe, so a decoder
        can start at once; empty when the stream has shown none yet or not at a keyframe."""
        return self.tables.get(offset, b"")

    def _scan(self, chunk: bytes) -> None:
        packets = len(chunk) // PACKET_SIZE
        b1 = chunk[1::PACKET_SIZE]
        prev_pat, prev_pmt = self.pat, self.pmt
        pmt_mask = 0
        pat_mask = _flags(b1, _PAT_HI) & _flags(chunk[2::PACKET_SIZE], _ZERO) & _flags(b1, _PUSI)
        if pat_mask:
            i = _last_set(pat_mask, packets) * PACKET_SIZE
            self.pat = chunk[i : i + PACKET_SIZE]
            pmt_pid = pmt_pid_of(self.pat)
            if pmt_pid is not None and pmt_pid != self.pmt_pid:
                self.pmt_pid, self.video_pid, self.pmt = pmt_pid, None, None
                prev_pmt = None  # the old PMT no longer describes the programme
        if self.pmt_pid is not None:
            pmt_mask = _pid_mask(chunk, self.pmt_pid) & _flags(b1, _PUSI)
            if pmt_mask:
                i = _last_set(pmt_mask, packets) * PACKET_SIZE
                self.pmt = chunk[i : i + PACKET_SIZE]
                self.video_pid = video_pid_of(self.pmt)
        rai = (
            _flags(chunk[3::PACKET_SIZE], _ADAPTATION)
            & _flags(chunk[4::PACKET_SIZE], _NONZERO)
            & _flags(chunk[5::PACKET_SIZE], _RAI)
            & _flags(b1, _PUSI)
        )
        if rai and self.video_pid is not None:
            rai &= _pid_mask(chunk, self.video_pid)
        if rai:
            k = _last_set(rai, packets)
            offset = self.head + k * PACKET_SIZE
            self.keyframes.append(offset)
            pat = _last_before(chunk, pat_mask, k, packets) or prev_pat
            pmt = _last_before(chunk, pmt_mask, k, packets) or prev_pmt
            if pat is not None and pmt is not None:
                self.tables[offset] = pat + pmt


def _last_before(chunk: bytes, mask: int, k: int, packets: int) -> bytes | None:
    """The last packet flagged in ``mask`` that comes before packet ``k`` of ``chunk``."""
    shift = (packets - k) * 8
    before = (mask >> shift) << shift
    if not before:
        return None
    i = _last_set(before, packets) * PACKET_SIZE
    return chunk[i : i + PACKET_SIZE]


_PAT_HI = _table(lambda b: (b & 0x1F) == 0)
_ZERO = _table(lambda b: b == 0)


def aligned(chunk: bytes) -> bool:
    """Cheap check that a chunk starts and ends on packet boundaries."""
    return (
        len(chunk) % PACKET_SIZE == 0
        and chunk[0] == SYNC_BYTE
        and chunk[len(chunk) - PACKET_SIZE] == SYNC_BYTE
    )
