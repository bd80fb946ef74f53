"""Upkeep of running engines besides their health: session stats and the VPN gate.

Rules:

1. Stats: every ``stats_interval_s`` each confirmed claim with a ``stat_url`` on a healthy
   engine is polled (its path only, always against that claim's engine).
2. VPN: every ``vpn_check_interval_s`` Gluetun is asked, with one healthy engine's own view of
   its network as a second opinion. While it is down ``provisioning`` refuses (``vpn_down``).
3. When the forwarded port changes, the engine holding the old one is removed once it has no
   sessions, so the next engine takes the new port.
"""

from __future__ import annotations

import asyncio

from acefleet import logs
from acefleet.wire import EngineHealth
from orchestrator.agent.pool_state import EngineLifecycle, PoolState
from orchestrator.agent.probes import EngineProbe
from orchestrator.agent.vpn import VpnMonitor

log = logs.get(__name__)


async def stats_tick(state: PoolState, probe: EngineProbe) -> None:
    jobs = []
    for claim in list(state.claims.claims.values()):
        engine = state.engines.get(claim.engine_id)
        if claim.stat_url and engine is not None and engine.health == EngineHealth.healthy:
            jobs.append((engine, claim.stat_url))
    results = await asyncio.gather(*(probe.stats(e, url) for e, url in jobs))
    for (engine, _), stats in zip(jobs, results, strict=True):
        if stats is not None:
            engine.stats.append(stats)


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
