"""The rule for a tunnel's state, from what its Gluetun control server says, and what a state
means for the tunnel's engines. No I/O here.

State, in order:

1. Control server unreachable, or the VPN not running: ``starting`` while the tunnel has never
   been healthy and is younger than ``vpn_down_after_s`` (counted from its creation or its
   adoption), ``down`` otherwise.
2. Running, port forwarding asked for, and no port forwarded: ``no_port``.
3. Otherwise ``healthy``.

Consequences (``drains``), for the current generation of a tunnel:

4. Not healthy for ``vpn_down_after_s``: every engine of it still serving is drained
   (``tunnel``; counted as ``down`` or ``no_port``). It gets no new engine meanwhile (none while
   it is not healthy at all), so this drains each engine once.
5. Healthy with a forwarded port that an engine of it marked ``vpn_forwarded`` does not hold
   (the port changed): that engine is drained (``port_changed``), so the next engine created in
   the tunnel takes the new port.
6. Any generation, retiring ones too: an engine created before the container's last start
   (``restarted``: Docker's restart policy or ``docker restart`` gave the tunnel a new network
   namespace) is drained, its own namespace is gone; engines created since then are kept.
"""

from __future__ import annotations

import time

from acefleet.wire import TunnelState
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.tunnel_record import TunnelGen
from orchestrator.agent.vpn import GluetunStatus


def state_of(
    gen: TunnelGen, status: GluetunStatus, *, want_port: bool, down_after_s: float
) -> tuple[TunnelState, str | None]:
    """Rules 1 to 3."""
    if not status.reachable or not status.running:
        young = gen.unhealthy_mono is None or time.monotonic() - gen.unhealthy_mono < down_after_s
        state = TunnelState.starting if not gen.ever_healthy and young else TunnelState.down
        return state, status.reason or "VPN is not running"
    if want_port and status.forwarded_port is None:
        return TunnelState.no_port, status.port_reason or "no port forwarded"
    return TunnelState.healthy, None


def drains(gen: TunnelGen, engines: list[Engine], down_after_s: float) -> list[tuple[Engine, str]]:
    """Rules 4 and 5: the engines of ``gen`` to drain now, each with the reason to count."""
    serving = [e for e in engines if not e.recycling and not e.removing]
    if gen.state != TunnelState.healthy:
        since = gen.unhealthy_mono
        if since is None or time.monotonic() - since < down_after_s:
            return []
        reason = "no_port" if gen.state == TunnelState.no_port else "down"
        return [(e, reason) for e in serving]
    port = gen.forwarded_port
    return [(e, "port_changed") for e in serving if e.vpn_forwarded and port and e.p2p_port != port]


def restart_drains(gen: TunnelGen, engines: list[Engine]) -> list[tuple[Engine, str]]:
    """Rule 6: the engines of ``gen`` that joined the namespace of an earlier start."""
    started = gen.started_at
    if started is None:
        return []
    return [
        (e, "restarted")
        for e in engines
        if not e.recycling and not e.removing and e.created_at < started
    ]
