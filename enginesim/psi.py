"""Build MPEG-TS packets: PAT, PMT and the header/adaptation fields the synthetic feed needs."""

from __future__ import annotations

from functools import cache

from acefleet.mpegts import PACKET_SIZE, SYNC_BYTE

PAT_PID = 0x0000
PMT_PID = 0x1000
VIDEO_PID = 0x0100
PROGRAM_NUMBER = 1
STREAM_TYPE_H264 = 0x1B


def _crc32_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc32_table()


def crc32_mpeg2(data: bytes) -> int:
    """The CRC-32/MPEG-2 that closes every PSI section."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def header(pid: int, cc: int, *, pusi: bool, adaptation: bool, payload: bool = True) -> bytes:
    afc = (0x20 if adaptation else 0) | (0x10 if payload else 0)
    return bytes([SYNC_BYTE, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF, afc | (cc & 0x0F)])


def _section_packet(pid: int, cc: int, table_id: int, ext: int, body: bytes) -> bytes:
    # section_length counts from after the length field: ext(2) + ver(1) + sec(2) + body + crc(4)
    length = 5 + len(body) + 4
    section = (
        bytes([table_id, 0xB0 | (length >> 8), length & 0xFF, ext >> 8, ext & 0xFF, 0xC1, 0, 0])
        + body
    )
    section += crc32_mpeg2(section).to_bytes(4, "big")
    packet = header(pid, cc, pusi=True, adaptation=False) + b"\x00" + section
    return packet + b"\xff" * (PACKET_SIZE - len(packet))


@cache
def pat_packet(cc: int) -> bytes:
    body = PROGRAM_NUMBER.to_bytes(2, "big") + bytes([0xE0 | (PMT_PID >> 8), PMT_PID & 0xFF])
    return _section_packet(PAT_PID, cc, 0x00, 1, body)


@cache
def pmt_packet(cc: int) -> bytes:
    body = bytes([0xE0 | (VIDEO_PID >> 8), VIDEO_PID & 0xFF, 0xF0, 0x00])  # PCR PID, no info
    body += bytes([STREAM_TYPE_H264, 0xE0 | (VIDEO_PID >> 8), VIDEO_PID & 0xFF, 0xF0, 0x00])
    return _section_packet(PMT_PID, cc, 0x02, PROGRAM_NUMBER, body)


def pcr_field(pcr_27mhz: int) -> bytes:
    base, ext = divmod(pcr_27mhz, 300)
    base &= (1 << 33) - 1
    return bytes(
        [
            (base >> 25) & 0xFF,
            (base >> 17) & 0xFF,
            (base >> 9) & 0xFF,
            (base >> 1) & 0xFF,
            ((base & 1) << 7) | 0x7E | (ext >> 8),
            ext & 0xFF,
        ]
    )


def pes_header(pts_90khz: int) -> bytes:
    """A video PES header (length 0 = unbounded, as for video) with a PTS."""
    pts = pts_90khz & ((1 << 33) - 1)
    pts_bytes = bytes(
        [
            0x21 | ((pts >> 29) & 0x0E),
            (pts >> 22) & 0xFF,
            0x01 | ((pts >> 14) & 0xFE),
            (pts >> 7) & 0xFF,
            0x01 | ((pts << 1) & 0xFE),
        ]
    )
    return b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05" + pts_bytes


def video_start_packet(cc: int, pcr_27mhz: int, *, keyframe: bool, fill: int) -> bytes:
    """First packet of a PES: adaptation field with PCR (and random access on keyframes)."""
    flags = 0x10 | (0x40 if keyframe else 0)
    af = bytes([flags]) + pcr_field(pcr_27mhz)
    hdr = header(VIDEO_PID, cc, pusi=True, adaptation=True)
    pes = pes_header(pcr_27mhz // 300 + 45_000)  # PTS 0.5 s after PCR, like an encoder's delay
    # fill payload with a NAL-ish start so dumps look like video; the rest is filler
    payload = pes + b"\x00\x00\x00\x01\x09\xf0"
    used = 4 + 1 + len(af) + len(payload)
    return hdr + bytes([len(af)]) + af + payload + bytes([fill]) * (PACKET_SIZE - used)


def video_packet(cc: int, fill: int) -> bytes:
    return header(VIDEO_PID, cc, pusi=False, adaptation=False) + bytes([fill]) * (PACKET_SIZE - 4)
