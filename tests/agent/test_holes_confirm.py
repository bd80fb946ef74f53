"""A lost confirm does not hand a live session's engine out again (issue 16).

A real agent (real dockerd, two simulator engines, stream cap 1, unconfirmed claims expire after
8 s), a real proxy whose only placement step is that agent, and between them a gate that passes
every call but refuses the claim confirms while it is shut (as an agent that is briefly away
would). The proxy confirms again until the agent acknowledges; and a session whose claim expired
anyway keeps its engine busy, because the proxy reports every live engine session to the agent:
a third content finds no engine.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from tests.agent.helpers import API_KEY, BOOT, Agent, AgentFactory, port_range, wait_for
from tests.proxy import conftest as proxy_fixtures
from tests.proxy.conftest import StartProxy
from tests.support import stub_http
from tests.support.viewers import Stream, request

start_proxy = proxy_fixtures.start_proxy

_CONFIRM = re.compile(r"^/v1/claims/[^/]+/confirm$")


class Gate:
    """An HTTP front of the agent that refuses ``POST /v1/claims/{id}/confirm`` with 503 while
    ``shut``; everything else is passed on as it is."""

    def __init__(self, agent_url: str) -> None:
        self.shut = True
        self.refused = 0
        gate = self
        upstream = httpx.Client(base_url=agent_url, timeout=10, trust_env=False)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _pass(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and _CONFIRM.match(self.path) and gate.shut:
                    gate.refused += 1
                    status, data = 503, b'{"error":{"code":"gate","message":"shut"}}'
                else:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("authorization", "content-type", "x-api-key")
                    }
                    r = upstream.request(self.command, self.path, content=body, headers=headers)
                    status, data = r.status_code, r.content
                stub_http.reply(self, status, data)

            do_GET = do_POST = do_PUT = do_DELETE = _pass

        self.server, self.url = stub_http.serve(Handler)


@pytest.fixture
def agent(agent_factory: AgentFactory) -> Agent:
    h_lo, h_hi = port_range(4)
    p_lo, p_hi = port_range(4)
    a = agent_factory(
        "--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}",
        "--min-engines", "2", "--free-engines", "0", "--max-engines", "2",
        "--claim-ttl-s", "8", "--session-ttl-s", "60",
    )  # fmt: skip
    wait_for("two healthy engines", lambda: len(a.healthy()) == 2, timeout=BOOT)
    return a


@pytest.fixture
def gate(agent: Agent) -> Iterator[Gate]:
    g = Gate(agent.svc.url)
    yield g
    stub_http.stop(g.server)


def claims(agent: Agent) -> dict[str, dict[str, Any]]:
    """Content key → the agent's claim on it."""
    return {c["content_key"]: c for c in agent.get("/v1/claims").json()}


async def watch(proxy_url: str, content: str) -> Stream:
    stream = await request(proxy_url, f"/ace/getstream?id={content}", within=60)
    assert stream.status == 200
    await stream.read_until(188 * 50, within=30)
    return stream


async def test_a_lost_confirm_never_frees_a_live_engine(
    agent: Agent, gate: Gate, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(
        agent_url=gate.url, agent_api_key=API_KEY, edge_host=agent.host, proxy_id="p-confirm"
    )
    # 1. The confirms of a live session are refused for a while: the proxy keeps confirming,
    # and the claim is confirmed once the gate opens (within its 8-s TTL).
    first = await watch(proxy.url, "first")
    await asyncio.to_thread(wait_for, "confirms sent again", lambda: gate.refused >= 3)
    gate.shut = False
    await asyncio.to_thread(
        wait_for, "the claim confirmed", lambda: claims(agent)["id:first"]["confirmed"]
    )
    # 2. Another content's confirms are refused until its claim has expired: its engine still
    # serves a live session, so it is not handed out again.
    gate.shut = True
    second = await watch(proxy.url, "second")
    await asyncio.to_thread(
        wait_for, "the unconfirmed claim expired", lambda: "id:second" not in claims(agent)
    )
    third = agent.post(
        "/v1/claims", json={"content_key": "id:third", "proxy_id": "other", "host": agent.host}
    )
    assert third.status_code == 503, third.text
    assert third.json()["error"]["code"] == "no_capacity"
    assert await second.read_for(1.0) > 0  # still streaming
    assert await first.read_for(0.5) > 0
    first.close()
    second.close()
