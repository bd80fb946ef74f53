"""The engine pool of one edge host: its background work, removal and sizing.

The pool is its state (``pool_state``) plus the loops that keep it right: reconciliation, health
(``engine_health``), stats and VPN (``upkeep``), VPN tunnels (``tunnels``, ``tunnel_rotation``).
Adoption, provisioning and health each live in their own module; this one starts them, removes
engines and holds the sizing rule:

1. Target = ``min(max_engines, max(min_engines, busy + free_target))``; busy engines carry at
   least one stream. Missing engines are provisioned (counting creations in flight).
2. Free engines beyond the target are stopped once idle for ``idle_grace_s``, oldest idle
   first, never leaving fewer than ``free_target`` free engines.
3. Engines being recycled (``upkeep`` rule 4) or drained off their tunnel (``tunnel_health``,
   ``tunnel_rotation``) are outside the target: their replacements are provisioned while they
   still drain (room allowing: ``max_engines`` counts every container), so the proxies have a
   free engine to move to; each is removed once it carries no session.
4. With tunnels, engines are adopted only once the tunnels are (an engine's address is its
   tunnel container's).

All state lives on the event loop; Docker calls run on threads (``dockerops``) and Docker's event
stream is fed back onto the loop, so reconciliation only has to catch what events missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx

from acefleet import logs, tls
from acefleet.wire import ProvisioningState, TunnelReport, VpnState
from orchestrator.agent import profiles, upkeep
from orchestrator.agent.adoption import Adoption
from orchestrator.agent.capacity import Capacity, capacity
from orchestrator.agent.dockerops import DockerError, DockerOps
from orchestrator.agent.engine_health import EngineHealthKeeper
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.errors import ProvisionRefused
from orchestrator.agent.metrics import AgentMetrics
from orchestrator.agent.pool_state import PoolState
from orchestrator.agent.probes import EngineProbe
from orchestrator.agent.provisioning import Provisioner
from orchestrator.agent.settings import AgentSettings
from orchestrator.agent.tunnel_rotation import Rotation
from orchestrator.agent.tunnels import Tunnels
from orchestrator.agent.vpn import VpnMonitor

log = logs.get(__name__)


class Pool(PoolState):
    def __init__(self, settings: AgentSettings, metrics: AgentMetrics) -> None:
        super().__init__(settings, metrics)
        s = settings
        self.profile = profiles.resolve(s.engine_profile, s.engine_image)
        self.docker = DockerOps(s.docker_url, s.docker_timeout_s, s.host)
        # an https central_url is verified against the fleet CA (docs/tls.md); engines are http
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100), verify=tls.client_context(s.tls_ca_file)
        )
        self.probe = EngineProbe(self.http, s.probe_timeout_s)
        self.vpn = (
            VpnMonitor(self.http, s.vpn_control_url, s.vpn_api_key.get_secret_value())
            if s.vpn_container
            else None
        )
        self.tunnels = Tunnels(self, self.docker, self.http, self) if s.tunnels else None
        self.rotation = Rotation(self.tunnels, self) if self.tunnels is not None else None
        self.provisioner = Provisioner(self, self.docker, self.profile, self.vpn, self.tunnels)
        if self.tunnels is not None:
            self.tunnels.reserved = self.provisioner.ports.reserved  # the same set, shared
        self.breaker = self.provisioner.breaker
        self.health = EngineHealthKeeper(
            self, self.docker, self.probe, self.profile, self.breaker, self
        )
        self.adoption = Adoption(self, self.docker, self.health, self._spawn, self.tunnels)
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- supervision -----------------------------------------------------------------------

    async def start(self) -> None:
        self.claims.load()
        self.adoption.watch()
        s = self.s
        # Reconcile also wakes early when something changed (event, claim, removal).
        self._spawn(
            self._loop_forever("reconcile", self.reconcile, s.reconcile_interval_s, self._wake)
        )
        self._spawn(self._loop_forever("health", self.health.tick, s.probe_interval_s))
        self._spawn(
            self._loop_forever(
                "stats", lambda: upkeep.stats_tick(self, self.probe), s.stats_interval_s
            )
        )
        if self.tunnels is not None:
            self._spawn(self._loop_forever("tunnels", self.tunnels.tick, s.vpn_check_interval_s))
        vpn = self.vpn
        if vpn is not None:
            self._spawn(
                self._loop_forever(
                    "vpn",
                    lambda: upkeep.vpn_tick(self, vpn, self.probe, self),
                    s.vpn_check_interval_s,
                )
            )

    async def stop(self) -> None:
        self.adoption.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()
        self.docker.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _loop_forever(
        self,
        name: str,
        fn: Callable[[], Awaitable[None]],
        interval: float,
        wake: asyncio.Event | None = None,
    ) -> None:
        """Run ``fn`` every ``interval`` seconds, or sooner when ``wake`` is set."""
        while True:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("loop_failed", loop=name)
            if wake is None:
                await asyncio.sleep(interval)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
            wake.clear()

    # --- views that need more than the state -----------------------------------------------

    def vpn_state(self) -> VpnState:
        if self.tunnels is not None:
            return VpnState(enabled=True, connected=bool(self.tunnels.healthy()))
        return self.vpn.state if self.vpn is not None else VpnState(enabled=False)

    def tunnel_reports(self) -> list[TunnelReport]:
        return self.tunnels.reports() if self.tunnels is not None else []

    def ready_reason(self) -> str | None:
        if self.docker_error is None and self.tunnels is not None and not self.tunnels.adopted:
            return "VPN tunnels not adopted yet"
        return super().ready_reason()

    def provisioning(self) -> ProvisioningState:
        return self.provisioner.report()

    def capacity(self) -> Capacity:
        room = self.tunnels.free_slots(set()) if self.tunnels is not None else None
        return capacity(self, self.provisioning(), room)

    # --- engines in and out ----------------------------------------------------------------

    def start_provision(self, generation: int = 0) -> asyncio.Task[Engine]:
        """Reserve a provisioning slot now (synchronously) and create the engine in a task."""
        self.provisioner.reserve()
        task = self._spawn(self._provision(generation))
        task.add_done_callback(_swallow)
        return task

    async def _provision(self, generation: int) -> Engine:
        engine = await self.provisioner.provision(generation)
        self._spawn(self.health.await_ready(engine, engine.started_mono + self.s.ready_timeout_s))
        return engine

    async def remove(self, engine: Engine, reason: str) -> None:
        if engine.removing:
            return
        engine.removing = True
        await self.remove_marked(engine, reason)

    async def remove_marked(self, engine: Engine, reason: str) -> None:
        log.info("engine_removing", engine=engine.id, reason=reason)
        try:
            await self.docker.remove(engine.id)
        except DockerError as exc:
            engine.removing = False
            log.warning("engine_remove_failed", engine=engine.id, error=exc.message)
            raise
        self.metrics.removed.labels(reason=reason).inc()
        self.forget(engine, None)

    # --- sizing ----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        for claim in self.claims.expire():
            self.slot_freed(claim.engine_id)
        if self.tunnels is not None and not self.tunnels.adopted:
            return  # rule 4
        await self.adoption.resync()
        if self.docker_error is not None or not self.adopted:
            return
        upkeep.recycle_due(self, datetime.now(UTC))
        for engine in [e for e in self.live() if e.recycling and not self.streams(e.id)]:
            with contextlib.suppress(DockerError):
                await self.remove(engine, "tunnel" if engine.tunnel_drained else "recycle")
        live = self.live()
        serving = self.serving()
        self.metrics.recycling.set(len(live) - len(serving))
        busy = sum(1 for e in serving if self.streams(e.id))
        desired = min(self.s.max_engines, max(self.s.min_engines, busy + self.free_target()))
        in_flight = self.provisioner.in_flight
        room = self.s.max_engines - len(live) - in_flight
        for _ in range(min(desired - len(serving) - in_flight, room)):
            try:
                self.start_provision()
            except ProvisionRefused:
                break
        await self._stop_idle(len(serving) - desired)

    async def _stop_idle(self, surplus: int) -> None:
        free = sorted(self.free(), key=lambda e: e.idle_since)
        surplus = min(surplus, len(free) - self.free_target())
        now = time.monotonic()
        for engine in free[: max(0, surplus)]:
            if now - engine.idle_since < self.s.idle_grace_s:
                break
            with contextlib.suppress(DockerError):
                await self.remove(engine, "idle")


def _swallow(task: asyncio.Task[Any]) -> None:
    # Provisioning failures are logged and counted where they happen.
    if not task.cancelled():
        task.exception()
