"""The tunnel rules without Docker: a tunnel's state from what Gluetun says, which engines its
state drains, and which tunnel a new engine goes to (pure Python, the agent's own objects)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from acefleet.wire import EngineHealth, TunnelState
from orchestrator.agent import tunnel_health
from orchestrator.agent.dockerops import TunnelCreateRequest
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.errors import ProvisionRefused
from orchestrator.agent.metrics import AgentMetrics
from orchestrator.agent.pool import Pool
from orchestrator.agent.settings import AgentSettings
from orchestrator.agent.tunnel_record import TunnelGen
from orchestrator.agent.tunnels import auth_role
from orchestrator.agent.vpn import GluetunStatus

RUNNING = GluetunStatus(True, True, "203.0.113.7", 45000, None)
STOPPED = GluetunStatus(True, False, None, None, "VPN is stopped (Gluetun's status)")
UNREACHABLE = GluetunStatus(False, False, None, None, "control server unreachable")
NO_PORT = GluetunStatus(True, True, "203.0.113.7", None, None, "Gluetun forwards no port (0)")


def gen(name: str = "t1", generation: int = 0, ports: range = range(19000, 19004)) -> TunnelGen:
    return TunnelGen(
        name, generation, f"acefleet-vpn-e1-{name}-g{generation}", list(ports), datetime.now(UTC)
    )


def engine(g: TunnelGen, port: int, p2p: int, *, forwarded: bool = False) -> Engine:
    return Engine(
        id=f"acefleet-e1-{port}",
        host="e1",
        address="172.17.0.5",
        http_port=port,
        p2p_port=p2p,
        profile="engine-sim",
        created_at=datetime.now(UTC),
        health=EngineHealth.healthy,
        vpn_forwarded=forwarded,
        tunnel=g.name,
        tunnel_container=g.container,
    )


def test_state_starting_then_down_no_port_healthy() -> None:
    g = gen()
    assert tunnel_health.state_of(g, STOPPED, want_port=True, down_after_s=30) == (
        TunnelState.starting,
        STOPPED.reason,
    )
    # never healthy, but waiting longer than vpn_down_after_s: down
    assert tunnel_health.state_of(g, UNREACHABLE, want_port=True, down_after_s=0)[0] == (
        TunnelState.down
    )
    assert tunnel_health.state_of(g, NO_PORT, want_port=True, down_after_s=30) == (
        TunnelState.no_port,
        "Gluetun forwards no port (0)",
    )
    # a tunnel that is not asked to forward a port is healthy without one
    assert tunnel_health.state_of(g, NO_PORT, want_port=False, down_after_s=30)[0] == (
        TunnelState.healthy
    )
    g.set_state(TunnelState.healthy, None)
    assert g.ever_healthy
    assert g.unhealthy_mono is None
    # once healthy, losing the VPN is down at once (no second "starting")
    assert tunnel_health.state_of(g, STOPPED, want_port=True, down_after_s=30)[0] == (
        TunnelState.down
    )


def test_drains_after_down_after_s_and_on_a_port_change() -> None:
    g = gen()
    g.set_state(TunnelState.healthy, None)
    g.forwarded_port = 45000
    carrier = engine(g, 19000, 45000, forwarded=True)
    other = engine(g, 19001, 19500)
    assert tunnel_health.drains(g, [carrier, other], 5) == []
    # the provider forwards another port: only the engine holding the old one goes
    g.forwarded_port = 46000
    assert tunnel_health.drains(g, [carrier, other], 5) == [(carrier, "port_changed")]
    # not healthy: nothing before vpn_down_after_s, every serving engine after it
    g.set_state(TunnelState.no_port, "no port")
    assert tunnel_health.drains(g, [carrier, other], 5) == []
    assert g.unhealthy_mono is not None
    g.unhealthy_mono = time.monotonic() - 6
    other.recycling = True  # already drained: not again
    assert tunnel_health.drains(g, [carrier, other], 5) == [(carrier, "no_port")]
    g.set_state(TunnelState.down, "stopped")
    assert tunnel_health.drains(g, [carrier], 5) == [(carrier, "down")]


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    path = tmp_path / "tunnels.json"
    specs = [
        {"name": n, "provider": "p", "credentials": {"WIREGUARD_PRIVATE_KEY": "k"}, "engines": 4}
        for n in ("t1", "t2")
    ]
    path.write_text(json.dumps(specs))
    path.chmod(0o600)
    settings = AgentSettings(
        api_key="agent-test-key-0123456789",
        host="e1",
        vpn_tunnels_file=str(path),
        vpn_api_key="vpn-control-key-0123",
    )
    p = Pool(settings, AgentMetrics())
    yield p
    await p.http.aclose()
    p.docker.close()


def test_new_engines_go_where_the_forwarded_port_is_free_then_to_the_emptiest(
    pool: Pool,
) -> None:
    tunnels = pool.tunnels
    assert tunnels is not None
    t1, t2 = gen("t1"), gen("t2", ports=range(19004, 19008))
    for g, port in ((t1, 45001), (t2, 45002)):
        g.address = "172.17.0.9"
        g.set_state(TunnelState.healthy, None)
        g.forwarded_port = port
        tunnels.gens[g.container] = g
    tunnels.adopted = True
    slot = tunnels.pick(set())
    assert slot is not None
    assert (slot.gen.name, slot.http_port, slot.forwarded_port) == ("t1", 19000, 45001)
    # with that slot in flight (its ports reserved), the next goes to t2, for its port
    slot = tunnels.pick({19000, 45001})
    assert slot is not None
    assert (slot.gen.name, slot.http_port, slot.forwarded_port) == ("t2", 19004, 45002)
    # both ports taken: the tunnel with fewer engines gets the next, from p2p_port_range
    for e in (
        engine(t1, 19000, 45001, forwarded=True),
        engine(t1, 19001, 19500),
        engine(t2, 19004, 45002, forwarded=True),
    ):
        pool.engines[e.id] = e
    slot = tunnels.pick(set())
    assert slot is not None
    assert (slot.gen.name, slot.http_port, slot.forwarded_port) == ("t2", 19005, None)
    # a tunnel that is not healthy gets nothing; a retiring one neither
    t2.set_state(TunnelState.down, "stopped")
    slot = tunnels.pick(set())
    assert slot is not None
    assert slot.gen is t1
    tunnels.retire(t1)
    assert tunnels.pick(set()) is None
    assert tunnels.refusal() is not None
    assert pool.provisioner.refusal() is not None
    assert pool.provisioner.refusal().code == "vpn_down"  # type: ignore[union-attr]
    assert tunnels.report(t1).state == TunnelState.retiring


async def test_a_slot_gone_before_its_creation_is_refused_not_counted_as_a_failure(
    pool: Pool,
) -> None:
    tunnels = pool.tunnels
    assert tunnels is not None
    t1 = gen("t1")
    t1.address = "172.17.0.9"
    t1.set_state(TunnelState.healthy, None)
    tunnels.gens[t1.container] = t1
    tunnels.adopted = True
    pool.provisioner.reserve()  # t1 has room now
    t1.set_state(TunnelState.down, "stopped")  # a health tick before the creation runs
    with pytest.raises(ProvisionRefused) as refused:
        await pool.provisioner.provision(0)
    assert refused.value.code == "tunnels_full"
    assert pool.provisioner.breaker.failures_total == 0  # the breaker stays closed
    assert pool.provisioner.in_flight == 0


def test_the_control_servers_auth_role_is_json_whatever_the_key() -> None:
    key = 'a-key-with "quotes" and a \\ backslash'
    role = json.loads(auth_role(key))
    assert role == {"auth": "apikey", "apikey": key}


def test_engines_created_before_the_tunnels_last_start_drain_as_restarted() -> None:
    g = gen()
    g.set_state(TunnelState.healthy, None)
    older, newer, drained = (
        engine(g, 19000, 19500),
        engine(g, 19001, 19501),
        engine(g, 19002, 19502),
    )
    # no start seen yet (just created, or not inspected): nothing to compare with
    assert tunnel_health.restart_drains(g, [older, newer]) == []
    g.started_at = datetime.now(UTC)
    older.created_at = drained.created_at = g.started_at - timedelta(seconds=5)
    newer.created_at = g.started_at + timedelta(seconds=1)
    drained.recycling = True  # already leaving: not counted twice
    assert tunnel_health.restart_drains(g, [older, newer, drained]) == [(older, "restarted")]


class SlowDocker:
    """Tunnel containers in memory; a creation waits for ``release``, as a slow dockerd does."""

    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.release = asyncio.Event()
        self.creating = 0
        self.most_creating = 0

    async def create_tunnel(self, req: TunnelCreateRequest) -> str:
        self.creating += 1
        self.most_creating = max(self.most_creating, self.creating)
        await self.release.wait()
        self.containers.add(req.name)
        self.creating -= 1
        return req.name

    async def remove(self, name: str) -> None:
        self.containers.discard(name)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_rotation_meeting_a_creation_of_the_same_tunnel_waits_for_it(pool: Pool) -> None:
    tunnels, rotation = pool.tunnels, pool.rotation
    assert tunnels is not None
    assert rotation is not None
    fake = SlowDocker()
    tunnels.docker = fake  # type: ignore[assignment]
    tunnels.adopted = True
    # a health tick creates t1 (its container is missing) and an operator rotates it meanwhile;
    # the rotation's retirement runs while the creation is still in flight
    creating = asyncio.create_task(tunnels.ensure("t1"))
    await settle()
    rotating = asyncio.create_task(rotation.rotate("t1", "operator"))
    await settle()
    await rotation.tick()
    fake.release.set()
    await creating
    new = await rotating
    assert fake.most_creating == 1
    # every container Docker runs is one the agent tracks: none was removed before it existed
    assert fake.containers == set(tunnels.gens)
    assert new.generation == 1
    new.set_state(TunnelState.healthy, None)
    await rotation.tick()  # g1 took over and the retiring g0 carries no engine: removed
    assert fake.containers == set(tunnels.gens) == {new.container}


async def test_a_rotation_whose_new_generation_never_gets_healthy_is_aborted(pool: Pool) -> None:
    tunnels, rotation = pool.tunnels, pool.rotation
    assert tunnels is not None
    assert rotation is not None
    fake = SlowDocker()
    fake.release.set()
    tunnels.docker = fake  # type: ignore[assignment]
    tunnels.adopted = True
    await tunnels.ensure("t1")
    old = tunnels.current("t1")
    assert old is not None
    old.set_state(TunnelState.healthy, None)
    new = await rotation.rotate("t1", "operator")
    await rotation.tick()
    assert old.retiring  # before vpn_rotation_timeout_s: still rotating
    assert old.retiring_mono is not None
    old.retiring_mono -= pool.s.vpn_rotation_timeout_s
    await rotation.tick()
    assert tunnels.current("t1") is old  # not retiring any more
    assert new.container not in tunnels.gens
    assert fake.containers == {old.container}
    sample = ("acefleet_agent_tunnel_rotation_aborts_total", {"tunnel": "t1"})
    assert pool.metrics.registry.get_sample_value(*sample) == 1
    report = tunnels.report(old)
    assert report.state == TunnelState.healthy
    assert report.reason is not None
    assert "rotation aborted" in report.reason
    # a new generation that was healthy once is not given up on
    again = await rotation.rotate("t1", "operator")
    again.set_state(TunnelState.healthy, None)
    again.set_state(TunnelState.down, "stopped")
    assert old.retiring_mono is not None
    old.retiring_mono -= pool.s.vpn_rotation_timeout_s
    await rotation.tick()
    assert again.container in tunnels.gens
    assert tunnels.current("t1") is again
    # and the old one, without engines, is removed as the rotation goes on
    assert old.container not in tunnels.gens
