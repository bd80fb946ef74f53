"""Prometheus metrics of central (``acefleet_central_*``), one registry per app instance.

No label ever carries a content key or a client address. Fleet gauges are counts by state; the
stats gauges are the exceptions, each with a bounded label set, made at every scrape
(``StatsCollector``) so a series leaves with what it describes:

- ``acefleet_central_engine_*{engine, host}``: one series per engine with stats, bounded by the
  fleet's engines (``max_engines`` per host);
- ``acefleet_central_stream_*{stream, host}``: one series per live stream (``stream`` is the
  proxy's session id, unbounded over time, so it is removed when the stream ends), bounded by the
  live streams;
- ``acefleet_central_streams_degraded{reason}``: a count per reason, a fixed set;
- ``acefleet_central_tunnels{host, state}``: VPN tunnels per edge and state, bounded by the hosts
  with tunnels times the five states (every state of such a host is present, 0 included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from acefleet.wire import EngineStats

# The per-engine and per-stream stats series: (name, help) by what they measure.
ENGINE_STATS = (
    ("acefleet_central_engine_peers", "Peers of the engine's session"),
    ("acefleet_central_engine_download_bytes_per_second", "Download speed of the engine's session"),
    ("acefleet_central_engine_upload_bytes_per_second", "Upload speed of the engine's session"),
)
STREAM_STATS = (
    ("acefleet_central_stream_peers", "Peers of the stream's engine"),
    ("acefleet_central_stream_download_bytes_per_second", "Download speed of the stream's engine"),
    ("acefleet_central_stream_upload_bytes_per_second", "Upload speed of the stream's engine"),
)
STREAM_DEGRADED = (
    "acefleet_central_stream_degraded",
    "1 while the stream is degraded (0 peers or no download progress for long)",
)
STREAMS_DEGRADED = ("acefleet_central_streams_degraded", "Degraded live streams")
DEGRADED_REASONS = ("no_peers", "download_stalled")  # schemas.DegradedReason, every one shown
_CLAIM_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_LAG_BUCKETS = (0.5, 1, 1.5, 2, 2.5, 3, 4, 6, 10, 30, 60)


class CentralMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hosts = Gauge("acefleet_central_hosts", "Edge hosts by status", ["status"], registry=r)
        self.engines = Gauge(
            "acefleet_central_engines", "Engines by health", ["health"], registry=r
        )
        self.engine_slots = Gauge(
            "acefleet_central_engine_slots",
            "Stream slots of placeable engines on live hosts",
            ["state"],
            registry=r,
        )
        self.claims = Gauge(
            "acefleet_central_claims_live", "Live claims", ["kind", "state"], registry=r
        )
        self.streams = Gauge("acefleet_central_streams", "Live upstream sessions", registry=r)
        self.viewers = Gauge("acefleet_central_viewers", "Viewers on live streams", registry=r)
        self.tunnels = Gauge(
            "acefleet_central_tunnels",
            "VPN tunnels of an edge by state, as its latest heartbeat reported them",
            ["host", "state"],
            registry=r,
        )
        self.warming_up = Gauge(
            "acefleet_central_warming_up", "1 while live state is being rebuilt", registry=r
        )
        self.claim_seconds = Histogram(
            "acefleet_central_claim_duration_seconds",
            "Time to decide and reserve a claim, inside central",
            buckets=_CLAIM_BUCKETS,
            registry=r,
        )
        self.claims_total = Counter(
            "acefleet_central_claim_answers", "Claim answers by outcome", ["outcome"], registry=r
        )
        self.heartbeat_lag = Histogram(
            "acefleet_central_heartbeat_lag_seconds",
            "Gap between two heartbeats of the same host",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.heartbeat_age_max = Gauge(
            "acefleet_central_heartbeat_age_max_seconds",
            "Longest silence of any host that is not lost",
            registry=r,
        )
        self.heartbeats_total = Counter(
            "acefleet_central_heartbeats", "Heartbeats received", registry=r
        )
        self.events_total = Counter(
            "acefleet_central_events", "Stream events by result", ["status"], registry=r
        )
        self.provision_total = Counter(
            "acefleet_central_provisioned_engines",
            "Engines asked for through provision directives",
            registry=r,
        )
        self.history_queue = Gauge(
            "acefleet_central_history_queue_depth", "History rows waiting to be written", registry=r
        )
        self.gc_pause = Histogram(
            "acefleet_central_gc_pause_seconds",
            "Pause of each scheduled garbage collection (gc_pacing.py) on the loop that answers "
            "claims, by generation: 0 young, 1 middle, 2 full (gc_full_interval_s)",
            ["generation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.loop_lag = Histogram(
            "acefleet_central_loop_lag_seconds",
            "How late the loop that answers claims woke a 20 ms timer (gc_pacing.py): how long "
            "other work, or the OS, held it; a claim arriving then waited as long. Measured "
            "while central paces its garbage collection (gc_full_interval_s > 0)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.history_dropped = Counter(
            "acefleet_central_history_dropped",
            "History rows dropped (queue full or DB error)",
            registry=r,
        )


@dataclass(slots=True, frozen=True)
class StatsRow:
    """One engine or stream of the stats series: its labels (engine or stream id, host), its
    engine's stats and, for a stream, why it is degraded (None: it is not)."""

    key: str
    host: str
    stats: EngineStats | None
    degraded: str | None = None


class StatsCollector(Collector):
    """The per-engine and per-stream stats series and the degraded counts, made at collect time
    from what ``rows`` returns (engines, streams): a series leaves with its engine or stream,
    and nothing is kept between scrapes. Gauges cleared and set again at every scrape cost
    ~20 us a series in prometheus_client's label handling: 35 ms of the claim loop per scrape
    at 500 edges with 1,440 streams."""

    def __init__(self, rows: Callable[[], tuple[list[StatsRow], list[StatsRow]]]) -> None:
        self._rows = rows

    def describe(self) -> Iterator[Metric]:
        return self._families([], [])  # names only: no walk of the fleet at registration

    def collect(self) -> Iterator[Metric]:
        return self._families(*self._rows())

    @staticmethod
    def _families(engines: list[StatsRow], streams: list[StatsRow]) -> Iterator[Metric]:
        yield from _stats_families(ENGINE_STATS, "engine", engines)
        yield from _stats_families(STREAM_STATS, "stream", streams)
        degraded = GaugeMetricFamily(*STREAM_DEGRADED, labels=["stream", "host"])
        counts = dict.fromkeys(DEGRADED_REASONS, 0)
        for row in streams:
            degraded.add_metric([row.key, row.host], 0 if row.degraded is None else 1)
            if row.degraded is not None:
                counts[row.degraded] += 1
        yield degraded
        by_reason = GaugeMetricFamily(*STREAMS_DEGRADED, labels=["reason"])
        for reason, n in counts.items():
            by_reason.add_metric([reason], n)
        yield by_reason


def _stats_families(
    names: tuple[tuple[str, str], ...], label: str, rows: list[StatsRow]
) -> Iterator[Metric]:
    peers, down, up = (GaugeMetricFamily(n, h, labels=[label, "host"]) for n, h in names)
    for row in rows:
        st = row.stats
        if st is None:
            continue
        labels = [row.key, row.host]
        if st.peers is not None:
            peers.add_metric(labels, st.peers)
        if st.speed_down_kbps is not None:  # the engine's KB/s are KiB/s
            down.add_metric(labels, st.speed_down_kbps * 1024)
        if st.speed_up_kbps is not None:
            up.add_metric(labels, st.speed_up_kbps * 1024)
    return iter((peers, down, up))
