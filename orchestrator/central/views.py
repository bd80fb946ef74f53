"""Read models of the live state for the operator API, the dashboard and metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from acefleet.wire import EngineHealth, EngineStats, TunnelState
from orchestrator.central import warm_buffer
from orchestrator.central.hosts import Engine, Host, HostStatus
from orchestrator.central.metrics import StatsRow
from orchestrator.central.placement_policy import placeable_engine, placeable_host
from orchestrator.central.schemas import (
    ClaimView,
    DegradedReason,
    EngineView,
    FleetSummary,
    HostView,
    ProvisioningHost,
    StreamView,
)
from orchestrator.central.state import Central
from orchestrator.central.streams import Stream


def hosts(c: Central) -> list[HostView]:
    now = c.clock()
    return [host_view(c, h, now) for h in c.fleet.by_name()]


def host_view(c: Central, host: Host, now: float | None = None) -> HostView:
    if now is None:
        now = c.clock()
    engines = host.engines.values()
    return HostView(
        name=host.name,
        status=c.fleet.status(host, now).value,
        agent_url=host.agent_url,
        proxy_url=c.relay_url(host.name),
        last_heartbeat_at=host.last_seen_at,
        seq=host.seq,
        draining=host.draining,
        operator_drain=host.operator_drain,
        agent_draining=host.agent_draining,
        max_engines=host.max_engines,
        engines=len(host.engines),
        engines_healthy=sum(e.report.health is EngineHealth.healthy for e in engines),
        streams=sum(c.book.load(e.id, e.report.streams) for e in engines),
        stream_cap=sum(e.report.stream_cap for e in engines),
        vpn=host.vpn,
        provisioning=host.provisioning,
        tunnels=host.tunnels,
    )


def stream_engine(c: Central, stream: Stream) -> Engine | None:
    """The engine a stream runs on: by id (central's and the agent's claims) or, for the static
    list, whose ``engine_id`` is the engine's ``host:port``, by endpoint on the stream's edge."""
    if stream.engine_id is None:
        return None  # a relay: its bytes come from another edge's proxy
    host_name = c.fleet.engine_host.get(stream.engine_id)
    if host_name is not None:
        return c.fleet.hosts[host_name].engines.get(stream.engine_id)
    host = c.fleet.hosts.get(stream.host)
    if host is None:
        return None
    for engine in host.engines.values():
        if engine.report.endpoint == stream.engine_id:
            return engine
    return None


def degraded_reason(c: Central, engine: Engine, now: float) -> DegradedReason | None:
    """Why the engine's session is degraded (``engine_stats``), judged only on a live host."""
    host_name = c.fleet.engine_host.get(engine.id)
    host = c.fleet.hosts.get(host_name) if host_name else None
    if host is None or c.fleet.status(host, now) is not HostStatus.live:
        return None
    return c.stats.reason(engine.id, now)


@dataclass(slots=True, frozen=True)
class EngineState:
    """One engine as the views read it: its host, the host's status, its load (the larger of
    the agent's count and central's claims) and whether new work may be placed on it now."""

    host: Host
    status: HostStatus
    engine: Engine
    load: int
    placeable: bool


def engine_states(c: Central, host_name: str | None = None) -> list[EngineState]:
    """Every engine (of ``host_name`` only, when given), by host name then engine id: the one
    walk the operator API and the dashboard frame share, without building models."""
    now = c.clock()
    out = []
    for host in c.fleet.by_name():
        if host_name is None or host.name == host_name:
            out.extend(host_engine_states(c, host, now))
    return out


def host_engine_states(c: Central, host: Host, now: float) -> list[EngineState]:
    """The engines of one host, by engine id (``engine_states``)."""
    status = c.fleet.status(host, now)
    host_ok = placeable_host(c.fleet, host, now)
    out = []
    for engine in sorted(host.engines.values(), key=lambda e: e.id):
        load = c.book.load(engine.id, engine.report.streams)
        fits = host_ok and placeable_engine(engine) and load < engine.report.stream_cap
        out.append(EngineState(host, status, engine, load, fits))
    return out


