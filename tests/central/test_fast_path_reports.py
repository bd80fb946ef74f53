"""Heartbeats and event batches skip FastAPI (fastpath.py): the fast path answers them with
the status, body and headers the routes give (a query string hands a request on to the route,
as for claims), and whatever the route explains better (a bad body, a key in the URL) still
goes to the route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from acefleet.wire import EventBatch
from orchestrator.central import fastpath
from orchestrator.central.api import deps
from orchestrator.central.settings import CentralSettings
from orchestrator.central.state import Central
from tests.central.conftest import ThreadCentral
from tests.central.fleetsim import OPERATOR_KEY, VIEWER_KEY, Agent, claim_body, event
from tests.support import procs

EDGE_A_KEY = "edge-a-fast-path-key-0000001"
EDGE_B_KEY = "edge-b-fast-path-key-0000001"
JSON = {"content-type": "application/json"}
OVERSIZED = '{"proxy_id": "proxy-edge0", "events": [], "padding": "' + "x" * 1_200_000 + '"}'


class Fleet:
    """Central with two service keys, and the paths of the requests its routes answered."""

    def __init__(self, svc: ThreadCentral) -> None:
        self.svc = svc
        self.routed: list[str] = []
        self.a = httpx.Client(base_url=svc.url, headers={"X-API-Key": EDGE_A_KEY}, timeout=10)
        self.b = httpx.Client(base_url=svc.url, headers={"X-API-Key": EDGE_B_KEY}, timeout=10)
        app: FastAPI = svc.server.config.app  # what uvicorn was given: create_app's app
        # Every service route asks for the live state through this dependency: counting its
        # calls tells which requests FastAPI answered.

        async def counted(request: Request) -> Central:
            self.routed.append(request.url.path)
            return await deps.central(request)

        app.dependency_overrides[deps.central] = counted


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    settings = CentralSettings(
        listen_port=procs.free_port(),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        service_keys=[f"edge-a:{EDGE_A_KEY}", f"edge-b:{EDGE_B_KEY}"],
        operator_keys=[f"alice:{OPERATOR_KEY}"],
        viewer_keys=[VIEWER_KEY],
        warmup_s=0,
        warm_buffer_per_edge=0,
        # No claim here may expire mid-test: a loaded machine once took the 15 s default to reach
        # the DELETEs, which then met released claims instead of the crash they test.
        claim_ttl_s=600,
    )
    f = Fleet(ThreadCentral(settings))
    try:
        yield f
    finally:
        f.a.close()
        f.b.close()
        f.svc.stop()


def _batch(proxy_id: str, *kinds: str) -> str:
    events = [event(kind, f"s-{kind}", content_key="id:x") for kind in kinds]
    return EventBatch(proxy_id=proxy_id, events=events).model_dump_json()


def _answer(r: httpx.Response) -> dict[str, Any]:
    """What a client sees of an answer, without the event ids (each batch has its own)."""
    body = r.json()
    for result in body.get("results", []):
        result.pop("event_id")
    return {
        "status": r.status_code,
        "body": body,
        "content-type": r.headers.get("content-type"),
        "rate-limit": r.headers.get("x-ratelimit-limit"),
        "remaining": "x-ratelimit-remaining" in r.headers,
    }


def test_heartbeats_and_events_skip_fastapi(fleet: Fleet) -> None:
    agent = Agent("edge0", 2)
    agent.beat(fleet.a)
    r = fleet.a.post("/v1/events", content=_batch("proxy-edge0", "stream_ended"), headers=JSON)
    assert r.status_code == 200, r.text
    assert fleet.routed == []
    # the same calls with a query string go through the routes, which count them
    beat = agent.heartbeat_body().model_dump_json()
    r = fleet.a.post("/v1/hosts/edge0/heartbeat?via=route", content=beat, headers=JSON)
    assert r.status_code == 200, r.text
    batch = _batch("proxy-edge0", "stream_ended")
    r = fleet.a.post("/v1/events?via=route", content=batch, headers=JSON)
    assert r.status_code == 200, r.text
    assert fleet.routed == ["/v1/hosts/edge0/heartbeat", "/v1/events"]


@pytest.mark.parametrize(
    ("what", "path", "key", "body"),
    [
        ("heartbeat", "/v1/hosts/edge0/heartbeat", "a", "edge0"),
        ("heartbeat for another host's URL", "/v1/hosts/edge9/heartbeat", "a", "edge0"),
        ("heartbeat that is not JSON", "/v1/hosts/edge0/heartbeat", "a", "{"),
        ("events", "/v1/events", "a", "proxy-edge0"),
        ("events of another key's proxy", "/v1/events", "b", "proxy-edge0"),
        ("events without a proxy id", "/v1/events", "a", '{"events": []}'),
        # over the fast path's 1 MiB: what it read so far and the rest reach the route intact
        ("events over the fast path's limit", "/v1/events", "a", OVERSIZED),
    ],
)
def test_fast_path_answers_as_the_route_does(
    fleet: Fleet, what: str, path: str, key: str, body: str
) -> None:
    client = fleet.a if key == "a" else fleet.b
    fleet.a.post("/v1/events", content=_batch("proxy-edge0"), headers=JSON)  # edge-a's proxy

    def send(query: str) -> httpx.Response:
        if body.startswith("{"):
            content = body
        elif path.endswith("heartbeat"):
            content = Agent(body, 2).heartbeat_body().model_dump_json()
        else:
            content = _batch(body, "stream_ended", "viewers")
        return client.post(path + query, content=content, headers=JSON)

    fast, routed = send(""), send("?via=route")
    assert _answer(fast) == _answer(routed), what
    # A bad body is handed on, so both calls reach the route (one that is not JSON at all is
    # refused by FastAPI before it solves dependencies, so it is not counted); a good one is
    # answered by the fast path, and only the query-string call is the route's.
    routed_calls = 0 if body == "{" else 2 if body.startswith("{") else 1
    assert fleet.routed.count(path) == routed_calls, what


async def test_a_body_crossing_the_limit_in_its_last_chunk_is_handed_on_as_complete() -> None:
    """The chunk that crosses the fast path's limit may be the body's last: the route must get
    it as the whole body, not wait for more that never comes (the client waits for an answer)."""
    messages = iter(
        [
            {"type": "http.request", "body": b"a" * 600, "more_body": True},
            {"type": "http.request", "body": b"b" * 600, "more_body": False},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)  # a third call would be the route waiting for more: StopIteration

    body, complete, more = await fastpath._read_body(receive, 1000)
    assert (complete, more) == (False, False)
    handed_on = await fastpath._replay(body, receive, more=more)()
    assert handed_on == {
        "type": "http.request",
        "body": b"a" * 600 + b"b" * 600,
        "more_body": False,
    }


def test_a_bug_behind_the_fast_path_is_answered_as_the_route_answers_it(fleet: Fleet) -> None:
    """The fast path runs in front of FastAPI's stack: a crash in what it calls must still
    leave as the one error shape (500 internal_error), as FastAPI's crash handler answers it."""
    agent = Agent("edge0", 2)
    agent.beat(fleet.a)
    held = [
        fleet.a.post("/v1/claims", json=claim_body(f"id:{n}", "edge0")).json()["claim_id"]
        for n in range(2)
    ]
    central: Central = fleet.svc.server.config.app.state.central

    def bug(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    for name in ("claim", "release", "heartbeat", "apply_events"):
        setattr(central, name, bug)
    # FastAPI re-raises a crash after answering it, and uvicorn then drops the connection: each
    # request gets its own.
    closing = {**JSON, "connection": "close"}
    beat = agent.heartbeat_body().model_dump_json()
    requests = [
        ("POST", "/v1/claims", json.dumps(claim_body("id:new", "edge0"))),
        ("POST", "/v1/hosts/edge0/heartbeat", beat),
        ("POST", "/v1/events", _batch("proxy-edge0", "stream_ended")),
    ]
    for method, path, body in requests:
        fast = fleet.a.request(method, path, content=body, headers=closing)
        routed = fleet.a.request(method, path + "?via=route", content=body, headers=closing)
        assert _answer(fast) == _answer(routed), path
        assert (fast.status_code, fast.json()["error"]["code"]) == (500, "internal_error"), path
    fast = fleet.a.delete(f"/v1/claims/{held[0]}", headers=closing)
    routed = fleet.a.delete(f"/v1/claims/{held[1]}?via=route", headers=closing)
    assert _answer(fast) == _answer(routed)
    assert (fast.status_code, fast.json()["error"]["code"]) == (500, "internal_error")
