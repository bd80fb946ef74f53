"""Live HLS from a feed: segments cut at keyframes, a sliding window, a v3 playlist.

No background task: every playlist or segment request first catches the segmenter up with
the wall clock, so an HLS session costs nothing while nobody asks for it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from enginesim.feed import Feed

WINDOW = 6  # segments listed in the playlist (and still served)
LEAD = 3  # segments available at once after prebuffering, as an engine has buffered them
EPSILON = 1e-6


@dataclass(frozen=True)
class Segment:
    sequence: int
    duration: float
    data: bytes


class Segmenter:
    def __init__(self, feed: Feed, segment_seconds: float) -> None:
        self._feed = feed
        self.segment_seconds = segment_seconds
        self._origin = time.monotonic()
        self._produced = 0.0  # media seconds read from the feed
        self._pending: list[bytes] = []
        self._pending_duration = 0.0
        self._next_sequence = 0
        self.segments: deque[Segment] = deque(maxlen=WINDOW)
        self.bytes_read = 0

    def catch_up(self) -> None:
        target = time.monotonic() - self._origin + (LEAD + 1) * self.segment_seconds
        # Nobody asked for a long while: skip the gap (live) instead of generating it.
        longest = (WINDOW + LEAD + 1) * self.segment_seconds
        if target - self._produced > longest:
            self._origin += target - self._produced - longest
            target = self._produced + longest
        while self._produced < target:
            chunk = self._feed.read()
            if (
                chunk.keyframe
                and self._pending
                and self._pending_duration >= self.segment_seconds - EPSILON
            ):
                self._cut()
            self._pending.append(chunk.data)
            self._pending_duration += chunk.duration_s
            self._produced += chunk.duration_s
            self.bytes_read += len(chunk.data)

    def _cut(self) -> None:
        data = b"".join(self._pending)
        self.segments.append(Segment(self._next_sequence, self._pending_duration, data))
        self._next_sequence += 1
        self._pending = []
        self._pending_duration = 0.0

    def segment(self, sequence: int) -> Segment | None:
        self.catch_up()
        for seg in self.segments:
            if seg.sequence == sequence:
                return seg
        return None

    def playlist(self, base_url: str, infohash: str) -> str:
        self.catch_up()
        segs = list(self.segments)
        target = max([math.ceil(s.duration) for s in segs] or [math.ceil(self.segment_seconds)])
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{target}",
            f"#EXT-X-MEDIA-SEQUENCE:{segs[0].sequence if segs else 0}",
        ]
        for seg in segs:
            lines.append(f"#EXTINF:{seg.duration:.3f},")
            lines.append(f"{base_url}/ace/c/{infohash}/{seg.sequence}.ts")
        return "\n".join(lines) + "\n"
