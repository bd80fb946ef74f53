"""The relay-loop guard (issue 16): two real proxies that a control plane tells to relay from
each other (as central may after a state loss) do not deadlock.

A test control plane (real HTTP on loopback) answers edge A's claim with "relay from B" and
B's with "relay from A", unless the claim avoids that edge; then with an engine (the
simulator). A relay request names the proxies it comes through (``X-Acefleet-Relay-Chain``, their
base URLs), so B answers A's pull with 508 ``relay_loop`` instead of relaying back, and A places
again without B and opens the engine itself. Without the guard the two pull from each other
until the first-byte timeout. A proxy finding itself in a request's chain answers 508 at once.
Both proxies run on one host (one host name): the chain tells them apart by URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.proxy.client import metric, request
from tests.proxy.conftest import StartProxy, endpoint
from tests.support import procs, stub_http
from tests.support.viewers import request_line


class ControlPlane:
    """Answers ``POST /v1/claims`` by the rules above (``proxies``: edge host → proxy URL; an
    edge not in it is never named);
    releases, events and snapshots are accepted and ignored, anything else is 404."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.proxies: dict[str, str] = {}
        self.claims: list[dict[str, Any]] = []
        self.errors: list[str] = []
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                stub_http.reply(self, status, data)

            def _body(self) -> Any:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def do_POST(self) -> None:
                body = self._body()
                if self.path == "/v1/claims":
                    try:
                        grant = plane.grant(body)
                    except Exception as exc:  # the test reads it, the proxy gets a 500
                        plane.errors.append(repr(exc))
                        self._answer(500, {"error": {"code": "bug", "message": repr(exc)}})
                        return
                    self._answer(200, grant)
                elif self.path == "/v1/events":
                    self._answer(200, {})
                else:
                    self._answer(404, {"error": {"code": "not_found", "message": self.path}})

            def do_PUT(self) -> None:
                self._body()
                self._answer(404, {"error": {"code": "not_found", "message": self.path}})

            def do_DELETE(self) -> None:
                self._answer(204)

            def do_GET(self) -> None:
                self._answer(404, {"error": {"code": "not_found", "message": self.path}})

        self.server, self.url = stub_http.serve(Handler)

    def grant(self, claim: dict[str, Any]) -> dict[str, Any]:
        self.claims.append(claim)
        n = len(self.claims)
        other = {"edge-a": "edge-b", "edge-b": "edge-a"}[claim["host"]]
        if other in self.proxies and f"edge:{other}" not in claim.get("avoid", []):
            relay = {"host": other, "proxy_url": self.proxies[other]}
            return {"kind": "relay", "claim_id": f"c{n}", "ttl_s": 30, "relay": relay}
        engine = {"id": "sim-0", "host": claim["host"], "endpoint": self.engine}
        return {"kind": "engine", "claim_id": f"c{n}", "ttl_s": 30, "engine": engine}


@pytest.fixture
def plane(sim: procs.Service) -> Iterator[ControlPlane]:
    c = ControlPlane(endpoint(sim))
    yield c
    stub_http.stop(c.server)


async def test_edges_told_to_relay_from_each_other_do_not_loop(
    plane: ControlPlane, start_proxy: StartProxy
) -> None:
    edges = {}
    for name in ("edge-a", "edge-b"):
        edges[name] = start_proxy(
            central_url=plane.url,
            edge_host=name,
            proxy_id=f"proxy-{name}",
            # without the guard the loop lasts this long: far beyond the viewer's patience
            first_byte_timeout_s="60",
            engine_call_timeout_s="3",
        )
        plane.proxies[name] = edges[name].url
    a, b = edges["edge-a"], edges["edge-b"]

    viewer = await request(a.url, "/ace/getstream?id=ping-pong", within=30)
    assert viewer.status == 200, (viewer.body, plane.errors)
    await viewer.read_until(188 * 100, within=30)
    viewer.close()

    # A asked, was told B; B (asked by A's relay, chain: A's URL) was told A and refused with
    # 508 instead of pulling from A; A placed again without B and got the engine.
    asked = [(c["host"], c.get("avoid", [])) for c in plane.claims]
    assert asked[:3] == [("edge-a", []), ("edge-b", []), ("edge-a", ["edge:edge-b"])]
    assert metric(a.url, "acefleet_proxy_upstream_failures_total", 'reason="relay_loop"') == 1
    assert metric(b.url, "acefleet_proxy_upstream_sessions_total") == 0  # B never pulled


async def test_a_proxy_in_the_chain_refuses_the_relay(
    plane: ControlPlane, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(central_url=plane.url, edge_host="edge-a")
    host = f"127.0.0.1:{proxy.port}"
    line = request_line("/ace/getstream?id=loop", host).removesuffix(b"\r\n")
    raw = line + f"X-Acefleet-Relay-Chain: http://127.0.0.1:9, {proxy.url}/\r\n\r\n".encode()
    refused = await request(proxy.url, "", raw=raw)
    assert refused.status == 508
    assert refused.json()["error"]["code"] == "relay_loop"
    assert plane.claims == []  # refused before any placement
    # another chain (not through this proxy) is served as usual
    raw = line + b"X-Acefleet-Relay-Chain: http://127.0.0.1:9\r\n\r\n"
    served = await request(proxy.url, "", raw=raw)
    assert served.status == 200
    served.close()
