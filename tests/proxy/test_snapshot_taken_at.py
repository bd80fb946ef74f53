"""A real proxy stamps each snapshot ``taken_at`` on the clock of its events (issue 17).

Central orders a snapshot against the proxy's stream_started/stream_ended events by comparing
``taken_at`` with the events' ``at``, so the proxy must keep them consistent: a snapshot lists a
stream exactly when the stream's start is before ``taken_at`` and its end (if any) is not. A test
control plane (real HTTP on loopback) grants the simulator's engine and records every event and
snapshot body; one viewer plays a channel and leaves, and snapshots are sent every 0.1 s
meanwhile, so some are taken while the stream runs and some before and after it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.proxy.central_side import until
from tests.proxy.client import request
from tests.proxy.conftest import StartProxy, endpoint
from tests.support import procs, stub_http


class Recorder:
    """Grants every claim the simulator's engine; takes and records events and snapshots."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        rec = self

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
                    engine = {"id": "sim-0", "host": body["host"], "endpoint": rec.engine}
                    self._answer(
                        200, {"kind": "engine", "claim_id": "c1", "ttl_s": 30, "engine": engine}
                    )
                elif self.path == "/v1/events":
                    with rec.lock:
                        rec.events.extend(body["events"])
                    results = [
                        {"event_id": e["event_id"], "status": "accepted"} for e in body["events"]
                    ]
                    self._answer(200, {"results": results})
                else:
                    self._answer(404, {"error": {"code": "not_found", "message": self.path}})

            def do_PUT(self) -> None:
                body = self._body()
                with rec.lock:
                    rec.snapshots.append(body)
                self._answer(200, {"streams": len(body["streams"]), "move_off": []})

            def do_DELETE(self) -> None:
                self._answer(204)

            def do_GET(self) -> None:
                self._answer(404, {"error": {"code": "not_found", "message": self.path}})

        self.server, self.url = stub_http.serve(Handler)

    def times(self, kind: str) -> dict[str, datetime]:
        with self.lock:
            return {
                e["stream_id"]: datetime.fromisoformat(e["at"])
                for e in self.events
                if e["type"] == kind
            }

    def taken(self) -> list[tuple[datetime, set[str]]]:
        with self.lock:
            return [
                (datetime.fromisoformat(s["taken_at"]), {ls["stream_id"] for ls in s["streams"]})
                for s in self.snapshots
            ]


@pytest.fixture
def recorder(sim: procs.Service) -> Iterator[Recorder]:
    r = Recorder(endpoint(sim))
    yield r
    stub_http.stop(r.server)


async def test_snapshots_are_stamped_in_order_with_the_events(
    recorder: Recorder, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(
        central_url=recorder.url,
        edge_host="edge-a",
        proxy_id="proxy-edge-a",
        snapshot_interval_s="0.1",
        event_flush_s="0.05",
        grace_s="0",
    )
    viewer = await request(proxy.url, "/ace/getstream?id=stamped", within=30)
    assert viewer.status == 200, viewer.body
    await viewer.read_until(188 * 100, within=30)
    started = await until("stream_started", lambda: recorder.times("stream_started"))
    (stream_id,) = started
    await until("a snapshot listing it", lambda: any(stream_id in s for _, s in recorder.taken()))
    viewer.close()
    ended = await until("stream_ended", lambda: recorder.times("stream_ended"))
    after = ended[stream_id]
    await until("a snapshot after the end", lambda: any(t > after for t, _ in recorder.taken()))

    snapshots = recorder.taken()
    assert any(t < started[stream_id] for t, _ in snapshots)  # one from before the start
    for taken_at, listed in snapshots:
        assert taken_at.tzinfo is not None
        live_then = started[stream_id] <= taken_at < after
        assert (stream_id in listed) == live_then, (taken_at, started, after)
