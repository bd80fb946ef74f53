"""Central's placement rule: which engine of the fleet takes a new content.

This is the fleet-wide rule; the proxy's ``proxy/placement`` package only holds the clients
that ask for a placement (and its standalone and agent fallbacks). ``Central.claim``
(``state.py``) calls :func:`choose` once a content is neither claimed on the asking edge nor
live on another one (the claim rules in docs/central.md).

In order:
1. Only engines that can take work: host heartbeating (not stale or lost), host not draining,
   engine healthy, engine not draining, engine under its per-engine stream cap.
2. Engines on a sick VPN tunnel last: an engine whose ``tunnel`` is not ``healthy`` in its host's
   latest heartbeat (down, no forwarded port, starting, retiring, or no longer listed) is chosen
   only when no other engine fits anywhere in the fleet (it gets few peers, and its agent is
   about to drain it); among those, rules 3-6 again.
3. The asking proxy's own host when it has such an engine (no relay hop, no cross-edge traffic).
   Another edge only when its proxy can be relayed from (its URL is known).
4. The least-loaded engine (streams / cap), then the least-loaded host.
5. VPN-forwarded engines (reachable by peers, so they pull faster) before the others.
6. Ties are broken at random, so a burst of claims spreads instead of herding onto the
   first engine in a list.

Rule 1 is :func:`placeable_host` and :func:`placeable_engine`; the operator API's ``placeable``
flags and free-slot counts (``views.py``) use the same two.

A warm standby (:func:`choose_standby`) follows rules 1, 2, 4, 5 and 6 on the asking host only:
engines listen only on their own host, and a standby relayed from another edge would pull
through that edge's proxy (which relays its own primary), so it could loop back and would die
with it. It never lands on an engine in ``avoid`` (the primary's, those that just failed, any
engine already carrying the content), and it goes to another VPN tunnel than the engines already
carrying the content on that host when one fits (after rule 2, before rule 4): a tunnel that goes
down then takes the primary or the standby, not both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from acefleet.wire import EngineHealth
from orchestrator.central.claim_book import ClaimBook
from orchestrator.central.hosts import Engine, Fleet, Host, HostStatus


@dataclass(slots=True, frozen=True)
class NoPlacement(Exception):
    code: str
    message: str


def placeable_host(fleet: Fleet, host: Host, now: float) -> bool:
    """Rule 1 for a host: heartbeating (not stale or lost) and not draining."""
    return not host.draining and fleet.status(host, now) is HostStatus.live


def placeable_engine(engine: Engine) -> bool:
    """Rule 1 for an engine, its load aside: healthy and not draining (agent's or operator's)."""
    return engine.report.health is EngineHealth.healthy and not engine.draining


@dataclass(slots=True, frozen=True)
class _Fit:
    """An engine with room, and what the ordering rules read of it."""

    engine: Engine
    ratio: float  # its load over its cap
    forwarded: bool
    sick_tunnel: bool  # rule 2


@dataclass(slots=True, frozen=True)
class _Candidates:
    fits: list[_Fit]  # engines with room
    ratio: float  # the host's load over its placeable engines' caps
    placeable: int  # engines placeable, their load aside (rule 1)
    free: int  # their free slots


def _host_candidates(
    host: Host, book: ClaimBook, avoid: frozenset[str] = frozenset()
) -> _Candidates:
    """Engines of a host with room, the host's load ratio, and its capacity."""
    fits: list[_Fit] = []
    used = cap = placeable = free = 0
    for engine in host.engines.values():
        if not placeable_engine(engine) or engine.id in avoid:
            continue
        report = engine.report
        load = book.load(report.id, report.streams)
        placeable += 1
        used += load
        cap += report.stream_cap
        if load < report.stream_cap:
            free += report.stream_cap - load
            fits.append(
                _Fit(
                    engine,
                    load / report.stream_cap,
                    report.vpn_forwarded,
                    host.on_sick_tunnel(engine),
                )
            )
    return _Candidates(fits, used / cap if cap else 1.0, placeable, free)


