"""The media source seam: a channel is an endless sequence of chunks of TS packets.

``enginesim.clip_feed.make_feed`` implements real H.264/AAC clips against :class:`Feed`;
:class:`SyntheticFeed` is the built-in generator. The pacer and the HLS segmenter see only
``Chunk`` and ``Feed``, so either source plays through both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from acefleet.mpegts import PACKET_SIZE
from enginesim import psi


@dataclass(frozen=True)
class Chunk:
    data: bytes  # whole 188-byte TS packets
    duration_s: float  # media time these packets cover (pace by this, not by byte rate)
    keyframe: bool  # True when data starts at a random-access point (HLS cuts here)


class Feed(Protocol):
    def read(self) -> Chunk: ...  # next chunk of this channel's endless stream, never blocks


@lru_cache(maxsize=64)
def _video_ring(fill: int, length: int) -> bytes:
    """Continuation packets with CC 0,1,...,15,0,... long enough for any run of ``length``.

    Slicing this ring gives a run with correct continuity counters in one memcpy, which keeps
    the generator cheap enough for dozens of 4 Mbit/s sessions on one core.
    """
    period = b"".join(psi.video_packet(cc, fill) for cc in range(16))
    return period * (length // 16 + 2)


class SyntheticFeed:
    """Synthetic live TS: PAT + PMT + one video PES per chunk, PCR on the video PID.

    Every chunk starts with PAT and PMT (so a reader joining anywhere can decode), then a PES
    whose first packet carries the PCR; the chunk that starts each ``keyframe_interval`` sets
    random_access_indicator, which is where HLS segments are cut and where the proxy's late
    joiners start. The packet count per chunk carries its fraction over, so the long-run
    bitrate is exact.
    """

    def __init__(
        self,
        bitrate: int,
        *,
        chunk_seconds: float = 0.1,
        keyframe_interval: float = 1.0,
        seed: int = 0,
    ) -> None:
        if bitrate <= 0 or chunk_seconds <= 0:
            raise ValueError("bitrate and chunk_seconds must be positive")
        self.bitrate = bitrate
        self.chunk_seconds = chunk_seconds
        self._packets_per_chunk = bitrate * chunk_seconds / 8 / PACKET_SIZE
        if self._packets_per_chunk < 4:
            raise ValueError(f"bitrate {bitrate} too low for {chunk_seconds}s chunks")
        self._chunks_per_key = max(1, round(keyframe_interval / chunk_seconds))
        self._fill = 0x20 + seed % 0x40
        self._ring = _video_ring(self._fill, int(self._packets_per_chunk) + 2)
        self._index = 0
        self._packets_owed = 0.0
        self._cc_psi = 0
        self._cc_video = 0
        # Start the clock somewhere channel-specific, as real channels do.
        self._pcr_origin = (seed % 10_000) * 27_000_000

    def read(self) -> Chunk:
        self._packets_owed += self._packets_per_chunk
        total = int(self._packets_owed)
        self._packets_owed -= total
        keyframe = self._index % self._chunks_per_key == 0
        pcr = self._pcr_origin + round(self._index * self.chunk_seconds * 27_000_000)
        cc = self._cc_video
        run = total - 3  # PAT, PMT and the PES start packet come first
        start = (cc + 1) % 16
        data = b"".join(
            (
                psi.pat_packet(self._cc_psi),
                psi.pmt_packet(self._cc_psi),
                psi.video_start_packet(cc, pcr, keyframe=keyframe, fill=self._fill),
                self._ring[start * PACKET_SIZE : (start + run) * PACKET_SIZE],
            )
        )
        self._cc_psi = (self._cc_psi + 1) % 16
        self._cc_video = (cc + 1 + run) % 16
        self._index += 1
        return Chunk(data=data, duration_s=self.chunk_seconds, keyframe=keyframe)
