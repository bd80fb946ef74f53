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


def _host_candidates(
    host: Host, book: ClaimBook, avoid: frozenset[str] = frozenset()
) -> tuple[list[_Fit], float]:
    """Engines of a host with room, and the host's load ratio over its placeable engines."""
    fits: list[_Fit] = []
    used = cap = 0
    for engine in host.engines.values():
        if not placeable_engine(engine) or engine.id in avoid:
            continue
        report = engine.report
        load = book.load(report.id, report.streams)
        used += load
        cap += report.stream_cap
        if load < report.stream_cap:
            fits.append(
                _Fit(
                    engine,
                    load / report.stream_cap,
                    report.vpn_forwarded,
                    host.on_sick_tunnel(engine),
                )
            )
    return fits, (used / cap if cap else 1.0)


class HostFits:
    """Each host's engines with room (:func:`_host_candidates`), kept until what they are made
    of moves: the host's heartbeat count (engine reports, health, agent drains, tunnels), its
    operator engine drains, and its claim book changes. A claim that no edge of its own can
    take looks at every host of the fleet: at 500 edges x 20 engines that walk took ~3 ms per
    claim, the largest single cost of the claim loop at 600 claims/s (bench/results/central.md,
    issue 17); unchanged hosts now answer from here."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Host, tuple[int, int, int], list[_Fit], float]] = {}

    def of(self, host: Host, book: ClaimBook, avoid: frozenset[str]) -> tuple[list[_Fit], float]:
        if avoid:  # a failover's own exclusions: rare, computed afresh
            return _host_candidates(host, book, avoid)
        cue = (host.heartbeats, host.drains, book.changes.get(host.name, 0))
        kept = self._kept.get(host.name)
        # the Host object too: a host forgotten and heartbeating again counts from 0 again
        if kept is not None and kept[0] is host and kept[1] == cue:
            return kept[2], kept[3]
        fits, ratio = _host_candidates(host, book)
        self._kept[host.name] = (host, cue, fits, ratio)
        return fits, ratio

    def forget(self, name: str) -> None:
        self._kept.pop(name, None)


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
    ``kept``: hosts' engines with room kept between calls (the same answers, faster)."""
    fits_of = kept if kept is not None else HostFits()
    live_hosts = 0
    own = fleet.hosts.get(asking_host)
    own_fits: list[_Fit] = []
    if own is not None and placeable_host(fleet, own, now):
        live_hosts += 1
        own_fits, _ = fits_of.of(own, book, avoid)
        healthy = [f for f in own_fits if not f.sick_tunnel]
        if healthy:
            return own, _best([(f, 0.0) for f in healthy], rng)
    pool: list[tuple[_Fit, float]] = []
    owners: dict[str, Host] = {}
    for host in fleet.hosts.values():
        if host is own or not placeable_host(fleet, host, now):
            continue
        if f"edge:{host.name}" in avoid:  # the asker could not relay from it just now
            continue
        live_hosts += 1
        if not relayable(host.name):
            continue
        fits, host_ratio = fits_of.of(host, book, avoid)
        for f in fits:
            pool.append((f, host_ratio))
            owners[f.engine.id] = host
    healthy_pool = [(f, r) for f, r in pool if not f.sick_tunnel]
    if healthy_pool:
        engine = _best(healthy_pool, rng)
        return owners[engine.id], engine
    # Rule 2: nothing fits outside a sick tunnel; the asker's own host first still (rule 3).
    if own is not None and own_fits:
        return own, _best([(f, 0.0) for f in own_fits], rng)
    if pool:
        engine = _best(pool, rng)
        return owners[engine.id], engine
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
    fits, _ = _host_candidates(own, book, avoid)
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
