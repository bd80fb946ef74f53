"""The engine pool of one edge host: adopt, provision, probe, replace, size and stop engines.

All state lives on the event loop; Docker calls run on threads (``dockerops``) and Docker's event
stream is fed back onto the loop, so reconciliation only has to catch what events missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import httpx

from acefleet import logs
from acefleet.wire import EngineHealth, EngineReport, ProvisioningState, VpnState
from orchestrator.agent import profiles
from orchestrator.agent.claim_book import ClaimBook
from orchestrator.agent.dockerops import Container, CreateRequest, DockerError, DockerOps
from orchestrator.agent.engine_record import (
    LABEL_HTTP_PORT,
    LABEL_P2P_PORT,
    BadLabels,
    Engine,
    now_utc,
)
from orchestrator.agent.errors import ProvisionRefused
from orchestrator.agent.metrics import AgentMetrics
from orchestrator.agent.ports import PortAllocator, PortsExhausted
from orchestrator.agent.probes import EngineProbe
from orchestrator.agent.provision_breaker import Breaker
from orchestrator.agent.settings import AgentSettings
from orchestrator.agent.vpn import VpnMonitor

log = logs.get(__name__)


class Pool:
    def __init__(self, settings: AgentSettings, metrics: AgentMetrics) -> None:
        s = self.s = settings
        self.metrics = metrics
        self.profile = profiles.resolve(s.engine_profile, s.engine_image)
        self.docker = DockerOps(s.docker_url, s.docker_timeout_s, s.host)
        probe_ports = not s.network_container
        self.ports = PortAllocator(s.http_ports, s.p2p_ports, s.engine_bind_host, probe=probe_ports)
        self.breaker = Breaker(s.breaker_failures, s.breaker_backoff_s, s.breaker_backoff_max_s)
        self.claims = ClaimBook(s.claim_ttl_s, s.state_file)
        self.engines: dict[str, Engine] = {}
        self.central_claims: dict[str, int] = {}  # engine id → claims central holds on it
        # free engines central wants warm here (None until central said; kept while it is away)
        self.central_free_engines: int | None = None
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
        self.probe = EngineProbe(self.http, s.probe_timeout_s)
        self.vpn = (
            VpnMonitor(self.http, s.vpn_control_url, s.vpn_api_key.get_secret_value())
            if s.vpn_container
            else None
        )
        self.engine_env = dict(item.split("=", 1) for item in s.engine_env)
        self.in_flight = 0
        self.draining = False
        self.docker_error: DockerError | None = None
        self.adopted = False
        self.blocked: tuple[str, str] | None = None
        self._sem = asyncio.Semaphore(s.provision_concurrency)
        self._last_create = 0.0
        self.last_replace = -1e9
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._stop_events = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.claims.load()
        self.docker.watch_events(self._event_from_thread, self._stop_events)
        # Reconcile also wakes early when something changed (event, claim, removal).
        self._spawn(
            self._loop_forever(
                "reconcile", self.reconcile, self.s.reconcile_interval_s, wake=self._wake
            )
        )
        # Imported here: upkeep works on a Pool, so it imports this module.
        from orchestrator.agent import upkeep

        s = self.s
        self._spawn(
            self._loop_forever("health", lambda: upkeep.health_tick(self), s.probe_interval_s)
        )
        self._spawn(
            self._loop_forever("stats", lambda: upkeep.stats_tick(self), s.stats_interval_s)
        )
        if self.vpn is not None:
            self._spawn(
                self._loop_forever("vpn", lambda: upkeep.vpn_tick(self), s.vpn_check_interval_s)
            )

    async def stop(self) -> None:
        self._stop_events.set()
        self.docker.stop_events()
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
        self, name: str, fn: Any, interval: float, wake: asyncio.Event | None = None
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

    def wake(self) -> None:
        self._wake.set()

    # --- views -----------------------------------------------------------------------------

    def live(self) -> list[Engine]:
        return [e for e in self.engines.values() if not e.removing]

    def streams(self, engine_id: str) -> int:
        # Local claims (proxy fallback) and central's claims on this engine; after central comes
        # back it adopts local claims under the same id, so the larger count is the truth.
        return max(len(self.claims.for_engine(engine_id)), self.central_claims.get(engine_id, 0))

    def free(self) -> list[Engine]:
        healthy = (e for e in self.live() if e.health == EngineHealth.healthy)
        return [e for e in healthy if not self.streams(e.id)]

    def claimable(self) -> list[Engine]:
        return [
            e
            for e in self.live()
            if e.health == EngineHealth.healthy and self.streams(e.id) < self.s.stream_cap
        ]

    def report(self, engine: Engine) -> EngineReport:
        return engine.report(self.streams(engine.id), self.s.stream_cap)

    def reports(self) -> list[EngineReport]:
        return [self.report(e) for e in sorted(self.engines.values(), key=lambda e: e.id)]

    def vpn_state(self) -> VpnState:
        return self.vpn.state if self.vpn is not None else VpnState(enabled=False)

    def provisioning(self) -> ProvisioningState:
        state = self.breaker.current()
        reason = self.breaker.reason
        if state == "closed":
            refusal = self._standing_refusal()
            if refusal is not None:
                return ProvisioningState(
                    state="blocked",
                    reason=f"{refusal[0]}: {refusal[1]}",
                    in_flight=self.in_flight,
                    failures_total=self.breaker.failures_total,
                )
            reason = None
        elif reason:
            reason = f"{self.breaker.code}: {reason}"
        return ProvisioningState(
            state="ok" if state == "closed" else ("breaker_open" if state == "open" else state),
            reason=reason,
            in_flight=self.in_flight,
            failures_total=self.breaker.failures_total,
        )

    def ready_reason(self) -> str | None:
        """Why the agent is not ready (None when it is)."""
        if self.docker_error is not None:
            return self.docker_error.message
        if not self.adopted:
            return "engines not adopted yet"
        return None

    # --- adoption and docker state ---------------------------------------------------------

    async def adopt(self, containers: list[Container]) -> None:
        """Rebuild state from labels: keep running engines, clear dead ones, drop lost claims."""
        for c in containers:
            if c.name in self.engines:
                continue
            if c.state != "running":
                log.info("engine_dead_on_adopt", engine=c.name, state=c.state)
                await self.docker.remove(c.name)
                self.metrics.removed.labels(reason="dead_on_adopt").inc()
                continue
            try:
                engine = Engine.from_labels(c.name, c.labels, self.s.reach_address)
            except BadLabels as exc:
                log.warning("engine_not_adopted", engine=c.name, error=str(exc))
                continue
            engine.stats = deque(maxlen=self.s.stats_history)
            self.engines[engine.id] = engine
            self.metrics.adopted.inc()
            log.info("engine_adopted", engine=engine.id, endpoint=engine.endpoint)
            self._spawn(self._await_ready(engine, time.monotonic() + self.s.ready_timeout_s))
        for claim in list(self.claims.claims.values()):
            if claim.engine_id not in self.engines:
                self.claims.release(claim.claim_id)
        self.adopted = True

    def _event_from_thread(self, event: dict[str, Any]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        name = str((event.get("Actor") or {}).get("Attributes", {}).get("name", ""))
        engine = self.engines.get(name)
        if engine is None:
            return
        if action == "die" and not engine.removing:
            # Docker's restart policy may bring it back; probes decide whether to replace it.
            log.warning("engine_died", engine=name)
            engine.health = EngineHealth.unhealthy
            engine.probe_failures = max(engine.probe_failures, self.s.probe_failures)
            self.wake()
        elif action == "destroy":
            self._forget(engine, "destroyed" if not engine.removing else None)

    def _forget(self, engine: Engine, reason: str | None) -> None:
        if self.engines.pop(engine.id, None) is None:
            return
        self.claims.drop_engine(engine.id)
        if reason:
            self.metrics.removed.labels(reason=reason).inc()
            log.warning("engine_gone", engine=engine.id, reason=reason)
        self.wake()

    async def _resync(self) -> None:
        try:
            containers = await self.docker.list_engines()
        except DockerError as exc:
            self.docker_error = exc
            return
        self.docker_error = None
        if not self.adopted:
            await self.adopt(containers)
            return
        present = {c.name for c in containers}
        for engine in list(self.engines.values()):
            if engine.id not in present and not engine.removing:
                self._forget(engine, "vanished")

    # --- provisioning ----------------------------------------------------------------------

    def _standing_refusal(self) -> tuple[str, str] | None:
        """Reasons not to provision that do not involve the breaker."""
        if self.docker_error is not None:
            return self.docker_error.code, self.docker_error.message
        if self.vpn is not None and not self.vpn.state.connected:
            return "vpn_down", self.vpn.reason or "VPN is down"
        return None

    def _refusal(self) -> ProvisionRefused | None:
        refusal = self._standing_refusal()
        if refusal is not None:
            return ProvisionRefused(*refusal, retry_after_s=self.s.reconcile_interval_s)
        if len(self.live()) + self.in_flight >= self.s.max_engines:
            return ProvisionRefused("max_engines", f"already at max_engines={self.s.max_engines}")
        if not self.breaker.allow():
            wait = self.breaker.retry_in()
            return ProvisionRefused(
                "breaker_open",
                f"provisioning paused after repeated failures ({self.breaker.code}: "
                f"{self.breaker.reason}); next try in {wait:.0f}s",
                retry_after_s=wait or self.s.reconcile_interval_s,
            )
        return None

    def start_provision(self, generation: int = 0) -> asyncio.Task[Engine]:
        """Reserve a provisioning slot now (synchronously) and create the engine in a task."""
        refusal = self._refusal()
        if refusal is not None:
            raise refusal
        self.in_flight += 1
        task = self._spawn(self._provision(generation))
        task.add_done_callback(_swallow)
        return task

    async def _taken_ports(self) -> set[int]:
        taken = {p for e in self.engines.values() for p in (e.http_port, e.p2p_port)}
        for c in await self.docker.list_engines(any_host=True):
            for label in (LABEL_HTTP_PORT, LABEL_P2P_PORT):
                with contextlib.suppress(KeyError, ValueError):
                    taken.add(int(c.labels[label]))
        if not self.s.network_container:
            taken |= await self.docker.published_ports()
        return taken

    def _forwarded_port(self) -> int | None:
        """The VPN's forwarded port, when no engine carries it yet."""
        if self.vpn is None or not self.vpn.state.forwarded_port:
            return None
        port = self.vpn.state.forwarded_port
        if any(e.p2p_port == port for e in self.live()) or port in self.ports.reserved:
            return None
        return port

    async def _provision(self, generation: int) -> Engine:
        s = self.s
        try:
            async with self._sem:
                wait = self._last_create + s.provision_min_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_create = time.monotonic()
                engine = await self._create(generation)
        except (DockerError, PortsExhausted) as exc:
            code = exc.code if isinstance(exc, DockerError) else "ports_exhausted"
            message = exc.message if isinstance(exc, DockerError) else str(exc)
            self.breaker.failure(code, message)
            self.metrics.provisions.labels(result=code).inc()
            log.warning("provision_failed", code=code, error=message)
            self.wake()
            raise ProvisionRefused(code, message) from exc
        finally:
            self.in_flight -= 1
        self._spawn(self._await_ready(engine, engine.started_mono + s.ready_timeout_s))
        return engine

    async def _create(self, generation: int) -> Engine:
        s = self.s
        taken = await self._taken_ports()
        forwarded = self._forwarded_port()
        http, p2p = self.ports.allocate(taken, p2p_port=forwarded)
        try:
            engine = Engine(
                id=f"acefleet-{s.host}-{http}",
                host=s.host,
                address=s.reach_address,
                http_port=http,
                p2p_port=p2p,
                profile=self.profile.name,
                created_at=now_utc(),
                generation=generation,
                vpn_forwarded=forwarded is not None,
                stats=deque(maxlen=s.stats_history),
            )
            spec = self.profile.spec(http, p2p, s.engine_extra_args)
            request = CreateRequest(
                name=engine.id,
                image=s.engine_image,
                command=spec.command,
                env={**spec.env, **self.engine_env},
                labels=engine.labels(),
                ports=[http],
                udp_ports=[] if forwarded else [p2p],
                bind_host=s.engine_bind_host,
                network_container=s.network_container,
                memory_mb=s.engine_memory_mb,
                flags_only=spec.flags_only,
            )
            try:
                await self.docker.create(request)
            except DockerError as exc:
                if exc.code == "port_conflict":
                    self.ports.refused.update({http, p2p})
                raise
            engine.started_mono = time.monotonic()
            self.engines[engine.id] = engine
            log.info("engine_created", engine=engine.id, http_port=http, p2p_port=p2p)
            return engine
        finally:
            self.ports.release(http, p2p)

    async def _await_ready(self, engine: Engine, deadline: float) -> None:
        while time.monotonic() < deadline:
            if engine.removing or self.engines.get(engine.id) is not engine:
                return
            if await self.probe.ready(engine, self.profile):
                now = time.monotonic()
                engine.health = EngineHealth.healthy
                engine.probe_failures = 0
                engine.ready_mono = engine.idle_since = now
                if not engine.adopted:
                    self.metrics.time_to_ready.observe(now - engine.started_mono)
                    self.metrics.provisions.labels(result="ok").inc()
                    self.breaker.success()
                log.info("engine_ready", engine=engine.id, adopted=engine.adopted)
                self.wake()
                return
            await asyncio.sleep(self.s.ready_poll_s)
        if engine.removing or self.engines.get(engine.id) is not engine:
            return
        log.warning("engine_not_ready", engine=engine.id, timeout_s=self.s.ready_timeout_s)
        if not engine.adopted:
            self.metrics.provisions.labels(result="ready_timeout").inc()
            self.breaker.failure(
                "ready_timeout", f"engine did not answer get_status in {self.s.ready_timeout_s}s"
            )
        await self.remove(engine, "ready_timeout")

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
        self._forget(engine, None)

    # --- periodic work ---------------------------------------------------------------------

    async def reconcile(self) -> None:
        for claim in self.claims.expire():
            engine = self.engines.get(claim.engine_id)
            if engine is not None and not self.streams(engine.id):
                engine.idle_since = time.monotonic()
        await self._resync()
        if self.docker_error is not None or not self.adopted:
            return
        live = self.live()
        busy = sum(1 for e in live if self.streams(e.id))
        desired = min(self.s.max_engines, max(self.s.min_engines, busy + self.free_target()))
        for _ in range(desired - len(live) - self.in_flight):
            try:
                self.start_provision()
            except ProvisionRefused:
                break
        await self._stop_idle(len(live) - desired)

    def free_target(self) -> int:
        """Free engines to keep: this host's setting, raised to central's warm buffer when central
        asks for more (otherwise the idle reaper would stop what central just provisioned)."""
        return max(self.s.free_engines, self.central_free_engines or 0)

    async def _stop_idle(self, surplus: int) -> None:
        free = sorted(self.free(), key=lambda e: e.idle_since)
        surplus = min(surplus, len(free) - self.free_target())
        now = time.monotonic()
        for engine in free[: max(0, surplus)]:
            if now - engine.idle_since < self.s.idle_grace_s:
                break
            with contextlib.suppress(DockerError):
                await self.remove(engine, "idle")

    # --- operations for the API and central ------------------------------------------------

    def find(self, engine_id: str) -> Engine | None:
        engine = self.engines.get(engine_id)
        return engine if engine is not None and not engine.removing else None


def _swallow(task: asyncio.Task[Any]) -> None:
    # Provisioning failures are logged and counted where they happen.
    if not task.cancelled():
        task.exception()
