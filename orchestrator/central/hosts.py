"""The fleet view: edge hosts and their engines, as the agents' heartbeats describe them.

Live state is soft: it is rebuilt from heartbeats after a restart. A host that stops
heartbeating becomes *stale* (no new work is placed on it) and later *lost*; central never stops
anything because a host went quiet, since the engines may well be serving viewers. A host lost
for ``forget_after`` is forgotten, engines and all (the fleet view and the metrics would
otherwise keep every host that ever existed); a heartbeat brings it back as a new host.

A host's VPN tunnels are those of its latest heartbeat, as its agent reported them: a heartbeat
without tunnels (an agent that runs none, or no longer does) leaves the host with none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from acefleet.wire import (
    Directive,
    EngineReport,
    Heartbeat,
    ProvisioningState,
    TunnelReport,
    TunnelState,
    VpnState,
)


class HostStatus(StrEnum):
    live = "live"
    stale = "stale"
    lost = "lost"


@dataclass(slots=True)
class Engine:
    report: EngineReport
    operator_drain: bool = False

    @property
    def id(self) -> str:
        return self.report.id

    @property
    def draining(self) -> bool:
        return self.report.draining or self.operator_drain


@dataclass(slots=True)
class Host:
    name: str
    agent_url: str
    last_seen: float
    last_seen_at: datetime
    seq: int = 0
    max_engines: int = 0
    vpn: VpnState = field(default_factory=VpnState)
    provisioning: ProvisioningState = field(default_factory=ProvisioningState)
    agent_draining: bool = False
    operator_drain: bool = False
    engines: dict[str, Engine] = field(default_factory=dict)
    tunnels: list[TunnelReport] = field(default_factory=list)
    pending: list[Directive] = field(default_factory=list)
    # Warm buffer bookkeeping: provision directives sent but maybe not yet in the agent's report.
    provision_sent: int = 0
    provision_sent_at: float = 0.0
    buffer_target: int | None = None
    blocked_reason: str | None = None
    status_seen: HostStatus = HostStatus.live
    heartbeats: int = 0  # taken since central started: the dashboard frame's cue (live_frame)
    drains: int = 0  # operator drains of its engines, counted: placement's cue (HostFits)

    @property
    def draining(self) -> bool:
        return self.agent_draining or self.operator_drain

    def on_sick_tunnel(self, engine: Engine) -> bool:
        """Whether the engine runs in a tunnel that is not healthy in the latest heartbeat (one
        the heartbeat no longer lists counts as not healthy: its namespace may be gone).

        An engine names its tunnel, not the generation. During a rotation the heartbeat lists
        the retiring generation and the new one under the same name: the tunnel is healthy when
        any of them is, or the new generation's engines would be placed last for the whole
        rotation (the retiring one's engines are draining, so never placed anyway)."""
        name = engine.report.tunnel
        if name is None:
            return False
        return not any(r.name == name and r.state is TunnelState.healthy for r in self.tunnels)

    def status(self, now: float, stale_after: float, lost_after: float) -> HostStatus:
        silent = now - self.last_seen
        if silent >= lost_after:
            return HostStatus.lost
        if silent >= stale_after:
            return HostStatus.stale
        return HostStatus.live


class UnknownTarget(LookupError):
    """An operator named a host or engine central has never heard of."""


class Fleet:
    """Hosts by name, plus an index from engine id to host."""

    def __init__(self, stale_after: float, lost_after: float, forget_after: float) -> None:
        self.stale_after = stale_after
        self.lost_after = lost_after
        self.forget_after = forget_after
        self.hosts: dict[str, Host] = {}
        self.engine_host: dict[str, str] = {}
        # Engines an operator drained; kept by id so the decision applies whenever they report.
        self.drained: set[str] = set()

    def ingest(self, hb: Heartbeat, now: float) -> tuple[Host, float | None, list[str]]:
        """Apply one heartbeat; returns the host, the gap since its last one and gone engines."""
        wall = datetime.now(UTC)
        host = self.hosts.get(hb.host)
        gap: float | None = None
        if host is None:
            host = Host(
                name=hb.host,
                agent_url=hb.agent_url,
                last_seen=now,
                last_seen_at=wall,
            )
            self.hosts[hb.host] = host
        else:
            gap = now - host.last_seen
        host.heartbeats += 1
        host.agent_url = hb.agent_url
        host.last_seen = now
        host.last_seen_at = wall
        host.seq = hb.seq
        host.max_engines = hb.max_engines
        host.vpn = hb.vpn
        host.provisioning = hb.provisioning
        host.agent_draining = hb.draining
        host.tunnels = list(hb.tunnels)
        old = host.engines
        fresh: dict[str, Engine] = {}
        for report in hb.engines:
            engine = old.get(report.id)
            if engine is None:
                # An engine that moved hosts (never expected) is re-indexed under its new host.
                fresh[report.id] = Engine(report, operator_drain=report.id in self.drained)
            else:
                engine.report = report
                fresh[report.id] = engine
            self.engine_host[report.id] = hb.host
        gone = [eid for eid in old if eid not in fresh]
        for eid in gone:
            if self.engine_host.get(eid) == hb.host:
                del self.engine_host[eid]
        host.engines = fresh
        return host, gap, gone

    def forget_silent(self, now: float) -> list[Host]:
        """Remove the hosts silent for ``forget_after`` (and their engines' index entries)."""
        gone = [h for h in self.hosts.values() if now - h.last_seen >= self.forget_after]
        for host in gone:
            del self.hosts[host.name]
            for eid in host.engines:
                if self.engine_host.get(eid) == host.name:
                    del self.engine_host[eid]
        return gone

    def by_name(self) -> list[Host]:
        """The hosts sorted by name, the order every listing shows."""
        return sorted(self.hosts.values(), key=lambda h: h.name)

    def take_directives(self, host: Host) -> list[Directive]:
        out, host.pending = host.pending, []
        return out

    def status(self, host: Host, now: float) -> HostStatus:
        return host.status(now, self.stale_after, self.lost_after)

    def host(self, name: str) -> Host:
        host = self.hosts.get(name)
        if host is None:
            raise UnknownTarget(f"no host named {name!r} has heartbeated")
        return host

    def engine(self, engine_id: str) -> Engine:
        name = self.engine_host.get(engine_id)
        if name is None:
            raise UnknownTarget(f"no engine {engine_id!r} in any heartbeat")
        return self.hosts[name].engines[engine_id]

    def drain_host(self, name: str, drain: bool) -> Host:
        host = self.host(name)
        host.operator_drain = drain
        # The agent is told once; its own draining flag then carries the decision across a
        # restart of central (live state is rebuilt from heartbeats).
        host.pending = [d for d in host.pending if d.kind not in ("drain", "undrain")]
        host.pending.append(Directive(kind="drain" if drain else "undrain"))
        return host

    def drain_engine(self, engine_id: str, drain: bool) -> Engine:
        engine = self.engine(engine_id)
        engine.operator_drain = drain
        self.hosts[self.engine_host[engine_id]].drains += 1
        if drain:
            self.drained.add(engine_id)
        else:
            self.drained.discard(engine_id)
        return engine
