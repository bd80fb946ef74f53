"""One generation of a VPN tunnel: what the agent knows of a tunnel container, and the labels it
carries, which are the source of truth (adoption after a restart rebuilds the record from them).

A tunnel (a name in the tunnels file) has one current generation and, while it rotates, older
ones that are ``retiring``. Each generation is its own container with its own reserved engine
HTTP ports, so engines of two generations never share an id or a port.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from acefleet.wire import TunnelReport, TunnelState
from orchestrator.agent.engine_record import LABEL_HOST, now_utc

LABEL_VPN_TUNNEL = "acefleet.vpn-tunnel"
LABEL_TUNNEL_GENERATION = "acefleet.tunnel-generation"
LABEL_TUNNEL_PORTS = "acefleet.tunnel-ports"
LABEL_TUNNEL_CREATED_AT = "acefleet.tunnel-created-at"


def container_name(host: str, tunnel: str, generation: int) -> str:
    return f"acefleet-vpn-{host}-{tunnel}-g{generation}"


@dataclass
class TunnelGen:
    name: str
    generation: int
    container: str
    ports: list[int]  # engine HTTP ports reserved for this generation
    created_at: datetime
    created_mono: float = field(default_factory=time.monotonic)
    address: str | None = None  # container IP on vpn_docker_network
    state: TunnelState = TunnelState.starting
    reason: str | None = "VPN not checked yet"
    public_ip: str | None = None
    forwarded_port: int | None = None
    state_since: datetime = field(default_factory=now_utc)
    # monotonic: since when it is not healthy (None while healthy); set at creation, so a
    # tunnel that never connects counts as down after vpn_down_after_s
    unhealthy_mono: float | None = field(default_factory=time.monotonic)
    ever_healthy: bool = False
    retiring_mono: float | None = None  # monotonic: when a newer generation took over
    # the container's last start (Docker's StartedAt): a restart moves it, and engines that
    # joined the namespace of an earlier start lost their network
    started_at: datetime | None = None
    # a rotation away from this generation that was given up on (its successor never became
    # healthy): when, and what the report says of it
    rotation_aborted_at: datetime | None = None
    rotation_note: str | None = None

    @property
    def retiring(self) -> bool:
        return self.retiring_mono is not None

    def labels(self, host: str) -> dict[str, str]:
        return {
            LABEL_HOST: host,
            LABEL_VPN_TUNNEL: self.name,
            LABEL_TUNNEL_GENERATION: str(self.generation),
            LABEL_TUNNEL_PORTS: ",".join(str(p) for p in self.ports),
            LABEL_TUNNEL_CREATED_AT: self.created_at.isoformat(),
        }

    @classmethod
    def from_labels(cls, container: str, labels: dict[str, str]) -> TunnelGen:
        """Raises ValueError/KeyError when the labels cannot be read."""
        created = labels.get(LABEL_TUNNEL_CREATED_AT)
        return cls(
            name=labels[LABEL_VPN_TUNNEL],
            generation=int(labels[LABEL_TUNNEL_GENERATION]),
            container=container,
            ports=[int(p) for p in labels[LABEL_TUNNEL_PORTS].split(",") if p],
            created_at=datetime.fromisoformat(created) if created else now_utc(),
        )

    def set_state(self, state: TunnelState, reason: str | None) -> bool:
        """Enter ``state``; True when it changed."""
        self.reason = reason
        if state == self.state:
            return False
        self.state = state
        self.state_since = now_utc()
        if state == TunnelState.healthy:
            self.unhealthy_mono = None
            self.ever_healthy = True
        elif self.unhealthy_mono is None:
            self.unhealthy_mono = time.monotonic()
        return True

    def report(self, engines: int, engine_cap: int) -> TunnelReport:
        return TunnelReport(
            name=self.name,
            container=self.container,
            generation=self.generation,
            state=TunnelState.retiring if self.retiring else self.state,
            reason="replaced by a newer generation"
            if self.retiring
            else self.reason or self.rotation_note,
            public_ip=self.public_ip,
            forwarded_port=self.forwarded_port,
            engines=engines,
            engine_cap=engine_cap,
            created_at=self.created_at,
            state_since=self.state_since,
        )
