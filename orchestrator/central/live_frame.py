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
from datetime import datetime
from typing import Any

from orchestrator.central import slices, views
from orchestrator.central.hosts import Host
from orchestrator.central.placement_policy import placeable_host
from orchestrator.central.state import Central
from orchestrator.central.streams import Stream

Item = dict[str, Any]
# Work between two pauses of the feed's publisher (orchestrator.central.slices), ~2 ms on this
# project's 2-core reference machine: a host rebuilt with its 20 engines costs ~100 us, one
# whose fingerprint did not move ~10 us, a stream ~5 us.
SLICE_UNITS = 200
UNITS_REBUILT = 10
STREAMS_PER_SLICE = 400


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


def hosts_and_engines(c: Central) -> slices.Sliced[tuple[list[Item], list[Item]]]:
    """The frame's ``hosts`` and ``engines`` lists, by host name (engines by id within); pauses
    every ``SLICE_UNITS`` of work.

    A fingerprint is always taken before its part is built and from no later state, so a part
    that saw a change its fingerprint missed (a claim between the two) differs from the next
    frame's fingerprint and is rebuilt: a part may be newer than its fingerprint, never
    older."""
    now = c.clock()
    claims = _by_host(c, c.book.by_engine, lambda eid, host: _claimed_load(c, eid, host))
    drained = _by_host(c, c.fleet.drained, lambda eid, host: eid)
    yield
    empty: frozenset[Any] = frozenset()
    parts: dict[str, HostPart] = {}
    hosts: list[Item] = []
    engines: list[Item] = []
    units = 0
    for host in c.fleet.by_name():  # a list: hosts may come and go at a pause
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
            units += UNITS_REBUILT - 1
        units += 1
        if units >= SLICE_UNITS:
            units = 0
            yield
        parts[host.name] = part
        hosts.append(part.host)
        engines.extend(part.engines)
    c.frame_parts = parts  # forgotten hosts' parts go with the old dict
    return hosts, engines


def stream_item(c: Central, stream: Stream, now: float) -> Item:
    """A live stream as the frame shows it: ``views.stream_view`` without its claim id (a claim
    id lets its holder end the stream; operators read them from /v1/claims), built as a plain
    dict: the pydantic model cost ~14 us a stream, a third of a 500-edge frame."""
    stats, reason = views.stream_health(c, stream, now)
    return {
        "stream_id": stream.stream_id,
        "proxy_id": stream.proxy_id,
        "host": stream.host,
        "content_key": stream.content_key,
        "infohash": stream.infohash,
        "engine_id": stream.engine_id,
        "source": stream.source,
        "standby": stream.standby,
        "viewers": stream.viewers,
        "peak_viewers": stream.peak_viewers,
        "started_at": json_time(stream.started_at),
        "peers": stats.peers if stats else None,
        "speed_down_kbps": stats.speed_down_kbps if stats else None,
        "speed_up_kbps": stats.speed_up_kbps if stats else None,
        "degraded": reason is not None,
        "degraded_reason": reason,
    }


def json_time(at: datetime) -> str:
    """A time as pydantic writes it in JSON (UTC as ``Z``), so both views of a stream agree."""
    text = at.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def stream_items(c: Central) -> slices.Sliced[list[Item]]:
    """The frame's ``streams``, oldest first; pauses every ``STREAMS_PER_SLICE``."""
    now = c.clock()
    out: list[Item] = []
    streams = sorted(c.registry.streams.values(), key=lambda s: s.started_at)
    for n, stream in enumerate(streams, 1):
        out.append(stream_item(c, stream, now))
        if n % STREAMS_PER_SLICE == 0:
            yield
    return out


def part_capacity(c: Central, host: Host, now: float) -> tuple[int, int]:
    """``views.host_capacity`` from the part ``hosts_and_engines`` just built."""
    part = c.frame_parts.get(host.name)
    return part.capacity if part is not None else views.host_capacity(c, host, now)
