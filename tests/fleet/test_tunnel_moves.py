"""VPN tunnel moves seen from the viewers: an edge whose engines run in two tunnels
(tests/fleet/tunnel_fleet.py, the simulator's realistic timing: an ~8-s prebuffer), viewers on
a channel, and the tunnel carrying it goes down, or is rotated by an operator through central.
The agent drains that tunnel's engines, central lists them in the proxy's ``move_off``, and the
proxy moves the channel make-before-break: a warm standby on an engine of another tunnel (or
generation), promoted at a keyframe as a "moved" promotion, not a failover. Every viewer keeps
its one connection and gets bytes after the move.

Last, what a real Gluetun adds to a tunnel going down: its engines lose their peers, so the old
engine may stop before the standby has prebuffered. The channel then waits for that standby
(proxy/channel.py, "standby and gaps" rule 5) and the viewers get gap fills, not a disconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fleet.harness import docker, stream_url, until, wait_for, watch
from tests.fleet.tunnel_fleet import ENGINES_PER_TUNNEL, TunnelFleet, open_tunnel_fleet
from tests.support.viewers import Viewer

pytestmark = pytest.mark.docker

MOVED = ("acefleet_proxy_standby_promotions_total", 'reason="moved"')
FAILOVERS = "acefleet_proxy_failovers_total"
AWAITED = "acefleet_proxy_failover_awaits_standby_total"


@pytest.fixture(scope="module")
def tunnel_fleet(
    docker_available: None, gluetun_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TunnelFleet]:
    fleet = open_tunnel_fleet(tmp_path_factory.mktemp("tunnel-fleet"))
    try:
        yield fleet
    finally:
        fleet.close()


def channel(fleet: TunnelFleet, key: str) -> dict[str, Any]:
    channels: dict[str, dict[str, Any]] = {c["key"]: c for c in fleet.proxy_status(0)["channels"]}
    return channels.get(key, {})


class Counters:
    """The proxy's move and failover counters, read before an event and compared after."""

    def __init__(self, fleet: TunnelFleet) -> None:
        self.fleet = fleet
        self.moved = fleet.proxy_metric(0, *MOVED)
        self.failovers = fleet.proxy_metric(0, FAILOVERS)

    def moves_since(self) -> float:
        return self.fleet.proxy_metric(0, *MOVED) - self.moved

    def failovers_since(self) -> float:
        return self.fleet.proxy_metric(0, FAILOVERS) - self.failovers


def both_tunnels_ready(fleet: TunnelFleet) -> None:
    """Every tunnel with its engines again and no rotation left over (an earlier test's)."""
    fleet.wait_tunnel_engines(ENGINES_PER_TUNNEL)
    wait_for(
        "no retiring tunnel generation",
        lambda: not [t for t in fleet.tunnels() if t["state"] == "retiring"],
        timeout=120,
    )


async def playing(fleet: TunnelFleet, name: str) -> tuple[list[Viewer], dict[str, Any]]:
    """Two viewers of channel ``name`` once they get bytes, and the channel's status then."""
    await asyncio.to_thread(both_tunnels_ready, fleet)
    viewers = await watch([stream_url(fleet.proxy_url(0), name)] * 2)
    await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers), 60)
    status = channel(fleet, f"id:{name}")
    # no standby before the event: whatever comes is the tunnel's doing
    assert (status["state"], status["standby"]) == ("live", None), status
    return viewers, status


async def moved_off(
    fleet: TunnelFleet, key: str, viewers: list[Viewer], old: str, still_there: Any
) -> str:
    """Wait until ``key`` has an upstream other than ``old`` for which ``still_there`` is false
    and every viewer got bytes since; returns the new upstream."""
    before = [v.received for v in viewers]

    def new_upstream() -> str:
        up = channel(fleet, key).get("upstream")
        return str(up) if up and up != old and not still_there(str(up)) else ""

    upstream: str = await until("the channel's new upstream", new_upstream, within=90)
    await until(
        "every viewer gets bytes after the move",
        lambda: all(v.received > b + 200_000 for v, b in zip(viewers, before, strict=True)),
        within=30,
    )
    return upstream


def assert_unbroken(viewers: list[Viewer]) -> None:
    assert not any(v.closed for v in viewers), [v.error for v in viewers]
    assert [v.connections for v in viewers] == [1] * len(viewers)  # 0 reconnects
    assert all(v.misaligned == 0 for v in viewers)


async def central_primary_on(fleet: TunnelFleet, key: str, endpoint: str) -> None:
    engine_id = (await asyncio.to_thread(fleet.engine_at, endpoint))["id"]
    await until(
        "central lists the channel's primary on the new engine",
        lambda: [
            s
            for s in fleet.central_streams()
            if s["content_key"] == key and not s["standby"] and s["engine_id"] == engine_id
        ],
        within=15,
    )


