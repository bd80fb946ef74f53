"""Fleet figures on one machine: time to serve a new channel (warm engine, cold engine), the
failover gap when an engine dies under viewers (and the gap its bystanders, viewers of another
channel, see meanwhile), and how soon a restarted central's stream list matches the proxies.
The fleet tests check the same events as behaviour (bytes again, lists equal); the seconds are
measured here.

Starts the same fleet as tests/fleet (central, agents with simulator engines in the real dockerd,
proxies, all on loopback) with engines at one stream each, so every new channel needs its own
engine; the warm buffer keeps one free engine per edge. Prints one line per sample and the
medians. Run:  .venv/bin/python -m bench.fleet_bench [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a script too
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


async def failover_gap(fleet: Fleet, r: int) -> tuple[float, float]:
    """(the failed channel's gap, its bystanders' longest gap) when its engine is killed."""
    await until("a free engine", lambda: _free_engines(fleet) >= 1, within=60)
    _, _, calm = await first_byte(stream_url(fleet.proxy_url(0), f"calm{r}"))
    bystanders = [calm, *await watch([stream_url(fleet.proxy_url(0), f"calm{r}")])]
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
    calm_gap = max(v.longest_gap_since(killed) for v in bystanders)
    closed = sum(v.closed for v in [*viewers, *bystanders])
    print(
        f"failover {r}: gap {gap:.2f} s (max of 10 viewers), bystanders' longest gap "
        f"{calm_gap:.2f} s, {closed} disconnected"
    )
    for v in [*viewers, *bystanders]:
        await v.stop()
    return gap, calm_gap


async def failover_gaps(fleet: Fleet, rounds: int) -> tuple[list[float], list[float]]:
    gaps: list[float] = []
    calm: list[float] = []
    for r in range(rounds):
        gap, calm_gap = await failover_gap(fleet, r)
        gaps.append(gap)
        calm.append(calm_gap)
        await asyncio.sleep(3)
    return gaps, calm


def _proxy_stream_ids(fleet: Fleet) -> set[str]:
    return {
        str(c["stream_id"])
        for i in range(len(fleet.edges))
        for c in fleet.proxy_status(i)["channels"]
        if c.get("stream_id")
    }


async def central_rebuild(fleet: Fleet, r: int) -> float:
    """Seconds from a killed central's restart until its stream list matches the proxies'."""
    await until("a free engine", lambda: _free_engines(fleet) >= 1, within=60)
    _, _, viewer = await first_byte(stream_url(fleet.proxy_url(0), f"cr{r}"))
    assert fleet.central is not None
    await asyncio.to_thread(fleet.central.kill)
    await asyncio.to_thread(fleet.start_central)
    back = time.monotonic()
    await until(
        "central's stream list matches the proxies",
        lambda: {s["stream_id"] for s in fleet.central_streams()} == _proxy_stream_ids(fleet),
        within=60,
    )
    took = time.monotonic() - back
    print(f"central restart {r}: stream list rebuilt after {took:.2f} s")
    await viewer.stop()
    return took


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
            gaps, calm = await failover_gaps(fleet, rounds)
            rebuilt = [await central_rebuild(fleet, r) for r in range(rounds)]
        finally:
            await asyncio.to_thread(fleet.close)
    print(f"new channel, warm engine: median {statistics.median(warm):.3f} s, max {max(warm):.3f}")
    print(f"new channel, cold engine: median {statistics.median(cold):.2f} s, max {max(cold):.2f}")
    print(f"failover gap: median {statistics.median(gaps):.2f} s, max {max(gaps):.2f}")
    print(f"bystanders' gap: median {statistics.median(calm):.2f} s, max {max(calm):.2f}")
    print(
        f"central's stream list after restart: median {statistics.median(rebuilt):.2f} s, "
        f"max {max(rebuilt):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
