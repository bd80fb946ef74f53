"""The slow-viewer rule: what happens to a viewer that reads slower than its stream arrives.

The rule, whole (settings in brackets):

1. The upstream never waits for a viewer. A viewer whose socket passes the high-water mark
   (``viewer_high_water``; asyncio calls ``pause_writing``) is *paused*: the fan-out skips it.
2. When its socket drains (``resume_writing``) it catches up from the shared buffer until the
   socket is full again.
3. A viewer whose cursor fell out of the buffer (it lags by more than ``buffer_bytes``) is, by
   ``slow_viewer_policy``: ``skip`` → moved forward to the latest keyframe (PAT and PMT first),
   counted in ``acefleet_proxy_viewer_skips_total``; ``drop`` → disconnected (reason
   ``behind``). Under ``drop`` a paused viewer is disconnected at the once-a-second check as soon
   as it has fallen out of the buffer, not only when its socket drains.
4. A viewer paused for longer than ``viewer_stall_timeout_s`` is disconnected (reason
   ``stalled``).
5. Skips are for a viewer that falls behind *the others*, never for the whole audience at once.
   When the slowest TS viewer that still *paces* the upstream lags by half the buffer (an
   engine's initial burst, a source faster than every viewer), the channel stops reading its
   upstream (the engine buffers) until every pacing viewer is within a quarter of the buffer
   again. Every viewer paces until a hold waited for it in vain, and then never again (it is
   slower than the stream: rule 3 applies to it). A hold waits in vain when it lasts
   ``upstream_hold_max_s``, or when a viewer has waited ``upstream_hold_starve_s`` at the head
   and the viewer the hold waits for, at the pace it reads, would not catch up within another
   ``upstream_hold_starve_s``. So a stream faster than its viewers goes at the pace of the
   slowest of them, all get it whole, and a viewer slower than a live stream delays the others
   once, by at most ``upstream_hold_starve_s``. A channel with HLS players never holds (they
   pull segments at their own pace and would wait for the slowest TS viewer).

:class:`SlowViewerRule` makes every one of these decisions; the channel applies them (its
fan-out skips paused viewers and calls :meth:`SlowViewerRule.rejoin` and
:meth:`SlowViewerRule.overdue`), and ``viewer.py`` only records when a socket paused.
"""

from __future__ import annotations

from proxy.metrics import Metrics
from proxy.settings import ProxySettings
from proxy.stream_buffer import StreamBuffer
from proxy.viewer import Viewer


class SlowViewerRule:
    """The slow-viewer policy of one proxy (see the module docstring for the rule)."""

    def __init__(self, settings: ProxySettings, metrics: Metrics) -> None:
        self.drop_behind = settings.slow_viewer_policy == "drop"
        self.join_max_bytes = settings.join_max_bytes
        self.stall_timeout_s = settings.viewer_stall_timeout_s
        self.metrics = metrics

    def rejoin(self, viewer: Viewer, buffer: StreamBuffer) -> bool:
        """``viewer``'s cursor fell out of ``buffer`` (rule 3). Policy ``skip``: move it to the
        join point, write the PAT and PMT a decoder needs there, count the skip and return True.
        Policy ``drop``: return False; the caller drops the viewer as ``behind``."""
        if self.drop_behind:
            return False
        offset = buffer.join_point(self.join_max_bytes)
        self.metrics.viewer_skips.inc()
        self.metrics.skipped_bytes.inc(offset - viewer.cursor)
        viewer.cursor = offset
        prefix = buffer.start_prefix(offset)
        if prefix:
            viewer.transport.write(prefix)
        return True

    def overdue(self, viewer: Viewer, buffer: StreamBuffer, now: float) -> str | None:
        """The reason to drop ``viewer`` at the periodic check (rules 3 and 4), or None.
        ``now`` is ``time.monotonic()``."""
        if not viewer.paused:
            return None
        if now - viewer.paused_since > self.stall_timeout_s:
            return "stalled"
        if self.drop_behind and viewer.cursor < buffer.tail:
            return "behind"
        return None