def engines(c: Central, host_name: str | None = None) -> list[EngineView]:
    now = c.clock()
    out = []
    for st in engine_states(c, host_name):
        engine = st.engine
        reason = degraded_reason(c, engine, now)
        out.append(
            EngineView(
                id=engine.id,
                host=st.host.name,
                host_status=st.status.value,
                load=st.load,
                claims=c.book.held(engine.id),
                placeable=st.placeable,
                operator_drain=engine.operator_drain,
                stats=engine.report.stats,
                degraded=reason is not None,
                degraded_reason=reason,
                report=engine.report,
            )
        )
    return out


def streams(c: Central) -> list[StreamView]:
    now = c.clock()
    return [
        stream_view(c, s, now)
        for s in sorted(c.registry.streams.values(), key=lambda s: s.started_at)
    ]


def stream_health(
    c: Central, stream: Stream, now: float
) -> tuple[EngineStats | None, DegradedReason | None]:
    """The stats of the engine a stream runs on, and why it is degraded (None: it is not, or
    it has no engine): what the stream view, the dashboard frame and the metrics show."""
    engine = stream_engine(c, stream)
    if engine is None:
        return None, None
    return engine.report.stats, degraded_reason(c, engine, now)


def stream_view(c: Central, stream: Stream, now: float) -> StreamView:
    """A live stream with its engine's stats (one engine may carry several: ``engine_stats``)."""
    stats, reason = stream_health(c, stream, now)
    return StreamView(
        stream_id=stream.stream_id,
        proxy_id=stream.proxy_id,
        host=stream.host,
        content_key=stream.content_key,
        infohash=stream.infohash,
        claim_id=stream.claim_id,
        engine_id=stream.engine_id,
        source=stream.source,
        standby=stream.standby,
        viewers=stream.viewers,
        peak_viewers=stream.peak_viewers,
        started_at=stream.started_at,
        peers=stats.peers if stats else None,
        speed_down_kbps=stats.speed_down_kbps if stats else None,
        speed_up_kbps=stats.speed_up_kbps if stats else None,
        degraded=reason is not None,
        degraded_reason=reason,
    )


def move_off(c: Central, proxy_id: str) -> list[str]:
    """Engines the proxy ``proxy_id`` should move its streams off (make-before-break):
    draining (the operator's drain, the agent's, recycling) or degraded by their stats. Standby
    sessions count too: one left on a recycling engine would keep it from ever emptying."""
    now = c.clock()
    out: set[str] = set()
    for stream in c.registry.of_proxy(proxy_id):
        if stream.engine_id is None:
            continue
        engine = stream_engine(c, stream)
        if engine is None:
            continue
        if engine.draining or degraded_reason(c, engine, now) is not None:
            out.add(stream.engine_id)
    return sorted(out)


def claims(c: Central) -> list[ClaimView]:
    return [
        ClaimView(
            claim_id=cl.id,
            kind=cl.kind,
            content_key=cl.content_key,
            host=cl.host,
            asked_by=cl.asked_by,
            engine_id=cl.engine_id,
            relay_from=cl.relay_from,
            confirmed=cl.confirmed,
            stream_id=cl.stream_id,
            created_at=cl.created_at,
            standby=cl.standby,
        )
        for cl in c.book.claims.values()
    ]


def provisioning(c: Central) -> list[ProvisioningHost]:
    now = c.clock()
    window = warm_buffer.recent_window(c.settings.heartbeat_interval_s)
    out = []
    for host in c.fleet.by_name():
        target = c.buffer_per_edge(host)
        out.append(
            ProvisioningHost(
                host=host.name,
                status=c.fleet.status(host, now).value,
                target=target,
                free=warm_buffer.free_engines(host, c.book),
                outstanding=warm_buffer.outstanding(host, now, window),
                engines=len(host.engines),
                max_engines=host.max_engines,
                blocked_reason=host.blocked_reason,
                agent=host.provisioning,
            )
        )
    return out


Capacity = Callable[[Host, float], tuple[int, int]]


