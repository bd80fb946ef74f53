"""Benchmark acefleet-agent against the real dockerd and the simulator image.

1. Provision N engines (default 20) from an empty host: time from container creation (the
   engine's created-at label) to the agent reporting it healthy, per engine, and in total.
2. Grow to M engines (default 50) and measure the agent's CPU (utime+stime from /proc) while it
   probes all of them, over a fixed window.

    .venv/bin/python bench/agent_bench.py [--engines 20] [--poll-engines 50] [--window 30]

Every container carries ``acefleet.host=<bench host>`` and is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import procs

KEY = "bench-agent-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def engines(url: str) -> list[dict[str, object]]:
    body: list[dict[str, object]] = httpx.get(url + "/v1/engines", timeout=10).json()["engines"]
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engines", type=int, default=20)
    ap.add_argument("--poll-engines", type=int, default=50)
    ap.add_argument("--window", type=float, default=30.0, help="CPU measurement window, s")
    ap.add_argument("--probe-interval", type=float, default=2.0)
    ap.add_argument("--reconcile-interval", type=float, default=5.0, help="agent default: 5")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--image", default="acefleet/engine-sim")
    ap.add_argument("--timing", default="fast", choices=["fast", "realistic"])
    args = ap.parse_args()

    host = f"bench{uuid.uuid4().hex[:6]}"
    port = procs.free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    svc = procs.start(
        "acefleet-agent",
        [
            "--host",
            host,
            "--listen-port",
            str(port),
            "--agent-check-port",
            "0",
            "--engine-image",
            args.image,
            f"--engine-extra-args=--timing,{args.timing}",
            "--http-port-range",
            "41000-41199",
            "--p2p-port-range",
            "41200-41399",
            "--min-engines",
            str(args.engines),
            "--free-engines",
            "0",
            "--max-engines",
            str(max(args.engines, args.poll_engines)),
            "--provision-concurrency",
            str(args.concurrency),
            "--provision-min-interval-s",
            "0",
            "--idle-grace-s",
            "3600",
            "--reconcile-interval-s",
            str(args.reconcile_interval),
            "--probe-interval-s",
            str(args.probe_interval),
            "--ready-poll-s",
            "0.2",
            "--ready-timeout-s",
            "120",
            "--log-level",
            "warning",
        ],
        port=port,
        ready_path="/livez",
        log_dir=log_dir,
        env={"ACEFLEET_AGENT_API_KEY": KEY},
    )
    try:
        t0 = time.time()
        ready_at: dict[str, float] = {}
        created: dict[str, float] = {}
        deadline = time.monotonic() + 300
        while len(ready_at) < args.engines and time.monotonic() < deadline:
            now = time.time()
            for e in engines(svc.url):
                eid = str(e["id"])
                created.setdefault(eid, datetime.fromisoformat(str(e["created_at"])).timestamp())
                if e["health"] == "healthy" and eid not in ready_at:
                    ready_at[eid] = now
            time.sleep(0.1)
        ttr = sorted(ready_at[e] - created[e] for e in ready_at)
        print(
            f"== provision {args.engines} engines ({args.timing} timing, concurrency "
            f"{args.concurrency})"
        )
        last = max(ready_at.values()) - t0
        print(f"ready: {len(ready_at)}/{args.engines}; all ready after {last:.1f} s")
        print(
            "time to ready per engine (create -> healthy), s: " + " ".join(f"{t:.2f}" for t in ttr)
        )
        print(f"median {statistics.median(ttr):.2f} s, max {max(ttr):.2f} s, min {min(ttr):.2f} s")
        # Split each engine's wait into Docker's part (create+start) and the engine's boot.
        started = {}
        for eid in ready_at:
            out = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.StartedAt}}", eid],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            started[eid] = datetime.fromisoformat(out.replace("Z", "+00:00")).timestamp()
        dock = sorted(started[e] - created[e] for e in ready_at)
        boot = sorted(ready_at[e] - started[e] for e in ready_at)
        print(
            f"docker create+start: median {statistics.median(dock):.2f} s, max {max(dock):.2f} s;"
            f" engine boot to get_status: median {statistics.median(boot):.2f} s, "
            f"max {max(boot):.2f} s"
        )

        for _ in range(args.poll_engines - args.engines):
            r = httpx.post(svc.url + "/v1/engines", headers=AUTH, timeout=60)
            if r.status_code != 202:
                print("provision refused:", r.text)
                break
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            healthy = [e for e in engines(svc.url) if e["health"] == "healthy"]
            if len(healthy) >= args.poll_engines:
                break
            time.sleep(0.5)
        time.sleep(args.probe_interval * 2)  # let provisioning work settle
        c0, w0 = procs.cpu_seconds(svc.proc.pid), time.monotonic()
        time.sleep(args.window)
        c1, w1 = procs.cpu_seconds(svc.proc.pid), time.monotonic()
        rounds = (w1 - w0) / args.probe_interval
        print(
            f"== agent CPU while probing {len(healthy)} engines every {args.probe_interval} s "
            f"(reconcile {args.reconcile_interval} s, no API clients) over {w1 - w0:.0f} s"
        )
        print(
            f"CPU {c1 - c0:.2f} s = {100 * (c1 - c0) / (w1 - w0):.1f} % of one core; "
            f"{1000 * (c1 - c0) / rounds / max(1, len(healthy)):.2f} ms CPU per engine probe "
            f"(incl. reconcile)"
        )
        rss = procs.memory_kib(svc.proc.pid)
        print(f"agent RSS {rss / 1024:.0f} MiB")
    finally:
        svc.stop()
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=acefleet.host={host}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        print(f"removed {len(ids)} engine containers; agent log in {log_dir}")


if __name__ == "__main__":
    main()
