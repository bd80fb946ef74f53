"""Placement keeps each host's offer between claims (``placement_policy.HostFits``): its
engines with room and those it ranks first. It must always answer what a fresh look would:
after every kind of change (heartbeats that move loads, health, drains and tunnels; claims
reserved, confirmed, released and expired; the operator's engine drains; a host forgotten and
back) every host's kept offer equals one computed from scratch, and a content asked from
an edge or from outside the fleet lands on one of the engines that ranking every engine at
once puts first.

In process, on central's live state with a hand-driven clock and a seeded random sequence of
changes (the claims go through ``Central.claim``, which fills and reads the same kept offers)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from acefleet.wire import ClaimRequest, Heartbeat
from orchestrator.central.hosts import Host
from orchestrator.central.placement_policy import (
    NoPlacement,
    _host_candidates,
    _offer,
    choose,
    placeable_engine,
    placeable_host,
)
from orchestrator.central.state import Central
from tests.central.test_live_frame_parts import CREATED, Clock, engine_report, in_process

HOSTS = 4
ENGINES = 3


def beat(c: Central, host: str, seq: int, rng: random.Random, alike: bool = False) -> None:
    """A heartbeat with random loads, health, agent drains and tunnel state (``alike``: every
    engine idle, healthy, unforwarded, in a healthy tunnel)."""
    if alike:
        rng = _Alike()
    reports = [
        engine_report(
            host,
            n,
            health="healthy" if rng.random() < 0.85 else "unhealthy",
            streams=rng.randint(0, 2),
            draining=rng.random() < 0.1,
            vpn_forwarded=rng.random() < 0.5,
            tunnel="wg0" if n == 0 else None,
        )
        for n in range(ENGINES)
    ]
    wg0 = {  # the first engine's tunnel: sick now and then (rule 2)
        "name": "wg0",
        "container": f"gluetun-{host}-wg0",
        "generation": 0,
        "state": "healthy" if rng.random() < 0.7 else "down",
        "engines": 1,
        "engine_cap": 4,
        "created_at": CREATED,
        "state_since": CREATED,
    }
    body = {
        "host": host,
        "agent_url": f"http://{host}:8100",
        "seq": seq,
        "engines": reports,
        "tunnels": [wg0],
    }
    c.heartbeat(host, Heartbeat.model_validate(body | {"max_engines": ENGINES}))


class _Alike(random.Random):
    def random(self) -> float:
        return 0.3  # healthy, not draining, forwarded, tunnel healthy (the thresholds above)

    def randint(self, a: int, b: int) -> int:
        return a


def ids(fits: list[Any]) -> list[tuple[str, float, bool, bool]]:
    return [(f.engine.id, f.ratio, f.forwarded, f.sick_tunnel) for f in fits]


def answers(c: Central, host: Host) -> tuple[Any, Any]:
    """(kept, from scratch) for one host's offer, each as plain values."""

    def plain(offer: Any) -> Any:
        firsts = [(o[0], ids(o[1])) if o else None for o in (offer.healthy, offer.fallback)]
        return ids(offer.fits), offer.ratio, firsts, offer.placeable, offer.free

    fresh = _offer(host, c.book, frozenset())
    candidates = _host_candidates(host, c.book)
    assert (ids(fresh.fits), fresh.ratio) == (ids(candidates.fits), candidates.ratio)
    # the fleet summary's figures, counted here the plain way
    placeable = [e for e in host.engines.values() if placeable_engine(e)]
    free = sum(max(0, e.report.stream_cap - c.book.load(e.id, e.report.streams)) for e in placeable)
    assert (fresh.placeable, fresh.free) == (len(placeable), free)
    return plain(c.fits.of(host, c.book, frozenset())), plain(fresh)


def first_ranked(c: Central, asking: str) -> tuple[set[str], bool]:
    """The engines the placement rules rank first for a content ``asking`` asks for, with every
    engine with room ranked at once, as placement did before it kept hosts' offers; and whether
    they are in a sick tunnel."""
    now = c.clock()

    def firsts(fits: list[tuple[tuple[Any, ...], Any]]) -> set[str]:
        top = min(rank for rank, _ in fits)
        return {f.engine.id for rank, f in fits if rank == top}

    own = c.fleet.hosts.get(asking)
    own_fits: list[Any] = []
    if own is not None and placeable_host(c.fleet, own, now):
        own_fits = _host_candidates(own, c.book).fits
        healthy = [((f.ratio, not f.forwarded), f) for f in own_fits if not f.sick_tunnel]
        if healthy:
            return firsts(healthy), False
    pool = []
    for host in c.fleet.hosts.values():
        if host is not own and placeable_host(c.fleet, host, now):
            candidates = _host_candidates(host, c.book)
            fits, host_ratio = candidates.fits, candidates.ratio
            pool += [((f.sick_tunnel, f.ratio, host_ratio, not f.forwarded), f) for f in fits]
    if any(not f.sick_tunnel for _, f in pool):
        return firsts([(rank, f) for rank, f in pool if not f.sick_tunnel]), False
    if own_fits:
        return firsts([((f.ratio, not f.forwarded), f) for f in own_fits]), True
    return (firsts(pool), True) if pool else (set(), False)


