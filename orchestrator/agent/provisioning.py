"""Provisioning: whether a new engine may be created now, and how (ports, the VPN's forwarded
port, the container). The only code that creates engine containers.

Rules, in order:

1. Refused while Docker is unreachable or the VPN is down (``blocked``; with tunnels: no tunnel
   is healthy), at ``max_engines`` (counting creations in flight), when the healthy tunnels have
   no free slot left (``tunnels_full``), or while the breaker (``provision_breaker``) is open.
2. At most ``provision_concurrency`` creations at once, ``provision_min_interval_s`` apart.
3. Ports: a pair from the ranges that no engine label (any host on this dockerd), published
   port or creation in flight holds (``ports``); a port Docker refused is not tried again.
4. The VPN's forwarded port becomes the P2P port of exactly one engine (``vpn_forwarded``).
   With tunnels (``tunnels``), an engine goes to the slot the tunnels pick: it joins that
   tunnel's network namespace, takes one of its reserved HTTP ports and, when no engine of the
   tunnel holds it, the tunnel's forwarded port; it publishes nothing and is reached at the
   tunnel container's address.
5. A failed creation (Docker error, ports exhausted) counts against the breaker and is refused
   to the caller as :class:`ProvisionRefused`. Readiness (``engine_health``) decides the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from acefleet import logs
from acefleet.wire import ProvisioningState
from orchestrator.agent.dockerops import CreateRequest, DockerError, DockerOps
from orchestrator.agent.engine_record import LABEL_HTTP_PORT, LABEL_P2P_PORT, Engine, now_utc
from orchestrator.agent.errors import ProvisionRefused
from orchestrator.agent.pool_state import PoolState
from orchestrator.agent.ports import PortAllocator, PortsExhausted
from orchestrator.agent.profiles import EngineProfile
from orchestrator.agent.provision_breaker import Breaker
from orchestrator.agent.tunnels import Slot, Tunnels
from orchestrator.agent.vpn import VpnMonitor

log = logs.get(__name__)


class Provisioner:
    def __init__(
        self,
        state: PoolState,
        docker: DockerOps,
        profile: EngineProfile,
        vpn: VpnMonitor | None,
        tunnels: Tunnels | None = None,
    ) -> None:
        s = self.s = state.s
        self.state = state
        self.docker = docker
        self.profile = profile
        self.vpn = vpn
        self.tunnels = tunnels
        probe_ports = not s.network_container
        self.ports = PortAllocator(s.http_ports, s.p2p_ports, s.engine_bind_host, probe=probe_ports)
        self.breaker = Breaker(s.breaker_failures, s.breaker_backoff_s, s.breaker_backoff_max_s)
        self.engine_env = dict(item.split("=", 1) for item in s.engine_env)
        self.in_flight = 0
        self._sem = asyncio.Semaphore(s.provision_concurrency)
        self._last_create = 0.0

    # --- may we? ---------------------------------------------------------------------------

    def standing_refusal(self) -> tuple[str, str] | None:
        """Reasons not to provision that do not involve the breaker."""
        if self.state.docker_error is not None:
            return self.state.docker_error.code, self.state.docker_error.message
        if self.vpn is not None and not self.vpn.state.connected:
            return "vpn_down", self.vpn.reason or "VPN is down"
        if self.tunnels is not None:
            reason = self.tunnels.refusal()
            if reason is not None:
                return "vpn_down", reason
        return None

    def refusal(self) -> ProvisionRefused | None:
        refusal = self.standing_refusal()
        if refusal is not None:
            return ProvisionRefused(*refusal, retry_after_s=self.s.reconcile_interval_s)
        if len(self.state.live()) + self.in_flight >= self.s.max_engines:
            return ProvisionRefused("max_engines", f"already at max_engines={self.s.max_engines}")
        if self.tunnels is not None and self.tunnels.free_slots(set()) <= self.in_flight:
            return ProvisionRefused(
                "tunnels_full",
                "the healthy VPN tunnels carry all the engines they may",
                retry_after_s=self.s.reconcile_interval_s,
            )
        if not self.breaker.allow():
            wait = self.breaker.retry_in()
            return ProvisionRefused(
                "breaker_open",
                f"provisioning paused after repeated failures ({self.breaker.code}: "
                f"{self.breaker.reason}); next try in {wait:.0f}s",
                retry_after_s=wait or self.s.reconcile_interval_s,
            )
        return None

    def reserve(self) -> None:
        """Take a provisioning slot now (synchronously), or raise why not."""
        refusal = self.refusal()
        if refusal is not None:
            raise refusal
        self.in_flight += 1

    def report(self) -> ProvisioningState:
        state = self.breaker.current()
        reason = self.breaker.reason
        if state == "closed":
            refusal = self.standing_refusal()
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

    # --- create ----------------------------------------------------------------------------

    async def provision(self, generation: int) -> Engine:
        """Create one engine in the slot :meth:`reserve` took (and give the slot back)."""
        s = self.s
        try:
            async with self._sem:
                wait = self._last_create + s.provision_min_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_create = time.monotonic()
                return await self._create(generation)
        except (DockerError, PortsExhausted) as exc:
            code = exc.code if isinstance(exc, DockerError) else "ports_exhausted"
            message = exc.message if isinstance(exc, DockerError) else str(exc)
            self.breaker.failure(code, message)
            self.state.metrics.provisions.labels(result=code).inc()
            log.warning("provision_failed", code=code, error=message)
            self.state.wake()
            raise ProvisionRefused(code, message) from exc
        finally:
            self.in_flight -= 1

    async def _taken_ports(self) -> set[int]:
        taken = {p for e in self.state.engines.values() for p in (e.http_port, e.p2p_port)}
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
        if any(e.p2p_port == port for e in self.state.live()) or port in self.ports.reserved:
            return None
        return port

    def _tunnel_slot(self) -> tuple[Slot, int]:
        """A tunnel slot and its P2P port, reserved (no await: two creations never meet)."""
        assert self.tunnels is not None
        reserved = self.ports.reserved
        slot = self.tunnels.pick(reserved)
        if slot is None:
            # A health tick or a rotation took the slot reserve() counted on: a refusal like
            # reserve()'s own, not a failure for the breaker (which would pause provisioning
            # just when the tunnel's engines need replacements).
            raise ProvisionRefused(
                "tunnels_full",
                "no free engine slot in a healthy VPN tunnel",
                retry_after_s=self.s.reconcile_interval_s,
            )
        p2p = slot.forwarded_port
        if p2p is None:
            taken = {e.p2p_port for e in self.state.engines.values()} | reserved
            p2p = next((p for p in self.s.p2p_ports if p not in taken), None)
            if p2p is None:
                raise PortsExhausted("no free P2P port left in the configured range")
        reserved.update({slot.http_port, p2p})
        return slot, p2p

    async def _create(self, generation: int) -> Engine:
        s = self.s
        slot: Slot | None = None
        if self.tunnels is not None:
            slot, p2p = self._tunnel_slot()
            http, forwarded = slot.http_port, slot.forwarded_port
        else:
            taken = await self._taken_ports()
            forwarded = self._forwarded_port()
            http, p2p = self.ports.allocate(taken, p2p_port=forwarded)
        try:
            engine = Engine(
                id=f"acefleet-{s.host}-{http}",
                host=s.host,
                address=(slot.gen.address or "") if slot else s.reach_address,
                http_port=http,
                p2p_port=p2p,
                profile=self.profile.name,
                created_at=now_utc(),
                generation=generation,
                vpn_forwarded=forwarded is not None,
                stats=deque(maxlen=s.stats_history),
                tunnel=slot.gen.name if slot else None,
                tunnel_container=slot.gen.container if slot else None,
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
                network_container=slot.gen.container if slot else s.network_container,
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
            self.state.engines[engine.id] = engine
            log.info(
                "engine_created",
                engine=engine.id,
                http_port=http,
                p2p_port=p2p,
                tunnel=engine.tunnel_container,
            )
            return engine
        finally:
            self.ports.release(http, p2p)
