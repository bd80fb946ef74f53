"""Benchmark the dashboard frame central builds for its live feed (``/v1/live``, the WebSocket
feed): its cost on the claim loop at a big fleet's size, from scratch against per host
(``orchestrator/central/live_frame.py``).

In process, on central's real live state (no HTTP): --edges hosts x --engines engines take one
heartbeat each, --claims engines get a claim, then each round --dirty hosts heartbeat again and
--moved claims are released and taken again (a claim loop's churn between two frames), and the
frame is built and diffed against the previous one as the publisher does
(``LiveFeed.refresh``: ``fleet_frame`` + ``share_and_diff``). Printed: milliseconds per frame
for the whole build (``from scratch``: the per-host parts forgotten before each frame, as every
frame was built before) and for the incremental one, p50 and max over --rounds.

    .venv/bin/python -m bench.live_frame_bench
    .venv/bin/python -m bench.live_frame_bench --dirty 140 --moved 140   # central_fleet_bench [4]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from acefleet import logs
from acefleet.wire import ClaimGrant, ClaimRequest, Heartbeat
from bench.central_fleet_bench import heartbeat_body, host_name
from orchestrator.central import slices
from orchestrator.central.api.live import fleet_frame
from orchestrator.central.history import History
from orchestrator.central.live_feed import share_and_diff
from orchestrator.central.metrics import CentralMetrics
from orchestrator.central.settings import CentralSettings
from orchestrator.central.state import Central


def heartbeat(i: int, engines: int, seq: int) -> Heartbeat:
    """Edge ``i``'s heartbeat, as the fleet bench's simulated agents send it."""
    return Heartbeat.model_validate_json(heartbeat_body(i, engines, seq, {}))


def claim(c: Central, n: int, host: str) -> str:
    req = ClaimRequest(content_key=f"id:bench{n}", proxy_id=f"proxy-{host}", host=host)
    grant = c.claim(req)
    if not isinstance(grant, ClaimGrant):
        raise SystemExit(f"claim {n} refused: {grant}")
    return grant.claim_id


def rounds(c: Central, args: argparse.Namespace, scratch: bool) -> list[float]:
    names = [host_name(i) for i in range(args.edges)]
    beats = [heartbeat(i, args.engines, 2) for i in range(args.edges)]
    held = [claim(c, n, names[n % args.edges]) for n in range(args.claims)]
    frame: dict[str, Any] = fleet_frame(c)
    out = []
    next_claim = args.claims
    for r in range(args.rounds):
        for k in range(args.dirty):
            hb = beats[(r * args.dirty + k) % args.edges]
            c.heartbeat(hb.host, hb)
        for _ in range(args.moved):
            c.release(held.pop(0))
            held.append(claim(c, next_claim, names[next_claim % args.edges]))
            next_claim += 1
        if scratch:
            c.frame_parts = {}
        started = time.perf_counter()
        new = fleet_frame(c)
        slices.whole(share_and_diff(frame, new))
        out.append((time.perf_counter() - started) * 1e3)
        frame = new
    for cid in held:
        c.release(cid)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edges", type=int, default=500)
    p.add_argument("--engines", type=int, default=20)
    p.add_argument("--claims", type=int, default=2000, help="engines with a claim at any time")
    p.add_argument("--dirty", type=int, default=50, help="hosts heartbeating between frames")
    p.add_argument("--moved", type=int, default=50, help="claims released and taken per frame")
    p.add_argument("--rounds", type=int, default=40)
    args = p.parse_args()
    logs.configure("warning", "console", "live-frame-bench")
    with tempfile.TemporaryDirectory() as tmp:
        settings = CentralSettings(
            database_url=f"sqlite:///{Path(tmp) / 'central.db'}",
            operator_keys=["bench:" + "k" * 32],
            warmup_s=0,
            proxy_lost_after_s=0.001,
        )
        history = History(settings.database_url, 1_000_000, lambda: None)
        c = Central(settings, CentralMetrics(), history)
        for i in range(args.edges):
            hb = heartbeat(i, args.engines, 1)
            c.heartbeat(hb.host, hb)
        time.sleep(0.01)  # past proxy_lost_after_s: claims place without a proxy snapshot
        gc.collect()
        print(
            f"{args.edges} edges x {args.engines} engines, {args.claims} claimed; per frame "
            f"{args.dirty} hosts heartbeat and {args.moved} claims move ({args.rounds} rounds)"
        )
        for label, scratch in (("from scratch", True), ("per host", False)):
            ms = rounds(c, args, scratch)
            print(
                f"  {label:>12}: build + diff p50 {statistics.median(ms):.1f} ms, "
                f"max {max(ms):.1f} ms"
            )


if __name__ == "__main__":
    main()
