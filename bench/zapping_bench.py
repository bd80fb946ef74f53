"""The zapping storm (issue 17): does the proxy stay responsive under fast channel switching,
and is everything an abandoned start reserved given back afterwards?

One edge of the docker fleet (tests/fleet/harness.py): central, one agent with simulator engines
at realistic timing (8-s prebuffer, 30-s idle timeout, no boot delay), one proxy placing through
central then the agent. ``--clients`` clients change channel ``--rate`` times a second in all
over ``--channels`` content ids for ``--seconds`` (tests/fleet/zapping.py): a live channel is
watched until the next change, one still prebuffering is given up after ``--patience`` s (an
abandoned start). Meanwhile a probe, in its own process, joins a channel kept live by a steady
viewer every 0.5 s and times its first byte. After the storm and the proxy's grace, and again
once the fleet settled (or ``--settle`` s passed), it prints what is left: proxy channels,
central claims and streams, agent claims and sessions, engine sessions, proxy descriptors and
memory; and the engines' start and stop counts (an ``idle`` end is a start nobody stopped).

Run:  .venv/bin/python -m bench.zapping_bench [--clients 100 --rate 50 --seconds 120
      --channels 150 --engines 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a script too
from tests.fleet.harness import SIM_IMAGE, Fleet, stream_url, tcp_peers
from tests.fleet.zapping import (
    REALISTIC,
    STEADY,
    Engines,
    Leftovers,
    Probe,
    engine_counters,
    engine_pids,
    leftovers,
    runqueue_wait,
    steady_viewer,
    storm,
)
from tests.support import procs


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {_pct(values, 0.5) * 1000:.1f} ms, p99 {_pct(values, 0.99) * 1000:.1f} ms, "
        f"max {max(values) * 1000:.1f} ms (n={len(values)})"
    )


def _show(title: str, left: Leftovers, fds0: int, rss0: int) -> None:
    print(f"{title}:")
    print(f"  proxy channels besides the steady one: {len(left.channels)} {left.channels[:8]}")
    print(f"  central claims: {len(left.central_claims)}, central streams: "
          f"{len(left.central_streams)}, agent claims: {len(left.agent_claims)}, agent sessions: "
          f"{left.agent_sessions}")  # fmt: skip
    print(f"  engine sessions: {sum(left.engine_sessions.values())} "
          f"{dict(list(left.engine_sessions.items())[:8])}")  # fmt: skip
    print(f"  proxy fds {fds0} -> {left.fds} ({left.fds - fds0:+d}), "
          f"rss {rss0 // 1024} -> {left.rss_kib // 1024} MiB")  # fmt: skip


def _engines(title: str, seen: Engines) -> None:
    ended = dict(seen.ended)
    unstopped = seen.ended.get("idle", 0)
    live = sum(n for k, n in seen.live.items() if k != STEADY)
    print(f"{title}: started {seen.started}, stop calls {seen.stop_calls}, ended {ended}, "
          f"live besides steady {live}; starts ended without a stop (idle): {unstopped}"
          + (f"; unreadable engines {seen.unreadable}" if seen.unreadable else ""))  # fmt: skip


def _proxy_counts(fleet: Fleet) -> str:
    calls = {
        c: int(fleet.proxy_metric(0, "acefleet_proxy_engine_call_seconds_count", f'call="{c}"'))
        for c in ("start", "stop")
    }
    return f"proxy engine calls: start {calls['start']}, stop {calls['stop']}"


def _peers(fleet: Fleet) -> dict[str, int]:
    """The proxy's open TCP connections grouped by what is at the other end."""
    edge = fleet.edge(0)
    assert edge.proxy is not None
    names = {
        str(fleet.central_port): "central",
        str(edge.agent_port): "agent",
        str(edge.proxy_port): "clients",
    }
    grouped: dict[str, int] = {}
    for peer, n in tcp_peers(edge.proxy).items():
        port = peer.rsplit(":", 1)[-1]
        if not port.isdigit():
            name = peer  # "listen"
        else:
            name = names.get(port, "engines" if int(port) in edge.ports else peer)
        grouped[name] = grouped.get(name, 0) + n
    return grouped


