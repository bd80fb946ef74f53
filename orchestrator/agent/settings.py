"""Settings of acefleet-agent (env prefix ``ACEFLEET_AGENT_``).

These names are a contract: the Ansible role templates the agent's config from them. Add, never
rename.
"""

from __future__ import annotations

import socket
from typing import Self

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from acefleet import tls
from acefleet.config import CommaList
from orchestrator.agent import tunnel_specs
from orchestrator.agent.tunnel_specs import TunnelSpec

_PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "password", "apikey", "api_key"}


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACEFLEET_AGENT_", extra="forbid")

    # --- service ---------------------------------------------------------------------------
    host: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=40,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        description="Name of this edge host; engines are labelled with it and only engines "
        "carrying it are adopted",
    )
    listen_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on")
    listen_port: int = Field(default=8100, ge=1, le=65535, description="HTTP API port")
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer key required by every mutating call (at least 12 characters)",
    )
    agent_check_port: int = Field(
        default=8101,
        ge=0,
        le=65535,
        description="TCP port of the HAProxy agent-check responder (0 disables it)",
    )
    agent_check_host: str = Field(
        default="0.0.0.0", description="Address the HAProxy agent-check responder listens on"
    )
    log_level: str = Field(default="info", description="debug, info, warning or error")
    log_format: str = Field(default="auto", description="auto, json or console")

    # --- docker and engines ----------------------------------------------------------------
    docker_url: str = Field(
        default="unix:///var/run/docker.sock", description="Docker API endpoint"
    )
    docker_timeout_s: float = Field(default=30, gt=0, description="Timeout of one Docker call")
    engine_image: str = Field(
        default="acefleet/engine-sim", min_length=1, description="Image engines run from"
    )
    engine_profile: str = Field(
        default="auto",
        description="How the image takes ports/flags/env: auto (from the image name), "
        "engine-sim, acestream-http-proxy or http-port-env",
    )
    engine_extra_args: CommaList = Field(
        default_factory=list,
        description="Extra engine arguments (comma-separated), e.g. --chaos,--timing,fast",
    )
    engine_env: CommaList = Field(
        default_factory=list,
        description="Extra engine environment as NAME=value items (comma-separated)",
    )
    engine_bind_host: str = Field(
        default="127.0.0.1", description="Host address engine ports are published on"
    )
    engine_network_container: str = Field(
        default="",
        description="Join this container's network namespace instead of publishing ports "
        "(network_mode container:<name>); engines are then reached on engine_address",
    )
    engine_address: str = Field(
        default="",
        description="Address the agent and proxy use to reach engines (default: "
        "engine_bind_host, or 127.0.0.1 in a shared network namespace)",
    )
    engine_memory_mb: int = Field(default=0, ge=0, description="Memory limit per engine (0: none)")
    http_port_range: str = Field(
        default="19000-19499", description="Host ports for engine HTTP APIs, as LOW-HIGH"
    )
    p2p_port_range: str = Field(
        default="19500-19999", description="Host ports for engine P2P, as LOW-HIGH"
    )
    stream_cap: int = Field(default=1, ge=1, le=16, description="Max sessions per engine")

    # --- pool sizing -----------------------------------------------------------------------
    min_engines: int = Field(default=1, ge=0, description="Floor: engines kept running always")
    free_engines: int = Field(
        default=1, ge=0, description="Buffer of free (streamless) engines kept ready"
    )
    max_engines: int = Field(default=10, ge=0, description="Never run more engines than this")
    idle_grace_s: float = Field(
        default=300, ge=0, description="Free engines beyond the buffer are stopped after this"
    )
    reconcile_interval_s: float = Field(
        default=5, gt=0, description="How often the pool is compared with its targets"
    )
    engine_max_age_s: float = Field(
        default=0,
        ge=0,
        description="Engines older than this are recycled: drained (no new claims; proxies move "
        "their sessions off make-before-break) and replaced once they carry no session; 0: never",
    )
    engine_max_cache_bytes: int = Field(
        default=0,
        ge=0,
        description="Engines whose cache passes this many bytes are recycled the same way. "
        "Measured as the bytes the engine downloaded in its life (the growth of downloaded_bytes "
        "in its polled stats): all a cache can have taken in; 0: never",
    )

    # --- readiness, health -----------------------------------------------------------------
    ready_timeout_s: float = Field(
        default=60, gt=0, description="Engines not answering get_status by then are removed"
    )
    ready_poll_s: float = Field(default=0.5, gt=0, description="Readiness poll interval")
    probe_interval_s: float = Field(default=10, gt=0, description="Health probe interval")
    probe_timeout_s: float = Field(default=5, gt=0, description="Timeout of one health probe")
    probe_failures: int = Field(
        default=3, ge=1, description="Failed probes in a row that make an engine be replaced"
    )
    replace_cooldown_s: float = Field(
        default=30, ge=0, description="Minimum time between two engine replacements"
    )

    # --- provisioning protection -----------------------------------------------------------
    provision_concurrency: int = Field(
        default=2, ge=1, description="Engines being created at the same time"
    )
    provision_min_interval_s: float = Field(
        default=1, ge=0, description="Minimum time between two container creations"
    )
    breaker_failures: int = Field(
        default=3, ge=1, description="Provisioning failures in a row that open the breaker"
    )
    breaker_backoff_s: float = Field(
        default=10, gt=0, description="First wait before a half-open retry"
    )
    breaker_backoff_max_s: float = Field(
        default=300, gt=0, description="Longest wait between half-open retries"
    )

    # --- claims and stats ------------------------------------------------------------------
    claim_ttl_s: float = Field(
        default=30, gt=0, description="Unconfirmed local claims expire after this"
    )
    state_file: str = Field(
        default="",
        description="JSON file keeping local claims across agent restarts (empty: memory only)",
    )
    stats_interval_s: float = Field(default=5, gt=0, description="stat_url poll interval")
    session_ttl_s: float = Field(
        default=60,
        gt=0,
        description="A session the proxy reported (PUT /v1/sessions) and did not report again "
        "within this is dropped (the proxy re-reports every agent_session_refresh_s, 15 s)",
    )
    stats_history: int = Field(default=60, ge=1, le=10000, description="Stats kept per engine")

    # --- VPN (Gluetun) ---------------------------------------------------------------------
    vpn_container: str = Field(
        default="",
        description="Gluetun container whose network engines share (empty: no VPN)",
    )
    vpn_control_url: str = Field(
        default="http://127.0.0.1:8000", description="Gluetun control server base URL"
    )
    vpn_api_key: SecretStr = Field(
        default=SecretStr(""), description="X-API-Key for Gluetun's control server, if set"
    )
    vpn_check_interval_s: float = Field(default=10, gt=0, description="VPN status poll interval")
    vpn_tunnels_file: str = Field(
        default="",
        description="JSON file (mode 0600) listing the VPN tunnels the agent runs, one Gluetun "
        "container each, engines spread across them (empty: none; see docs/agent.md)",
    )
    vpn_image: str = Field(
        default="qmcgaw/gluetun:v3.40.0", min_length=1, description="Image of tunnel containers"
    )
    vpn_docker_network: str = Field(
        default="bridge",
        min_length=1,
        description="Docker network tunnel containers attach to; the agent and proxy reach a "
        "tunnel's control server and engines at its address there",
    )
    vpn_control_port: int = Field(
        default=8000, ge=1, le=65535, description="Port of a tunnel's Gluetun control server"
    )
    vpn_tun_device: str = Field(
        default="/dev/net/tun", description="Device passed to tunnel containers (empty: none)"
    )
    vpn_down_after_s: float = Field(
        default=30,
        ge=0,
        description="A tunnel not healthy this long has its engines drained (drain_reason "
        "tunnel) and replaced on healthy tunnels",
    )
    vpn_rotation_timeout_s: float = Field(
        default=120,
        gt=0,
        # a retiring generation is removed after 600 s at the latest (tunnels.RETIRE_MAX_S):
        # the abort must come first, or it would have no generation left to go back to
        le=600,
        description="A rotation whose new tunnel generation is not healthy this long after it "
        "started is aborted: the new generation is removed and the old one stays current",
    )

    # --- central ---------------------------------------------------------------------------
    central_url: str = Field(default="", description="acefleet-central base URL (empty: alone)")
    central_api_key: SecretStr = Field(
        default=SecretStr(""), description="Bearer key for acefleet-central"
    )
    agent_url: str = Field(
        default="", description="This agent's URL as central reaches it (default: from listen)"
    )
    heartbeat_interval_s: float = Field(default=2, gt=0, description="Heartbeat interval")

    # --- TLS (see docs/tls.md) -------------------------------------------------------------
    tls_cert_file: str = Field(
        default="",
        description="PEM certificate (chain first) the API is served over HTTPS with (empty: HTTP)",
    )
    tls_key_file: str = Field(default="", description="PEM private key of tls_cert_file")
    tls_ca_file: str = Field(
        default="",
        description="CA file an https central_url is verified against (empty: the system's "
        "trust store)",
    )

    _tunnels: list[TunnelSpec] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        tls.check_files(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        return self

    @model_validator(mode="after")
    def _check(self) -> Self:
        key = self.api_key.get_secret_value()
        if len(key) < 12 or key.lower() in _PLACEHOLDER_KEYS:
            raise ValueError("api_key must be set to a real secret of at least 12 characters")
        if self.max_engines < self.min_engines:
            raise ValueError("max_engines must be >= min_engines")
        parse_range(self.http_port_range)
        parse_range(self.p2p_port_range)
        for item in self.engine_env:
            if "=" not in item:
                raise ValueError(f"engine_env item {item!r} is not NAME=value")
        if self.central_url and not self.central_api_key.get_secret_value().strip():
            raise ValueError("central_api_key is required when central_url is set")
        namespaces = [
            name
            for name in ("vpn_tunnels_file", "vpn_container", "engine_network_container")
            if getattr(self, name)
        ]
        if len(namespaces) > 1:
            raise ValueError(f"set only one of {', '.join(namespaces)}")
        if self.vpn_tunnels_file:
            self._check_tunnels()
        return self

    def _check_tunnels(self) -> None:
        key = self.vpn_api_key.get_secret_value()
        if len(key) < 12 or key.lower() in _PLACEHOLDER_KEYS:
            raise ValueError(
                "vpn_api_key must be a real secret of at least 12 characters when "
                "vpn_tunnels_file is set (the agent sets it on every tunnel's control server)"
            )
        try:
            self._tunnels = tunnel_specs.load(self.vpn_tunnels_file)
        except tunnel_specs.TunnelSpecError as exc:
            raise ValueError(str(exc)) from None
        ports = len(self.http_ports)
        # every generation of every tunnel reserves its own ports; a rotation needs a second set
        needed = 2 * sum(t.engines for t in self._tunnels)
        if ports < needed:
            raise ValueError(
                f"http_port_range has {ports} ports; the tunnels need {needed} (each tunnel "
                "reserves its engines' ports, twice while it rotates)"
            )

    @property
    def tunnels(self) -> list[TunnelSpec]:
        """The VPN tunnels from ``vpn_tunnels_file`` (empty without one)."""
        return list(self._tunnels)

    @property
    def network_container(self) -> str:
        """The container whose network namespace engines join, if any."""
        return self.vpn_container or self.engine_network_container

    @property
    def reach_address(self) -> str:
        if self.engine_address:
            return self.engine_address
        if self.network_container or self.engine_bind_host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return self.engine_bind_host

    @property
    def http_ports(self) -> range:
        return parse_range(self.http_port_range)

    @property
    def p2p_ports(self) -> range:
        return parse_range(self.p2p_port_range)


def parse_range(text: str) -> range:
    """``"19000-19499"`` → range(19000, 19500); a precise error otherwise."""
    low_s, sep, high_s = text.partition("-")
    try:
        low, high = int(low_s), int(high_s if sep else low_s)
    except ValueError:
        raise ValueError(f"port range {text!r} is not LOW-HIGH") from None
    if not (1 <= low <= high <= 65535):
        raise ValueError(f"port range {text!r} must satisfy 1 <= LOW <= HIGH <= 65535")
    return range(low, high + 1)
