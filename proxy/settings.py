"""Settings of acefleet-proxy. Env names (``ACEFLEET_PROXY_<NAME>``) are templated by Ansible:
keep them stable."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from acefleet import tls
from acefleet.config import CommaList
from acefleet.tokens import TokenKeys


class ProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACEFLEET_PROXY_", extra="forbid")

    # --- listening -------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(6880, ge=1, le=65535, description="TCP port to listen on")
    proxy_id: str = Field("", description="Name of this proxy in events (default: hostname)")

    # --- engines (standalone placement) ------------------------------------------------------
    engines: CommaList = Field(
        default_factory=list,
        description="Static engine list, host:port[@cap] comma separated (cap = max streams)",
    )
    engine_stream_cap: int = Field(
        1, ge=1, le=512, description="Streams per engine when an entry gives no @cap"
    )
    probe_interval_s: float = Field(
        5.0, gt=0, le=3600, description="Seconds between get_status health probes per engine"
    )
    probe_timeout_s: float = Field(3.0, gt=0, le=60, description="Timeout of one health probe")
    probe_failures: int = Field(
        2, ge=1, le=100, description="Consecutive failed probes before an engine is unhealthy"
    )

    # --- control plane (fleet mode; see docs/fleet.md) -----------------------------------------
    edge_host: str = Field(
        "",
        description="Name of this edge host as the agent and central know it (default: hostname)",
    )
    relay_url: str = Field(
        "",
        description="Base URL other edges relay this proxy's channels from (default: "
        "http://<listen address or edge host>:<port>)",
    )
    central_url: str = Field("", description="acefleet-central base URL (empty: no central)")
    central_api_key: SecretStr = Field(
        SecretStr(""), description="Service API key for acefleet-central"
    )
    central_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Timeout of one call to central (claim, events, snapshot)"
    )
    agent_url: str = Field(
        "", description="Local acefleet-agent base URL, the fallback for claims (empty: none)"
    )
    agent_api_key: SecretStr = Field(SecretStr(""), description="API key of the local agent")
    agent_timeout_s: float = Field(2.0, gt=0, le=60, description="Timeout of one agent call")
    breaker_failures: int = Field(
        3, ge=1, le=100, description="Failed calls in a row before central/agent is skipped"
    )
    breaker_open_s: float = Field(
        5.0, gt=0, le=3600, description="How long a failed central/agent is skipped"
    )
    event_queue_max: int = Field(
        10000, ge=10, le=1_000_000, description="Events queued for central; oldest dropped beyond"
    )
    event_batch_max: int = Field(200, ge=1, le=1000, description="Events per batch to central")
    event_flush_s: float = Field(
        0.2, gt=0, le=60, description="Events wait this long to gather into one batch"
    )
    snapshot_interval_s: float = Field(
        10.0, gt=0, le=3600, description="Seconds between live-stream snapshots to central"
    )
    agent_session_refresh_s: float = Field(
        15.0,
        gt=0,
        le=600,
        description="Seconds between re-reports of live sessions to the local agent (its "
        "session_ttl_s must be longer: a session not re-reported is dropped there)",
    )

    # --- avoiding what just failed (placement; 0 = never avoid) --------------------------------
    failed_engine_avoid_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="An engine whose upstream just failed is named in claims' avoid list this "
        "long, so central and the agent place the failover elsewhere",
    )
    failed_relay_avoid_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="An edge that a relay of a channel just failed from is not relayed from again "
        "for that channel this long (central hands the channel to this edge instead)",
    )
    failed_static_avoid_s: float = Field(
        15.0,
        ge=0,
        le=3600,
        description="A static-list engine whose upstream just failed is picked last this long "
        "(still picked when it is the only one free)",
    )

    # --- timeouts ----------------------------------------------------------------------------
    engine_call_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Timeout of the engine's format=json start call"
    )
    first_byte_timeout_s: float = Field(
        45.0,
        ge=1,
        le=600,
        description="Timeout for the playback URL to deliver its first byte (prebuffering)",
    )
    stall_timeout_s: float = Field(
        10.0, gt=0, le=600, description="An upstream that sends nothing this long is replaced"
    )
    stop_timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of the engine stop call")
    grace_s: float = Field(
        10.0, ge=0, le=3600, description="Upstream linger after its last viewer left (zapping)"
    )
    failovers: int = Field(
        2, ge=0, le=10, description="Re-placements of an upstream that dies while watched"
    )
    failover_wait_s: float = Field(
        30.0,
        ge=0,
        le=600,
        description="A failover refused for want of a free engine (503) is asked again this long "
        "while viewers get gap fills, so a fleet busy replacing engines (a VPN tunnel down, a "
        "rotation, a drain) costs a pause, not a disconnect (0 = fail at once)",
    )

    # --- zero-drop failover (see docs/failover.md) -------------------------------------------
    standby_min_viewers: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Channels with at least this many viewers keep a warm standby session on "
        "another engine, promoted at a keyframe when the primary dies or stalls (0 = only "
        "channels the catalog flags)",
    )
    standby_buffer_bytes: int = Field(
        3 * 1024 * 1024,
        ge=256 * 1024,
        le=256 * 1024 * 1024,
        description="Recent bytes a standby session keeps (must hold a whole keyframe interval)",
    )
    standby_promote_after_s: float = Field(
        0.8,
        gt=0,
        le=60,
        description="A primary that sends nothing this long while its standby flows is replaced "
        "by the standby (without a standby, stall_timeout_s applies)",
    )
    gap_fill_after_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="While a channel has no upstream bytes this long (failover without standby), "
        "viewers get MPEG-TS null packets every this many seconds, so players with read "
        "timeouts keep the connection",
    )

    # --- hitless restart (fd handover; see docs/reload.md) --------------------------------------
    handover_socket: str = Field(
        "/run/acefleet-proxy/control.sock",
        description="Unix socket `acefleet-proxy reload` asks for a hitless takeover on (empty: "
        "no reload; a missing directory disables it with a warning)",
    )
    handover_timeout_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description="How long a new process may take to start and take over before the old one "
        "gives up the reload and keeps serving",
    )

    # --- fan-out -----------------------------------------------------------------------------
    buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=256 * 1024,
        le=1024 * 1024 * 1024,
        description="Most recent stream bytes kept per channel (late joiners, slow viewers): "
        "the ceiling of the bitrate-sized buffer (buffer_seconds)",
    )
    buffer_seconds: float = Field(
        8.0,
        ge=0,
        le=600,
        description="A channel keeps this many seconds of its measured bitrate (and at least two "
        "keyframe intervals and 512 KiB) for joiners, viewers catching up and the first HLS "
        "player's segments, within buffer_bytes (0 = always buffer_bytes)",
    )
    # Fan-out CPU is paid per write, not per byte (bench/results/proxy.md, issue 17): at
    # 4 Mbit/s, 200 ms batches of up to 128 KiB cost 0.30 CPU-s/GB where 100 ms / 64 KiB cost
    # 0.38. A player buffers seconds and an engine's stream runs ~30 s behind live, so 0.1 s
    # more delay is invisible; a joiner is served from the buffer, not from the next batch.
    batch_bytes: int = Field(
        128 * 1024, ge=188, le=4 * 1024 * 1024, description="Forward once this much is waiting"
    )
    batch_ms: float = Field(
        200.0, ge=0, le=2000, description="...or once the oldest waiting byte is this old (ms)"
    )
    join_max_bytes: int = Field(
        2 * 1024 * 1024,
        ge=188 * 16,
        description="Most a late joiner is sent at once (from the latest keyframe)",
    )
    viewer_high_water: int = Field(
        256 * 1024, ge=16 * 1024, description="Socket send backlog above which a viewer is paused"
    )
    viewer_sndbuf: int = Field(
        0,
        ge=0,
        le=64 * 1024 * 1024,
        description="Kernel send buffer per viewer socket in bytes (0 = kernel autotuning); "
        "bounds what a client that stops reading pins in the kernel",
    )
    upstream_hold_max_s: float = Field(
        3.0,
        ge=0,
        le=60,
        description="When no viewer of a channel can take more and the slowest that keeps "
        "pace lags half the buffer, the upstream is not read for at most this long, so the "
        "engine buffers instead of viewers being skipped (0 = never hold)",
    )
    upstream_hold_starve_s: float = Field(
        0.5,
        gt=0,
        le=10,
        description="A hold ends once a viewer has waited this long at the head of the stream "
        "for it: the viewers it waited for are slower than the stream and no longer pace it",
    )
    slow_viewer_policy: Literal["skip", "drop"] = Field(
        "skip",
        description="A viewer behind the buffer: skip = move it forward on a packet boundary, "
        "drop = disconnect it",
    )
    viewer_stall_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="A viewer that reads nothing this long is disconnected"
    )

    # --- HLS (cut by the proxy from the channel's TS upstream; see docs/hls.md) ------------------
    hls_target_s: float = Field(
        4.0,
        ge=1,
        le=30,
        description="HLS segments are cut at the first keyframe after this much media",
    )
    hls_max_segment_s: float = Field(
        6.0,
        ge=1,
        le=60,
        description="Longest HLS segment (announced as EXT-X-TARGETDURATION, rounded up); a "
        "stream without a keyframe by then is cut anyway",
    )
    hls_window: int = Field(6, ge=3, le=100, description="Segments listed in an HLS media playlist")
    hls_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        le=4 * 1024 * 1024 * 1024,
        description="HLS segment bytes kept per channel, at most (oldest evicted first)",
    )
    hls_session_idle_s: float = Field(
        30.0,
        ge=5,
        le=3600,
        description="An HLS player that fetches nothing this long stops counting as a viewer",
    )

    # --- players: tokens and the catalog copy (see docs/catalog.md) ----------------------------
    token_keys: CommaList = Field(
        default_factory=list,
        description="Stream-token keys <id>:<secret>, comma separated, the same as central's "
        "(every key verifies)",
    )
    tokens_required: bool = Field(
        False,
        description="Streams need a valid token (?token=… from a player's playlist); false: "
        "open mode, anyone who reaches the proxy may watch",
    )
    token_failures_per_min: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Rejected tokens per client address per minute before it gets 429s",
    )
    catalog_refresh_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds between polls of central's catalog (kept to serve players' files "
        "and check tokens while central is away)",
    )
    usage_refresh_s: float = Field(
        2.0,
        gt=0,
        le=600,
        description="Seconds between polls of central's per-player stream counts (limits)",
    )
    cache_dir: str = Field(
        "",
        description="Directory the last catalog and guide from central are kept in, so a "
        "restarted proxy serves them while central is away (empty: memory only)",
    )

    # --- limits ------------------------------------------------------------------------------
    # Sized for 2,000 viewers and 200 channels on one edge with headroom (bench/results/
    # proxy.md): what bounds memory is max_viewers x viewer_high_water (stalled viewers, ~750 MiB
    # at worst here) plus the channels' buffers; file descriptors (the unit's LimitNOFILE, 65536)
    # are far above max_connections + max_upstreams x 2 (an upstream and its standby).
    max_viewers: int = Field(3000, ge=1, description="Viewers over all channels")
    max_upstreams: int = Field(256, ge=1, description="Upstream engine sessions at once")
    max_connections: int = Field(6000, ge=1, description="Client connections of any kind")
    client_rate: float = Field(
        5.0, gt=0, description="New streams per second per client address (sustained)"
    )
    client_burst: int = Field(10, ge=1, description="New streams a client may open in a burst")
    trusted_proxies: CommaList = Field(
        default_factory=list,
        description="Peer addresses (e.g. the HAProxy hosts) whose X-Forwarded-For names the "
        "client for per-client limits",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A request must arrive complete within this (slowloris)"
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Keep-alive connections idle this long are closed"
    )
    max_header_bytes: int = Field(
        8192, ge=1024, le=1024 * 1024, description="Request line plus headers, at most"
    )

    # --- lifecycle and logs ------------------------------------------------------------------
    drain_timeout_s: float = Field(
        30.0, ge=0, le=3600, description="On SIGTERM, how long viewers may keep watching"
    )
    log_level: str = Field("info", description="debug, info, warning or error")
    log_format: Literal["auto", "json", "console"] = Field("auto", description="Log format")

    # --- TLS (see docs/tls.md) -----------------------------------------------------------------
    tls_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port the proxy also serves HTTPS on, the same routes as the plain port; "
        "other edges relay from it (0: no HTTPS; needs tls_cert_file and tls_key_file)",
    )
    tls_cert_file: str = Field(
        "", description="PEM certificate (chain first) served on tls_port (empty: no HTTPS)"
    )
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file")
    tls_ca_file: str = Field(
        "",
        description="CA file https peers are verified against: central, the agent and the edges "
        "relayed from (empty: the system's trust store)",
    )

    @field_validator("engines")
    @classmethod
    def _engines_valid(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_engine(entry, 1)
        return value

    @field_validator("token_keys")
    @classmethod
    def _token_keys_valid(cls, value: list[str]) -> list[str]:
        TokenKeys.parse(value)  # ValueError with the reason
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> ProxySettings:
        tls.check_files(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        if bool(self.tls_port) != bool(self.tls_cert_file):
            raise ValueError("tls_port and tls_cert_file/tls_key_file go together")
        if self.tls_port and self.tls_port == self.port:
            raise ValueError("tls_port must differ from port")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> ProxySettings:
        if self.first_byte_timeout_s < self.engine_call_timeout_s:
            raise ValueError(
                "first_byte_timeout_s must be >= engine_call_timeout_s: engines prebuffer for "
                "5-30 s before the first byte"
            )
        if self.join_max_bytes > self.buffer_bytes:
            raise ValueError("join_max_bytes must not exceed buffer_bytes")
        if self.tokens_required and not self.token_keys:
            raise ValueError("tokens_required needs token_keys")
        if self.hls_max_segment_s < self.hls_target_s:
            raise ValueError("hls_max_segment_s must be >= hls_target_s")
        return self

    @property
    def fleet_mode(self) -> bool:
        """Claims go through central and/or the local agent (not only the static list)."""
        return bool(self.central_url or self.agent_url)


def parse_engine(entry: str, default_cap: int) -> tuple[str, int]:
    """``host:port[@cap]`` → (``host:port``, cap); ValueError with the reason otherwise."""
    text = entry.strip()
    endpoint, _, cap_text = text.partition("@")
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"engine {entry!r} is not host:port[@cap]")
    cap = default_cap
    if cap_text:
        if not cap_text.isdigit() or int(cap_text) < 1:
            raise ValueError(f"engine {entry!r}: cap must be a positive integer")
        cap = int(cap_text)
    return endpoint, cap
