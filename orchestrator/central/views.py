"""Read models of the live state for the operator API, the dashboard and metrics."""

from __future__ import annotations

from acefleet.wire import EngineHealth
from orchestrator.central import warm_buffer
from orchestrator.central.hosts import Host
from orchestrator.central.placement_policy import placeable_engine, placeable_host
from orchestrator.central.schemas import (
    ClaimView,
    EngineView,
    FleetSummary,
    HostView,
    ProvisioningHost,
    StreamView,
)
from orchestrator.central.state import Central


def hosts(c: Central) -> list[HostView]:
    now = c.clock()
    return [_host_view(c, h, now) for h in c.fleet.by_name()]


def host_view(c: Central, host: Host) -> HostView:
    return _host_view(c, host, c.clock())


def _host_view(c: Central, host: Host, now: float) -> HostView:
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
    )


def engines(c: Central, host_name: str | None = None) -> list[EngineView]:
    now = c.clock()
    out = []
    for host in c.fleet.by_name():
        if host_name is not None and host.name != host_name:
            continue
        status = c.fleet.status(host, now)
        host_ok = placeable_host(c.fleet, host, now)
        for engine in sorted(host.engines.values(), key=lambda e: e.id):
            load = c.book.load(engine.id, engine.report.streams)
            fits = host_ok and placeable_engine(engine) and load < engine.report.stream_cap
            out.append(
                EngineView(
                    id=engine.id,
                    host=host.name,
                    host_status=status.value,
                    load=load,
                    claims=c.book.held(engine.id),
                    placeable=fits,
                    operator_drain=engine.operator_drain,
                    report=engine.report,
                )
            )
    return out


def streams(c: Central) -> list[StreamView]:
    # StreamView mirrors the Stream record field for field.
    return [
        StreamView.model_validate(s, from_attributes=True)
        for s in sorted(c.registry.streams.values(), key=lambda s: s.started_at)
    ]


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


def summary(c: Central) -> FleetSummary:
    now = c.clock()
    by_status = {"live": 0, "stale": 0, "lost": 0}
    engines_total = placeable_count = free = 0
    for host in c.fleet.hosts.values():
        status = c.fleet.status(host, now)
        by_status[status.value] += 1
        engines_total += len(host.engines)
        if not placeable_host(c.fleet, host, now):
            continue
        for engine in host.engines.values():
            if placeable_engine(engine):
                placeable_count += 1
                free += max(
                    0, engine.report.stream_cap - c.book.load(engine.id, engine.report.streams)
                )
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
        streams=len(c.registry.streams),
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
    m.warming_up.set(1 if s.warming_up else 0)
    m.heartbeat_age_max.set(oldest)
    m.history_queue.set(c.history.depth)