def host_capacity(c: Central, host: Host, now: float) -> tuple[int, int]:
    """A host's placeable engines (their load aside) and those engines' free slots, from the
    offer placement keeps for the host (a /metrics scrape walked all 10,000 engines of a
    500-edge fleet for this, ~10 ms of the claim loop)."""
    if not placeable_host(c.fleet, host, now):
        return 0, 0
    offer = c.fits.of(host, c.book, frozenset())
    return offer.placeable, offer.free


def summary(c: Central, capacity: Capacity | None = None) -> FleetSummary:
    """``capacity``: each host's ``host_capacity`` when the caller keeps it already (the
    dashboard frame's parts, live_frame), instead of a walk over every engine."""
    now = c.clock()
    by_status = {"live": 0, "stale": 0, "lost": 0}
    engines_total = placeable_count = free = 0
    for host in c.fleet.hosts.values():
        status = c.fleet.status(host, now)
        by_status[status.value] += 1
        engines_total += len(host.engines)
        placeable, slots = (capacity or functools.partial(host_capacity, c))(host, now)
        placeable_count += placeable
        free += slots
    pending = sum(not cl.confirmed for cl in c.book.claims.values())
    return FleetSummary(
        warming_up=c.warming_up(),
        started_at=c.started_at,
        hosts=by_status,
        engines=engines_total,
        engines_placeable=placeable_count,
        slots_free=free,
        claims_pending=pending,
        claims_confirmed=len(c.book.claims) - pending,
        streams=c.registry.primaries(),
        standby_streams=len(c.registry.streams) - c.registry.primaries(),
        viewers=c.registry.viewers(),
        warm_buffer_per_edge=c.per_edge,
        fleet_max_engines=c.fleet_max,
    )


def update_metrics(c: Central) -> None:
    """Refresh the fleet gauges (at scrape time: nothing to maintain on the hot path)."""
    m = c.metrics
    now = c.clock()
    s = summary(c)
    for status, n in s.hosts.items():
        m.hosts.labels(status).set(n)
    health_counts = dict.fromkeys((h.value for h in EngineHealth), 0)
    oldest = 0.0
    for host in c.fleet.hosts.values():
        age = now - host.last_seen
        if age < c.settings.lost_after_s:
            oldest = max(oldest, age)
        for engine in host.engines.values():
            health_counts[engine.report.health.value] += 1
    for health, n in health_counts.items():
        m.engines.labels(health).set(n)
    m.engine_slots.labels("free").set(s.slots_free)
    m.engine_slots.labels("used").set(sum(c.book.held(e) for e in c.book.by_engine))
    kinds = {(k, st): 0 for k in ("engine", "relay") for st in ("pending", "confirmed")}
    for cl in c.book.claims.values():
        kinds[(cl.kind, "confirmed" if cl.confirmed else "pending")] += 1
    for (kind, state), n in kinds.items():
        m.claims.labels(kind, state).set(n)
    m.streams.set(s.streams)
    m.viewers.set(s.viewers)
    _tunnel_metrics(c)
    m.warming_up.set(1 if s.warming_up else 0)
    m.heartbeat_age_max.set(oldest)
    m.history_queue.set(c.history.depth)


def stats_rows(c: Central) -> tuple[list[StatsRow], list[StatsRow]]:
    """The engines with stats and the live streams, for the stats series (StatsCollector)."""
    now = c.clock()
    engines = [
        StatsRow(engine.id, host.name, engine.report.stats)
        for host in c.fleet.hosts.values()
        for engine in host.engines.values()
        if engine.report.stats is not None
    ]
    streams = []
    for stream in c.registry.streams.values():
        stats, reason = stream_health(c, stream, now)
        streams.append(StatsRow(stream.stream_id, stream.host, stats, reason))
    return engines, streams


def _tunnel_metrics(c: Central) -> None:
    """Tunnels per host and state: every state of a host with tunnels is present (0 when none is
    in it), so an alert can compare ``healthy`` with the total; a host without tunnels (or
    forgotten) has no series."""
    gauge = c.metrics.tunnels
    gauge.clear()
    for host in c.fleet.hosts.values():
        if not host.tunnels:
            continue
        counts = dict.fromkeys((s.value for s in TunnelState), 0)
        for report in host.tunnels:
            counts[report.state.value] += 1
        for state, n in counts.items():
            gauge.labels(host.name, state).set(n)
