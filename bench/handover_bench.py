"""Benchmark of the hitless reload (proxy/handover): the pause viewers see while a new proxy
process takes every socket over.

    .venv/bin/python bench/handover_bench.py                     # 50 viewers on 5 channels
    .venv/bin/python bench/handover_bench.py --viewers 200 --channels 10 --reloads 3

Starts the simulator (fast timing) and ``acefleet-proxy`` as real processes, opens raw-socket
viewers, then runs ``acefleet-proxy reload`` (what systemd's ExecReload runs) ``--reloads``
times. Per reload it prints: the pause the old process measured (state captured → "taken"), the
wall time of the reload command (spawn + build of the new process included), per viewer the
silence spanning the handover (the gap between two reads that contains the moment the old
process logged ``handover_done``) and the longest silence in the 3 s around the reload (this
one also shows the new process's start-up competing for the CPU), against the longest silence
in a 3 s window without a reload (the proxy forwards in ``batch_ms`` batches, so silences of
~200 ms are normal). After the last reload every viewer's bytes are checked
byte-exact (TS continuity per PID, viewers of a channel agree).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
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


def handover_done(log_path: Path, new_pid: int) -> float:
    """When the old process logged ``handover_done`` (it had its "taken": neither process is
    serving), on this process's ``time.monotonic()`` clock."""
    for line in log_path.read_text().splitlines():
        if '"handover_done"' in line and f'"new_pid": {new_pid},' in line:
            at = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
            return time.monotonic() - (time.time() - at.timestamp())
    raise SystemExit(f"no handover_done line for new pid {new_pid} in {log_path}")


def spanning(viewers: list[TsViewer], t: float) -> list[float]:
    """Per viewer, the silence that contains ``t`` (the old process had its "taken"): the
    handover's own gap, from the last byte the old process sent to the first of the new one."""
    out = []
    for v in viewers:
        times = [at for at, _ in v.arrivals]
        after = next((i for i, at in enumerate(times) if at >= t), len(times) - 1)
        out.append((times[after] - times[max(after - 1, 0)]) * 1000)
    return sorted(out)


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
            done = handover_done(proxy.log_path, result["new_pid"])
            print(summary("  spanning the handover", spanning(viewers, done)))
            print(summary("  3 s window around it ", gaps(viewers, before, time.monotonic())))
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
