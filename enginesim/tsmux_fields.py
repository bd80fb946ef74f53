"""Read and write the MPEG-TS fields a looping feed rewrites: PTS/DTS and the PSI tables.

The PCR is read with ``acefleet.mpegts.pcr_of`` and written with ``enginesim.psi.pcr_field``.

Offsets are absolute positions in a buffer of whole 188-byte packets; every reader here works on
one packet at ``pos`` and raises ``ClipError`` with the packet's index when the bytes disagree
with ISO/IEC 13818-1, so a bad clip is refused with a precise reason instead of producing a
stream that players choke on.
"""

from __future__ import annotations

from dataclasses import dataclass

from acefleet.mpegts import PACKET_SIZE, SYNC_BYTE

PTS_WRAP = 1 << 33  # PTS/DTS and the PCR base are 33-bit counters of a 90 kHz clock
PCR_PER_PTS = 300

# PES stream ids without the optional header (no PTS/DTS): program_stream_map, padding,
# private_stream_2, ECM, EMM, directory, DSMCC, H.222.1 type E.
_NO_PES_HEADER = frozenset({0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF})
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24})  # MPEG-1/2, MPEG-4, H.264, HEVC


class ClipError(ValueError):
    """A clip that cannot be looped as a live stream (the message says which packet and why)."""


def payload_offset(buf: bytes | bytearray, pos: int) -> int:
    """Absolute offset of the packet's payload, or -1 when it carries none."""
    flags = buf[pos + 3]
    if not flags & 0x10:
        return -1
    start = pos + 4
    if flags & 0x20:
        start += 1 + buf[pos + 4]
    if start > pos + PACKET_SIZE:
        raise ClipError(f"packet at byte {pos}: adaptation field runs past the packet")
    return start if start < pos + PACKET_SIZE else -1


def check_packets(buf: bytes) -> int:
    """The number of packets in ``buf``; refuses a partial packet or a lost sync byte."""
    if not buf or len(buf) % PACKET_SIZE:
        raise ClipError(f"{len(buf)} bytes is not a whole number of 188-byte TS packets")
    count = len(buf) // PACKET_SIZE
    for i in range(count):
        if buf[i * PACKET_SIZE] != SYNC_BYTE:
            raise ClipError(f"packet {i}: sync byte 0x{buf[i * PACKET_SIZE]:02x}, not 0x47")
    return count


# --- PTS / DTS -------------------------------------------------------------------------------


def read_timestamp(buf: bytes | bytearray, off: int) -> int:
    b = buf[off : off + 5]
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def write_timestamp(buf: bytearray, off: int, ts: int) -> None:
    """Rewrite a 5-byte PTS/DTS field in place, keeping its 4-bit prefix and marker bits."""
    ts %= PTS_WRAP
    buf[off] = (buf[off] & 0xF0) | ((ts >> 29) & 0x0E) | 0x01
    buf[off + 1] = (ts >> 22) & 0xFF
    buf[off + 2] = ((ts >> 14) & 0xFE) | 0x01
    buf[off + 3] = (ts >> 7) & 0xFF
    buf[off + 4] = ((ts << 1) & 0xFE) | 0x01


@dataclass(frozen=True)
class PesTimes:
    """Where a PES header's timestamps sit; ``dts_off`` is -1 when the header has no DTS."""

    pts_off: int
    dts_off: int


def pes_times(buf: bytes | bytearray, pos: int) -> PesTimes | None:
    """The PTS/DTS fields of the PES starting in the packet at ``pos`` (payload_unit_start set)."""
    start = payload_offset(buf, pos)
    if start < 0:
        return None
    end = pos + PACKET_SIZE
    if end - start < 9 or buf[start : start + 3] != b"\x00\x00\x01":
        raise ClipError(f"packet at byte {pos}: payload_unit_start without a PES start code")
    if buf[start + 3] in _NO_PES_HEADER:
        return None
    flags = buf[start + 7] >> 6
    if flags in (0, 1):  # 1 is forbidden; 0 means no timestamps
        return None
    if start + 9 + (10 if flags == 3 else 5) > end:
        raise ClipError(f"packet at byte {pos}: PES header split across packets")
    return PesTimes(start + 9, start + 14 if flags == 3 else -1)


# --- PSI -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """What the feed needs from PAT and PMT: which PIDs are tables, clock, video and other ES."""

    pmt_pid: int
    pcr_pid: int
    video_pid: int
    other_es_pids: tuple[int, ...]


def _section(buf: bytes | bytearray, pos: int, table_id: int) -> bytes:
    start = payload_offset(buf, pos)
    if start < 0 or not buf[pos + 1] & 0x40:
        raise ClipError(f"packet at byte {pos}: table without payload_unit_start")
    start += 1 + buf[start]  # pointer_field
    end = pos + PACKET_SIZE
    if start + 3 > end or buf[start] != table_id:
        raise ClipError(f"packet at byte {pos}: expected table_id {table_id}")
    length = ((buf[start + 1] & 0x0F) << 8) | buf[start + 2]
    if start + 3 + length > end:
        raise ClipError(f"packet at byte {pos}: table spans packets (not supported)")
    return bytes(buf[start : start + 3 + length])


def parse_pat(buf: bytes | bytearray, pos: int) -> int:
    """The PMT PID of the first program in the PAT at ``pos``."""
    sec = _section(buf, pos, 0x00)
    for i in range(8, len(sec) - 4, 4):
        program = (sec[i] << 8) | sec[i + 1]
        if program != 0:  # 0 points at the network information table
            return ((sec[i + 2] & 0x1F) << 8) | sec[i + 3]
    raise ClipError(f"packet at byte {pos}: PAT lists no program")


def parse_pmt(buf: bytes | bytearray, pos: int, pmt_pid: int) -> Program:
    sec = _section(buf, pos, 0x02)
    pcr_pid = ((sec[8] & 0x1F) << 8) | sec[9]
    i = 12 + (((sec[10] & 0x0F) << 8) | sec[11])
    video: list[int] = []
    others: list[int] = []
    while i + 5 <= len(sec) - 4:
        pid = ((sec[i + 1] & 0x1F) << 8) | sec[i + 2]
        (video if sec[i] in VIDEO_STREAM_TYPES else others).append(pid)
        i += 5 + (((sec[i + 3] & 0x0F) << 8) | sec[i + 4])
    if len(video) != 1:
        raise ClipError(f"PMT at byte {pos}: {len(video)} video streams, the feed needs exactly 1")
    return Program(pmt_pid, pcr_pid, video[0], tuple(others))
