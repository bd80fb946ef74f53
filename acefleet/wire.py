"""The JSON contracts between acefleet services (proxy, agent, central).

These models are the single definition of what crosses the wire; each service's API and each
client import them from here, so a field renamed on one side fails the other side's type check.
Error bodies everywhere are ``{"error": {"code": "<stable_code>", "message": "<human text>"}}``.

Content keys: a channel is keyed ``"<kind>:<value>"`` where kind is ``id`` (content_id and its
alias id) or ``infohash``. Once an engine reports the infohash of an ``id`` channel, both keys
name the same stream.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# --- common ---------------------------------------------------------------------------------


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Wire):
    code: str = Field(description="Stable machine-readable code, e.g. no_capacity")
    message: str = Field(description="What went wrong, for a human")
    retry_after_s: float | None = None


class ErrorBody(Wire):
    error: ErrorDetail


def content_key(kind: Literal["id", "infohash"], value: str) -> str:
    return f"{kind}:{value.strip().lower()}"


# --- engines (agent → central, agent API) ---------------------------------------------------


class EngineHealth(StrEnum):
    starting = "starting"  # container exists, get_status not answered yet
    healthy = "healthy"
    unhealthy = "unhealthy"  # failing probes, below the replacement threshold or being replaced


class EngineStats(Wire):
    status: str | None = None  # idle | prebuf | dl (from stat_url)
    peers: int | None = None
    speed_down_kbps: int | None = None
    speed_up_kbps: int | None = None
    downloaded_bytes: int | None = None
    uploaded_bytes: int | None = None
    at: datetime | None = None


class EngineReport(Wire):
    id: str = Field(description="Engine id: the container name, stable across agent restarts")
    host: str
    endpoint: str = Field(
        description="host:port of the engine HTTP API, as reachable from its edge"
    )
    http_port: int
    p2p_port: int | None = None
    profile: str
    health: EngineHealth
    draining: bool = False
    drain_reason: Literal["removing", "recycle", "tunnel"] | None = Field(
        default=None,
        description="Why the agent drains it: it is being removed, recycled (older than "
        "engine_max_age_s, or its cache past engine_max_cache_bytes), or its VPN tunnel lost its "
        "connection or forwarded port, changed that port or is being rotated (``tunnel``): it "
        "takes no new claims, proxies move its sessions off make-before-break, and it is "
        "replaced once it carries no session",
    )
    stream_cap: int = Field(ge=1, description="Max concurrent sessions this engine may carry")
    streams: int = Field(ge=0, description="Sessions the agent knows are live on it")
    vpn_forwarded: bool = False
    tunnel: str | None = Field(
        default=None,
        description="Name of the VPN tunnel whose network namespace the engine runs in (none: "
        "the host's network). Sent only when set, so a central older than tunnels accepts it",
    )
    created_at: datetime
    generation: int = 0
    stats: EngineStats | None = None


class VpnState(Wire):
    enabled: bool = False
    connected: bool | None = None
    forwarded_port: int | None = None


class TunnelState(StrEnum):
    starting = "starting"  # its container is up, the VPN has not connected yet
    healthy = "healthy"  # connected, and forwarding a port when it should
    no_port = "no_port"  # connected, but port forwarding is on and no port is forwarded
    down = "down"  # not connected, control server unreachable, or its container gone
    retiring = "retiring"  # replaced by a newer generation: its engines move off, then it goes


class TunnelReport(Wire):
    """One VPN tunnel (a Gluetun container) of an edge, as its agent sees it."""

    name: str = Field(description="The tunnel's name in the inventory, unique per edge")
    container: str = Field(description="Container name of this generation of the tunnel")
    generation: int = Field(ge=0, description="Increases by one per blue/green rotation")
    state: TunnelState
    reason: str | None = Field(default=None, description="Why it is not healthy, for a human")
    public_ip: str | None = Field(default=None, description="Exit address Gluetun reports")
    forwarded_port: int | None = Field(
        default=None, description="Port the VPN provider forwards to this tunnel, if any"
    )
    engines: int = Field(ge=0, description="Engines running in this tunnel's namespace")
    engine_cap: int = Field(ge=1, description="Engines this tunnel may carry")
    created_at: datetime
    state_since: datetime = Field(description="When the tunnel entered its current state")


class ProvisioningState(Wire):
    state: Literal["ok", "blocked", "breaker_open", "half_open"] = "ok"
    reason: str | None = None
    in_flight: int = 0
    failures_total: int = 0


# --- heartbeats (agent → central) ------------------------------------------------------------


class Heartbeat(Wire):
    host: str
    agent_url: str = Field(description="Base URL of the agent, as central may reach it")
    seq: int = Field(ge=0, description="Increases by one per heartbeat; resets on agent restart")
    engines: list[EngineReport]
    max_engines: int
    vpn: VpnState = VpnState()
    provisioning: ProvisioningState = ProvisioningState()
    draining: bool = False
    tunnels: list[TunnelReport] = Field(
        default_factory=list,
        description="The edge's VPN tunnels (several Gluetun containers). Sent only when the "
        "agent runs tunnels, so a central older than tunnels accepts the heartbeat",
    )


class Directive(Wire):
    kind: Literal["provision", "stop_engine", "drain", "undrain"]
    count: int | None = None  # provision
    engine_id: str | None = None  # stop_engine


class HeartbeatReply(Wire):
    interval_s: float
    directives: list[Directive] = []
    claimed: dict[str, int] = Field(
        default_factory=dict,
        description="Engine id → claims central holds on it: sessions the agent did not place "
        "itself, so it neither hands those engines out as free nor stops them as idle",
    )
    free_engines: int | None = Field(
        default=None,
        ge=0,
        description="Free engines central wants kept warm on this edge; the agent keeps at least "
        "this many (its own free_engines setting still applies as a floor), so central's "
        "provision directives and the agent's idle reaper never work against each other",
    )


# --- claims (proxy → central, proxy → agent) -------------------------------------------------


class ClaimRequest(Wire):
    content_key: str = Field(min_length=3, max_length=200, pattern=r"^(id|infohash):\S+$")
    proxy_id: str = Field(min_length=1, max_length=100)
    host: str = Field(min_length=1, max_length=200, description="The asking proxy's edge host")
    avoid: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Engine ids not to place on (their session just failed: failover elsewhere); "
        "edge:<host> for an edge whose proxy could not be relayed from",
    )
    standby: bool = Field(
        default=False,
        description="A warm standby for content the asking proxy already plays: a separate "
        "engine claim on the asking host, never a relay, never on an engine in avoid nor on "
        "the engine of the content's primary session; 503 no_standby_capacity when none",
    )


class EngineRef(Wire):
    id: str
    host: str
    endpoint: str


class RelayRef(Wire):
    host: str
    proxy_url: str = Field(description="Base URL of the edge proxy to pull the stream from")


class ClaimGrant(Wire):
    kind: Literal["engine", "relay"]
    claim_id: str
    ttl_s: float = Field(
        description="Unconfirmed claims expire after this; a stream_started event confirms it"
    )
    engine: EngineRef | None = None
    relay: RelayRef | None = None


# --- sessions (proxy → its local agent) ------------------------------------------------------


class SessionReport(Wire):
    """A live session on one of the agent's engines that the agent did not place (central's
    claim, the proxy's static list), so the agent polls its stats: ``PUT /v1/sessions/{id}``,
    re-sent as a lease, ended by ``DELETE``."""

    engine_id: str | None = Field(
        default=None, max_length=200, description="The agent's engine id (central's claims)"
    )
    endpoint: str | None = Field(
        default=None,
        max_length=200,
        description="host:port of the engine, when the proxy does not know its id (static list)",
    )
    stat_url: str = Field(
        max_length=2000,
        description="The session's stat_url; only its path (/ace/stat/<infohash>/<session>) is "
        "used, always against the named engine",
    )
    content_key: str | None = Field(default=None, max_length=200)


# --- events (proxy → central) ----------------------------------------------------------------


class StreamEvent(Wire):
    event_id: str = Field(min_length=1, max_length=100, description="Idempotency key")
    type: Literal["stream_started", "stream_ended", "viewers"]
    stream_id: str = Field(min_length=1, max_length=100, description="One upstream session")
    at: datetime
    content_key: str | None = None
    infohash: str | None = None
    claim_id: str | None = None
    engine_id: str | None = None
    host: str | None = None
    viewers: int | None = Field(default=None, ge=0)
    reason: str | None = None  # stream_ended
    standby: bool = Field(
        default=False,
        description="stream_started: a warm standby session (kept ready to replace the "
        "channel's primary); a stream_started for a known stream id updates it, so a promoted "
        "standby is announced again with standby false",
    )


class EventBatch(Wire):
    proxy_id: str = Field(min_length=1, max_length=100)
    events: list[StreamEvent] = Field(max_length=1000)


class EventResult(Wire):
    event_id: str
    status: Literal["accepted", "duplicate", "error"]
    error: ErrorDetail | None = None


class EventBatchResult(Wire):
    results: list[EventResult]


# --- proxy snapshots (anti-entropy) ----------------------------------------------------------


class LiveStream(Wire):
    stream_id: str
    content_key: str
    infohash: str | None = None
    claim_id: str | None = None
    engine_id: str | None = None
    source: Literal["central", "agent", "static", "relay"]
    viewers: int = Field(ge=0)
    started_at: datetime
    players: dict[str, int] = Field(
        default_factory=dict,
        description="Player id → viewers of this stream that came with that player's token "
        "(central sums them into PlayerUsage for the per-player stream limits)",
    )
    standby: bool = Field(
        default=False, description="A warm standby session of the channel, not its primary"
    )


class ProxySnapshot(Wire):
    host: str
    url: str = Field(description="Base URL other edges use to relay from this proxy")
    streams: list[LiveStream]
    taken_at: datetime | None = Field(
        default=None,
        description="When the proxy built this snapshot, on the same clock as its events' "
        "``at``. Central compares it only with those event times (never its own clock): a "
        "stream whose stream_started is at or after it is not ended for being absent, one whose "
        "stream_ended is at or after it is not adopted back. Absent (an older proxy): the "
        "snapshot is taken as current",
    )
