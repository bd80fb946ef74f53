"""Blue/green rotation of a tunnel: a new generation replaces the current one, engines move.

Rules, in order:

1. ``rotate`` (operator: ``POST /v1/tunnels/{name}/rotate``; schedule: the current generation
   is older than the spec's ``rotate_after_s``, counted from its last aborted rotation if any)
   creates the next generation's container and marks the current one retiring at once: it gets
   no new engine from then on. One rotation of a tunnel at a time (``rotation_in_progress``
   while a retiring generation is left), under the tunnel's ``lock`` (single-flight with the
   health tick's creations and the removals below).
2. Once the new generation is healthy, the retiring one's engines are drained (``tunnel``,
   counted as ``rotation``): proxies move their sessions make-before-break, the pool provisions
   replacements (in the healthy tunnels, the new generation first as it has the most room) and
   removes each drained engine once it carries no session.
3. A retiring container is removed once the current generation has been healthy and no engine
   runs or is being created in it, or after ``RETIRE_MAX_S`` at the latest (with whatever
   engines it still has). Until then it is what an abort (rule 4) goes back to.
4. Abort: when no generation of the tunnel newer than the retiring ones has ever been healthy
   ``vpn_rotation_timeout_s`` after the rotation started, the new generation is removed and the
   newest retiring one is current again (engines go to it again); counted in
   ``acefleet_agent_tunnel_rotation_aborts_total``, logged ``tunnel_rotation_aborted`` and
   said in that generation's report (``reason``) until it is replaced.
"""

from __future__ import annotations

import time

from acefleet import logs
from acefleet.wire import TunnelState
from orchestrator.agent.dockerops import DockerError
from orchestrator.agent.engine_record import now_utc
from orchestrator.agent.errors import AgentError
from orchestrator.agent.pool_state import EngineLifecycle
from orchestrator.agent.tunnel_record import TunnelGen
from orchestrator.agent.tunnels import RETIRE_MAX_S, Tunnels

log = logs.get(__name__)


class Rotation:
    def __init__(self, tunnels: Tunnels, lifecycle: EngineLifecycle) -> None:
        self.tunnels = tunnels
        self.lifecycle = lifecycle
        self.metrics = tunnels.state.metrics
        tunnels.after_tick.append(self.tick)

    def retiring(self, name: str) -> list[TunnelGen]:
        return [g for g in self.tunnels.gens.values() if g.name == name and g.retiring]

    async def rotate(self, name: str, reason: str) -> TunnelGen:
        """Rule 1; raises :class:`AgentError` (404, 409, 503) when it cannot."""
        tunnels = self.tunnels
        if name not in tunnels.specs:
            raise AgentError(404, "unknown_tunnel", f"no tunnel {name!r} on {tunnels.s.host}")
        if not tunnels.adopted:
            raise AgentError(503, "not_ready", "VPN tunnels not adopted yet", retry_after_s=1)
        async with tunnels.lock(name):
            return await self._rotate(name, reason)

    async def _rotate(self, name: str, reason: str) -> TunnelGen:
        tunnels = self.tunnels
        if self.retiring(name):
            raise AgentError(
                409, "rotation_in_progress", f"tunnel {name} is rotating already; try later"
            )
        old = tunnels.current(name)
        # retired before the first await: no engine is placed in it from now on
        if old is not None:
            tunnels.retire(old)
        try:
            new = await tunnels.create(name)
        except DockerError as exc:
            if old is not None:
                old.retiring_mono = None  # it stays the current generation
            raise AgentError(503, exc.code, exc.message) from None
        self.metrics.tunnel_rotations.labels(tunnel=name, reason=reason).inc()
        log.info(
            "tunnel_rotating",
            tunnel=name,
            reason=reason,
            old=old.container if old else None,
            new=new.container,
        )
        tunnels.state.wake()
        return new

    async def tick(self) -> None:
        """The schedule, then rules 2 and 3."""
        tunnels = self.tunnels
        for name, spec in tunnels.specs.items():
            current = tunnels.current(name)
            if spec.rotate_after_s <= 0 or current is None or self.retiring(name):
                continue
            since = max(current.created_at, current.rotation_aborted_at or current.created_at)
            age = (now_utc() - since).total_seconds()
            if age >= spec.rotate_after_s and current.state == TunnelState.healthy:
                try:
                    await self.rotate(name, "schedule")
                except AgentError as exc:
                    log.warning("tunnel_rotation_failed", tunnel=name, error=exc.message)
        for name in tunnels.specs:
            await self._abort_if_stuck(name)
        for gen in [g for g in tunnels.gens.values() if g.retiring]:
            async with tunnels.lock(gen.name):
                if tunnels.gens.get(gen.container) is gen:
                    await self._retire_step(gen)

    async def _remove(self, gen: TunnelGen) -> bool:
        """Remove ``gen``: its engines, then its container, then its record; False (logged, all
        kept for the next pass) when Docker refused."""
        tunnels = self.tunnels
        try:
            for engine in tunnels.engines_in(gen):
                await self.lifecycle.remove(engine, "tunnel_retired")
            await tunnels.docker.remove(gen.container)
        except DockerError as exc:
            log.warning("tunnel_remove_failed", container=gen.container, error=exc.message)
            return False
        tunnels.gens.pop(gen.container, None)
        return True

    async def _abort_if_stuck(self, name: str) -> None:
        """Rule 4."""
        tunnels = self.tunnels
        timeout = tunnels.s.vpn_rotation_timeout_s
        if not self.retiring(name):
            return
        async with tunnels.lock(name):
            retiring = self.retiring(name)
            if not retiring:
                return
            old = max(retiring, key=lambda g: g.generation)
            newer = [
                g for g in tunnels.gens.values() if g.name == name and g.generation > old.generation
            ]
            started = max(g.retiring_mono or 0.0 for g in retiring)
            if any(g.ever_healthy for g in newer) or time.monotonic() - started < timeout:
                return
            for gen in newer:
                if not await self._remove(gen):
                    return
            old.retiring_mono = None
            old.rotation_aborted_at = now_utc()
            failed = ", ".join(f"g{g.generation} {g.state.value}" for g in newer) or "none left"
            old.rotation_note = (
                f"rotation aborted at {old.rotation_aborted_at.isoformat(timespec='seconds')}: "
                f"the new generation was not healthy within {timeout:g} s ({failed})"
            )
        self.metrics.tunnel_rotation_aborts.labels(tunnel=name).inc()
        log.warning(
            "tunnel_rotation_aborted",
            tunnel=name,
            current=old.container,
            removed=[g.container for g in newer],
            timeout_s=timeout,
        )
        tunnels.state.wake()

    async def _retire_step(self, gen: TunnelGen) -> None:
        tunnels = self.tunnels
        current = tunnels.current(gen.name)
        engines = [e for e in tunnels.engines_in(gen) if not e.removing]
        if current is not None and current.state == TunnelState.healthy:
            for engine in engines:
                if not engine.recycling:
                    tunnels.drain(engine, "rotation")
        since = gen.retiring_mono or time.monotonic()
        overdue = time.monotonic() - since >= RETIRE_MAX_S
        # an engine being created in it is not in the state yet: its ports are reserved
        creating = any(p in tunnels.reserved for p in gen.ports)
        replaced = current is not None and current.ever_healthy
        if (tunnels.engines_in(gen) or creating or not replaced) and not overdue:
            return
        if not await self._remove(gen):
            return
        log.info("tunnel_retired", tunnel=gen.name, container=gen.container, overdue=overdue)