async def test_tunnel_down_moves_the_channel_to_another_tunnel_without_reconnects(
    tunnel_fleet: TunnelFleet,
) -> None:
    fleet = tunnel_fleet
    key = "id:vm1"
    viewers, status = await playing(fleet, "vm1")
    container = ""
    try:
        old = str(status["upstream"])
        tunnel = fleet.engine_at(old)["tunnel"]
        container = fleet.tunnel_container_of(old)
        assert tunnel, old
        assert container, (old, fleet.tunnels())
        counters = Counters(fleet)
        drains = fleet.agent_metric('acefleet_agent_tunnel_engine_drains_total{reason="down"}')

        await asyncio.to_thread(lambda: fleet.standin(container).set_vpn(False))
        new = await moved_off(
            fleet, key, viewers, old, lambda up: fleet.engine_at(up).get("tunnel") == tunnel
        )

        assert_unbroken(viewers)
        assert counters.moves_since() == 1
        assert counters.failovers_since() == 0
        assert fleet.engine_at(new)["tunnel"] != tunnel
        assert (
            fleet.agent_metric('acefleet_agent_tunnel_engine_drains_total{reason="down"}') > drains
        )
        await central_primary_on(fleet, key, new)
    finally:
        for v in viewers:
            await v.stop()
        if container:  # the next test wants both tunnels again
            await asyncio.to_thread(lambda: fleet.standin(container).set_vpn(True))


async def test_rotation_through_central_moves_the_channel_without_reconnects(
    tunnel_fleet: TunnelFleet,
) -> None:
    fleet = tunnel_fleet
    key = "id:vm2"
    viewers, status = await playing(fleet, "vm2")
    try:
        old = str(status["upstream"])
        tunnel = fleet.engine_at(old)["tunnel"]
        old_gen = fleet.tunnel_container_of(old)
        assert tunnel, old
        assert old_gen, (old, fleet.tunnels())
        counters = Counters(fleet)

        r = await asyncio.to_thread(fleet.rotate, tunnel)
        assert r.status_code == 202, r.text
        assert (r.json()["name"], r.json()["state"]) == (tunnel, "starting")
        assert r.json()["container"] != old_gen
        new = await moved_off(
            fleet, key, viewers, old, lambda up: fleet.tunnel_container_of(up) == old_gen
        )

        assert_unbroken(viewers)
        assert counters.moves_since() == 1
        assert counters.failovers_since() == 0
        where = fleet.tunnel_container_of(new)
        assert where not in ("", old_gen), (new, fleet.tunnels())
        rotations = f'acefleet_agent_tunnel_rotations_total{{reason="operator",tunnel="{tunnel}"}}'
        assert fleet.agent_metric(rotations) == 1
        await central_primary_on(fleet, key, new)
    finally:
        for v in viewers:
            await v.stop()


async def test_old_engine_dying_while_the_move_prebuffers_costs_a_pause_not_a_disconnect(
    tunnel_fleet: TunnelFleet,
) -> None:
    fleet = tunnel_fleet
    key = "id:vm3"
    viewers, status = await playing(fleet, "vm3")
    container = ""
    try:
        old = str(status["upstream"])
        engine = fleet.engine_at(old)
        tunnel = engine["tunnel"]
        container = fleet.tunnel_container_of(old)
        assert container, (old, fleet.tunnels())
        counters = Counters(fleet)
        awaited = fleet.proxy_metric(0, AWAITED)
        failed_over = failover_promotions(fleet)

        await asyncio.to_thread(lambda: fleet.standin(container).set_vpn(False))
        standby: dict[str, Any] = await until(
            "the move's standby starting",
            lambda: starting_standby(fleet, key),
            within=30,
        )
        # a real VPN gone: the old engine's peers are gone, it stops (here: at once)
        await asyncio.to_thread(docker, "kill", engine["id"])
        new = await moved_off(
            fleet, key, viewers, old, lambda up: fleet.engine_at(up).get("tunnel") == tunnel
        )

        assert_unbroken(viewers)
        assert fleet.proxy_metric(0, AWAITED) - awaited == 1
        # the channel waited for that standby (no new claim) and promoted it as a failover
        assert new == standby["upstream"]
        assert failover_promotions(fleet) - failed_over == 1
        assert counters.moves_since() == 0
        assert fleet.engine_at(new)["tunnel"] != tunnel
        await central_primary_on(fleet, key, new)
    finally:
        for v in viewers:
            await v.stop()
        if container:
            await asyncio.to_thread(lambda: fleet.standin(container).set_vpn(True))


def failover_promotions(fleet: TunnelFleet) -> float:
    return sum(
        fleet.proxy_metric(0, "acefleet_proxy_standby_promotions_total", f'reason="{r}"')
        for r in ("died", "stalled")
    )


def starting_standby(fleet: TunnelFleet, key: str) -> dict[str, Any]:
    """The channel's standby while it is placed and prebuffering ({} otherwise)."""
    standby = channel(fleet, key).get("standby") or {}
    return dict(standby) if standby.get("state") == "starting" and standby.get("upstream") else {}
