"""Engine stats from heartbeats on central's engine and stream views and in /metrics, and the
``degraded`` verdict (0 peers, no download progress), with the stats an agent would report
chosen by the test (the simulator cannot report 0 peers while streaming; tests/fleet covers the
real chain)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from acefleet.wire import EngineStats, LiveStream
from tests.central.conftest import StartCentral
from tests.central.fleetsim import SERVICE_KEY, Agent, claim_body, event, send_events, snapshot


def _stats(peers: int, downloaded: int) -> EngineStats:
    return EngineStats(
        status="dl",
        peers=peers,
        speed_down_kbps=120,
        speed_up_kbps=30,
        downloaded_bytes=downloaded,
        uploaded_bytes=downloaded // 4,
        at=datetime.now(UTC),
    )


def _until(what: str, fn: Any, beat: Any, timeout: float = 15.0) -> Any:
    """Heartbeat (with fresh stats) until ``fn`` holds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        beat()
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


def test_stats_and_degraded_on_streams_engines_and_metrics(start_central: StartCentral) -> None:
    central = start_central(degraded_after_s="1")
    svc = httpx.Client(base_url=central.url, headers={"X-API-Key": SERVICE_KEY}, timeout=10)
    agent = Agent("edge0", 2)
    eng0, eng1 = agent.engines
    eng0.streams = 1  # the agent counts the static session the proxy reported to it
    counters = {"eng0": 0, "eng1": 0}
    peers = {"eng0": 7, "eng1": 5}
    growing = {"eng0": True, "eng1": True}

    def beat() -> None:
        for key, report in (("eng0", eng0), ("eng1", eng1)):
            if growing[key]:
                counters[key] += 100_000
            report.stats = _stats(peers[key], counters[key])
        agent.beat(svc)

    beat()
    # s-1: a static-list session, named by the engine's host:port; s-2: a central claim.
    now = datetime.now(UTC)
    static = LiveStream(
        stream_id="s-1",
        content_key="id:one",
        engine_id=eng0.endpoint,
        source="static",
        viewers=1,
        started_at=now,
    )
    snapshot(svc, "edge0", [static])
    grant = svc.post("/v1/claims", json=claim_body("id:two", "edge0")).json()
    assert grant["engine"]["id"] == eng1.id
    started = event(
        "stream_started",
        "s-2",
        content_key="id:two",
        claim_id=grant["claim_id"],
        engine_id=eng1.id,
    )
    send_events(svc, "edge0", started)

    def streams() -> dict[str, dict[str, Any]]:
        return {s["stream_id"]: s for s in svc.get("/v1/streams").json()["items"]}

    live = _until("stats on both streams", lambda: len(streams()) == 2 and streams(), beat)
    assert live["s-1"]["peers"] == 7
    assert live["s-2"]["peers"] == 5
    assert live["s-1"]["speed_down_kbps"] == 120
    assert live["s-2"]["speed_up_kbps"] == 30
    assert not live["s-1"]["degraded"]
    assert live["s-1"]["degraded_reason"] is None
    engines = {e["id"]: e for e in svc.get("/v1/engines").json()["items"]}
    assert engines[eng0.id]["stats"]["peers"] == 7
    assert engines[eng0.id]["stats"]["downloaded_bytes"] > 0

    # eng1's swarm empties: its stream is degraded once that lasted degraded_after_s.
    peers["eng1"] = 0
    s2 = _until("s-2 degraded", lambda: (s := streams()["s-2"])["degraded"] and s, beat)
    assert s2["degraded_reason"] == "no_peers"
    assert not streams()["s-1"]["degraded"]
    # eng0 stops downloading (samples keep coming, the byte count does not move).
    growing["eng0"] = False
    s1 = _until("s-1 degraded", lambda: (s := streams()["s-1"])["degraded"] and s, beat)
    assert s1["degraded_reason"] == "download_stalled"
    engines = {e["id"]: e for e in svc.get("/v1/engines").json()["items"]}
    assert engines[eng0.id]["degraded_reason"] == "download_stalled"

    text = svc.get("/metrics").text
    assert _metric(text, "acefleet_central_stream_degraded", stream="s-2", host="edge0") == 1
    assert _metric(text, "acefleet_central_stream_peers", stream="s-1", host="edge0") == 7
    assert (
        _metric(
            text, "acefleet_central_stream_download_bytes_per_second", stream="s-1", host="edge0"
        )
        == 120 * 1024
    )
    assert _metric(text, "acefleet_central_engine_peers", engine=eng1.id, host="edge0") == 0
    assert (
        _metric(
            text, "acefleet_central_engine_upload_bytes_per_second", engine=eng0.id, host="edge0"
        )
        == 30 * 1024
    )
    assert _metric(text, "acefleet_central_streams_degraded", reason="no_peers") == 1
    assert _metric(text, "acefleet_central_streams_degraded", reason="download_stalled") == 1

    # Recovery clears the verdict.
    peers["eng1"] = 9
    growing["eng0"] = True
    _until("both recovered", lambda: not any(s["degraded"] for s in streams().values()), beat)
    # A silent agent says nothing about its engines: no verdict while its host is not live.
    peers["eng1"] = 0
    _until("s-2 degraded again", lambda: streams()["s-2"]["degraded"], beat)
    stale = _until(
        "host stale", lambda: svc.get("/v1/hosts/edge0").json()["status"] != "live", lambda: None
    )
    assert stale
    assert not streams()["s-2"]["degraded"]

    # A stream that ends takes its series with it.
    send_events(svc, "edge0", event("stream_ended", "s-2", reason="done"))
    text = svc.get("/metrics").text
    assert _metric(text, "acefleet_central_stream_peers", stream="s-2", host="edge0") is None
    assert _metric(text, "acefleet_central_stream_degraded", stream="s-2", host="edge0") is None
    assert _metric(text, "acefleet_central_stream_degraded", stream="s-1", host="edge0") == 0
