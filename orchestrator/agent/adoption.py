"""Adoption: the pool rebuilt from Docker, and kept in step with it.

Rules:

1. At start, and whenever Docker answers again, the agent's engines are the containers labelled
   ``acefleet.managed=true`` and ``acefleet.host=<this host>``; others are never touched.
2. Running ones are adopted from their labels (readiness is probed again); stopped ones are
   removed (``dead_on_adopt``); unreadable labels are logged and left alone.
3. Claims on engines that were not adopted are released.
4. An engine of a VPN tunnel is reached at its tunnel container's address; one whose tunnel
   container is not there (or with no tunnels configured) is removed (``tunnel_gone``): the
   namespace it ran in is gone.
5. Between reconciliations Docker's event stream updates the state: ``die`` goes to
   ``engine_health``, ``destroy`` forgets the engine. An engine missing from Docker's list at
   reconciliation is forgotten too (``vanished``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from acefleet import logs
from orchestrator.agent.dockerops import Container, DockerError, DockerOps
from orchestrator.agent.engine_health import EngineHealthKeeper
from orchestrator.agent.engine_record import BadLabels, Engine
from orchestrator.agent.pool_state import PoolState
from orchestrator.agent.tunnels import Tunnels

log = logs.get(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any]], object]


class Adoption:
    def __init__(
        self,
        state: PoolState,
        docker: DockerOps,
        health: EngineHealthKeeper,
        spawn: Spawn,
        tunnels: Tunnels | None = None,
    ) -> None:
        self.state = state
        self.s = state.s
        self.docker = docker
        self.health = health
        self.spawn = spawn
        self.tunnels = tunnels
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- rules 1 to 3 ----------------------------------------------------------------------

    async def adopt(self, containers: list[Container]) -> None:
        """Rebuild state from labels: keep running engines, clear dead ones, drop lost claims."""
        state = self.state
        for c in containers:
            if c.name in state.engines:
                continue
            if c.state != "running":
                log.info("engine_dead_on_adopt", engine=c.name, state=c.state)
                await self.docker.remove(c.name)
                state.metrics.removed.labels(reason="dead_on_adopt").inc()
                continue
            try:
                engine = Engine.from_labels(c.name, c.labels, self.s.reach_address)
            except BadLabels as exc:
                log.warning("engine_not_adopted", engine=c.name, error=str(exc))
                continue
            if engine.tunnel:
                address = self.tunnels.address_of(engine.tunnel_container) if self.tunnels else None
                if address is None:
                    log.info("engine_tunnel_gone", engine=c.name, tunnel=engine.tunnel_container)
                    await self.docker.remove(c.name)
                    state.metrics.removed.labels(reason="tunnel_gone").inc()
                    continue
                engine.address = address
            engine.stats = deque(maxlen=self.s.stats_history)
            state.engines[engine.id] = engine
            state.metrics.adopted.inc()
            log.info("engine_adopted", engine=engine.id, endpoint=engine.endpoint)
            self.spawn(self.health.await_ready(engine, time.monotonic() + self.s.ready_timeout_s))
        for claim in list(state.claims.claims.values()):
            if claim.engine_id not in state.engines:
                state.claims.release(claim.claim_id)
        state.adopted = True

    async def resync(self) -> None:
        """Compare with Docker's list: adopt on first contact, then forget what vanished."""
        state = self.state
        try:
            containers = await self.docker.list_engines()
        except DockerError as exc:
            state.docker_error = exc
            return
        state.docker_error = None
        if not state.adopted:
            await self.adopt(containers)
            return
        present = {c.name for c in containers}
        for engine in list(state.engines.values()):
            if engine.id not in present and not engine.removing:
                state.forget(engine, "vanished")

    # --- rule 5: Docker's events -----------------------------------------------------------

    def watch(self) -> None:
        """Start feeding Docker's events for our engines onto the running loop."""
        self._loop = asyncio.get_running_loop()
        self.docker.watch_events(self._event_from_thread, self._stop)

    def stop(self) -> None:
        self._stop.set()
        self.docker.stop_events()

    def _event_from_thread(self, event: dict[str, Any]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.on_event, event)

    def on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        name = str((event.get("Actor") or {}).get("Attributes", {}).get("name", ""))
        engine = self.state.engines.get(name)
        if engine is None:
            return
        if action == "die" and not engine.removing:
            self.health.died(engine)
            self.state.wake()
        elif action == "destroy":
            self.state.forget(engine, "destroyed" if not engine.removing else None)
