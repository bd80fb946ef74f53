"""One engine's record: what the agent knows of an engine container, and the ``acefleet.*``
labels it carries, which are the source of truth (adoption rebuilds the record from them).

An engine in a VPN tunnel carries the tunnel's name and the container (generation) whose network
namespace it joined; its address is that container's. Drained engines say why: being removed,
recycled, or moved off their tunnel (``tunnel``)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from acefleet.wire import EngineHealth, EngineReport, EngineStats

LABEL_MANAGED = "acefleet.managed"
LABEL_HOST = "acefleet.host"
LABEL_PROFILE = "acefleet.profile"
LABEL_HTTP_PORT = "acefleet.http-port"
LABEL_P2P_PORT = "acefleet.p2p-port"
LABEL_CREATED_AT = "acefleet.created-at"
LABEL_GENERATION = "acefleet.generation"
LABEL_VPN_FORWARDED = "acefleet.vpn-forwarded"
LABEL_ROLE = "acefleet.role"
LABEL_TUNNEL = "acefleet.tunnel"
LABEL_TUNNEL_CONTAINER = "acefleet.tunnel-container"


class BadLabels(ValueError):
    """A container carries our host label but its other labels cannot be read."""


@dataclass
class Engine:
    id: str  # container name, stable across agent restarts
    host: str
    address: str
    http_port: int
    p2p_port: int
    profile: str
    created_at: datetime
    generation: int = 0
    vpn_forwarded: bool = False
    health: EngineHealth = EngineHealth.starting
    probe_failures: int = 0
    removing: bool = False
    # Drained to be replaced (too old, cache too big, its tunnel): no new claims; removed once
    # idle. ``tunnel_drained`` says the tunnel was the cause.
    recycling: bool = False
    tunnel_drained: bool = False
    tunnel: str | None = None
    tunnel_container: str | None = None
    # Bytes downloaded in its life, from the growth of its stats' downloaded_bytes (cache size
    # bound); the last sample's count, to measure the growth from.
    downloaded_total: int = 0
    downloaded_last: int | None = None
    adopted: bool = False
    started_mono: float = field(default_factory=time.monotonic)
    ready_mono: float | None = None
    idle_since: float = field(default_factory=time.monotonic)
    stats: deque[EngineStats] = field(default_factory=lambda: deque(maxlen=60))
    # Whether a live session's stat page is polled now: the report carries stats only then.
    stats_active: bool = False

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.endpoint}"

    def took_stats(self, stats: EngineStats) -> None:
        """Keep a stats sample and count its download growth (a new session's count starts
        over, lower: all of it is new)."""
        self.stats.append(stats)
        now = stats.downloaded_bytes
        if now is None:
            return
        last = self.downloaded_last
        self.downloaded_total += now - last if last is not None and now >= last else now
        self.downloaded_last = now

    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_ROLE: "engine",
            LABEL_HOST: self.host,
            LABEL_PROFILE: self.profile,
            LABEL_HTTP_PORT: str(self.http_port),
            LABEL_P2P_PORT: str(self.p2p_port),
            LABEL_CREATED_AT: self.created_at.isoformat(),
            LABEL_GENERATION: str(self.generation),
            LABEL_VPN_FORWARDED: "true" if self.vpn_forwarded else "false",
            **(
                {LABEL_TUNNEL: self.tunnel, LABEL_TUNNEL_CONTAINER: self.tunnel_container or ""}
                if self.tunnel
                else {}
            ),
        }

    @classmethod
    def from_labels(cls, name: str, labels: dict[str, str], address: str) -> Engine:
        try:
            return cls(
                id=name,
                host=labels[LABEL_HOST],
                address=address,
                http_port=int(labels[LABEL_HTTP_PORT]),
                p2p_port=int(labels[LABEL_P2P_PORT]),
                profile=labels.get(LABEL_PROFILE, "unknown"),
                created_at=datetime.fromisoformat(labels[LABEL_CREATED_AT]),
                generation=int(labels.get(LABEL_GENERATION, "0")),
                vpn_forwarded=labels.get(LABEL_VPN_FORWARDED) == "true",
                tunnel=labels.get(LABEL_TUNNEL) or None,
                tunnel_container=labels.get(LABEL_TUNNEL_CONTAINER) or None,
                adopted=True,
            )
        except (KeyError, ValueError) as exc:
            raise BadLabels(f"container {name} has unreadable acefleet labels: {exc}") from exc

    def drain_reason(self) -> Literal["removing", "recycle", "tunnel"] | None:
        if self.removing:
            return "removing"
        if self.recycling:
            return "tunnel" if self.tunnel_drained else "recycle"
        return None

    def report(self, streams: int, stream_cap: int) -> EngineReport:
        return EngineReport(
            id=self.id,
            host=self.host,
            endpoint=self.endpoint,
            http_port=self.http_port,
            p2p_port=self.p2p_port,
            profile=self.profile,
            health=self.health,
            draining=self.removing or self.recycling,
            drain_reason=self.drain_reason(),
            stream_cap=stream_cap,
            streams=streams,
            vpn_forwarded=self.vpn_forwarded,
            tunnel=self.tunnel,
            created_at=self.created_at,
            generation=self.generation,
            stats=self.stats[-1] if self.stats and self.stats_active else None,
        )


def now_utc() -> datetime:
    return datetime.now(UTC)
