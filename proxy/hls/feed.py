"""One channel's HLS side: its segmenter, its HLS players and the playlists each is served.

A channel gets an :class:`HlsFeed` when its first HLS player arrives; from then on every chunk
the channel publishes to its TS viewers is also cut into segments here, so TS and HLS players of
a channel share the one upstream. A feed started on a channel that is already live is seeded
with the channel's buffered bytes, so its first player has segments at once instead of after a
whole segment of waiting.

Numbers survive what players must not notice:
- media sequence numbers start from the wall clock (tenths of a second), so a channel started
  again after a proxy restart or on another edge continues above any number the old one used;
- discontinuity sequence numbers start at 0 and stay small: hls.js keeps per-discontinuity
  timing in an array indexed by that number and copies it, so a wall-clock base (~1.8e9) hangs
  the browser (measured with hls.js 1.7.4: 1e6 plays, 1e8 hangs). A player moved to a new
  channel (proxy restart, another edge) sees the media sequence jump forward, which players
  take as segments it missed;
- segment URLs carry a random per-feed tag, so a URL never names two different segments.
"""

from __future__ import annotations

import secrets
import time

from proxy.hls.playlist import media_playlist
from proxy.hls.segmenter import Segment, Segmenter
from proxy.hls.sessions import HlsSession
from proxy.metrics import Metrics
from proxy.settings import ProxySettings

_last_first_seq = 0
_RENDERED_MAX = 256


def first_sequence() -> int:
    """A media sequence number above any an earlier channel of this content could have used."""
    global _last_first_seq
    _last_first_seq = max(int(time.time() * 10), _last_first_seq + 1)
    return _last_first_seq


class HlsFeed:
    def __init__(self, settings: ProxySettings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.segmenter = Segmenter(
            target_s=settings.hls_target_s,
            max_s=settings.hls_max_segment_s,
            window=settings.hls_window,
            max_bytes=settings.hls_max_bytes,
            first_seq=first_sequence(),
        )
        self.tag = secrets.token_hex(4)
        self.sessions: dict[str, HlsSession] = {}
        self._rendered: dict[tuple[int, int, int | None, str], bytes] = {}
        self._rendered_for = (-1, -1)  # the window (first, last seq) they were rendered for

    # --- stream in ------------------------------------------------------------------------------
    def publish(self, chunk: bytes) -> None:
        self._listed(self.segmenter.feed(chunk))

    def seed(self, data: bytes, age_s: float) -> None:
        self._listed(self.segmenter.seed(data, age_s))

    def discontinuity(self) -> None:
        """The upstream was replaced: what follows continues the playlists after a tag."""
        self._listed(self.segmenter.discontinuity())

    def _listed(self, segments: list[Segment]) -> None:
        if not segments:
            return
        for segment in segments:
            self.metrics.hls_segments.inc()
            if not segment.keyframe:
                self.metrics.hls_forced_cuts.inc()
            self.metrics.hls_live_edge.observe(max(segment.listed_at - segment.entered_at, 0.0))
        self.wake()

    def wake(self) -> None:
        for session in self.sessions.values():
            session.changed.set()

    # --- players --------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.segmenter.window())

    def adopt(self, session: HlsSession) -> None:
        """``session`` starts watching through this feed. A player that was already listed
        segments of another channel (a merge) continues its own numbers after a discontinuity."""
        self.sessions[session.sid] = session
        session.changed.set()
        if session.last_seq < 0:
            session.seq_offset = session.disc_offset = 0
            session.forced_disc_seq = None
            return
        window = self.segmenter.window()
        first = window[0].seq if window else self.segmenter.next_seq
        session.seq_offset = session.last_seq + 1 - first
        session.forced_disc_seq = first
        # the tag before ``first`` makes its discontinuity number last_disc + 1
        session.disc_offset = session.last_disc - self.segmenter.discontinuity_sequence(first)

    def playlist(self, session: HlsSession) -> bytes:
        """The media playlist as ``session`` sees it (requires :attr:`ready`)."""
        window = self.segmenter.window()
        first = window[0].seq
        forced = session.forced_disc_seq
        if forced is not None and forced < first and self._own_tag(forced):
            forced = None  # the segment carried its own tag: the segmenter counts it already
        passed = 1 if forced is not None and forced < first else 0
        disc_seq = self.segmenter.discontinuity_sequence(first) + session.disc_offset + passed
        query = session.selector_query
        # Players of a channel mostly see the same text (same window, no offsets, same query):
        # render it once per window, not once per poll.
        if self._rendered_for != (first, window[-1].seq):
            self._rendered.clear()
            self._rendered_for = (first, window[-1].seq)
        key = (session.seq_offset, disc_seq, session.forced_disc_seq, query)
        body = self._rendered.get(key)
        if body is None:
            body = media_playlist(
                window,
                target_duration=self.segmenter.target_duration,
                media_sequence=first + session.seq_offset,
                discontinuity_sequence=disc_seq,
                uri=lambda segment: f"{self.tag}_{segment.seq}.ts?{query}",
                forced_discontinuity_seq=session.forced_disc_seq,
            )
            if len(self._rendered) < _RENDERED_MAX:  # per-player tokens make many variants
                self._rendered[key] = body
        tags = sum(1 for s in window if s.discontinuity or s.seq == session.forced_disc_seq)
        session.last_seq = window[-1].seq + session.seq_offset
        session.last_disc = disc_seq + tags
        return body

    def _own_tag(self, seq: int) -> bool:
        segment = self.segmenter.get(seq)
        return segment is not None and segment.discontinuity

    def segment(self, name: str) -> Segment | None:
        """The segment named ``<tag>_<seq>`` in a playlist of this feed, if still held."""
        tag, sep, seq = name.partition("_")
        if not sep or tag != self.tag or not seq.isdigit() or len(seq) > 20:
            return None
        return self.segmenter.get(int(seq))

    @property
    def bandwidth(self) -> int:
        return self.segmenter.bandwidth
