"""The failover rule: when a channel replaces its upstream instead of ending.

1. Only for a channel somebody is watching: with no viewer left, a failed upstream simply ends
   the channel (the grace period's job is zapping, not keeping dead sources alive).
2. Only when the source misbehaved (``UpstreamError.engine_fault``: refused, disconnected,
   stalled for ``stall_timeout_s``, died mid-stream). Content the engine says is unavailable is
   not retried: another engine would say the same.
3. At most ``failovers`` times in a row; the budget is refilled each time an upstream goes live,
   so a channel that recovers can fail over again later.
4. The failed placement is released as ``engine_failed`` first, so the placement chain avoids
   that engine (``failed_engine_avoid_s``), that relay source (``failed_relay_avoid_s``) or that
   static engine (``failed_static_avoid_s``) on the next claim: see ``placement/chain.py``.

Viewers keep their connections throughout: the stream buffer's offsets keep growing across
upstreams (``stream_buffer.py``), so a failover is a pause, not a disconnect.
"""

from __future__ import annotations

from prometheus_client import Counter


class FailoverBudget:
    """How many more times a channel may replace its upstream (rules 1 to 3 above)."""

    def __init__(self, failovers: int, counter: Counter) -> None:
        self.failovers = failovers
        self.left = failovers
        self.counter = counter

    def upstream_live(self) -> None:
        self.left = self.failovers

    def take(self, *, engine_fault: bool, watched: bool) -> bool:
        """True (and one failover spent and counted) when the channel should place again."""
        if not (engine_fault and watched and self.left > 0):
            return False
        self.left -= 1
        self.counter.inc()
        return True
