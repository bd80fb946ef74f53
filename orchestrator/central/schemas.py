"""Response and request bodies of central's operator API (the service contracts are in
``acefleet.wire``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from acefleet.wire import EngineReport, EngineStats, ProvisioningState, TunnelReport, VpnState

HostStatusName = Literal["live", "stale", "lost"]  # hosts.HostStatus on the wire
DegradedReason = Literal["no_peers", "download_stalled"]  # engine_stats on the wire


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineView(Model):
    id: str
    host: str
    host_status: HostStatusName
    load: int = Field(description="Sessions on it: the larger of the agent's count and claims")
    claims: int = Field(description="Claims (pending or confirmed) central holds on it")
    placeable: bool = Field(description="Whether new work may be placed on it now")
    operator_drain: bool
    stats: EngineStats | None = Field(
        description="Latest stats of the engine's (oldest) live session, from its agent"
    )
    degraded: bool = Field(description="Its session reports 0 peers or no progress for long")
    degraded_reason: DegradedReason | None
    report: EngineReport


class HostView(Model):
    name: str
    status: HostStatusName
    agent_url: str
    proxy_url: str | None
    last_heartbeat_at: datetime
    seq: int
    draining: bool
    operator_drain: bool
    agent_draining: bool
    max_engines: int
    engines: int
    engines_healthy: int
    streams: int
    stream_cap: int
    vpn: VpnState
    provisioning: ProvisioningState
    tunnels: list[TunnelReport] = Field(
        description="The edge's VPN tunnels as its latest heartbeat reported them (none: the "
        "agent runs no tunnels)"
    )


class _Stream(Model):
    # What a live stream and its history row share, in the same order in both.
    stream_id: str
    proxy_id: str
    host: str
    content_key: str
    infohash: str | None
    claim_id: str | None
    engine_id: str | None
    source: str


class StreamView(_Stream):
    standby: bool = Field(
        description="A warm standby session of the channel (ready to replace its primary); "
        "not a second session of the channel"
    )
    viewers: int
    peak_viewers: int
    started_at: datetime
    peers: int | None = Field(description="Peers of its engine's session (null: no stats)")
    speed_down_kbps: int | None = Field(description="Engine download speed, KB/s")
    speed_up_kbps: int | None = Field(description="Engine upload speed, KB/s")
    degraded: bool = Field(
        description="Its engine reported 0 peers or no download progress for degraded_after_s"
    )
    degraded_reason: DegradedReason | None


class ClaimView(Model):
    claim_id: str
    kind: Literal["engine", "relay"]
    content_key: str
    host: str
    asked_by: str
    engine_id: str | None
    relay_from: str | None
    confirmed: bool
    stream_id: str | None
    created_at: datetime
    standby: bool = Field(description="A warm standby's engine, not the content's claim")


class SessionRecord(_Stream):
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    peak_viewers: int


class ProvisioningHost(Model):
    host: str
    status: HostStatusName
    target: int = Field(description="Free engines wanted on this edge")
    free: int
    outstanding: int = Field(description="Engines asked for and not yet reported")
    engines: int
    max_engines: int
    blocked_reason: str | None = Field(description="Why no engine is asked for, if blocked")
    agent: ProvisioningState


class ProvisioningLogEntry(Model):
    at: datetime
    host: str
    action: str
    count: int | None
    reason: str | None


class FleetSummary(Model):
    warming_up: bool = Field(description="True while live state is still being rebuilt")
    started_at: datetime
    hosts: dict[str, int]
    engines: int
    engines_placeable: int
    slots_free: int
    claims_pending: int
    claims_confirmed: int
    streams: int = Field(description="Live channel sessions (warm standbys not counted)")
    standby_streams: int = Field(description="Warm standby sessions kept ready")
    viewers: int
    warm_buffer_per_edge: int
    fleet_max_engines: int


class HostList(Model):
    warming_up: bool
    items: list[HostView]


class EngineList(Model):
    warming_up: bool
    items: list[EngineView]


class StreamList(Model):
    warming_up: bool
    items: list[StreamView]


class ClaimList(Model):
    warming_up: bool
    items: list[ClaimView]


class SessionList(Model):
    items: list[SessionRecord]


class ProvisioningStatus(Model):
    warming_up: bool
    warm_buffer_per_edge: int
    fleet_max_engines: int
    fleet_engines: int
    hosts: list[ProvisioningHost]
    log: list[ProvisioningLogEntry]


class BufferScale(Model):
    warm_buffer_per_edge: int | None = Field(
        default=None, ge=0, le=1000, description="Free engines to keep per edge"
    )
    fleet_max_engines: int | None = Field(
        default=None, ge=0, le=100000, description="Fleet-wide engine maximum (0: none)"
    )
    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Apply warm_buffer_per_edge to this edge only (null clears its override)",
    )


class SnapshotResult(Model):
    streams: int
    added: int
    ended: int
    move_off: list[str] = Field(
        default_factory=list,
        description="Engine ids (as the proxy reported them) of this proxy's streams (primary "
        "or standby) whose engine should be left make-before-break: draining (operator, agent, "
        "recycling) or degraded by its stats (no_peers, download_stalled)",
    )


class DrainResult(Model):
    target: str
    draining: bool


class Health(Model):
    status: Literal["ok", "unavailable", "standby"]
    warming_up: bool
    database: bool
