"""Joining a new upstream onto what viewers already got: the splice rule, and gap filler packets.

Two engines of one channel do not share timestamps (each session starts its own clock) nor
continuity counters, so a splice is never a timestamp-matched join: it is a clean discontinuity
that players accept.

1. The new bytes start at a keyframe, with the PAT and PMT that stood before it (a decoder needs
   nothing older), when the source has shown one (a promoted standby always has).
2. Before them, one adaptation-field-only packet per PID of the new bytes with
   ``discontinuity_indicator`` set: the continuity counter of each PID may jump there, and on the
   PCR PID a new time base starts (ISO/IEC 13818-1 2.4.3.5). Its counter is the one before the
   PID's first new packet, so the counters are continuous again from there on.
3. Per PID, packets before its first unit start (a PES or section begun before the keyframe)
   are dropped: they would be glued onto the old source's last, cut-off unit.
4. Null packets (PID 0x1FFF) are dropped too; a gap fill sends its own.
5. A PID the old source had that the new bytes do not show yet (a table sent every few seconds,
   like the SDT) gets its mark just before its first packet from the new source
   (:class:`LateMarks`), for at most ``LATE_MARKS_S`` after the splice.

``splice`` runs once per splice over about one keyframe interval of packets (a Python loop, a
few milliseconds); ``LateMarks`` looks at each chunk for a few seconds after a splice with
C-level byte searches; nothing here runs on the normal path.
"""

from __future__ import annotations

import time

from acefleet.mpegts import NULL_PID, PACKET_SIZE, SYNC_BYTE

LATE_MARKS_S = 10.0

_NULL_PACKET = bytes((SYNC_BYTE, NULL_PID >> 8, NULL_PID & 0xFF, 0x10)) + b"\xff" * 184


def discontinuity_packet(pid: int, counter: int) -> bytes:
    """An adaptation-field-only packet on ``pid`` with discontinuity_indicator set (rule 2)."""
    head = (SYNC_BYTE, (pid >> 8) & 0x1F, pid & 0xFF, 0x20 | (counter & 0x0F), 183, 0x80)
    return bytes(head) + b"\xff" * 182


def null_packets(count: int) -> bytes:
    """``count`` MPEG-TS null packets: bytes on the wire that every demuxer skips."""
    return _NULL_PACKET * count


def splice(tables: bytes, data: bytes) -> bytes:
    """``tables`` (PAT + PMT, may be empty) then ``data`` (packet-aligned, from a keyframe),
    marked as a discontinuity for viewers that had another source before (rules 2 to 4)."""
    stream = tables + data
    marks: list[bytes] = []
    kept: list[bytes] = []
    started: set[int] = set()
    for at in range(0, len(stream) - PACKET_SIZE + 1, PACKET_SIZE):
        packet = stream[at : at + PACKET_SIZE]
        if packet[0] != SYNC_BYTE:
            continue
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid == NULL_PID:
            continue
        if pid not in started:
            if not packet[1] & 0x40:  # continues a unit begun before the splice (rule 3)
                continue
            started.add(pid)
            counter = packet[3] & 0x0F
            # an adaptation-only packet does not advance the counter; one with payload does
            marks.append(discontinuity_packet(pid, counter - 1 if packet[3] & 0x10 else counter))
        kept.append(packet)
    return b"".join(marks) + b"".join(kept)


def pids_of(data: bytes) -> set[int]:
    """Every PID in packet-aligned ``data`` but the null PID (from the header columns)."""
    pairs = set(zip(data[1::PACKET_SIZE], data[2::PACKET_SIZE], strict=False))
    return {((hi & 0x1F) << 8) | lo for hi, lo in pairs} - {NULL_PID}


class LateMarks:
    """Rule 5: the PIDs still owed a discontinuity mark after a splice, until ``LATE_MARKS_S``."""

    def __init__(self, pids: set[int]) -> None:
        self.pids = set(pids)
        self.until = time.monotonic() + LATE_MARKS_S

    @property
    def done(self) -> bool:
        return not self.pids or time.monotonic() > self.until

    def apply(self, chunk: bytes) -> bytes:
        """``chunk`` (packet-aligned) with a mark before the first packet of each owed PID."""
        inserts: list[tuple[int, bytes]] = []
        lows = chunk[2::PACKET_SIZE]
        for pid in tuple(self.pids):
            i = _first_packet(chunk, lows, pid)
            if i < 0:
                continue
            self.pids.discard(pid)
            at = i * PACKET_SIZE
            counter = chunk[at + 3] & 0x0F
            if chunk[at + 3] & 0x10:
                counter -= 1
            inserts.append((at, discontinuity_packet(pid, counter)))
        if not inserts:
            return chunk
        parts: list[bytes] = []
        last = 0
        for at, mark in sorted(inserts):
            parts += (chunk[last:at], mark)
            last = at
        parts.append(chunk[last:])
        return b"".join(parts)


def _first_packet(chunk: bytes, lows: bytes, pid: int) -> int:
    """Index of the first packet of ``pid`` in ``chunk`` (``lows``: its byte-2 column), or -1."""
    low, high = pid & 0xFF, pid >> 8
    i = lows.find(low)
    while i >= 0:
        if chunk[i * PACKET_SIZE + 1] & 0x1F == high:
            return i
        i = lows.find(low, i + 1)
    return -1
