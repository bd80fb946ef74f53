"""Proxy memory under channel churn, without the fleet: one simulator, one proxy (static
placement), rounds of 500 viewer joins/leaves across 30 channels; prints the proxy's open
descriptors and resident memory after each round. A proxy that frees what churn allocated shows
flat figures after the first round. Run:  .venv/bin/python -m bench.fleet_memory [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a script too
from tests.fleet.harness import churn, process_usage
from tests.support import procs

CHANNELS = [f"mem{i:02d}" for i in range(30)]


async def rounds(proxy: procs.Service, n: int) -> None:
    print(f"start: fds, rss KiB = {process_usage(proxy)}")
    for r in range(n):
        done = await churn([proxy.url], joins=500, channels=CHANNELS, span_s=30, seed=r)
        await asyncio.sleep(4)
        served = sum(1 for v in done if v.received)
        print(f"round {r}: {served}/500 served; fds, rss KiB = {process_usage(proxy)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        sim_port, proxy_port = procs.free_port(), procs.free_port()
        sim = procs.start(
            "acefleet-engine-sim",
            ["--http-port", str(sim_port), "--timing", "fast", "--media", "synthetic",
             "--bitrate", "1000000"],
            port=sim_port,
            ready_path="/webui/api/service?method=get_version",
            log_dir=logs,
        )  # fmt: skip
        proxy = procs.start(
            "acefleet-proxy",
            ["--host", "127.0.0.1", "--port", str(proxy_port),
             "--engines", f"127.0.0.1:{sim_port}@64", "--grace-s", "1",
             "--client-rate", "1000", "--client-burst", "1000",
             "--buffer-bytes", "2097152", "--join-max-bytes", "262144"],
            port=proxy_port,
            ready_path="/readyz",
            log_dir=logs,
        )  # fmt: skip
        try:
            asyncio.run(rounds(proxy, args.rounds))
        finally:
            proxy.stop()
            sim.stop()


if __name__ == "__main__":
    main()
