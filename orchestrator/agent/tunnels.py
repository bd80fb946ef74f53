"""The edge's VPN tunnels: one Gluetun container per tunnel of ``vpn_tunnels_file``, created and
adopted by the agent, polled for health, and the engine slots they offer.

Rules, in order (each ``tick``, every ``vpn_check_interval_s``):

1. Adoption: containers labelled ``acefleet.vpn-tunnel`` and ``acefleet.host=<this host>`` are
   this agent's tunnels; the newest generation of a name is its current one, older ones are
   retiring (``tunnel_rotation``). Running and restarting ones (Docker's restart policy brings
   those back) are adopted; others, and ones of a name the file no longer lists, are removed.
   Engines wait until this first pass is done (their address is their tunnel's).
2. Generations are never reused: every labelled container ever listed counts (removed ones and
   ones about to be swept included), and a new generation is the highest seen plus one.
3. After adoption, a labelled container of this host the agent does not track (a creation the
   agent lost track of: a crash, a Docker call that timed out yet created it) is swept
   (removed). One with unreadable labels is left alone (logged at adoption).
4. A tunnel with no current container (never created, or its container vanished; one stopped
   for ``vpn_down_after_s`` is removed, so it counts as vanished) gets one, the next generation:
   ``acefleet-vpn-<host>-<tunnel>-g<n>`` on ``vpn_docker_network``, with
   NET_ADMIN, ``vpn_tun_device``, restart unless-stopped, the spec's env plus the control server
   (``vpn_control_port``, API key ``vpn_api_key``) and a firewall opened to the engine HTTP
   ports reserved for it (``engines`` ports of ``http_port_range`` no other tunnel holds).
   Engines of a vanished container are removed: the namespace they ran in is gone.
   Creating and removing a tunnel's containers is single-flight per tunnel (``lock``): a
   health tick, a rotation and a retirement of the same tunnel never interleave.
5. Health: each running container is inspected (its address, and its last start: a restart
   gives it a new namespace, logged ``tunnel_restarted``), its control server read at that
   address and its state set by ``tunnel_health``; engines are drained by the same rules
   (rule 6 there: engines created before the container's last start, in every generation).
6. Slots (``pick``): a new engine goes to a current, healthy tunnel with a free reserved port,
   first one whose forwarded port no engine holds (that engine takes it as its P2P port), then
   the one with the fewest engines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from acefleet import logs
from acefleet.wire import TunnelReport, TunnelState
from orchestrator.agent import tunnel_health
from orchestrator.agent.dockerops import Container, DockerError, DockerOps, TunnelCreateRequest
from orchestrator.agent.engine_record import Engine, now_utc
from orchestrator.agent.pool_state import EngineLifecycle, PoolState
from orchestrator.agent.tunnel_record import LABEL_VPN_TUNNEL, TunnelGen, container_name
from orchestrator.agent.tunnel_specs import TunnelSpec
from orchestrator.agent.vpn import GluetunClient, GluetunStatus

log = logs.get(__name__)

# A retiring generation is removed once it carries no engine, or after this at the latest.
RETIRE_MAX_S = 600.0


def auth_role(api_key: str) -> str:
    """Gluetun's ``HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE``: the API key every route asks for.
    Encoded, not formatted: a key holding a quote or a backslash must stay valid JSON, or
    Gluetun refuses to start and the tunnel never comes up."""
    return json.dumps({"auth": "apikey", "apikey": api_key}, separators=(",", ":"))


@dataclass(frozen=True)
class Slot:
    """Where a new engine goes: a tunnel generation, its HTTP port, and the forwarded port it
    takes as its P2P port (None: one from ``p2p_port_range``)."""

    gen: TunnelGen
    http_port: int
    forwarded_port: int | None


class Tunnels:
    def __init__(
        self,
        state: PoolState,
        docker: DockerOps,
        http: httpx.AsyncClient,
        lifecycle: EngineLifecycle,
    ) -> None:
        self.state = state
        self.s = s = state.s
        self.docker = docker
        self.http = http
        self.lifecycle = lifecycle
        self.specs: dict[str, TunnelSpec] = {t.name: t for t in s.tunnels}
        self.gens: dict[str, TunnelGen] = {}  # container name → generation
        # newest generation number ever used per tunnel: a recreated one never reuses a name
        self.last_generation: dict[str, int] = {}
        self.adopted = False
        self._locks: dict[str, asyncio.Lock] = {}
        self.api_key = s.vpn_api_key.get_secret_value()
        # ports of engine creations in flight (the provisioner's reservations, shared)
        self.reserved: set[int] = set()
        # called after each health pass (tunnel_rotation's schedule and retirement)
        self.after_tick: list[Callable[[], Awaitable[None]]] = []

    def lock(self, name: str) -> asyncio.Lock:
        """Rule 4: held while a container of tunnel ``name`` is created or removed."""
        return self._locks.setdefault(name, asyncio.Lock())

    # --- views -----------------------------------------------------------------------------

    def current(self, name: str) -> TunnelGen | None:
        """The newest generation of ``name`` that is not retiring."""
        gens = [g for g in self.gens.values() if g.name == name and not g.retiring]
        return max(gens, key=lambda g: g.generation) if gens else None

    def engines_in(self, gen: TunnelGen) -> list[Engine]:
        return [e for e in self.state.engines.values() if e.tunnel_container == gen.container]

    def address_of(self, container: str | None) -> str | None:
        gen = self.gens.get(container or "")
        return gen.address if gen is not None else None

    def report(self, gen: TunnelGen) -> TunnelReport:
        engines = sum(1 for e in self.engines_in(gen) if not e.removing)
        return gen.report(engines, self.specs[gen.name].engines)

    def reports(self) -> list[TunnelReport]:
        return [
            self.report(g) for g in sorted(self.gens.values(), key=lambda g: (g.name, g.generation))
        ]

    def healthy(self) -> list[TunnelGen]:
        gens = (self.current(name) for name in self.specs)
        return [g for g in gens if g is not None and g.state == TunnelState.healthy and g.address]

    def refusal(self) -> str | None:
        """Why no engine can go to any tunnel now (None: some tunnel is healthy)."""
        if not self.adopted:
            return "VPN tunnels not adopted yet"
        if self.healthy():
            return None
        states = ", ".join(f"{r.name} g{r.generation} {r.state.value}" for r in self.reports())
        return f"no VPN tunnel is healthy ({states or 'none running'})"

    def free_slots(self, reserved: set[int]) -> int:
        return sum(len(self._free_ports(g, reserved)) for g in self.healthy())

    def _free_ports(self, gen: TunnelGen, reserved: set[int]) -> list[int]:
        held = {e.http_port for e in self.engines_in(gen)} | reserved
        return [p for p in gen.ports if p not in held]

    def pick(self, reserved: set[int]) -> Slot | None:
        """Rule 6. ``reserved``: ports of creations in flight. No await: the caller reserves."""
        best: tuple[tuple[int, int, str], Slot] | None = None
        for gen in self.healthy():
            free = self._free_ports(gen, reserved)
            if not free:
                continue
            engines = self.engines_in(gen)
            forwarded = gen.forwarded_port
            if forwarded and (
                forwarded in reserved or any(e.p2p_port == forwarded for e in engines)
            ):
                forwarded = None
            serving = sum(1 for e in engines if not e.recycling and not e.removing)
            in_flight = sum(1 for p in gen.ports if p in reserved)
            key = (0 if forwarded else 1, serving + in_flight, gen.name)
            if best is None or key < best[0]:
                best = (key, Slot(gen, free[0], forwarded))
        return best[1] if best is not None else None

    # --- the tick --------------------------------------------------------------------------

    async def tick(self) -> None:
        listed_mono = time.monotonic()
        try:
            containers = await self.docker.list_labelled(LABEL_VPN_TUNNEL)
            present: dict[str, Container] = {c.name: c for c in containers}
            self._note_generations(present)
            if not self.adopted:
                self.state.docker_error = None  # adoption's resync keeps it from then on
                await self._adopt(present)
        except DockerError as exc:
            self.state.docker_error = exc
            log.warning("tunnels_list_failed", error=exc.message)
            return
        await self._sweep(present)
        await self._forget_vanished(present, listed_mono)
        await self._remove_stopped(present)
        for name in self.specs:
            await self.ensure(name)
        await self._inspect(present)
        # engines are adopted from here on: their tunnels' addresses are known
        self.adopted = True
        await self._check_health(present)
        for hook in self.after_tick:
            await hook()
        self._update_metrics()

    def _note_generations(self, present: dict[str, Container]) -> None:
        """Rule 2."""
        for c in present.values():
            try:
                gen = TunnelGen.from_labels(c.name, c.labels)
            except (KeyError, ValueError):
                continue
            last = self.last_generation.get(gen.name, -1)
            self.last_generation[gen.name] = max(last, gen.generation)

    async def _adopt(self, present: dict[str, Container]) -> None:
        """Rule 1."""
        for c in list(present.values()):
            if c.name in self.gens:
                continue
            try:
                gen = TunnelGen.from_labels(c.name, c.labels)
            except (KeyError, ValueError) as exc:
                log.warning("tunnel_not_adopted", container=c.name, error=str(exc))
                continue
            if c.state not in ("running", "restarting") or gen.name not in self.specs:
                log.info("tunnel_removed_on_adopt", container=c.name, state=c.state)
                await self.docker.remove(c.name)
                present.pop(c.name, None)
                continue
            self.gens[c.name] = gen
            log.info("tunnel_adopted", tunnel=gen.name, container=c.name, state=c.state)
        for name in self.specs:
            newest = self.current(name)
            for gen in self.gens.values():
                if gen.name == name and newest is not None and gen is not newest:
                    self.retire(gen)

    async def _sweep(self, present: dict[str, Container]) -> None:
        """Rule 3 (adoption took or removed every readable one on the first pass)."""
        for c in list(present.values()):
            if c.name in self.gens:
                continue
            try:
                TunnelGen.from_labels(c.name, c.labels)
            except (KeyError, ValueError):
                continue
            log.warning("tunnel_untracked_removed", container=c.name, state=c.state)
            present.pop(c.name, None)
            try:
                await self.docker.remove(c.name)
            except DockerError as exc:
                log.warning("tunnel_remove_failed", container=c.name, error=exc.message)

    def retire(self, gen: TunnelGen) -> None:
        gen.retiring_mono = time.monotonic()
        gen.state_since = now_utc()

    async def _forget_vanished(self, present: dict[str, Container], listed_mono: float) -> None:
        """Rule 4, second half: a container gone takes its engines with it."""
        for gen in list(self.gens.values()):
            # one created after the listing (a rotation meanwhile) is simply not in it yet
            if gen.container in present or gen.created_mono > listed_mono:
                continue
            log.warning("tunnel_vanished", tunnel=gen.name, container=gen.container)
            del self.gens[gen.container]
            for engine in self.engines_in(gen):
                try:
                    await self.lifecycle.remove(engine, "tunnel_gone")
                except DockerError as exc:
                    log.warning("engine_remove_failed", engine=engine.id, error=exc.message)

    async def _remove_stopped(self, present: dict[str, Container]) -> None:
        """Rule 4: a container that stays stopped (an operator's ``docker stop``, a crash
        Docker does not restart) for ``vpn_down_after_s`` is removed, so the next pass finds it
        vanished and creates the next generation."""
        for gen in list(self.gens.values()):
            container = present.get(gen.container)
            if container is None or container.state in ("running", "restarting"):
                continue
            since = gen.unhealthy_mono
            if since is None or time.monotonic() - since < self.s.vpn_down_after_s:
                continue
            log.warning("tunnel_stopped_removed", container=gen.container, state=container.state)
            try:
                await self.docker.remove(gen.container)
            except DockerError as exc:
                log.warning("tunnel_remove_failed", container=gen.container, error=exc.message)

    async def ensure(self, name: str) -> None:
        """Rule 4: tunnel ``name`` has a current generation (created if not, single-flight)."""
        if self.current(name) is not None:
            return
        async with self.lock(name):
            if self.current(name) is not None:  # created meanwhile (a rotation)
                return
            try:
                await self.create(name)
            except DockerError as exc:
                log.warning("tunnel_create_failed", tunnel=name, code=exc.code, error=exc.message)

    def _reserve_ports(self, count: int) -> list[int]:
        held = {p for g in self.gens.values() for p in g.ports}
        held |= {e.http_port for e in self.state.engines.values()}
        free = [p for p in self.s.http_ports if p not in held]
        if len(free) < count:
            raise DockerError(
                "ports_exhausted", f"http_port_range has {len(free)} free ports, {count} needed"
            )
        return free[:count]

    async def create(self, name: str) -> TunnelGen:
        """Rule 4: the next generation of tunnel ``name``, created and started. The caller holds
        ``lock(name)``."""
        s, spec = self.s, self.specs[name]
        known = [g.generation for g in self.gens.values() if g.name == name]
        generation = max([*known, self.last_generation.get(name, -1)]) + 1
        self.last_generation[name] = generation
        gen = TunnelGen(
            name=name,
            generation=generation,
            container=container_name(s.host, name, generation),
            ports=self._reserve_ports(spec.engines),
            created_at=now_utc(),
        )
        env = spec.container_env()
        env["HTTP_CONTROL_SERVER_ADDRESS"] = f":{s.vpn_control_port}"
        env["HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE"] = auth_role(self.api_key)
        env["FIREWALL_INPUT_PORTS"] = ",".join(str(p) for p in gen.ports)
        request = TunnelCreateRequest(
            name=gen.container,
            image=s.vpn_image,
            env=env,
            labels=gen.labels(s.host),
            network=s.vpn_docker_network,
            cap_add=["NET_ADMIN"],
            devices=[s.vpn_tun_device] if s.vpn_tun_device else [],
        )
        # held in the state before the first await, so two passes never reserve the same ports
        self.gens[gen.container] = gen
        try:
            await self.docker.create_tunnel(request)
        except DockerError as exc:
            if exc.code == "conflict":  # a leftover of that name (not ours to adopt): replace it
                await self.docker.remove(gen.container)
                try:
                    await self.docker.create_tunnel(request)
                except DockerError:
                    del self.gens[gen.container]
                    raise
            else:
                del self.gens[gen.container]
                raise
        log.info("tunnel_created", tunnel=name, container=gen.container, ports=gen.ports)
        return gen

    async def _inspect(self, present: dict[str, Container]) -> None:
        """Rule 5, first half: address and last start of each running container (and of each
        created since the listing)."""
        network = self.s.vpn_docker_network
        for gen in list(self.gens.values()):
            listed = present.get(gen.container)
            if listed is not None and listed.state != "running":
                continue
            try:
                facts = await self.docker.tunnel_facts(gen.container, network)
            except DockerError as exc:
                log.warning("tunnel_inspect_failed", container=gen.container, error=exc.message)
                continue
            if facts.started_at is None:
                continue
            if gen.started_at is not None and facts.started_at != gen.started_at:
                log.warning(
                    "tunnel_restarted",
                    tunnel=gen.name,
                    container=gen.container,
                    started_at=facts.started_at.isoformat(),
                    engines=len(self.engines_in(gen)),
                )
            # a restart may also have given it another address
            gen.address = facts.address
            gen.started_at = facts.started_at

    async def _read(self, gen: TunnelGen, running: bool) -> GluetunStatus:
        if gen.address is None or not running:
            why = "container not running" if not running else "container has no address"
            return GluetunStatus(False, False, None, None, why)
        base = f"http://{gen.address}:{self.s.vpn_control_port}"
        client = GluetunClient(self.http, base, self.api_key)
        return await client.read(want_port=self.specs[gen.name].port_forwarding)

    async def _check_health(self, present: dict[str, Container]) -> None:
        """Rule 5, second half."""
        gens = list(self.gens.values())
        statuses = await asyncio.gather(
            *(self._read(g, _running(present.get(g.container))) for g in gens)
        )
        for gen, status in zip(gens, statuses, strict=True):
            spec = self.specs[gen.name]
            state, reason = tunnel_health.state_of(
                gen, status, want_port=spec.port_forwarding, down_after_s=self.s.vpn_down_after_s
            )
            gen.public_ip = status.public_ip
            gen.forwarded_port = status.forwarded_port
            if gen.set_state(state, reason):
                log.info(
                    "tunnel_state",
                    tunnel=gen.name,
                    container=gen.container,
                    state=state.value,
                    reason=reason,
                    forwarded_port=gen.forwarded_port,
                )
                self.state.wake()
            for engine, why in tunnel_health.restart_drains(gen, self.engines_in(gen)):
                self.drain(engine, why)
            if gen.retiring:
                continue
            for engine, why in tunnel_health.drains(
                gen, self.engines_in(gen), self.s.vpn_down_after_s
            ):
                self.drain(engine, why)

    def drain(self, engine: Engine, reason: str) -> None:
        """Drain ``engine`` off its tunnel (``drain_reason`` ``tunnel``); the pool replaces it
        and removes it once it carries no session."""
        engine.recycling = True
        engine.tunnel_drained = True
        self.state.metrics.tunnel_drains.labels(reason=reason).inc()
        log.info(
            "engine_tunnel_drain",
            engine=engine.id,
            tunnel=engine.tunnel,
            reason=reason,
            sessions=self.state.streams(engine.id),
        )
        self.state.wake()

    def _update_metrics(self) -> None:
        m = self.state.metrics
        for name in self.specs:
            gen = self.current(name)
            healthy = gen is not None and gen.state == TunnelState.healthy
            m.tunnel_up.labels(tunnel=name).set(1 if healthy else 0)
            port = gen.forwarded_port if gen is not None else None
            m.tunnel_forwarded_port.labels(tunnel=name).set(port or 0)
            count = sum(
                1
                for g in self.gens.values()
                if g.name == name
                for e in self.engines_in(g)
                if not e.removing
            )
            m.tunnel_engines.labels(tunnel=name).set(count)


def _running(container: Container | None) -> bool:
    return container is not None and container.state == "running"
