"""Upkeep of running engines: health probes and replacement, session stats, the VPN gate."""

from __future__ import annotations

import asyncio
import contextlib
import time

from acefleet import logs
from acefleet.wire import EngineHealth
from orchestrator.agent.errors import ProvisionRefused
from orchestrator.agent.pool import Pool

log = logs.get(__name__)


async def health_tick(pool: Pool) -> None:
    probed = [e for e in pool.live() if e.health != EngineHealth.starting]
    results = await asyncio.gather(*(pool.probe.ready(e, pool.profile) for e in probed))
    for engine, ok in zip(probed, results, strict=True):
        if ok:
            engine.probe_failures = 0
            engine.health = EngineHealth.healthy
        else:
            engine.probe_failures += 1
            engine.health = EngineHealth.unhealthy
            pool.metrics.probe_failures.inc()
    await replace_one(pool)


async def replace_one(pool: Pool) -> None:
    """Replace at most one failing engine per cooldown; keep busy ones unless truly dead."""
    if time.monotonic() - pool.last_replace < pool.s.replace_cooldown_s:
        return
    for engine in pool.live():
        if engine.probe_failures < pool.s.probe_failures:
            continue
        if pool.streams(engine.id):
            state = await pool.docker.state(engine.id)
            if state == "running" and await pool.probe.answers(engine, pool.profile):
                log.warning("unhealthy_engine_kept", engine=engine.id, reason="has viewers")
                continue
        pool.last_replace = time.monotonic()
        log.warning("engine_replacing", engine=engine.id, failures=engine.probe_failures)
        # Reserve the replacement before the first await, so reconciliation does not fill
        # the gap with a fresh engine of its own.
        engine.removing = True
        with contextlib.suppress(ProvisionRefused):
            pool.start_provision(generation=engine.generation + 1)
        pool.metrics.replaced.inc()
        await pool.remove_marked(engine, "unhealthy")
        return


async def stats_tick(pool: Pool) -> None:
    jobs = []
    for claim in list(pool.claims.claims.values()):
        engine = pool.engines.get(claim.engine_id)
        if claim.stat_url and engine is not None and engine.health == EngineHealth.healthy:
            jobs.append((engine, claim.stat_url))
    results = await asyncio.gather(*(pool.probe.stats(e, url) for e, url in jobs))
    for (engine, _), stats in zip(jobs, results, strict=True):
        if stats is not None:
            engine.stats.append(stats)


async def vpn_tick(pool: Pool) -> None:
    if pool.vpn is None:
        return
    healthy = [e for e in pool.live() if e.health == EngineHealth.healthy]
    engines_say = await pool.probe.network_connected(healthy[0]) if healthy else None
    before = pool.vpn.state
    state = await pool.vpn.check(engines_say)
    pool.metrics.vpn_connected.set(1 if state.connected else 0)
    if state != before:
        log.info("vpn_state", connected=state.connected, port=state.forwarded_port)
        pool.wake()
    # A forwarded port that changed leaves a stale engine: replace it once it is free.
    port = state.forwarded_port
    for engine in pool.live():
        stale = engine.vpn_forwarded and port and engine.p2p_port != port
        if stale and not pool.streams(engine.id):
            await pool.remove(engine, "vpn_port_changed")
            pool.wake()
