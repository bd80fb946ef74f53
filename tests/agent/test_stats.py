"""Sessions the proxy reports to its agent (PUT/DELETE /v1/sessions/{id}): the agent polls the
stat page of sessions it did not place, only ever on the engine named, and counts them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.agent.helpers import AUTH, BOOT, AgentFactory, port_range, wait_for

pytestmark = pytest.mark.docker


def _ranges() -> list[str]:
    h_lo, h_hi = port_range(4)
    p_lo, p_hi = port_range(4)
    return ["--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}"]


def test_reported_session_is_polled_on_its_engine_and_counted(
    agent_factory: AgentFactory,
) -> None:
    agent = agent_factory(*_ranges(), "--min-engines", "1", "--free-engines", "0")
    engine = wait_for("an engine", agent.healthy, timeout=BOOT)[0]
    start = httpx.get(
        f"http://{engine['endpoint']}/ace/getstream",
        params={"format": "json", "id": "sessstat", "pid": uuid.uuid4().hex},
        timeout=10,
    ).json()["response"]
    path = start["stat_url"].split("/", 3)[3]
    # The host in the stat_url is never called: the agent polls the path on the engine named.
    foreign = f"http://203.0.113.9:9/{path}"

    def put(session: str, body: dict[str, Any], auth: bool = True) -> httpx.Response:
        headers = AUTH if auth else {}
        return agent.client.put(f"/v1/sessions/{session}", json=body, headers=headers)

    assert (
        put("s1", {"endpoint": engine["endpoint"], "stat_url": foreign}, auth=False).status_code
        == 401
    )
    bad = put("s1", {"endpoint": engine["endpoint"], "stat_url": "http://127.0.0.1:1/admin"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "bad_stat_url"
    unknown = put("s1", {"endpoint": "127.0.0.1:1", "stat_url": foreign})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "engine_not_found"
    assert put("bad id!", {"endpoint": engine["endpoint"], "stat_url": foreign}).status_code == 422

    r = put("s1", {"endpoint": engine["endpoint"], "stat_url": foreign, "content_key": "id:x"})
    assert r.status_code == 201, r.text
    assert r.json() == {
        "session_id": "s1",
        "engine_id": engine["id"],
        "stat_path": "/" + path,
        "content_key": "id:x",
    }
    assert put("s1", {"engine_id": engine["id"], "stat_url": foreign}).status_code == 200
    assert [s["session_id"] for s in agent.get("/v1/sessions").json()] == ["s1"]
    assert agent.metric("acefleet_agent_sessions_reported") == 1

    def report() -> dict[str, Any]:
        body: dict[str, Any] = agent.get(f"/v1/engines/{engine['id']}").json()["engine"]
        return body

    polled = wait_for("stats of the reported session", lambda: (e := report())["stats"] and e)
    assert polled["streams"] == 1  # the session counts: the engine is neither free nor reaped
    assert polled["stats"]["status"] in ("idle", "prebuf", "dl")  # the engine's own answer

    assert agent.delete("/v1/sessions/s1").status_code == 204
    assert agent.delete("/v1/sessions/s1").status_code == 404
    assert agent.metric("acefleet_agent_sessions_reported") == 0
    ended = wait_for("stats stop with the session", lambda: (e := report())["stats"] is None and e)
    assert ended["streams"] == 0


def test_a_session_not_reported_again_expires(agent_factory: AgentFactory) -> None:
    # The proxy re-reports its live sessions (a lease): one it stopped reporting (a proxy that
    # died, an end that got lost) is dropped and no longer keeps its engine busy.
    agent = agent_factory(
        *_ranges(), "--min-engines", "1", "--free-engines", "0", "--session-ttl-s", "1"
    )
    engine = wait_for("an engine", agent.healthy, timeout=BOOT)[0]
    body = {"engine_id": engine["id"], "stat_url": f"/ace/stat/{'a' * 40}/{'b' * 32}"}
    r = agent.client.put("/v1/sessions/gone", json=body, headers=AUTH)
    assert r.status_code == 201
    assert [e["streams"] for e in agent.engines()] == [1]
    wait_for("the lease runs out", lambda: agent.get("/v1/sessions").json() == [], timeout=20)
    assert [e["streams"] for e in agent.engines()] == [0]
