"""Warm standby in the docker fleet with the simulator's realistic timing (an 8-s prebuffer,
so a failover that claims a new engine takes ~9 s): two viewers of a channel, the proxy keeps a
standby on a second engine of its host (a central standby claim), the primary's engine
container is killed, and the standby carries on at once on the same connections.

Its own one-edge fleet (realistic engines; the shared fleet's are fast), so it adds no state to
the other fleet tests: central, one agent, one proxy with ``--standby-min-viewers 2``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.harness import (
    Fleet,
    engine_container,
    kill_under_viewers,
    stream_url,
    until,
    watch,
)

pytestmark = pytest.mark.docker

REALISTIC = (
    "--engine-extra-args=--timing,realistic,--startup-delay,0,--media,synthetic,--bitrate,1000000"
)


@pytest.fixture(scope="module")
def standby_fleet(
    docker_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    log_dir: Path = tmp_path_factory.mktemp("standby-fleet")
    fleet = Fleet.up(log_dir, edges=1, engines=2, base_port=24500, agent_extra=[REALISTIC])
    try:
        edge = fleet.edge(0)
        assert edge.proxy is not None
        edge.proxy.stop()
        edge.proxy_args = []  # rebuilt with the standby setting
        fleet.start_proxy(edge, "--standby-min-viewers", "2")
        yield fleet
    finally:
        fleet.close()


def _channel(fleet: Fleet, key: str) -> dict[str, object]:
    channels: dict[str, dict[str, object]] = {
        c["key"]: c for c in fleet.proxy_status(0)["channels"]
    }
    return channels.get(key, {})


def _standby_live(fleet: Fleet, key: str) -> bool:
    standby = _channel(fleet, key).get("standby")
    return isinstance(standby, dict) and standby["state"] == "live" and standby["bytes_in"] > 0


async def test_engine_killed_standby_promoted_without_reconnects(standby_fleet: Fleet) -> None:
    fleet = standby_fleet
    key = "id:sb1"
    viewers = await watch([stream_url(fleet.proxy_url(0), "sb1")] * 2)
    try:
        await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers), 40)
        await until("the standby is live", lambda: _standby_live(fleet, key), within=40)
        channel = _channel(fleet, key)
        primary = str(channel["upstream"])
        standby = channel["standby"]
        assert isinstance(standby, dict)
        assert standby["upstream"] != primary
        # central knows both sessions: the primary, and the standby marked as such. The proxy
        # reports the standby when it goes live, in its next event batch (gathered 0.2 s), so
        # central may learn of it a moment after the proxy's status shows it.
        await until(
            "central lists the primary and the standby",
            lambda: (
                sorted(bool(s.get("standby")) for s in fleet.central_streams()) == [False, True]
            ),
            within=10,
        )

        container = engine_container(primary)
        assert container, primary
        gap = await kill_under_viewers(container, viewers, within=15)
        print(f"\nstandby failover gap after docker kill (realistic timing): {gap:.2f} s")
        assert not any(v.closed for v in viewers), [v.error for v in viewers]
        assert all(v.connections == 1 for v in viewers)  # 0 reconnects
        assert all(v.misaligned == 0 for v in viewers)
        promoted = sum(
            fleet.proxy_metric(0, "acefleet_proxy_standby_promotions_total", f'reason="{r}"')
            for r in ("died", "stalled")
        )
        assert promoted == 1
        assert _channel(fleet, key)["upstream"] == standby["upstream"]
        # central saw the promotion: the standby's stream id is the channel's primary now
        await until(
            "central lists the promoted stream as the primary",
            lambda: any(
                s["stream_id"] == standby["stream_id"] and not s.get("standby")
                for s in fleet.central_streams()
            ),
            within=10,
        )
    finally:
        for v in viewers:
            await v.stop()