_Rank = tuple[float, float, int]  # rules 4 and 5: engine load, host load, not forwarded


@dataclass(slots=True, frozen=True)
class _Offer:
    """What a host offers a content placed from another edge: its engines with room, its load
    ratio, and the engines that come first under rules 4 and 5 with their rank — among its
    engines outside a sick tunnel (``healthy``), and among all of them (``fallback``: read only
    when no engine outside a sick tunnel fits anywhere, rule 2). Rule 6, the random draw among
    equals, is made over the whole fleet's equals by the caller."""

    fits: list[_Fit]
    ratio: float
    healthy: tuple[_Rank, list[_Fit]] | None
    fallback: tuple[_Rank, list[_Fit]] | None
    placeable: int  # engines placeable, their load aside (rule 1): the fleet summary's figures
    free: int  # their free slots


def _offer(host: Host, book: ClaimBook, avoid: frozenset[str]) -> _Offer:
    candidates = _host_candidates(host, book, avoid)
    fits, host_ratio = candidates.fits, candidates.ratio
    healthy: dict[_Rank, list[_Fit]] = {}
    fallback: dict[_Rank, list[_Fit]] = {}
    for f in fits:
        rank = (f.ratio, host_ratio, 0 if f.forwarded else 1)
        if not f.sick_tunnel:
            healthy.setdefault(rank, []).append(f)
        fallback.setdefault(rank, []).append(f)
    top = min(healthy) if healthy else None
    low = min(fallback) if fallback else None
    return _Offer(
        fits,
        host_ratio,
        (top, healthy[top]) if top is not None else None,
        (low, fallback[low]) if low is not None else None,
        candidates.placeable,
        candidates.free,
    )


class HostFits:
    """Each host's offer (:class:`_Offer`), kept until what it is made of moves: the host's
    heartbeat count (engine reports, health, agent drains, tunnels), its operator engine drains,
    and its claim book changes. A claim that no engine of its own edge can take looks at every
    host of the fleet: at 500 edges x 20 engines, ranking every engine with room took 20-45 ms
    of the claim loop per such claim (bench/results/central.md, issue 17); now unchanged hosts
    answer from here and only each host's first-ranked engines are compared."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Host, tuple[int, int, int], _Offer]] = {}

    def of(self, host: Host, book: ClaimBook, avoid: frozenset[str]) -> _Offer:
        if avoid:  # a failover's own exclusions: rare, computed afresh
            return _offer(host, book, avoid)
        cue = (host.heartbeats, host.drains, book.changes.get(host.name, 0))
        kept = self._kept.get(host.name)
        # the Host object too: a host forgotten and heartbeating again counts from 0 again
        if kept is not None and kept[0] is host and kept[1] == cue:
            return kept[2]
        offer = _offer(host, book, frozenset())
        self._kept[host.name] = (host, cue, offer)
        return offer

    def forget(self, name: str) -> None:
        self._kept.pop(name, None)


class _Equals:
    """The fleet's first-ranked engines so far, with their hosts (rule 6 draws among them)."""

    def __init__(self) -> None:
        self.rank: _Rank | None = None
        self.engines: list[tuple[_Fit, Host]] = []

    def add(self, host: Host, offer: tuple[_Rank, list[_Fit]] | None) -> None:
        if offer is None:
            return
        rank, fits = offer
        if self.rank is None or rank < self.rank:
            self.rank, self.engines = rank, [(f, host) for f in fits]
        elif rank == self.rank:
            self.engines.extend((f, host) for f in fits)

    def draw(self, rng: random.Random) -> tuple[Host, Engine] | None:
        if not self.engines:
            return None
        fit, host = rng.choice(self.engines)
        return host, fit.engine


