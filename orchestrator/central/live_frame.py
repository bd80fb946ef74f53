"""The dashboard frame (what ``/v1/live`` and the WebSocket feed send), built per host and
only where something moved.

At 500 edges x 20 engines building the whole frame took 55-70 ms, twice a second, on the event
loop that answers claims: with 50 operators watching, claim p99 went from ~4 ms to ~150 ms
(bench/results/central.md). Between two frames most hosts did not change. A host's part (its
host view and its engines' items) depends only on:

1. its heartbeats (the agent's reports: health, caps, the agent's drain, tunnels, VPN, ...),
   counted by ``Host.heartbeats``;
2. its status and whether it is placeable, which move with time alone (live -> stale -> lost);
3. the relay URL its proxy registered;
4. the claim book's load of its engines (a claim reserved, confirmed or released);
5. the operator's drain of the host or of one of its engines.

Each part is kept with a fingerprint of exactly those inputs and rebuilt when the fingerprint
moved: per frame, the hosts that heartbeated since (at 100 heartbeats/s, ~50 of 500) and those
whose claims moved. An unchanged part hands out the same item objects, so the feed's diff and
``share_and_diff`` pass over them by identity. Computing the fingerprints walks the hosts, the
claimed engines and the drained ones, never every engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.central import views
from orchestrator.central.hosts import Host
from orchestrator.central.placement_policy import placeable_host
from orchestrator.central.state import Central

Item = dict[str, Any]


@dataclass(slots=True)
class HostPart:
    fingerprint: tuple[Any, ...]
    host: Item
    engines: list[Item]
    capacity: tuple[int, int]  # views.host_capacity, for the frame's summary


def _by_host(c: Central, engine_ids: Any, value: Any) -> dict[str, set[Any]]:
    """Engine ids (claimed or drained) grouped by the host that reports them, each mapped
    through ``value``."""
    out: dict[str, set[Any]] = {}
    for engine_id in engine_ids:
        host = c.fleet.engine_host.get(engine_id)
        if host is not None:
            out.setdefault(host, set()).add(value(engine_id, host))
    return out


def _claimed_load(c: Central, engine_id: str, host: str) -> tuple[str, int]:
    engine = c.fleet.hosts[host].engines.get(engine_id)
    reported = engine.report.streams if engine is not None else 0
    return engine_id, c.book.load(engine_id, reported)


def engine_item(st: views.EngineState) -> Item:
    """One engine as the dashboard shows it: compact, without the full report."""
    e = st.engine
    return {
        "id": e.id,
        "host": st.host.name,
        "health": e.report.health.value,
        "load": st.load,
        "stream_cap": e.report.stream_cap,
        "draining": e.report.draining or e.operator_drain,
        # Apart, so a drain button acts on the operator's drain even when the agent drains the
        # engine itself.
        "operator_drain": e.operator_drain,
        "agent_drain": e.report.draining,
        "placeable": st.placeable,
        "vpn_forwarded": e.report.vpn_forwarded,
    }


def hosts_and_engines(c: Central) -> tuple[list[Item], list[Item]]:
    """The frame's ``hosts`` and ``engines`` lists, by host name (engines by id within)."""
    now = c.clock()
    claims = _by_host(c, c.book.by_engine, lambda eid, host: _claimed_load(c, eid, host))
    drained = _by_host(c, c.fleet.drained, lambda eid, host: eid)
    empty: frozenset[Any] = frozenset()
    parts: dict[str, HostPart] = {}
    hosts: list[Item] = []
    engines: list[Item] = []
    for host in c.fleet.by_name():
        fingerprint = (
            host.heartbeats,
            c.fleet.status(host, now),
            placeable_host(c.fleet, host, now),
            host.operator_drain,
            c.relay_url(host.name),
            frozenset(claims.get(host.name, empty)),
            frozenset(drained.get(host.name, empty)),
        )
        part = c.frame_parts.get(host.name)
        if part is None or part.fingerprint != fingerprint:
            part = HostPart(
                fingerprint,
                views.host_view(c, host, now).model_dump(mode="json"),
                [engine_item(st) for st in views.host_engine_states(c, host, now)],
                views.host_capacity(c, host, now),
            )
        parts[host.name] = part
        hosts.append(part.host)
        engines.extend(part.engines)
    c.frame_parts = parts  # forgotten hosts' parts go with the old dict
    return hosts, engines


def part_capacity(c: Central, host: Host, now: float) -> tuple[int, int]:
    """``views.host_capacity`` from the part ``hosts_and_engines`` just built."""
    part = c.frame_parts.get(host.name)
    return part.capacity if part is not None else views.host_capacity(c, host, now)
