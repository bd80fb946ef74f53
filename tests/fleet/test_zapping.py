"""A short zapping storm through one proxy (issue 17) against realistic engines (8-s prebuffer),
then nothing may be left but the steady channel: no proxy channel, no claim at central or the
agent, no engine session; the proxy's descriptors back near where they started; and every
engine session started got a stop (none ended on the engine's idle timeout, which is what a
start abandoned without its stop call looks like). The figures are bench/zapping_bench.py's.

Its own one-edge fleet (realistic engines, several streams per engine), like test_standby.py.
``ACEFLEET_ZAPPING_SIM_IMAGE`` names the simulator image when it is not the built one (the
counters this test reads came with issue 17: an older image fails with a clear message)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.harness import SIM_IMAGE, Fleet, until
from tests.fleet.zapping import (
    REALISTIC,
    STEADY,
    Leftovers,
    engine_counters,
    leftovers,
    steady_viewer,
    storm,
)

pytestmark = pytest.mark.docker

CLIENTS = 20
RATE = 10.0  # changes per second in all: each client every 2 s
SECONDS = 20.0
CHANNELS = [f"zt{i:02d}" for i in range(40)]
ENGINES = 3
STREAM_CAP = 16  # 48 slots: the 20 clients' channels, their grace and the steady one fit
# Descriptors: the proxy's keep-alive pools may stay full after the storm (control links to
# central and the agent: 16; engine API calls: 32, see proxy/control/links.py and
# proxy/engine_api.py). A leak per abandoned start would be about a hundred here.
FD_SLACK = 16 + 32


@pytest.fixture(scope="module")
def zap_fleet(docker_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    log_dir: Path = tmp_path_factory.mktemp("zapping-fleet")
    image = os.environ.get("ACEFLEET_ZAPPING_SIM_IMAGE", SIM_IMAGE)
    extra = [
        REALISTIC,
        "--engine-image", image,
        "--min-engines", str(ENGINES),
        "--max-engines", str(ENGINES),
        "--free-engines", "0",
        "--stream-cap", str(STREAM_CAP),
    ]  # fmt: skip
    fleet = Fleet.up(log_dir, edges=1, engines=ENGINES, base_port=24700, agent_extra=extra)
    try:
        yield fleet
    finally:
        fleet.close()


async def _settled(fleet: Fleet, within: float) -> Leftovers:
    """What is left once claims, streams and engine sessions are all given back, or after
    ``within`` seconds, whichever comes first (the caller asserts on it)."""
    deadline = time.monotonic() + within
    left = await asyncio.to_thread(leftovers, fleet)
    while not left.clean and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        left = await asyncio.to_thread(leftovers, fleet)
    return left


async def test_zapping_storm_leaves_nothing_behind(zap_fleet: Fleet) -> None:
    fleet = zap_fleet
    proxy = fleet.proxy_url(0)
    steady = await steady_viewer(proxy)
    try:
        before = await asyncio.to_thread(leftovers, fleet)
        stats = await storm(
            proxy, CHANNELS, clients=CLIENTS, rate=RATE, seconds=SECONDS, patience=2.0
        )
        print(f"\nzapping: {stats.requests} requests, {dict(stats.outcomes)}")
        # the storm did what it is for: starts abandoned while the engines prebuffered
        assert stats.outcomes["abandoned"] >= CLIENTS
        assert stats.requests >= 0.8 * RATE * SECONDS

        await until(
            "only the steady channel on the proxy",
            lambda: not leftovers(fleet).channels,
            within=20,
        )
        left = await _settled(fleet, within=20)
        assert left.clean, left
        seen = await asyncio.to_thread(engine_counters, fleet)
        print(f"engines: started {seen.started}, stop calls {seen.stop_calls}, ended "
              f"{dict(seen.ended)}; proxy fds {before.fds} -> {left.fds}")  # fmt: skip
        assert not seen.unreadable
        # every abandoned start was stopped: none ended on the engine's own idle timeout
        assert seen.ended["idle"] == 0, dict(seen.ended)
        assert seen.live == {STEADY: 1}
        assert seen.started == seen.ended["stopped"] + seen.ended["replaced"] + 1
        assert left.fds <= before.fds + FD_SLACK
        # the steady viewer watched through it all on its one connection
        assert not steady.closed
        assert steady.connections == 1
    finally:
        await steady.stop()
