"""Read the few MPEG-TS fields the HLS segmenter needs, straight from packet bytes.

Every reader takes a buffer of whole 188-byte packets and the offset ``p`` of one packet, returns
None (never raises) when the bytes do not hold what it looks for, and allocates nothing but its
result: the segmenter calls them only for PAT, PMT and video PES-start packets, which it finds per
chunk with C-level strided slices of the header bytes (``interesting``) instead of a Python loop
over packets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from acefleet.mpegts import PACKET_SIZE

PTS_WRAP = 1 << 33  # PTS/DTS are 33-bit counters of a 90 kHz clock
PTS_HZ = 90_000
PAT_PID = 0

# stream_type values of the video streams we cut on: MPEG-1, MPEG-2, H.264, HEVC.
MPEG1_VIDEO, MPEG2_VIDEO, H264_VIDEO, HEVC_VIDEO = 0x01, 0x02, 0x1B, 0x24
VIDEO_STREAM_TYPES = frozenset({MPEG1_VIDEO, MPEG2_VIDEO, H264_VIDEO, HEVC_VIDEO})


@dataclass(frozen=True, slots=True)
class Interest:
    """Translate tables that turn a chunk's per-packet header bytes 1 and 2 into bit masks whose
    AND is non-zero exactly for the packets the segmenter reads: every PAT/PMT packet (a
    continuation packet too: its counter is rewritten) and every video PES start. Packets flagged
    with a transport error never match. Bit 0 is the PAT, bit 1 the PMT, bit 2 the video.
    """

    byte1: bytes
    byte2: bytes


@lru_cache(maxsize=64)
def interest(pmt_pid: int, video_pid: int) -> Interest:
    """The masks for these PIDs; -1 means "not known yet"."""
    t1 = bytearray(256)
    t2 = bytearray(256)
    wanted = [(PAT_PID, 1, True), (pmt_pid, 2, True), (video_pid, 4, False)]
    for pid, bit, table in wanted:
        if pid < 0:
            continue
        for b in range(256):
            if b & 0x80 or (b & 0x1F) != pid >> 8:
                continue
            if table or b & 0x40:  # tables: any packet; video: payload_unit_start only
                t1[b] |= bit
        t2[pid & 0xFF] |= bit
    return Interest(bytes(t1), bytes(t2))


def interesting(buf: bytes, first: int, count: int, masks: Interest) -> int:
    """A bit set of the packets ``first .. count - 1`` in ``buf`` that ``masks`` selects: packet
    ``first + i`` is selected when byte ``i`` of the result (little-endian) is non-zero."""
    lo = first * PACKET_SIZE
    hi = count * PACKET_SIZE
    b1 = buf[lo + 1 : hi : PACKET_SIZE].translate(masks.byte1)
    b2 = buf[lo + 2 : hi : PACKET_SIZE].translate(masks.byte2)
    return int.from_bytes(b1, "little") & int.from_bytes(b2, "little")


def pid_at(buf: bytes, p: int) -> int:
    return ((buf[p + 1] & 0x1F) << 8) | buf[p + 2]


def random_access_at(buf: bytes, p: int) -> bool:
    """The adaptation field's random_access_indicator (a keyframe starts in this packet)."""
    return bool(buf[p + 3] & 0x20) and buf[p + 4] > 0 and bool(buf[p + 5] & 0x40)


def payload_start(buf: bytes, p: int) -> int:
    """Offset of the packet's payload, or -1 when it carries none."""
    flags = buf[p + 3]
    if not flags & 0x10:
        return -1
    start = p + 4
    if flags & 0x20:
        start += 1 + buf[p + 4]
    return start if start < p + PACKET_SIZE else -1


def set_continuity(packet: bytes, counter: int) -> bytes:
    """A copy of ``packet`` whose continuity counter is ``counter`` (mod 16)."""
    out = bytearray(packet)
    out[3] = (out[3] & 0xF0) | (counter & 0x0F)
    return bytes(out)