async def run(args: argparse.Namespace) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="zapping-bench-"))
    agent_extra = [
        REALISTIC,
        "--engine-image", args.image,
        "--min-engines", str(args.engines),
        "--max-engines", str(args.engines),
        "--free-engines", "0",
        "--stream-cap", str(args.stream_cap),
    ]  # fmt: skip
    print(f"logs: {log_dir}")
    fleet = Fleet.up(
        log_dir, edges=1, engines=args.engines, base_port=25600, agent_extra=agent_extra
    )
    try:
        edge = fleet.edge(0)
        assert edge.proxy is not None
        assert edge.agent is not None
        assert fleet.central is not None
        if args.grace != 1.0:
            edge.proxy.stop()
            edge.proxy_args = []
            fleet.start_proxy(edge, "--grace-s", str(args.grace))
            assert edge.proxy is not None
        proxy = fleet.proxy_url(0)
        steady = await steady_viewer(proxy)
        pid = edge.proxy.proc.pid
        start = leftovers(fleet)
        fds0, rss0 = start.fds, start.rss_kib
        services = {"proxy": pid, "central": fleet.central.proc.pid, "agent": edge.agent.proc.pid}
        engines = engine_pids(fleet)
        cpu0 = {n: procs.cpu_seconds(p) for n, p in services.items()}
        eng0 = sum(procs.cpu_seconds(p) for p in engines)
        own0 = time.process_time()
        before, _ = await asyncio.to_thread(Probe(stream_url(proxy, STEADY), 5).result, 30)
        print("before the storm: TTFB of the live channel "
              f"{_ms([s.stream for s in before if s.stream is not None])}; /livez "
              f"{_ms([s.livez for s in before if s.livez is not None])}")  # fmt: skip
        print(f"load before: {os.getloadavg()}")

        channels = [f"zap{i:03d}" for i in range(args.channels)]
        probe = Probe(stream_url(proxy, STEADY), args.seconds)
        began = time.monotonic()
        waited0 = runqueue_wait(pid)
        stats = await storm(
            proxy,
            channels,
            clients=args.clients,
            rate=args.rate,
            seconds=args.seconds,
            patience=args.patience,
        )
        took = time.monotonic() - began
        proxy_waited = runqueue_wait(pid) - waited0
        samples, probe_waited = await asyncio.to_thread(probe.result, 60)
        cpu = {n: procs.cpu_seconds(p) - cpu0[n] for n, p in services.items()}
        eng = sum(procs.cpu_seconds(p) for p in engines) - eng0
        own = time.process_time() - own0
        ttfb = [s.stream for s in samples if s.stream is not None]
        livez = [s.livez for s in samples if s.livez is not None]
        failed = sum(1 for s in samples if s.stream is None)
        print(f"\nstorm: {args.clients} clients, {args.rate:g} changes/s, {args.seconds:g} s "
              f"(took {took:.1f} s), {args.channels} channels, {args.engines} engines x "
              f"{args.stream_cap} streams, grace {args.grace:g} s, "
              f"patience {args.patience:g} s")  # fmt: skip
        print(f"TTFB of the live channel during the storm: {_ms(ttfb)}; probes without a byte "
              f"in 10 s: {failed}")  # fmt: skip
        print(f"  /livez right after each: {_ms(livez)}")
        slow = [(round(s.at, 1), None if s.stream is None else round(s.stream * 1000),
                 None if s.livez is None else round(s.livez * 1000))
                for s in samples if s.stream is None or s.stream > 0.05]  # fmt: skip
        print(f"  probes over 50 ms (s into the storm, stream ms, livez ms): {slow[:30]}")
        print(f"  waited for a CPU during the storm: proxy {proxy_waited:.1f} s, "
              f"probe {probe_waited:.1f} s")  # fmt: skip
        print(f"requests: {stats.requests} ({stats.requests / took:.1f}/s): "
              f"{dict(stats.outcomes.most_common())}")  # fmt: skip
        print(f"TTFB of the storm's 200s: {_ms(stats.ttfb)}; {stats.bytes_in / 1e6:.0f} MB read")
        print(f"CPU during the storm (s, of {took:.0f} s wall): "
              + ", ".join(f"{n} {c:.1f}" for n, c in cpu.items())
              + f", engines {eng:.1f}, this bench's clients {own:.1f}; "
              f"load after: {os.getloadavg()}")  # fmt: skip
        print(f"steady viewer: {steady.connections} connection(s), closed={steady.closed}, "
              f"longest silence {steady.longest_gap_since(began):.2f} s")  # fmt: skip

        await asyncio.sleep(args.grace + 2)
        _show(f"\nafter the storm + grace ({args.grace + 2:g} s)", leftovers(fleet), fds0, rss0)
        _engines("engines", engine_counters(fleet))
        print(_proxy_counts(fleet))
        settled = time.monotonic()
        left = leftovers(fleet)
        while not left.clean and time.monotonic() - settled < args.settle:
            await asyncio.sleep(1)
            left = leftovers(fleet)
        waited = time.monotonic() - settled + args.grace + 2
        word = "settled" if left.clean else "NOT settled"
        _show(f"\n{word} {waited:.1f} s after the storm", left, fds0, rss0)
        _engines("engines", engine_counters(fleet))
        print(_proxy_counts(fleet))
        print(f"proxy's TCP connections by peer: {_peers(fleet)}")
        print(f"steady viewer still watching: {not steady.closed}, "
              f"{steady.received / 1e6:.1f} MB")  # fmt: skip
        await steady.stop()
    finally:
        fleet.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rate", type=float, default=50.0, help="channel changes per second, total")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--channels", type=int, default=150)
    p.add_argument("--engines", type=int, default=8)
    p.add_argument("--stream-cap", type=int, default=16, help="sessions per engine (max 16)")
    p.add_argument("--patience", type=float, default=2.0, help="give up a silent channel after")
    p.add_argument("--grace", type=float, default=1.0, help="the proxy's grace_s")
    p.add_argument("--settle", type=float, default=60.0, help="wait this long for a clean fleet")
    p.add_argument("--image", default=SIM_IMAGE, help="the simulator image")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
