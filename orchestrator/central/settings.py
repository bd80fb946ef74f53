"""Settings of acefleet-central (flags > ``ACEFLEET_CENTRAL_*`` env > TOML file > defaults).

These names are a contract with the Ansible role that templates central's configuration: add
options freely, never rename one.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from acefleet import tls
from acefleet.config import CommaList
from acefleet.tokens import TokenKeys
from orchestrator.central.auth import KEY_NAME, Role, parse_key

# Keys that ship in examples and must never guard a real fleet.
_PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "password", "example", "xxxxxxxxxxxxxxxx"}
MIN_KEY_LENGTH = 16
# A base URL a browser can put a path after: scheme, authority, optional path; no query, fragment.
_HTTP_URL = re.compile(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")


class CentralSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACEFLEET_CENTRAL_", extra="forbid")

    listen_host: str = Field("127.0.0.1", description="Address the HTTP API listens on")
    listen_port: int = Field(8000, ge=1, le=65535, description="Port the HTTP API listens on")
    # --- TLS (see docs/tls.md): both files set, the API is served over HTTPS only ----------
    tls_cert_file: str = Field(
        "", description="PEM certificate (chain first) central serves HTTPS with (empty: HTTP)"
    )
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file")
    database_url: str = Field(
        "sqlite+aiosqlite:///acefleet-central.db",
        description="SQLAlchemy async URL of the history database "
        "(sqlite+aiosqlite:///path or postgresql+asyncpg://user:pw@host/db)",
    )
    heartbeat_interval_s: float = Field(
        2.0, gt=0, le=60, description="Interval agents are told to heartbeat at"
    )
    stale_after_s: float = Field(
        6.0, gt=0, description="A host silent this long is stale: no new work is placed on it"
    )
    lost_after_s: float = Field(
        30.0, gt=0, description="A host silent this long is lost (its engines are never stopped)"
    )
    proxy_lost_after_s: float = Field(
        60.0,
        gt=0,
        description="A proxy whose last stream snapshot is this old is gone: its streams leave the "
        "live view and its claims are released (proxies snapshot every ~10 s)",
    )
    forget_after_s: float = Field(
        3600.0,
        gt=0,
        description="A host lost this long (no heartbeat) is forgotten: it and its engines leave "
        "the live view and the metrics; a new heartbeat brings it back",
    )
    warmup_s: float = Field(
        6.0,
        ge=0,
        description="After a start, live state is rebuilt from heartbeats and proxy snapshots "
        "for this long; the API reports warming_up meanwhile",
    )
    claim_ttl_s: float = Field(
        15.0, gt=0, description="An unconfirmed claim is released after this many seconds"
    )
    claim_retry_after_s: float = Field(
        2.0, gt=0, description="Retry-After sent with a 503 when no engine fits a claim"
    )
    warm_buffer_per_edge: int = Field(
        2, ge=0, description="Free engines central keeps ready on every edge"
    )
    fleet_max_engines: int = Field(
        500, ge=0, description="Most engines the whole fleet may run (0: no fleet-wide limit)"
    )
    proxy_url_template: str = Field(
        "",
        description="Fallback relay URL of an edge's proxy before its first snapshot, "
        "e.g. http://{host}:6880 (empty: only URLs from proxy snapshots are used)",
    )
    player_url: str = Field(
        "",
        description="Base URL players reach the fleet's streams at (the lab's VIP, a proxy), "
        "e.g. http://10.0.0.100; the dashboard's watch preview plays "
        "<player_url>/ace/manifest.m3u8 from the browser (empty: no preview)",
    )
    # --- the catalog and what players read (see docs/catalog.md) --------------------------------
    catalog_seed_path: str = Field(
        "",
        description="M3U or JSON file of channels imported at start when the catalog is empty "
        "(the lab's demo catalog); empty: none",
    )
    guide_path: str = Field(
        "",
        description="XMLTV file on this host that is the guide, re-read when it changes "
        "(empty: the guide is uploaded through PUT /v1/guide)",
    )
    guide_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest XMLTV guide accepted (upload or file)"
    )
    catalog_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest playlist or JSON accepted by an import"
    )
    token_keys: CommaList = Field(
        [],
        description="Stream-token keys <id>:<secret>, comma separated; the first signs, all verify "
        "(rotation: add the new key second, move it first, drop the old); proxies get the same",
    )
    tokens_required: bool = Field(
        False,
        description="Players need their own secret playlist URL, whose stream URLs carry signed "
        "tokens; false (open mode): /playlist.m3u lists every enabled channel with plain URLs",
    )
    token_ttl_s: float = Field(
        7 * 86400.0,
        ge=60,
        le=366 * 86400.0,
        description="Lifetime of the tokens in a playlist (media servers keep URLs for days)",
    )
    hdhomerun_max_tuners: int = Field(
        8,
        ge=1,
        le=1000,
        description="Most tuners the HDHomeRun emulation announces (TunerCount is the fleet's "
        "free stream slots, bounded by this and by a player's own limit)",
    )
    public_rate_limit_rps: float = Field(
        5.0,
        gt=0,
        description="Requests per second per client address on the player files (playlist, "
        "guide, HDHomeRun); failed secret lookups count double",
    )
    trusted_proxies: CommaList = Field(
        [],
        description="Peer addresses (the HAProxy hosts) whose X-Forwarded-For names the client, "
        "for the per-client limits on the player files",
    )
    # Plain [] defaults (pydantic copies them) so --help prints "[]", not a factory.
    service_keys: CommaList = Field(
        [],
        description="API keys of services (agents, proxies), each <name>:<key> (one name per "
        "instance: it owns the instance's claims) or a bare key (named service-<sha256 prefix>); "
        "a name may have several keys while one is rotated",
    )
    operator_keys: CommaList = Field(
        [],
        description="API keys of operators (read, drain, scale), <name>:<key> or bare; the name "
        "is the actor in the audit log",
    )
    viewer_keys: CommaList = Field(
        [], description="API keys that may only read, <name>:<key> or bare"
    )
    # --- calls to agents (an operator's tunnel rotation is forwarded to the edge's agent) ----
    agent_api_key: SecretStr = Field(
        SecretStr(""),
        description="The agents' api_key (Authorization: Bearer), sent on the operator calls "
        "central forwards to an agent (empty: those calls answer 503 agent_key_missing)",
    )
    agent_ca_file: str = Field(
        "",
        description="CA file an https agent_url is verified against (empty: the system's trust "
        "store)",
    )
    agent_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Timeout of one call central forwards to an agent"
    )
    rate_limit_rps: float = Field(
        20.0, gt=0, description="Requests per second allowed per operator or viewer key"
    )
    service_rate_limit_rps: float = Field(
        5000.0, gt=0, description="Requests per second allowed per service key"
    )
    history_queue_max: int = Field(
        20000, ge=100, description="History writes buffered in memory before new ones are dropped"
    )
    event_id_memory: int = Field(
        200000, ge=1000, description="Event ids remembered for idempotency"
    )
    gc_full_interval_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="Garbage collection on central's schedule (gc_pacing.py: young objects "
        "every 20 ms) with a full pass every this many seconds, instead of Python's, whose "
        "passes paused claims for 10-80 ms with a big fleet; 0 = Python's own schedule",
    )
    live_update_interval_s: float = Field(
        0.5, gt=0, le=10, description="Shortest interval between two live updates to dashboards"
    )
    live_ws_max_per_key: int = Field(
        8, ge=1, description="Live WebSocket connections one API key may hold at once (close 4429)"
    )
    live_ws_send_queue_max: int = Field(
        64,
        ge=1,
        description="Messages queued for one live WebSocket that is not reading; past that the "
        "client is dropped as too slow (close 4000)",
    )
    # Off by default: permessage-deflate compresses every message once per connection (its
    # own zlib context), so each delta cost the claim loop one zlib pass per dashboard; with
    # 50 browser dashboards (browsers always offer it) claim p99 went from ~90 to ~410 ms at
    # 500 edges (bench/results/central.md). The feed sends deltas only; on a slow link to
    # central an operator turns this on and pays that CPU.
    live_ws_deflate: bool = Field(
        False,
        description="Accept permessage-deflate on WebSockets (the live feed): less traffic to "
        "dashboards, one compression per dashboard per update on central's claim loop",
    )
    live_ws_auth_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Time a live WebSocket has to send its auth message (4408)"
    )
    # 60 s: a real engine takes 8-10 s from start to downloading and a swarm may dip to 0 peers
    # for a few seconds, so a minute tells a dead channel or stuck engine from churn, while the
    # proxy's own stall failover (10 s by default) still handles what viewers notice first.
    degraded_after_s: float = Field(
        60.0,
        gt=0,
        description="A stream whose engine reports 0 peers, or no download progress, this long is "
        "degraded (no_peers, download_stalled)",
    )
    live_ws_ping_interval_s: float = Field(
        15.0, gt=0, le=300, description="A live WebSocket quiet this long gets a ping message"
    )
    log_level: str = Field("info", description="debug, info, warning or error")
    log_format: str = Field("auto", description="json, console or auto (json when not a tty)")
    # --- standby central (docs/standby-central.md): only the control VIP's holder serves -----
    standby_state_file: str = Field(
        "",
        description="File keepalived's notify script writes its VRRP state to (MASTER, BACKUP, "
        "FAULT); set, central serves only while it reads MASTER (empty: not consulted)",
    )
    standby_control_vip: str = Field(
        "",
        description="The control VIP; set, central serves only while this address is on one of "
        "its host's interfaces (empty: not consulted; neither set: always serves)",
    )
    standby_check_interval_s: float = Field(
        0.5, gt=0, le=10, description="Interval at which the state file and the VIP are looked at"
    )
    standby_retry_after_s: float = Field(
        2.0, gt=0, description="Retry-After sent with the 503 standby_central of a standby"
    )

    @field_validator("player_url")
    @classmethod
    def _check_player_url(cls, url: str) -> str:
        if url and not _HTTP_URL.match(url):
            raise ValueError("player_url must be an http:// or https:// base URL, without a query")
        return url.rstrip("/")  # the page appends /ace/manifest.m3u8

    @field_validator("token_keys")
    @classmethod
    def _check_token_keys(cls, keys: list[str]) -> list[str]:
        TokenKeys.parse(keys)  # ValueError with the reason
        return keys

    @field_validator("standby_control_vip")
    @classmethod
    def _check_control_vip(cls, vip: str) -> str:
        if vip:
            ipaddress.ip_address(vip)  # ValueError: not an IP address
        return vip

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        tls.check_files(self.tls_cert_file, self.tls_key_file)
        if self.agent_ca_file and not os.access(self.agent_ca_file, os.R_OK):
            raise ValueError(
                f"agent_ca_file {self.agent_ca_file!r} does not exist or is not readable"
            )
        return self

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.tokens_required and not self.token_keys:
            raise ValueError("tokens_required needs token_keys")
        if self.lost_after_s <= self.stale_after_s:
            raise ValueError("lost_after_s must be greater than stale_after_s")
        if self.forget_after_s <= self.lost_after_s:
            raise ValueError("forget_after_s must be greater than lost_after_s")
        self._check_keys()
        if self.proxy_url_template:
            try:
                self.proxy_url_template.format(host="edge")
            except (KeyError, IndexError, ValueError):
                raise ValueError("proxy_url_template may only use the {host} placeholder") from None
        return self

    def _check_keys(self) -> None:
        entries = [
            (Role.service, self.service_keys),
            (Role.operator, self.operator_keys),
            (Role.viewer, self.viewer_keys),
        ]
        if not any(keys for _, keys in entries):
            raise ValueError("set at least one of service_keys, operator_keys, viewer_keys")
        keys: set[str] = set()
        roles: dict[str, Role] = {}
        for role, listed in entries:
            for entry in listed:
                prefix, sep, _ = entry.partition(":")
                if sep and not KEY_NAME.match(prefix):
                    raise ValueError(
                        f"{role.value}_keys: a key name (before ':') must match {KEY_NAME.pattern}"
                    )
                name, key = parse_key(entry, role)
                if len(key) < MIN_KEY_LENGTH or key.lower() in _PLACEHOLDER_KEYS:
                    raise ValueError(
                        f"API keys must be at least {MIN_KEY_LENGTH} random characters ({name})"
                    )
                if key in keys:
                    raise ValueError(f"an API key may be listed once, in one role only ({name})")
                keys.add(key)
                if roles.setdefault(name, role) is not role:
                    raise ValueError(f"the key name {name!r} is used by two roles")
