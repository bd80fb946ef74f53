"""Fleet figures on one machine: time to serve a new channel (warm engine, cold engine) and the
failover gap when an engine dies under viewers.

Starts the same fleet as tests/fleet (central, agents with simulator engines in the real dockerd,
proxies, all on loopback) with engines at one stream each, so every new channel needs its own
engine; the warm buffer keeps one free engine per edge. Prints one line per sample and the
medians. Run:  .venv/bin/python -m bench.fleet_bench [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.fleet.harness import Fleet, docker, engine_container, stream_url, until, watch
from tests.support.viewers import Viewer


async def first_byte(url: str, deadline_s: float = 60.0) -> tuple[float, int, Viewer]:
    """Seconds until a player gets stream bytes, retrying refusals after Retry-After, as
    players do; also the number of refusals it saw."""
    started = time.monotonic()
    refusals = 0
    while time.monotonic() - started < deadline_s:
        viewer = Viewer(url).start()
        await viewer.settled.wait()
        if viewer.first_byte_at is not None:
            return viewer.first_byte_at - started, refusals, viewer
        refusals += 1
        await asyncio.sleep(0.5)  # central's Retry-After says 2 s; a player may retry sooner
    raise TimeoutError(url)


async def new_channels(fleet: Fleet, rounds: int) -> tuple[list[float], list[float]]:
    warm: list[float] = []
    cold: list[float] = []
    keep: list[Viewer] = []
    proxy = fleet.proxy_url(0)
    for r in range(rounds):
        # a free engine is ready (warm buffer): the next channel gets it
        await until("a free engine", lambda: _free_engines(fleet) >= 1, within=60)
        t, _, v = await first_byte(stream_url(proxy, f"warm{r}"))
        warm.append(t)
        keep.append(v)
        # drain the buffer, then the next channel waits for a fresh container
        while _free_engines(fleet) > 0:
            _, _, v = await first_byte(stream_url(proxy, f"fill{r}-{len(keep)}"))
            keep.append(v)
        t, refusals, v = await first_byte(stream_url(proxy, f"cold{r}"))
        cold.append(t)
        keep.append(v)
        print(f"round {r}: warm {warm[-1]:.3f} s, cold {t:.2f} s ({refusals} refusals)")
    for v in keep:
        await v.stop()
    return warm, cold


def _free_engines(fleet: Fleet) -> int:
    hosts = fleet.central_get("/v1/hosts")["items"]
    edge = fleet.edge(0).name
    return sum(h["engines_healthy"] - h["streams"] for h in hosts if h["name"] == edge)


async def failover_gap(fleet: Fleet, r: int) -> float:
    await until("a free engine", lambda: _free_engines(fleet) >= 1, within=60)
    _, _, first = await first_byte(stream_url(fleet.proxy_url(0), f"fo{r}"))
    viewers = [first, *await watch([stream_url(fleet.proxy_url(0), f"fo{r}")] * 9)]
    await until("viewers receive", lambda: all(v.received > 64_000 for v in viewers))
    channel = {c["key"]: c for c in fleet.proxy_status(0)["channels"]}[f"id:fo{r}"]
    before = [v.received for v in viewers]
    killed = time.monotonic()
    await asyncio.to_thread(docker, "kill", engine_container(channel["upstream"]))
    await until(
        "bytes again",
        lambda: all(v.received > b + 64_000 for v, b in zip(viewers, before, strict=True)),
        within=30,
    )
    gap = max(v.longest_gap_since(killed) for v in viewers)
    closed = sum(v.closed for v in viewers)
    print(f"failover {r}: gap {gap:.2f} s (max of 10 viewers), {closed} disconnected")
    for v in viewers:
        await v.stop()
    return gap


async def failover_gaps(fleet: Fleet, rounds: int) -> list[float]:
    gaps: list[float] = []
    for r in range(rounds):
        gaps.append(await failover_gap(fleet, r))
        await asyncio.sleep(3)
    return gaps


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fleet = await asyncio.to_thread(
            Fleet.up,
            Path(tmp),
            edges=1,
            engines=1,
            central_env={"ACEFLEET_CENTRAL_WARM_BUFFER_PER_EDGE": "1"},
            agent_extra=["--stream-cap", "1", "--min-engines", "0", "--free-engines", "0",
                         "--max-engines", "20"],
        )  # fmt: skip
        try:
            warm, cold = await new_channels(fleet, rounds)
            gaps = await failover_gaps(fleet, rounds)
        finally:
            await asyncio.to_thread(fleet.close)
    print(f"new channel, warm engine: median {statistics.median(warm):.3f} s, max {max(warm):.3f}")
    print(f"new channel, cold engine: median {statistics.median(cold):.2f} s, max {max(cold):.2f}")
    print(f"failover gap: median {statistics.median(gaps):.2f} s, max {max(gaps):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