def placed_from(c: Central, asking: str) -> str | None:
    try:
        _host, engine = choose(
            c.fleet, c.book, asking, c.clock(), lambda h: True, c.rng, frozenset(), c.fits
        )
    except NoPlacement:
        return None
    return engine.id


def test_kept_engines_with_room_always_equal_a_fresh_look(tmp_path: Path) -> None:
    clock = Clock()
    c = in_process(tmp_path, clock, claim_ttl_s=3)
    settings = c.settings
    rng = random.Random(17)
    seq = 0
    names = [f"edge{i}" for i in range(HOSTS)]
    for name in names:
        seq += 1
        beat(c, name, seq, rng)
    clock.now += 2  # past the rebuild window
    seen: dict[str, int] = {}
    for step in range(600):
        op = rng.choice(["beat", "claim", "claim", "confirm", "release", "drain", "time"])
        if op == "beat":
            seq += 1
            beat(c, rng.choice(names), seq, rng)
        elif op == "claim":
            req = ClaimRequest(content_key=f"id:{step}", proxy_id="p", host=rng.choice(names))
            c.claim(req)
        elif op in ("confirm", "release") and c.book.claims:
            claim = c.book.claims[rng.choice(sorted(c.book.claims))]
            if op == "confirm":
                c.book.confirm(claim, f"s{step}")
            else:
                c.release(claim.id)
        elif op == "drain":
            engine = f"{rng.choice(names)}-eng{rng.randrange(ENGINES)}"
            if engine in c.fleet.engine_host:
                c.drain_engine(engine, rng.random() < 0.5)
        elif op == "time":
            clock.now += 1.0  # pending claims expire (ttl 3 s)
            for name in names:  # and every host heartbeats, so none goes stale
                seq += 1
                beat(c, name, seq, rng)
            c.sweep()
        seen[op] = seen.get(op, 0) + 1
        for host in c.fleet.hosts.values():
            kept, fresh = answers(c, host)
            assert kept == fresh, (step, op, host.name)
        for asking in ("outside", rng.choice(names)):
            firsts, sick = first_ranked(c, asking)
            placed = placed_from(c, asking)
            assert (placed in firsts) if firsts else placed is None, (step, op, asking)
            seen["sick first"] = seen.get("sick first", 0) + sick
            seen["several first"] = seen.get("several first", 0) + (len(firsts) > 1)
    assert all(seen.get(op, 0) > 40 for op in ("beat", "claim", "confirm", "release", "drain"))
    assert seen["sick first"] > 0, seen  # rule 2's fallback was reached
    assert seen["several first"] > 0, seen  # and rule 6's draw among equals

    # A host forgotten and heartbeating again starts its counts from 0: never the old answer.
    gone = c.fleet.hosts["edge3"]
    assert answers(c, gone)[0] == answers(c, gone)[1]
    clock.now += settings.forget_after_s + 1
    for name in names[:3]:
        seq += 1
        beat(c, name, seq, rng)
    c.sweep()
    assert "edge3" not in c.fleet.hosts
    for _ in range(gone.heartbeats):
        seq += 1
        beat(c, "edge3", seq, rng)
    back = c.fleet.hosts["edge3"]
    kept, fresh = answers(c, back)
    assert kept == fresh


def test_equals_across_hosts_are_drawn_at_random(tmp_path: Path) -> None:
    """Rule 6 draws among the whole fleet's first-ranked engines, not one host's: with every
    engine alike, a burst of claims from outside spreads over all of them."""
    c = in_process(tmp_path, Clock())
    for n, host in enumerate(["edge0", "edge1", "edge2"]):
        beat(c, host, n + 1, random.Random(0), alike=True)
    placed = {placed_from(c, "outside") for _ in range(300)}
    assert placed == {f"edge{h}-eng{e}" for h in range(3) for e in range(ENGINES)}