def choose(
    fleet: Fleet,
    book: ClaimBook,
    asking_host: str,
    now: float,
    relayable: Callable[[str], bool],
    rng: random.Random,
    avoid: frozenset[str] = frozenset(),
    kept: HostFits | None = None,
) -> tuple[Host, Engine]:
    """The engine for a new content, or :class:`NoPlacement` saying why none fits.
    ``avoid``: engines the asking proxy just saw fail (its failover must land elsewhere).
    ``kept``: hosts' offers kept between calls (the same answers, faster)."""
    offers = kept if kept is not None else HostFits()
    live_hosts = 0
    own = fleet.hosts.get(asking_host)
    own_fits: list[_Fit] = []
    if own is not None and placeable_host(fleet, own, now):
        live_hosts += 1
        own_fits = offers.of(own, book, avoid).fits
        healthy = [f for f in own_fits if not f.sick_tunnel]
        if healthy:
            return own, _best([(f, 0.0) for f in healthy], rng)
    healthy_equals, fallback_equals = _Equals(), _Equals()
    for host in fleet.hosts.values():
        if host is own or not placeable_host(fleet, host, now):
            continue
        if avoid and f"edge:{host.name}" in avoid:  # the asker could not relay from it just now
            continue
        live_hosts += 1
        if not relayable(host.name):
            continue
        offer = offers.of(host, book, avoid)
        healthy_equals.add(host, offer.healthy)
        fallback_equals.add(host, offer.fallback)
    placed = healthy_equals.draw(rng)
    if placed is not None:
        return placed
    # Rule 2: nothing fits outside a sick tunnel; the asker's own host first still (rule 3).
    if own is not None and own_fits:
        return own, _best([(f, 0.0) for f in own_fits], rng)
    placed = fallback_equals.draw(rng)
    if placed is not None:
        return placed
    if live_hosts == 0:
        raise NoPlacement("no_hosts", "no edge host is heartbeating and undrained")
    raise NoPlacement("no_capacity", "every healthy, undrained engine is at its stream cap")


def choose_standby(
    fleet: Fleet,
    book: ClaimBook,
    asking_host: str,
    now: float,
    rng: random.Random,
    avoid: frozenset[str],
) -> tuple[Host, Engine]:
    """The engine for a warm standby on ``asking_host``, or :class:`NoPlacement`
    (``no_standby_capacity``, or ``no_hosts`` when that host is not placeable). The engines of
    ``avoid`` on that host name the tunnels the standby should keep away from."""
    own = fleet.hosts.get(asking_host)
    if own is None or not placeable_host(fleet, own, now):
        raise NoPlacement("no_hosts", f"host {asking_host} is not heartbeating and undrained")
    fits = _host_candidates(own, book, avoid).fits
    if not fits:
        raise NoPlacement(
            "no_standby_capacity",
            f"no other healthy, undrained engine with room on {asking_host} for a standby",
        )
    taken = {
        engine.report.tunnel
        for eid in avoid
        if (engine := own.engines.get(eid)) is not None and engine.report.tunnel is not None
    }
    return own, _best([(f, 0.0) for f in fits], rng, taken)


def _best(
    pool: list[tuple[_Fit, float]], rng: random.Random, taken: set[str] | None = None
) -> Engine:
    """Rules 2, (the standby's other tunnel), 4, 5 and 6 over ``pool`` of (fit, host ratio)."""
    best_key: tuple[int, int, float, float, int, float] | None = None
    best: Engine | None = None
    for fit, host_ratio in pool:
        tunnel = fit.engine.report.tunnel
        shares = 1 if taken and tunnel is not None and tunnel in taken else 0
        key = (
            1 if fit.sick_tunnel else 0,
            shares,
            fit.ratio,
            host_ratio,
            0 if fit.forwarded else 1,
            rng.random(),
        )
        if best_key is None or key < best_key:
            best_key, best = key, fit.engine
    assert best is not None
    return best
