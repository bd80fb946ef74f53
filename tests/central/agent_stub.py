"""Edges with VPN tunnels for central's tests: heartbeats that carry tunnels, and a small real
HTTP server standing in for an agent's ``POST /v1/tunnels/{name}/rotate``.

The stand-in is only what central needs to forward an operator's rotation to: the agent's own
rotate route (creating the new generation, moving engines) is the agent's, tested in
tests/agent against real containers. This one answers as the agent's API contract says (202 and
the new generation's TunnelReport, 404 ``unknown_tunnel``, 409 ``rotation_in_progress``, 401
without the agents' key) and records what it was sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from acefleet.wire import EngineReport, Heartbeat, TunnelReport, TunnelState
from tests.central.fleetsim import Agent, engine

AGENT_KEY = "agent-key-for-tests-000001"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def tunnel(
    name: str,
    state: TunnelState = TunnelState.healthy,
    *,
    host: str = "edge0",
    generation: int = 0,
    port: int | None = 41000,
    ip: str | None = "203.0.113.7",
    engines: int = 1,
    cap: int = 4,
    reason: str | None = None,
) -> TunnelReport:
    return TunnelReport(
        name=name,
        container=f"acefleet-vpn-{host}-{name}-g{generation}",
        generation=generation,
        state=state,
        reason=reason,
        public_ip=ip,
        forwarded_port=port,
        engines=engines,
        engine_cap=cap,
        created_at=SINCE,
        state_since=SINCE,
    )


def tunnel_engine(host: str, n: int, tunnel_name: str | None, **kwargs: Any) -> EngineReport:
    """fleetsim's engine, running in the network namespace of ``tunnel_name``."""
    return engine(host, n, **kwargs).model_copy(update={"tunnel": tunnel_name})


class TunnelAgent(Agent):
    """fleetsim's agent with tunnels in its heartbeats and an ``agent_url`` of the test's
    choosing (the stand-in's, for rotations)."""

    def __init__(self, host: str, engines: int = 0, *, agent_url: str = "", **kwargs: Any):
        super().__init__(host, engines, **kwargs)
        self.tunnels: list[TunnelReport] = []
        self.agent_url = agent_url or f"http://127.0.0.1:8100/{self.host}"

    def heartbeat_body(self) -> Heartbeat:
        body = super().heartbeat_body()
        return body.model_copy(update={"tunnels": self.tunnels, "agent_url": self.agent_url})


@dataclass
class Call:
    path: str
    authorization: str | None


@dataclass
class RotateStub:
    """The stand-in's behaviour: which tunnels exist, which are already rotating."""

    host: str = "edge0"
    tunnels: set[str] = field(default_factory=lambda: {"t1", "t2"})
    rotating: set[str] = field(default_factory=set)
    key: str = AGENT_KEY
    calls: list[Call] = field(default_factory=list)

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.calls.append(Call(path, authorization))
        if authorization != f"Bearer {self.key}":
            return 401, _error("unauthorized", "a valid 'Authorization: Bearer <key>' is required")
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v1", "tunnels"] or parts[3] != "rotate":
            return 404, _error("not_found", f"no route {path}")
        name = parts[2]
        if name not in self.tunnels:
            return 404, _error("unknown_tunnel", f"no tunnel {name!r} on {self.host}")
        if name in self.rotating:
            return 409, _error("rotation_in_progress", f"tunnel {name!r} is already rotating")
        self.rotating.add(name)
        report = tunnel(name, TunnelState.starting, host=self.host, generation=1, port=None)
        return 202, report.model_dump(mode="json")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class AgentStandIn:
    """The stub served on a loopback port in a daemon thread (``url`` is its agent_url)."""

    def __init__(self, stub: RotateStub) -> None:
        self.stub = stub

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status, body = stub.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is not the place for its access log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
