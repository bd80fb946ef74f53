"""The rule for engine health: when an engine is starting, healthy or unhealthy, and when it is
replaced. Every change of ``Engine.health`` and ``Engine.probe_failures`` happens here.

In order:

1. An engine is ``starting`` until it is ready: ``get_status`` answers with a result and no
   error (readiness is the engine answering, not Docker saying "running"). A new engine that is
   not ready within ``ready_timeout_s`` counts as a provisioning failure; any engine that is not
   ready by then is removed (``ready_timeout``).
2. Every ``probe_interval_s`` each ready engine is probed the same way (``probe_timeout_s``):
   a good answer makes it ``healthy`` and clears its failures, a bad one makes it
   ``unhealthy`` and counts one failure.
3. Docker's ``die`` makes it ``unhealthy`` and counts as reaching ``probe_failures`` at once:
   unless Docker's restart brings it back by the next probe, it is replaced.
4. ``probe_failures`` failures in a row → replaced: the replacement first (generation + 1),
   then the removal; one replacement per ``replace_cooldown_s``.
5. Except an engine with sessions whose container still runs and whose HTTP server still
   answers at all: it may still be feeding viewers, so it is kept (``unhealthy``) until its
   sessions end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from acefleet import logs
from acefleet.wire import EngineHealth
from orchestrator.agent.dockerops import DockerOps
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.errors import ProvisionRefused
from orchestrator.agent.pool_state import EngineLifecycle, PoolState
from orchestrator.agent.probes import EngineProbe
from orchestrator.agent.profiles import EngineProfile
from orchestrator.agent.provision_breaker import Breaker

log = logs.get(__name__)


def says_ready(status: Any) -> bool:
    """Rule 1: a ``get_status`` body (None: no answer) means ready."""
    return isinstance(status, dict) and status.get("error") is None and bool(status.get("result"))


class EngineHealthKeeper:
    def __init__(
        self,
        state: PoolState,
        docker: DockerOps,
        probe: EngineProbe,
        profile: EngineProfile,
        breaker: Breaker,
        lifecycle: EngineLifecycle,
    ) -> None:
        self.state = state
        self.s = state.s
        self.metrics = state.metrics
        self.docker = docker
        self.probe = probe
        self.profile = profile
        self.breaker = breaker
        self.lifecycle = lifecycle
        self.last_replace = -1e9

    async def is_ready(self, engine: Engine) -> bool:
        return says_ready(await self.probe.get_status(engine, self.profile))

    async def await_ready(self, engine: Engine, deadline: float) -> None:
        """Rule 1: poll readiness until ``deadline``; remove the engine if it never gets there."""
        while time.monotonic() < deadline:
            if engine.removing or self.state.engines.get(engine.id) is not engine:
                return
            if await self.is_ready(engine):
                now = time.monotonic()
                engine.health = EngineHealth.healthy
                engine.probe_failures = 0
                engine.ready_mono = engine.idle_since = now
                if not engine.adopted:
                    self.metrics.time_to_ready.observe(now - engine.started_mono)
                    self.metrics.provisions.labels(result="ok").inc()
                    self.breaker.success()
                log.info("engine_ready", engine=engine.id, adopted=engine.adopted)
                self.state.wake()
                return
            await asyncio.sleep(self.s.ready_poll_s)
        if engine.removing or self.state.engines.get(engine.id) is not engine:
            return
        log.warning("engine_not_ready", engine=engine.id, timeout_s=self.s.ready_timeout_s)
        if not engine.adopted:
            self.metrics.provisions.labels(result="ready_timeout").inc()
            self.breaker.failure(
                "ready_timeout", f"engine did not answer get_status in {self.s.ready_timeout_s}s"
            )
        await self.lifecycle.remove(engine, "ready_timeout")

    async def tick(self) -> None:
        """Rule 2, then rules 4 and 5."""
        probed = [e for e in self.state.live() if e.health != EngineHealth.starting]
        results = await asyncio.gather(*(self.is_ready(e) for e in probed))
        for engine, ok in zip(probed, results, strict=True):
            if ok:
                engine.probe_failures = 0
                engine.health = EngineHealth.healthy
            else:
                engine.probe_failures += 1
                engine.health = EngineHealth.unhealthy
                self.metrics.probe_failures.inc()
        await self.replace_one()

    def died(self, engine: Engine) -> None:
        """Rule 3: Docker reported the engine's container dead."""
        # Docker's restart policy may bring it back; probes decide whether to replace it.
        log.warning("engine_died", engine=engine.id)
        engine.health = EngineHealth.unhealthy
        engine.probe_failures = max(engine.probe_failures, self.s.probe_failures)

    async def replace_one(self) -> None:
        """Rules 4 and 5: replace at most one failing engine per cooldown; keep busy ones unless
        truly dead."""
        if time.monotonic() - self.last_replace < self.s.replace_cooldown_s:
            return
        for engine in self.state.live():
            if engine.probe_failures < self.s.probe_failures:
                continue
            if self.state.streams(engine.id):
                state = await self.docker.state(engine.id)
                if state == "running" and await self.probe.answers(engine, self.profile):
                    log.warning("unhealthy_engine_kept", engine=engine.id, reason="has viewers")
                    continue
            self.last_replace = time.monotonic()
            log.warning("engine_replacing", engine=engine.id, failures=engine.probe_failures)
            # Reserve the replacement before the first await, so reconciliation does not fill
            # the gap with a fresh engine of its own.
            engine.removing = True
            with contextlib.suppress(ProvisionRefused):
                self.lifecycle.start_provision(generation=engine.generation + 1)
            self.metrics.replaced.inc()
            await self.lifecycle.remove_marked(engine, "unhealthy")
            return
