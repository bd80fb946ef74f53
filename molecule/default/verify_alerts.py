#!/usr/bin/env python3
"""The lab's alert check: kill one engine container of an edge and see Prometheus on the control
host raise the engine alert (pending or firing) through its own API.

Runs on the machine (stdlib and the docker CLI only): the engines are sibling containers on the
machine's dockerd, labelled acefleet.managed and acefleet.host=<the edge's container>, and
Prometheus is asked from inside the control container (the lab publishes no port for it).
Which alert shows depends on how fast the agent reacts: AcefleetEngineUnhealthy while the engine
fails its probes, AcefleetEngineReplacedInLoop once the agent replaced it (the lab's threshold is
one replacement); either, for that edge, passes. Every wait is bounded.

    verify_alerts.py --prefix acefleet-lab-          # scripts/lab.sh alerts
    verify_alerts.py --prefix acefleet-m-            # molecule/default verify.yml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ENGINE_ALERTS = ("AcefleetEngineUnhealthy", "AcefleetEngineReplacedInLoop")

# Runs inside the control container (its python3): Prometheus' API answer on stdout.
_FETCH = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def prometheus(control: str, port: int, path: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    answer = json.loads(docker("exec", control, "python3", "-c", _FETCH, url))
    if answer.get("status") != "success":
        raise RuntimeError(f"{path}: {answer}")
    return answer


def wait(what: str, fn: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what} not seen within {timeout:.0f} s (last: {last!r})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default="acefleet-lab-", help="container name prefix of the lab")
    ap.add_argument("--control", default="control1", help="the monitoring host (no prefix)")
    ap.add_argument("--edge", default="edge1", help="the edge whose engine is killed (no prefix)")
    ap.add_argument("--port", type=int, default=9090, help="monitoring_prometheus_port")
    ap.add_argument("--timeout", type=float, default=180, help="seconds to wait for the alert")
    args = ap.parse_args()
    control, edge = args.prefix + args.control, args.prefix + args.edge
    report: dict[str, object] = {"edge": edge}
    t0 = time.monotonic()

    def agent_target_up() -> bool:
        targets = prometheus(control, args.port, "/api/v1/targets?state=active")["data"]
        return any(
            t["labels"].get("job") == "acefleet_agent"
            and str(t["labels"].get("acefleet_host", "")).endswith(args.edge)
            and t["health"] == "up"
            for t in targets["activeTargets"]
        )

    # A baseline first: the agent scraped healthy, so the alert below is caused by the kill.
    wait(f"{edge}'s agent scraped up by Prometheus on {control}", agent_target_up, args.timeout)

    def engine_alerts() -> list[dict[str, Any]]:
        alerts = prometheus(control, args.port, "/api/v1/alerts")["data"]["alerts"]
        return [
            {"alert": a["labels"]["alertname"], "state": a["state"], "value": float(a["value"])}
            for a in alerts
            if a["labels"]["alertname"] in ENGINE_ALERTS
            and str(a["labels"].get("acefleet_host", "")).endswith(args.edge)
            and a["state"] in ("pending", "firing")
        ]

    # An engine alert already active for this edge (an earlier replacement still in the window)
    # counts only if its value grows after the kill: the alert must be this kill's doing.
    before = {a["alert"]: a["value"] for a in engine_alerts()}
    report["active_before"] = before
    # engines only: the edge's VPN tunnels carry its host label too, but no HTTP port
    engines = docker(
        "ps", "-q", "--filter", "label=acefleet.managed", "--filter", f"label=acefleet.host={edge}",
        "--filter", "label=acefleet.http-port",
    ).split()  # fmt: skip
    if not engines:
        print(json.dumps({**report, "error": f"no running engine of {edge}"}))
        return 1
    victim = engines[0]
    docker("kill", victim)
    report["killed"] = victim
    killed_at = time.monotonic()

    def new_engine_alert() -> list[dict[str, Any]]:
        now = engine_alerts()
        return [a for a in now if a["alert"] not in before or a["value"] > before[a["alert"]]]

    try:
        seen = wait(f"an engine alert for {edge}", new_engine_alert, args.timeout)
    except TimeoutError as exc:
        print(json.dumps({**report, "error": str(exc)}))
        return 1
    report["alerts"] = seen
    report["seconds_after_kill"] = round(time.monotonic() - killed_at, 1)
    report["seconds_total"] = round(time.monotonic() - t0, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
