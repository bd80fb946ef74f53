"""Placement keeps each host's engines with room between claims (``placement_policy.HostFits``)
and must always answer what a fresh look at the host would: after every kind of change —
heartbeats that move loads, health and drains, claims reserved, confirmed, released and expired,
the operator's engine drains, a host forgotten and back — the kept answer of every host equals
one computed from scratch.

In process, on central's live state with a hand-driven clock and a seeded random sequence of
changes (the claims go through ``Central.claim``, which fills and reads the same kept answers)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from acefleet.wire import ClaimRequest, Heartbeat
from orchestrator.central.history import History
from orchestrator.central.hosts import Host
from orchestrator.central.metrics import CentralMetrics
from orchestrator.central.placement_policy import _host_candidates
from orchestrator.central.settings import CentralSettings
from orchestrator.central.state import Central
from tests.central.test_live_frame_parts import CREATED, Clock

HOSTS = 4
ENGINES = 3


def beat(c: Central, host: str, seq: int, rng: random.Random) -> None:
    """A heartbeat with random loads, health and agent drains."""
    reports = [
        {
            "id": f"{host}-eng{n}",
            "host": host,
            "endpoint": f"127.0.0.1:{19000 + n}",
            "http_port": 19000 + n,
            "profile": "sim",
            "health": "healthy" if rng.random() < 0.85 else "unhealthy",
            "stream_cap": 2,
            "streams": rng.randint(0, 2),
            "draining": rng.random() < 0.1,
            "created_at": CREATED,
        }
        for n in range(ENGINES)
    ]
    body = {"host": host, "agent_url": f"http://{host}:8100", "seq": seq, "engines": reports}
    c.heartbeat(host, Heartbeat.model_validate(body | {"max_engines": ENGINES}))


def answers(c: Central, host: Host) -> tuple[Any, Any]:
    """(kept, from scratch) for one host, each as plain values."""

    def plain(out: tuple[list[Any], float]) -> Any:
        fits, ratio = out
        return [(f.engine.id, f.ratio, f.forwarded, f.sick_tunnel) for f in fits], ratio

    return plain(c.fits.of(host, c.book, frozenset())), plain(_host_candidates(host, c.book))


def test_kept_engines_with_room_always_equal_a_fresh_look(tmp_path: Path) -> None:
    clock = Clock()
    settings = CentralSettings(
        database_url=f"sqlite:///{tmp_path / 'central.db'}",
        operator_keys=["ops:" + "k" * 32],
        warmup_s=0,
        claim_ttl_s=3,
    )
    history = History(settings.database_url, 100_000, lambda: None)
    c = Central(settings, CentralMetrics(), history, clock)
    rng = random.Random(17)
    seq = 0
    names = [f"edge{i}" for i in range(HOSTS)]
    for name in names:
        seq += 1
        beat(c, name, seq, rng)
    clock.now += 2  # past the rebuild window
    seen: dict[str, int] = {}
    for step in range(600):
        op = rng.choice(["beat", "claim", "claim", "confirm", "release", "drain", "time"])
        if op == "beat":
            seq += 1
            beat(c, rng.choice(names), seq, rng)
        elif op == "claim":
            req = ClaimRequest(content_key=f"id:{step}", proxy_id="p", host=rng.choice(names))
            c.claim(req)
        elif op in ("confirm", "release") and c.book.claims:
            claim = c.book.claims[rng.choice(sorted(c.book.claims))]
            if op == "confirm":
                c.book.confirm(claim, f"s{step}")
            else:
                c.release(claim.id)
        elif op == "drain":
            engine = f"{rng.choice(names)}-eng{rng.randrange(ENGINES)}"
            if engine in c.fleet.engine_host:
                c.drain_engine(engine, rng.random() < 0.5)
        elif op == "time":
            clock.now += 1.0  # pending claims expire (ttl 3 s)
            for name in names:  # and every host heartbeats, so none goes stale
                seq += 1
                beat(c, name, seq, rng)
            c.sweep()
        seen[op] = seen.get(op, 0) + 1
        for host in c.fleet.hosts.values():
            kept, fresh = answers(c, host)
            assert kept == fresh, (step, op, host.name)
    assert all(seen.get(op, 0) > 40 for op in ("beat", "claim", "confirm", "release", "drain"))

    # A host forgotten and heartbeating again starts its counts from 0: never the old answer.
    gone = c.fleet.hosts["edge3"]
    assert answers(c, gone)[0] == answers(c, gone)[1]
    clock.now += settings.forget_after_s + 1
    for name in names[:3]:
        seq += 1
        beat(c, name, seq, rng)
    c.sweep()
    assert "edge3" not in c.fleet.hosts
    for _ in range(gone.heartbeats):
        seq += 1
        beat(c, "edge3", seq, rng)
    back = c.fleet.hosts["edge3"]
    kept, fresh = answers(c, back)
    assert kept == fresh
