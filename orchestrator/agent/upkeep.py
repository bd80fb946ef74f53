"""Upkeep of running engines besides their health: session stats and the VPN gate.

Rules:

1. Stats: every ``stats_interval_s`` each healthy engine carrying a session with a known
   ``stat_url`` is polled once (its path only, always against that engine): the session's stat
   page comes from a confirmed local claim or from the proxy's session report (``sessions``).
   An engine carrying several sessions is polled for its oldest one, so its stats describe one
   session, the one that has been live longest; an engine without such a session reports no
   stats (its last ones would describe a session that ended).
2. VPN: every ``vpn_check_interval_s`` Gluetun is asked, with one healthy engine's own view of
   its network as a second opinion. While it is down ``provisioning`` refuses (``vpn_down``).
3. When the forwarded port changes, the engine holding the old one is removed once it has no
   sessions, so the next engine takes the new port.
4. Recycling: an engine older than ``engine_max_age_s``, or that downloaded more than
   ``engine_max_cache_bytes`` in its life (all its cache can hold: the simulator keeps no cache
   to measure, and a real engine's cache directory is inside its container), is marked
   recycling: reported draining (``drain_reason`` ``recycle``), so central places nothing new
   on it and tells the proxies to move its sessions off make-before-break; it takes no local
   claim; the pool removes it once it carries no session and provisions its replacement.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from acefleet import logs
from acefleet.wire import EngineHealth
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.pool_state import EngineLifecycle, PoolState
from orchestrator.agent.probes import EngineProbe
from orchestrator.agent.sessions import stat_path
from orchestrator.agent.vpn import VpnMonitor

log = logs.get(__name__)


def stat_paths(state: PoolState) -> dict[str, str]:
    """Engine id → the stat path to poll: of its oldest session with a known stat page."""
    found: dict[str, tuple[float, str]] = {}

    def offer(engine_id: str, since: float, path: str) -> None:
        held = found.get(engine_id)
        if held is None or since < held[0]:
            found[engine_id] = (since, path)

    for claim in state.claims.claims.values():
        if claim.confirmed and claim.stat_url:
            path = stat_path(claim.stat_url)
            if path is not None:
                offer(claim.engine_id, claim.created_wall, path)
    for session in state.sessions.sessions.values():
        offer(session.engine_id, session.since_wall, session.stat_path)
    return {engine_id: path for engine_id, (_, path) in found.items()}


async def stats_tick(state: PoolState, probe: EngineProbe) -> None:
    for gone in state.sessions.expire():
        log.info("session_expired", session=gone.session_id, engine=gone.engine_id)
        state.slot_freed(gone.engine_id)
    paths = stat_paths(state)
    jobs = []
    for engine in state.live():
        path = paths.get(engine.id)
        engine.stats_active = path is not None
        if path is not None and engine.health == EngineHealth.healthy:
            jobs.append((engine, path))
    results = await asyncio.gather(*(probe.stats(e, path) for e, path in jobs))
    for (engine, _), stats in zip(jobs, results, strict=True):
        if stats is not None:
            engine.took_stats(stats)


def recycle_due(state: PoolState, now_wall: datetime) -> list[Engine]:
    """Mark the engines that are due for recycling (rule 4); returns the newly marked ones."""
    s = state.s
    marked: list[Engine] = []
    for engine in state.live():
        if engine.recycling or engine.health != EngineHealth.healthy:
            continue
        age = (now_wall - engine.created_at).total_seconds()
        too_old = s.engine_max_age_s > 0 and age >= s.engine_max_age_s
        too_big = 0 < s.engine_max_cache_bytes <= engine.downloaded_total
        if too_old or too_big:
            engine.recycling = True
            state.metrics.recycled.labels(reason="age" if too_old else "cache").inc()
            log.info(
                "engine_recycling",
                engine=engine.id,
                reason="age" if too_old else "cache",
                age_s=round(age),
                downloaded=engine.downloaded_total,
                sessions=state.streams(engine.id),
            )
            marked.append(engine)
    return marked


async def vpn_tick(
    state: PoolState, vpn: VpnMonitor, probe: EngineProbe, lifecycle: EngineLifecycle
) -> None:
    healthy = [e for e in state.live() if e.health == EngineHealth.healthy]
    engines_say = await probe.network_connected(healthy[0]) if healthy else None
    before = vpn.state
    vpn_state = await vpn.check(engines_say)
    state.metrics.vpn_connected.set(1 if vpn_state.connected else 0)
    if vpn_state != before:
        log.info("vpn_state", connected=vpn_state.connected, port=vpn_state.forwarded_port)
        state.wake()
    # A forwarded port that changed leaves a stale engine: replace it once it is free.
    port = vpn_state.forwarded_port
    for engine in state.live():
        stale = engine.vpn_forwarded and port and engine.p2p_port != port
        if stale and not state.streams(engine.id):
            await lifecycle.remove(engine, "vpn_port_changed")
            state.wake()