def _section(buf: bytes, p: int, table_id: int) -> tuple[int, int] | None:
    """(start, end) of the single-packet PSI section with ``table_id`` in the packet at ``p``."""
    if not buf[p + 1] & 0x40:
        return None
    start = payload_start(buf, p)
    if start < 0:
        return None
    start += 1 + buf[start]  # pointer_field
    end = p + PACKET_SIZE
    if start + 3 > end or buf[start] != table_id:
        return None
    length = ((buf[start + 1] & 0x0F) << 8) | buf[start + 2]
    if start + 3 + length > end or length < 9:
        return None
    return start, start + 3 + length


def pmt_pid_of_pat(buf: bytes, p: int) -> int | None:
    """The PMT PID of the first program the PAT at ``p`` lists (program 0 is the NIT)."""
    sec = _section(buf, p, 0x00)
    if sec is None:
        return None
    start, end = sec
    for i in range(start + 8, end - 4 - 3, 4):
        if (buf[i] << 8) | buf[i + 1]:
            return ((buf[i + 2] & 0x1F) << 8) | buf[i + 3]
    return None


def video_of_pmt(buf: bytes, p: int) -> tuple[int, int] | None:
    """(PID, stream_type) of the first video stream the PMT at ``p`` lists."""
    sec = _section(buf, p, 0x02)
    if sec is None:
        return None
    start, end = sec
    i = start + 12 + (((buf[start + 10] & 0x0F) << 8) | buf[start + 11])
    while i + 5 <= end - 4:
        stream_type = buf[i]
        if stream_type in VIDEO_STREAM_TYPES:
            return ((buf[i + 1] & 0x1F) << 8) | buf[i + 2], stream_type
        i += 5 + (((buf[i + 3] & 0x0F) << 8) | buf[i + 4])
    return None


def _timestamp(buf: bytes, o: int) -> int:
    return (
        ((buf[o] >> 1) & 0x07) << 30
        | buf[o + 1] << 22
        | (buf[o + 2] >> 1) << 15
        | buf[o + 3] << 7
        | buf[o + 4] >> 1
    )


def pes_header(buf: bytes, p: int) -> tuple[int | None, int | None, int]:
    """(PTS, DTS, offset of the elementary-stream bytes) of the PES starting at ``p``.

    The offset is -1 when the packet does not start a PES with an optional header.
    """
    start = payload_start(buf, p)
    end = p + PACKET_SIZE
    if start < 0 or start + 9 > end or buf[start : start + 3] != b"\x00\x00\x01":
        return None, None, -1
    flags = buf[start + 7] >> 6
    es = start + 9 + buf[start + 8]
    pts = dts = None
    if flags >= 2 and start + 14 <= end:
        pts = _timestamp(buf, start + 9)
        if flags == 3 and start + 19 <= end:
            dts = _timestamp(buf, start + 14)
    return pts, dts, es if es < end else -1


def starts_random_access(buf: bytes, es: int, end: int, stream_type: int) -> bool:
    """Whether the elementary-stream bytes ``buf[es:end]`` hold a picture a decoder can start at.

    H.264: an IDR slice (NAL 5) or SPS (7); HEVC: an IRAP picture (16-21) or VPS (32); MPEG-1/2:
    a sequence header. Used only for streams that never set random_access_indicator.
    """
    i = buf.find(b"\x00\x00\x01", es, end)
    while 0 <= i < end - 3:
        code = buf[i + 3]
        if stream_type == H264_VIDEO:
            if code & 0x1F in (5, 7):
                return True
        elif stream_type == HEVC_VIDEO:
            nal = (code >> 1) & 0x3F
            if 16 <= nal <= 21 or nal == 32:
                return True
        elif code == 0xB3:  # MPEG-1/2 sequence_header_code
            return True
        i = buf.find(b"\x00\x00\x01", i + 3, end)
    return False
