"""A fast restart of central must not make an agent forget its busy engines.

The agent counts an engine busy while central's heartbeat reply lists claims on it. Central
rebuilds its claims from the proxies' snapshots; restarted, it has none until the edge's proxy
snapshots again, and a warm-up shorter than the snapshot interval used to let it answer an empty
list at once: the agent then handed the engine of a live session out again and, with no idle
grace, stopped it under its viewers. Here a real agent with a real engine heartbeats to a real
central that is restarted on the same port.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from acefleet.wire import LiveStream
from tests.agent.conftest import agent_factory, engine_image  # noqa: F401 (fixtures)
from tests.agent.helpers import BOOT, AgentFactory, wait_for
from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, Agent, snapshot
from tests.support import procs


def _seq(svc_url: str, host: str) -> int:
    r = httpx.get(f"{svc_url}/v1/hosts/{host}", headers={"X-API-Key": OPERATOR_KEY}, timeout=10)
    return int(r.json()["seq"]) if r.status_code == 200 else -1


def _streams(engine_id: str, live: bool) -> list[LiveStream]:
    if not live:
        return []
    stream = LiveStream(
        stream_id="s-busy",
        content_key="id:busy",
        engine_id=engine_id,
        source="central",
        viewers=1,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return [stream]


@pytest.mark.docker
def test_a_fast_restart_of_central_keeps_the_agents_busy_engines(
    start_central: StartCentral,
    agent_factory: AgentFactory,  # noqa: F811
) -> None:
    port = procs.free_port()
    # Warm-up well under the proxies' snapshot interval (10 s): the case of the review.
    first = start_central(port=port, warmup_s="0.2")
    agent = agent_factory(
        "--central-url", first.url, "--central-api-key", SERVICE_KEY,
        "--heartbeat-interval-s", "0.2",
        "--min-engines", "1", "--free-engines", "0", "--idle-grace-s", "0",
    )  # fmt: skip
    engine = wait_for("engine ready", agent.healthy, timeout=BOOT)[0]
    with httpx.Client(base_url=first.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        wait_for("host known", lambda: _seq(first.url, agent.host) >= 0)
        snapshot(service, agent.host, _streams(engine["id"], live=True))
    wait_for("busy per central", lambda: agent.engines()[0]["streams"] == 1)

    first.stop()
    second = start_central(port=port, warmup_s="0.2")
    seen = wait_for("agent back", lambda: _seq(second.url, agent.host) >= 0 or None)
    start = _seq(second.url, agent.host)
    # Several replies of the new central, the later ones after its warm-up.
    wait_for("heartbeats", lambda: _seq(second.url, agent.host) >= start + 4)
    assert seen
    assert agent.engines()[0]["streams"] == 1
    r = agent.post("/v1/claims", json={"content_key": "id:x", "proxy_id": "p", "host": agent.host})
    assert r.json()["error"]["code"] == "no_capacity"  # not handed out twice
    assert [e["id"] for e in agent.engines()] == [engine["id"]]  # not reaped as idle

    with httpx.Client(base_url=second.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        snapshot(service, agent.host, _streams(engine["id"], live=True))
        start = _seq(second.url, agent.host)
        wait_for("heartbeats", lambda: _seq(second.url, agent.host) >= start + 2)
        assert agent.engines()[0]["streams"] == 1  # the snapshot's claim, now central's own
        # Once the proxy has told central, central's book is the truth: a session that ends
        # frees its engine (the agent's own count is not echoed back any more).
        snapshot(service, agent.host, _streams(engine["id"], live=False))
    wait_for("free again", lambda: not agent.engines() or agent.engines()[0]["streams"] == 0)


def test_the_echo_of_busy_counts_is_bounded(start_central: StartCentral) -> None:
    """Without any snapshot (an edge whose proxy is gone) the echo ends after
    ``proxy_lost_after_s``: from then on central's own book is the truth."""
    svc = start_central(warmup_s="0", proxy_lost_after_s="1")
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        edge = Agent("edge0", 2)
        edge.engines[0].streams = 1
        assert edge.beat(service).claimed == {"edge0-eng0": 1}
        wait_for("echo ended", lambda: edge.beat(service).claimed == {})
        other = Agent("edge1", 1)
        other.engines[0].streams = 1
        assert other.beat(service).claimed == {}  # started long enough ago: no echo
