"""The warm buffer: free engines kept ready on every edge, asked for by provision directives.

A new channel should rarely wait for an engine to boot, so central asks each edge to keep a few
engines free. It never asks beyond the host's ``max_engines`` or the fleet-wide maximum, never
while the agent reports its provisioning blocked (breaker open, VPN down), and it counts what it
asked for recently so a directive is not repeated before the agent's report catches up.
"""

from __future__ import annotations

from dataclasses import dataclass

from acefleet.wire import EngineHealth
from orchestrator.central.claim_book import ClaimBook
from orchestrator.central.hosts import Fleet, Host


@dataclass(slots=True, frozen=True)
class BufferPlan:
    target: int
    free: int
    outstanding: int
    provision: int
    blocked_reason: str | None


def target(host: Host, per_edge: int) -> int:
    """Free engines wanted warm on ``host``: its operator override, else the fleet default."""
    return per_edge if host.buffer_target is None else host.buffer_target


def free_engines(host: Host, book: ClaimBook) -> int:
    free = 0
    for engine in host.engines.values():
        report = engine.report
        if report.health is EngineHealth.unhealthy or engine.draining:
            continue
        if book.load(report.id, report.streams) == 0:
            free += 1
    return free


def recent_window(heartbeat_interval_s: float) -> float:
    """How long central counts a provision directive it sent as outstanding, whatever the
    agent's report says: two heartbeat intervals."""
    return 2 * heartbeat_interval_s


def outstanding(host: Host, now: float, window: float) -> int:
    recent = host.provision_sent if now - host.provision_sent_at < window else 0
    return max(host.provisioning.in_flight, recent)


def plan(
    host: Host,
    fleet: Fleet,
    book: ClaimBook,
    *,
    per_edge: int,
    fleet_max: int,
    now: float,
    window: float,
    warming_up: bool = False,
) -> BufferPlan:
    wanted = target(host, per_edge)
    free = free_engines(host, book)
    pending = outstanding(host, now, window)
    want = max(0, wanted - free - pending)

    def blocked(reason: str) -> BufferPlan:
        return BufferPlan(wanted, free, pending, 0, reason)

    if warming_up:
        # Until every edge has reported, the fleet-wide count is too low to trust.
        return blocked("central_warming_up")
    if host.draining:
        return blocked("host_draining")
    if host.provisioning.state in ("blocked", "breaker_open"):
        detail = f": {host.provisioning.reason}" if host.provisioning.reason else ""
        return blocked(f"agent_{host.provisioning.state}{detail}")
    if host.vpn.enabled and host.vpn.connected is False:
        return blocked("vpn_down")
    if want == 0:
        return BufferPlan(wanted, free, pending, 0, None)
    room = host.max_engines - len(host.engines) - pending
    if room <= 0:
        return blocked("host_at_max_engines")
    count = min(want, room)
    if fleet_max:
        total = sum(len(h.engines) + outstanding(h, now, window) for h in fleet.hosts.values())
        fleet_room = fleet_max - total
        if fleet_room <= 0:
            return blocked("fleet_max_engines_reached")
        count = min(count, fleet_room)
    return BufferPlan(wanted, free, pending, count, None)
