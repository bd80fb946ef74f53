"""The dashboard frame is rebuilt per host, only where something moved (live_frame): each kind
of change reaches the frame, and hosts that did not change hand out the very same items.

In process, on central's live state with a hand-driven clock: every change below is followed
by a comparison with a frame built from scratch (the parts forgotten), which is what the
incremental one must always equal; and the identity checks fail if the parts are not kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acefleet.wire import ClaimRequest, Heartbeat, ProxySnapshot
from orchestrator.central.api.live import fleet_frame
from orchestrator.central.history import History
from orchestrator.central.metrics import CentralMetrics
from orchestrator.central.settings import CentralSettings
from orchestrator.central.state import Central

CREATED = "2026-12-01T00:00:00Z"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engine_report(host: str, n: int, **fields: Any) -> dict[str, Any]:
    """Engine ``n`` of ``host`` as its agent reports it: idle and healthy, ``fields`` aside."""
    return {
        "id": f"{host}-eng{n}",
        "host": host,
        "endpoint": f"127.0.0.1:{19000 + n}",
        "http_port": 19000 + n,
        "profile": "sim",
        "health": "healthy",
        "stream_cap": 2,
        "streams": 0,
        "created_at": CREATED,
    } | fields


def beat(
    c: Central, host: str, engines: int, seq: int, draining: bool = False, **engine: Any
) -> None:
    """A heartbeat of ``host`` with ``engines`` engines, the first one's report overridden by
    ``engine``; ``draining``: the agent drains the whole host."""
    reports = [engine_report(host, n, **(engine if n == 0 else {})) for n in range(engines)]
    hb = Heartbeat.model_validate(
        {
            "host": host,
            "agent_url": f"http://{host}:8100",
            "seq": seq,
            "engines": reports,
            "max_engines": engines,
        }
        | {"draining": draining}
    )
    c.heartbeat(host, hb)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def in_process(tmp_path: Path, clock: Callable[[], float], **settings: Any) -> Central:
    """Central's live state without a server, on ``clock`` (its history is never started)."""
    config = CentralSettings(
        database_url=f"sqlite:///{tmp_path / 'central.db'}",
        operator_keys=["ops:" + "k" * 32],
        warmup_s=0,
        **settings,
    )
    history = History(config.database_url, 100_000, lambda: None)
    return Central(config, CentralMetrics(), history, clock)


@pytest.fixture
def c(tmp_path: Path, clock: Clock) -> Central:
    central = in_process(tmp_path, clock, proxy_lost_after_s=1)
    for i in range(3):
        beat(central, f"edge{i}", 3, 1)
    clock.now += 2  # past the rebuild window: claims place on these hosts
    return central


def from_scratch(c: Central) -> dict[str, Any]:
    kept = c.frame_parts
    c.frame_parts = {}
    try:
        return fleet_frame(c)
    finally:
        c.frame_parts = kept


def engines_of(frame: dict[str, Any], host: str) -> list[Any]:
    return [e for e in frame["engines"] if e["host"] == host]


def host_of(frame: dict[str, Any], host: str) -> Any:
    return next(h for h in frame["hosts"] if h["name"] == host)


def test_each_change_reaches_the_frame_and_unchanged_hosts_keep_their_items(
    c: Central, clock: Clock
) -> None:
    first = fleet_frame(c)
    assert first == from_scratch(c)
    again = fleet_frame(c)
    assert all(a is b for a, b in zip(again["engines"], first["engines"], strict=True))
    assert all(a is b for a, b in zip(again["hosts"], first["hosts"], strict=True))

    # A heartbeat that changes an engine's health: only that host's part is rebuilt.
    beat(c, "edge1", 3, 2, health="unhealthy")
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert engines_of(frame, "edge1")[0]["health"] == "unhealthy"
    assert not engines_of(frame, "edge1")[0]["placeable"]
    assert all(
        a is b for a, b in zip(engines_of(frame, "edge0"), engines_of(first, "edge0"), strict=True)
    )
    assert host_of(frame, "edge2") is host_of(first, "edge2")

    # A claim (pending, then confirmed, then released) moves its engine's load, no heartbeat.
    grant = c.claim(ClaimRequest(content_key="id:a", proxy_id="p0", host="edge2"))
    engine_id = grant.engine.id  # type: ignore[union-attr]
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    loads = {e["id"]: e["load"] for e in frame["engines"]}
    assert loads[engine_id] == 1
    assert host_of(frame, "edge2")["streams"] == 1
    assert frame["summary"]["slots_free"] == from_scratch(c)["summary"]["slots_free"]
    claim = c.book.claims[grant.claim_id]  # type: ignore[union-attr]
    c.book.confirm(claim, "s1")
    assert fleet_frame(c) == from_scratch(c)
    c.release(claim.id)
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert {e["id"]: e["load"] for e in frame["engines"]}[engine_id] == 0

    # A proxy on edge1 tells central its URL (the host view's proxy_url, for relays).
    c.snapshot("p1", ProxySnapshot(host="edge1", url="http://edge1:8080", streams=[]))
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert host_of(frame, "edge1")["proxy_url"] == "http://edge1:8080"

    # The operator's drains, of one engine and of a host, and their undoing.
    c.drain_engine("edge0-eng2", True)
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert engines_of(frame, "edge0")[2]["operator_drain"]
    c.drain_engine("edge0-eng2", False)
    assert fleet_frame(c) == from_scratch(c)
    c.drain_host("edge2", True)
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert not any(e["placeable"] for e in engines_of(frame, "edge2"))
    assert frame["summary"]["engines_placeable"] == 5  # edge0 3, edge1 2 (one unhealthy)
    c.drain_host("edge2", False)
    assert fleet_frame(c) == from_scratch(c)
    # The operator's drain of a host its agent drains already: nothing placeable changes, the
    # host's operator_drain does.
    beat(c, "edge2", 3, 2, draining=True)
    assert not host_of(fleet_frame(c), "edge2")["operator_drain"]
    c.drain_host("edge2", True)
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert host_of(frame, "edge2")["operator_drain"]
    c.drain_host("edge2", False)
    beat(c, "edge2", 3, 3)

    # Time alone: silent hosts go stale, then lost, with no change to central's state.
    clock.now += c.settings.stale_after_s + 0.1
    beat(c, "edge0", 3, 2)
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert host_of(frame, "edge1")["status"] == "stale"
    assert not any(e["placeable"] for e in engines_of(frame, "edge1"))
    assert frame["summary"]["hosts"] == {"live": 1, "stale": 2, "lost": 0}
    clock.now += c.settings.lost_after_s - c.settings.stale_after_s
    beat(c, "edge0", 3, 3)
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert host_of(frame, "edge1")["status"] == "lost"

    # A host forgotten leaves the frame and its part.
    clock.now += c.settings.forget_after_s + 1
    beat(c, "edge0", 3, 4)
    c.sweep()
    frame = fleet_frame(c)
    assert frame == from_scratch(c)
    assert [h["name"] for h in frame["hosts"]] == ["edge0"]
    assert set(c.frame_parts) == {"edge0"}
