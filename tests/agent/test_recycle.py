"""Engine recycling and standby claims with the real dockerd: an engine past
``engine_max_cache_bytes`` (bytes it downloaded, from its polled stats) or
``engine_max_age_s`` is drained with reason ``recycle`` (no new claims, its replacement
provisioned while it still carries a session) and removed once it carries none; a standby claim
never lands on an engine already carrying the content."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.agent.helpers import BOOT, AgentFactory, docker, port_range, wait_for

pytestmark = pytest.mark.docker


def _ranges() -> list[str]:
    h_lo, h_hi = port_range(4)
    p_lo, p_hi = port_range(4)
    return ["--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}"]


def _claim(agent: Any, content: str, **extra: Any) -> httpx.Response:
    body = {"content_key": f"id:{content}", "proxy_id": "p1", "host": agent.host, **extra}
    r: httpx.Response = agent.post("/v1/claims", json=body)
    return r


def _report(agent: Any, engine_id: str) -> dict[str, Any] | None:
    return next((e for e in agent.engines() if e["id"] == engine_id), None)


def test_an_engine_past_its_cache_size_is_drained_then_replaced(
    agent_factory: AgentFactory,
) -> None:
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "1", "--free-engines", "1", "--max-engines", "3",
        "--engine-max-cache-bytes", "200000",
    )  # fmt: skip
    first = wait_for("an engine", agent.healthy, timeout=BOOT)[0]
    grant = _claim(agent, "cache")
    assert grant.status_code == 201, grant.text
    assert grant.json()["engine"]["id"] == first["id"]
    start = httpx.get(
        f"http://{first['endpoint']}/ace/getstream",
        params={"format": "json", "id": "cache", "pid": uuid.uuid4().hex},
        timeout=10,
    ).json()["response"]
    claim_id = grant.json()["claim_id"]
    r = agent.post(f"/v1/claims/{claim_id}/confirm", json={"stat_url": start["stat_url"]})
    assert r.status_code == 200
    with httpx.stream("GET", start["playback_url"], timeout=30, follow_redirects=True) as playback:
        taken = 0
        for chunk in playback.iter_bytes():
            taken += len(chunk)
            if taken > 400_000:
                break
        assert taken > 400_000
        # The engine downloaded more than its cache may hold: it drains, still serving.
        drained = wait_for(
            "the engine drained for recycling",
            lambda: (e := _report(agent, first["id"])) and e["drain_reason"] == "recycle" and e,
            timeout=30,
        )
        assert drained["draining"] is True
        assert drained["streams"] == 1
        assert agent.metric("acefleet_agent_engines_recycled_total") == 1
        assert agent.metric("acefleet_agent_engines_recycling") == 1
        # Its replacement comes while it drains: a standby of the same content goes there,
        # never on the draining engine (nor on one carrying the content already).
        spare = wait_for(
            "a replacement engine",
            lambda: [e for e in agent.healthy() if e["id"] != first["id"]],
            timeout=BOOT,
        )[0]
        none = _claim(agent, "cache", standby=True, avoid=[spare["id"]])
        assert none.status_code == 503
        assert none.json()["error"]["code"] == "no_standby_capacity"
        assert _claim(agent, "other", avoid=[spare["id"]]).json()["error"]["code"] == (
            "no_capacity"
        )
        standby = _claim(agent, "cache", standby=True)
        assert standby.status_code == 201, standby.text
        assert standby.json()["engine"]["id"] == spare["id"]
        # Still there while it carries the session.
        assert _report(agent, first["id"]) is not None
    # The session moved (its claim released): the drained engine is removed.
    assert agent.delete(f"/v1/claims/{claim_id}").status_code == 204
    wait_for("the recycled engine removed", lambda: _report(agent, first["id"]) is None)
    assert docker("ps", "-aq", "--filter", f"name=^{first['id']}$") == ""
    assert agent.metric('acefleet_agent_engines_removed_total{reason="recycle"}') == 1


def test_an_engine_past_its_age_is_recycled(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "1", "--free-engines", "0", "--max-engines", "2",
        "--engine-max-age-s", "6",
    )  # fmt: skip
    first = wait_for("an engine", agent.healthy, timeout=BOOT)[0]
    grant = _claim(agent, "old")
    assert grant.json()["engine"]["id"] == first["id"]
    wait_for(
        "the engine drained for its age",
        lambda: (e := _report(agent, first["id"])) and e["drain_reason"] == "recycle",
        timeout=30,
    )
    # Busy: it stays, and its replacement is provisioned beside it (max_engines allows two).
    wait_for(
        "a replacement beside it",
        lambda: any(e["id"] != first["id"] for e in agent.engines()),
        timeout=BOOT,
    )
    assert _report(agent, first["id"]) is not None
    assert agent.delete(f"/v1/claims/{grant.json()['claim_id']}").status_code == 204
    wait_for("the old engine removed", lambda: _report(agent, first["id"]) is None)
