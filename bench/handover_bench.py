"""Benchmark of the hitless reload (proxy/handover): the pause viewers see while a new proxy
process takes every socket over.

    .venv/bin/python bench/handover_bench.py                     # 50 viewers on 5 channels
    .venv/bin/python bench/handover_bench.py --viewers 200 --channels 10 --reloads 3

Starts the simulator (fast timing) and ``acefleet-proxy`` as real processes, opens raw-socket
viewers, then runs ``acefleet-proxy reload`` (what systemd's ExecReload runs) ``--reloads``
times. Per reload it prints: the pause the old process measured (state sent → "taken"), the
wall time of the reload command (spawn + build of the new process included), and per viewer the
longest silence (largest gap between two reads) in the 3 s around the reload, against the
same figure in a 3 s window without a reload (the proxy forwards in ``batch_ms`` batches, so
silences of ~100 ms are normal). After the last reload every viewer's bytes are checked
byte-exact (TS continuity per PID, viewers of a channel agree).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.proxy.test_handover import (  # noqa: E402
    TsViewer,
    check_viewers,
    reload,
    stop_pid,
    stop_watching,
    watch,
)
from tests.support import procs  # noqa: E402

LOGS = Path("/tmp/acefleet-handover-bench")
WINDOW_S = 3.0


def gaps(viewers: list[TsViewer], start: float, end: float) -> list[float]:
    return sorted(v.longest_gap(start, end) * 1000 for v in viewers)


def summary(label: str, ms: list[float]) -> str:
    return (
        f"{label}: longest silence per viewer, ms: max {ms[-1]:.0f}, "
        f"p50 {statistics.median(ms):.0f}, p90 {ms[int(len(ms) * 0.9) - 1]:.0f}"
    )


async def run(args: argparse.Namespace) -> None:
    control = tempfile.mkdtemp(prefix="hovb", dir="/tmp")
    sock = f"{control}/control.sock"
    sim_port, proxy_port = procs.free_port(), procs.free_port()
    sim = procs.start(
        "acefleet-engine-sim",
        ["--http-port", str(sim_port), "--timing", "fast", "--log-level", "warning"],
        port=sim_port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=LOGS,
    )
    proxy = procs.start(
        "acefleet-proxy",
        [
            "--host", "127.0.0.1", "--port", str(proxy_port), "--log-format", "json",
            "--engines", f"127.0.0.1:{sim_port}@{args.channels}",
        ],
        port=proxy_port,
        ready_path="/readyz",
        log_dir=LOGS,
        env={
            "ACEFLEET_PROXY_CLIENT_BURST": "100000",
            "ACEFLEET_PROXY_CLIENT_RATE": "100000",
            "ACEFLEET_PROXY_HANDOVER_SOCKET": sock,
        },
    )  # fmt: skip
    pids = [proxy.proc.pid]
    try:
        viewers = await watch(proxy_port, args.channels, args.viewers // args.channels)
        await asyncio.sleep(1.0)
        quiet = time.monotonic()
        await asyncio.sleep(WINDOW_S)
        print(f"{len(viewers)} viewers on {args.channels} channels, load {os.getloadavg()}")
        print(summary("no reload   ", gaps(viewers, quiet, quiet + WINDOW_S)))
        for i in range(args.reloads):
            before = time.monotonic()
            await asyncio.sleep(WINDOW_S / 2)
            at = time.monotonic()
            code, result = await asyncio.to_thread(reload, sock)
            took = time.monotonic() - at
            if result.get("new_pid"):
                pids.append(result["new_pid"])
            if code != 0:
                raise SystemExit(f"reload failed: {result}")
            await asyncio.sleep(WINDOW_S / 2)
            print(
                f"reload {i + 1}: pause (old process) {result['pause_ms']} ms, command "
                f"{took * 1000:.0f} ms, viewers {result['viewers']}, "
                f"channels {result['channels']}"
            )
            print(summary("  around it ", gaps(viewers, before, time.monotonic())))
        await stop_watching(viewers)
        check_viewers(viewers)
        print(f"byte-exact: {len(viewers)} viewers checked, load {os.getloadavg()}")
    finally:
        for pid in pids:
            stop_pid(pid)
        sim.stop()
        shutil.rmtree(control, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--reloads", type=int, default=3)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
