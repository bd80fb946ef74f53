"""The pool's state and its views: which engines this host has and which are free, busy or
claimable. No I/O here.

Rules held here:

1. An engine's streams are the largest of its local claims, central's claims on it (central
   adopts local claims under the same id when it comes back) and the sessions the proxy reported
   on it (which also cover the static list's, which nobody claims), so the largest is the truth.
2. An engine being removed is no longer live: it is not counted, claimed or reported as free.
3. Free = healthy and without streams; claimable = healthy and under ``stream_cap``; an engine
   being recycled is neither (it only finishes what it carries).
4. Free engines to keep = this host's ``free_engines``, raised to central's warm buffer for
   this edge while central asks for more.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from acefleet import logs
from acefleet.wire import EngineHealth, EngineReport
from orchestrator.agent.dockerops import DockerError
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.local_claims import ClaimBook
from orchestrator.agent.metrics import AgentMetrics
from orchestrator.agent.sessions import SessionBook
from orchestrator.agent.settings import AgentSettings

log = logs.get(__name__)


class EngineLifecycle(Protocol):
    """What health and upkeep need from the pool to act on an engine."""

    def start_provision(self, generation: int = 0) -> asyncio.Task[Engine]: ...

    async def remove(self, engine: Engine, reason: str) -> None: ...

    async def remove_marked(self, engine: Engine, reason: str) -> None: ...


class PoolState:
    def __init__(self, settings: AgentSettings, metrics: AgentMetrics) -> None:
        self.s = settings
        self.metrics = metrics
        self.claims = ClaimBook(settings.claim_ttl_s, settings.state_file)
        self.sessions = SessionBook(
            max(64, settings.max_engines * settings.stream_cap * 2), settings.session_ttl_s
        )
        self.engines: dict[str, Engine] = {}
        self.central_claims: dict[str, int] = {}  # engine id → claims central holds on it
        # free engines central wants warm here (None until central said; kept while it is away)
        self.central_free_engines: int | None = None
        self.draining = False
        self.docker_error: DockerError | None = None
        self.adopted = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something changed (event, claim, removal): reconcile now, not at the next interval."""
        self._wake.set()

    def live(self) -> list[Engine]:
        return [e for e in self.engines.values() if not e.removing]

    def slot_freed(self, engine_id: str) -> None:
        """A claim or session on ``engine_id`` ended: an engine left with none is idle from now
        (the idle reaper counts from here, not from when the engine became ready)."""
        engine = self.engines.get(engine_id)
        if engine is not None and not self.streams(engine_id):
            engine.idle_since = time.monotonic()

    def streams(self, engine_id: str) -> int:
        return max(
            len(self.claims.for_engine(engine_id)),
            self.central_claims.get(engine_id, 0),
            len(self.sessions.for_engine(engine_id)),
        )

    def serving(self) -> list[Engine]:
        """Live engines that take new work: not being recycled."""
        return [e for e in self.live() if not e.recycling]

    def free(self) -> list[Engine]:
        healthy = (e for e in self.serving() if e.health == EngineHealth.healthy)
        return [e for e in healthy if not self.streams(e.id)]

    def claimable(self) -> list[Engine]:
        return [
            e
            for e in self.serving()
            if e.health == EngineHealth.healthy and self.streams(e.id) < self.s.stream_cap
        ]

    def free_target(self) -> int:
        """Free engines to keep: this host's setting, raised to central's warm buffer when central
        asks for more (otherwise the idle reaper would stop what central just provisioned)."""
        return max(self.s.free_engines, self.central_free_engines or 0)

    def find(self, engine_id: str) -> Engine | None:
        engine = self.engines.get(engine_id)
        return engine if engine is not None and not engine.removing else None

    def report(self, engine: Engine) -> EngineReport:
        return engine.report(self.streams(engine.id), self.s.stream_cap)

    def reports(self) -> list[EngineReport]:
        return [self.report(e) for e in sorted(self.engines.values(), key=lambda e: e.id)]

    def ready_reason(self) -> str | None:
        """Why the agent is not ready (None when it is)."""
        if self.docker_error is not None:
            return self.docker_error.message
        if not self.adopted:
            return "engines not adopted yet"
        return None

    def forget(self, engine: Engine, reason: str | None) -> None:
        """Drop an engine that is gone from Docker, with its claims; ``reason`` counts it."""
        if self.engines.pop(engine.id, None) is None:
            return
        self.claims.drop_engine(engine.id)
        self.sessions.drop_engine(engine.id)
        if reason:
            self.metrics.removed.labels(reason=reason).inc()
            log.warning("engine_gone", engine=engine.id, reason=reason)
        self.wake()
