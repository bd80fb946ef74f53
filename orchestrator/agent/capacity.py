"""The capacity rule: how many sessions this host can still take, and its HAProxy weight.

Free slots = open slots on claimable engines, plus ``stream_cap`` for every engine the host may
still provision (only while provisioning is ``ok``; with VPN tunnels, no more engines than the
healthy tunnels have room for, or a host whose tunnels are full would look empty to HAProxy and
central). The weight is free slots over ``max_engines * stream_cap``, in percent.
"""

from __future__ import annotations

from pydantic import Field

from acefleet.wire import EngineHealth, ProvisioningState, Wire
from orchestrator.agent.pool_state import PoolState


class Capacity(Wire):
    engines: int
    engines_free: int
    engines_starting: int
    engines_unhealthy: int
    max_engines: int
    stream_cap: int
    streams: int
    free_slots: int = Field(
        description="Sessions the host can still take, counting engines it may still provision"
    )
    weight_percent: int


def capacity(
    state: PoolState, provisioning: ProvisioningState, tunnel_room: int | None = None
) -> Capacity:
    """``tunnel_room``: engines the healthy tunnels can still take (None: no tunnels)."""
    s = state.s
    live = state.live()
    streams = sum(state.streams(e.id) for e in live)
    open_slots = sum(s.stream_cap - state.streams(e.id) for e in state.claimable())
    can_grow = provisioning.state == "ok"
    engines_more = max(0, s.max_engines - len(live))
    if tunnel_room is not None:
        engines_more = min(engines_more, tunnel_room)
    future = engines_more * s.stream_cap if can_grow else 0
    total = max(1, s.max_engines * s.stream_cap)
    return Capacity(
        engines=len(live),
        engines_free=len(state.free()),
        engines_starting=sum(1 for e in live if e.health == EngineHealth.starting),
        engines_unhealthy=sum(1 for e in live if e.health == EngineHealth.unhealthy),
        max_engines=s.max_engines,
        stream_cap=s.stream_cap,
        streams=streams,
        free_slots=open_slots + future,
        weight_percent=round(100 * min(total, open_slots + future) / total),
    )
