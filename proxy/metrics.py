"""Prometheus metrics of the proxy. Labels are bounded enums: never a content id or an address."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.viewers = Gauge("acefleet_proxy_viewers", "Viewers attached to a channel", registry=r)
        self.upstreams = Gauge(
            "acefleet_proxy_upstreams", "Channels with an upstream (starting or live)", registry=r
        )
        self.connections = Gauge(
            "acefleet_proxy_connections", "Open client connections", registry=r
        )
        self.bytes_out = Counter(
            "acefleet_proxy_bytes_out", "Stream bytes handed to viewer sockets", registry=r
        )
        self.bytes_in = Counter(
            "acefleet_proxy_bytes_in", "Stream bytes read from upstreams", registry=r
        )
        self.viewer_drops = Counter(
            "acefleet_proxy_viewer_drops",
            "Viewers disconnected by the proxy",
            ["reason"],
            registry=r,
        )
        self.viewer_skips = Counter(
            "acefleet_proxy_viewer_skips",
            "Times a viewer behind the buffer was moved forward",
            registry=r,
        )
        self.upstream_holds = Counter(
            "acefleet_proxy_upstream_holds",
            "Times a channel stopped reading its upstream because no viewer could take more, by "
            "how the hold ended (caught_up: the viewers took the backlog; starved: a viewer "
            "waited upstream_hold_starve_s at the head; timeout: upstream_hold_max_s passed; "
            "left: the viewers went; the viewers waited for in vain no longer pace the upstream "
            "and are skipped as before)",
            ["end"],
            registry=r,
        )
        self.skipped_bytes = Counter(
            "acefleet_proxy_viewer_skipped_bytes", "Stream bytes slow viewers missed", registry=r
        )
        self.rejections = Counter(
            "acefleet_proxy_rejections", "Requests refused", ["reason"], registry=r
        )
        self.requests = Counter(
            "acefleet_proxy_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.ttfb = Histogram(
            "acefleet_proxy_ttfb_seconds",
            "Stream request to first stream byte written",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.engine_call = Histogram(
            "acefleet_proxy_engine_call_seconds",
            "Engine HTTP API call latency",
            ["call"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.engine_errors = Counter(
            "acefleet_proxy_engine_errors", "Failed engine calls", ["call", "reason"], registry=r
        )
        self.upstream_sessions = Counter(
            "acefleet_proxy_upstream_sessions", "Upstream sessions started", registry=r
        )
        self.upstream_failures = Counter(
            "acefleet_proxy_upstream_failures", "Upstreams that died", ["reason"], registry=r
        )
        self.failovers = Counter(
            "acefleet_proxy_failovers", "Upstreams replaced while watched", registry=r
        )
        self.buffer_bytes = Gauge(
            "acefleet_proxy_buffer_bytes",
            "Stream buffer sizes of all channels (each sized by its bitrate, buffer_seconds)",
            registry=r,
        )
        self.standby_sessions = Gauge(
            "acefleet_proxy_standby_sessions",
            "Warm standby engine sessions live (a second session of a watched channel)",
            registry=r,
        )
        self.standby_failures = Counter(
            "acefleet_proxy_standby_failures",
            "Standby sessions that could not be placed or opened (retried later)",
            ["reason"],
            registry=r,
        )
        self.promotions = Counter(
            "acefleet_proxy_standby_promotions",
            "Standbys promoted to primary, by why (died, stalled, moved)",
            ["reason"],
            registry=r,
        )
        self.standby_awaited = Counter(
            "acefleet_proxy_failover_awaits_standby",
            "Primaries that died while a standby was starting: the standby was waited for "
            "instead of placing again",
            registry=r,
        )
        self.failover_capacity_waits = Counter(
            "acefleet_proxy_failover_capacity_waits",
            "Failover placements refused with 503 and asked again (failover_wait_s), by code",
            ["code"],
            registry=r,
        )
        self.failover_gap = Histogram(
            "acefleet_proxy_failover_gap_seconds",
            "The old upstream's last byte to the new upstream's first byte published",
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 12, 20, 30, 60),
            registry=r,
        )
        self.gap_fill_packets = Counter(
            "acefleet_proxy_gap_fill_packets",
            "MPEG-TS null packets sent to keep viewers' connections alive during a gap",
            registry=r,
        )
        self.resyncs = Counter(
            "acefleet_proxy_upstream_resyncs", "Times upstream bytes lost packet sync", registry=r
        )

        self.hls_sessions = Gauge(
            "acefleet_proxy_hls_sessions",
            "HLS players counted as viewers (fetched within the idle window)",
            registry=r,
        )
        self.hls_segments = Counter(
            "acefleet_proxy_hls_segments", "HLS segments cut from upstreams", registry=r
        )
        self.hls_forced_cuts = Counter(
            "acefleet_proxy_hls_forced_cuts",
            "HLS segments cut without a keyframe (none came within hls_max_segment_s)",
            registry=r,
        )
        self.hls_live_edge = Histogram(
            "acefleet_proxy_hls_live_edge_seconds",
            "A segment's first keyframe byte entering the proxy to the segment being listed",
            # half-second steps around common target durations, so quantiles mean something
            buckets=(0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 7, 8, 10, 15, 30),
            registry=r,
        )

        self.token_rejections = Counter(
            "acefleet_proxy_token_rejections",
            "New streams refused by the token rule (proxy/access.py)",
            ["reason"],
            registry=r,
        )
        self.catalog_fetches = Counter(
            "acefleet_proxy_catalog_fetches",
            "Polls of central's edge catalog, guide and player usage",
            ["what", "result"],
            registry=r,
        )
        self.catalog_age = Gauge(
            "acefleet_proxy_catalog_age_seconds",
            "Seconds since the catalog copy was last confirmed by central (-1: never loaded)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
