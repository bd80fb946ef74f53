"""MPEG-TS facts and small helpers shared by the simulator and the proxy."""

from __future__ import annotations

PACKET_SIZE = 188
SYNC_BYTE = 0x47
NULL_PID = 0x1FFF


def packet_floor(n: int) -> int:
    """The largest multiple of the packet size that is <= n."""
    return n - (n % PACKET_SIZE)


def find_sync(buf: bytes | bytearray | memoryview, start: int = 0, confirm: int = 3) -> int:
    """Offset of the first packet boundary at or after ``start``, or -1.

    A boundary is a sync byte followed by ``confirm - 1`` more sync bytes at packet strides
    (fewer if the buffer ends first), so a 0x47 inside a payload is not mistaken for one.
    """
    n = len(buf)
    i = start
    while i < n:
        if buf[i] == SYNC_BYTE:
            ok = True
            for k in range(1, confirm):
                j = i + k * PACKET_SIZE
                if j >= n:
                    break
                if buf[j] != SYNC_BYTE:
                    ok = False
                    break
            if ok:
                return i
        i += 1
    return -1


def pid_of(packet: bytes | memoryview) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def payload_unit_start(packet: bytes | memoryview) -> bool:
    return bool(packet[1] & 0x40)


def continuity_counter(packet: bytes | memoryview) -> int:
    return packet[3] & 0x0F


def has_adaptation(packet: bytes | memoryview) -> bool:
    return bool(packet[3] & 0x20)


def random_access(packet: bytes | memoryview) -> bool:
    """True when the adaptation field sets random_access_indicator (a keyframe starts here)."""
    if not has_adaptation(packet) or packet[4] == 0:
        return False
    return bool(packet[5] & 0x40)


def pcr_of(packet: bytes | memoryview) -> int | None:
    """The PCR in 27 MHz units, or None when the packet carries none."""
    if not has_adaptation(packet) or packet[4] < 7 or not packet[5] & 0x10:
        return None
    b = packet[6:12]
    base = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
    ext = ((b[4] & 0x01) << 8) | b[5]
    return base * 300 + ext
