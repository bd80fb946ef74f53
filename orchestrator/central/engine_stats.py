"""Engine stats as the agents' heartbeats carry them, and the ``degraded`` verdict on a stream.

Where stats come from: an agent polls the ``stat_url`` of one live session per engine (its
oldest, when an engine carries several) and reports the latest sample as ``EngineReport.stats``;
a stream shows the stats of its engine. So streams sharing one engine show the same figures,
those of the engine's longest-running session: with one session per engine per channel (the
fleet's rule) this is exact, and with several it still tells whether the engine is downloading.

Rules of ``degraded`` (one threshold, ``degraded_after_s``, measured on central's clock):

1. ``no_peers``: every sample for that long reported 0 peers.
2. ``download_stalled``: ``downloaded_bytes`` did not grow for that long (including samples that
   stopped coming while the host kept heartbeating: a stat page that no longer answers is a
   stuck engine).
3. Judged only while the engine's host is live: a silent agent says nothing about its engines,
   which usually keep streaming; when it comes back, its next sample counts as progress.
4. An engine without stats (no session polled, stats not known yet) is never degraded.
"""

from __future__ import annotations

from dataclasses import dataclass

from acefleet.wire import EngineStats
from orchestrator.central.schemas import DegradedReason

NO_PEERS: DegradedReason = "no_peers"
DOWNLOAD_STALLED: DegradedReason = "download_stalled"


@dataclass(slots=True)
class _Watch:
    sample_at: object  # the agent's ``at`` of the last sample taken in
    downloaded: int | None
    progress_since: float  # central clock: last growth of downloaded_bytes (or first sample)
    no_peers_since: float | None  # central clock: first sample of the current 0-peer run


class StatsWatch:
    def __init__(self, degraded_after_s: float) -> None:
        self.after = degraded_after_s
        self.watches: dict[str, _Watch] = {}

    def take(self, engine_id: str, stats: EngineStats | None, now: float) -> None:
        """One heartbeat's report of ``engine_id``'s stats."""
        if stats is None:
            self.watches.pop(engine_id, None)
            return
        w = self.watches.get(engine_id)
        if w is None:
            self.watches[engine_id] = _Watch(
                stats.at, stats.downloaded_bytes, now, now if stats.peers == 0 else None
            )
            return
        if stats.at == w.sample_at:
            return  # the same sample again (heartbeats come more often than polls)
        w.sample_at = stats.at
        if stats.downloaded_bytes is not None and (
            w.downloaded is None or stats.downloaded_bytes > w.downloaded
        ):
            w.progress_since = now
        if stats.downloaded_bytes is not None:
            w.downloaded = stats.downloaded_bytes
        if stats.peers == 0:
            if w.no_peers_since is None:
                w.no_peers_since = now
        else:
            w.no_peers_since = None

    def resume(self, engine_ids: list[str], now: float) -> None:
        """The host was not live and heartbeats again: what its engines did meanwhile is
        unknown, so their clocks start over."""
        for engine_id in engine_ids:
            w = self.watches.get(engine_id)
            if w is not None:
                w.progress_since = now
                if w.no_peers_since is not None:
                    w.no_peers_since = now

    def forget(self, engine_id: str) -> None:
        self.watches.pop(engine_id, None)

    def reason(self, engine_id: str, now: float) -> DegradedReason | None:
        """Why the engine's stream is degraded, or None."""
        w = self.watches.get(engine_id)
        if w is None:
            return None
        if w.no_peers_since is not None and now - w.no_peers_since >= self.after:
            return NO_PEERS
        if now - w.progress_since >= self.after:
            return DOWNLOAD_STALLED
        return None
